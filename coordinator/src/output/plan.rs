//! What `--dry-run` prints: the plan, its notes, and the pre-check verdict.

use serde::Serialize;

use super::table;
use crate::duration;
use crate::plan::planner::Plan;
use crate::plan::safety::Finding;

/// A plan and whether the cluster is safe to run it on now.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub plan: Plan,
    /// True when the pre-checks found nothing unsafe.
    pub safe: bool,
    pub findings: Vec<Finding>,
}

/// The plan as a table with notes and the pre-check verdict.
pub fn render(report: &PlanReport) -> String {
    let plan = &report.plan;
    let mut text = format!(
        "Plan: {} on cluster {} ({} step(s))\n",
        plan.kind,
        plan.cluster,
        plan.steps.len()
    );
    if !plan.steps.is_empty() {
        let mut t = table::new_table(&["#", "STEP", "WAITS FOR", "TIMEOUT"]);
        for (i, step) in plan.steps.iter().enumerate() {
            t.add_row(vec![
                (i + 1).to_string(),
                step.description.clone(),
                step.waits_for.clone(),
                duration::format(step.timeout),
            ]);
        }
        text.push_str(&table::render(&t));
    }
    if !plan.notes.is_empty() {
        text.push_str("Notes:\n");
        for note in &plan.notes {
            text.push_str(&format!("  - {note}\n"));
        }
    }
    if report.safe {
        text.push_str("Pre-check: the cluster is safe to operate on now.\n");
    } else {
        text.push_str("Pre-check: NOT safe now:\n");
        for f in &report.findings {
            text.push_str(&format!("  - {f}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::planner::{OpKind, Step, StepKind};
    use crate::plan::step::RollingStep;

    #[test]
    fn renders_steps_notes_and_verdict() {
        let plan = Plan {
            kind: OpKind::Defrag,
            cluster: "prod".into(),
            steps: vec![
                Step::new(
                    StepKind::Rolling(RollingStep::Defrag {
                        member: "etcd2".into(),
                    }),
                    None,
                ),
                Step::new(
                    StepKind::Rolling(RollingStep::TransferLeadership { from: "etcd1".into() }),
                    None,
                ),
            ],
            notes: vec!["etcd3: dbSize > 1GB: false".into()],
        };
        let report = PlanReport {
            plan,
            safe: false,
            findings: vec![Finding {
                member: Some("etcd3".into()),
                seen: "not reachable".into(),
                action: "fix it".into(),
            }],
        };
        let text = render(&report);
        for expected in [
            "Plan: defrag on cluster prod (2 step(s))",
            "defragment etcd2",
            "move leadership away from etcd1",
            "10m",
            "etcd3: dbSize > 1GB: false",
            "NOT safe now",
            "etcd3: not reachable — fix it",
        ] {
            assert!(text.contains(expected), "{expected}\n{text}");
        }
        let json = crate::output::to_json(&report).expect("json");
        assert!(
            json.contains("\"action\": \"defrag\"") && json.contains("\"timeout_secs\": 600.0"),
            "{json}"
        );
    }
}
