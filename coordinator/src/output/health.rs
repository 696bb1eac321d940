//! `etcdops health`: per-member linearizable-read health, the verdict (with
//! the findings of [`safety::check`] on the view of the same replies), and
//! its table and JSON.

use std::time::Duration;

use etcdops_proto::v1 as pb;
use serde::Serialize;

use crate::agents::Reply;
use crate::output::hex_id;
use crate::output::table::{self, NONE};
use crate::plan::safety::{self, Tolerate};
use crate::plan::view::ClusterView;

/// The whole `health` report; also the JSON document (`-w json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The fleet's name of the cluster.
    pub cluster: String,
    /// True when every member is healthy and the cluster checks found no problem.
    pub ok: bool,
    /// Members that are healthy.
    pub healthy: usize,
    /// Members in the fleet's cluster.
    pub total: usize,
    /// Why `ok` is false, one finding each, in the words of `status`,
    /// `--dry-run` and the executor; empty when ok.
    pub problems: Vec<String>,
    /// Findings that do not make the cluster unhealthy but make every
    /// mutating plan refuse (a disk over its fsync threshold).
    pub warnings: Vec<String>,
    /// One entry per fleet member, in fleet order.
    pub members: Vec<MemberHealth>,
}

/// One member's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberHealth {
    /// The fleet's member name.
    pub name: String,
    /// The agent URL.
    pub agent: String,
    /// True when a linearizable read through the member succeeded.
    pub healthy: bool,
    /// The read's round trip as the agent measured it, in microseconds; null when the agent did not answer.
    pub took_us: Option<u64>,
    /// The etcd member ID (hex); null when unknown.
    pub member_id: Option<String>,
    /// The revision the read saw; null when unknown.
    pub revision: Option<i64>,
    /// Why the member is not healthy; null when healthy.
    pub error: Option<String>,
    /// `error` without the member, agent and advice, for a table cell.
    #[serde(skip)]
    pub error_brief: Option<String>,
}

/// Converts one agent's reply (the prost edge) into plain data.
pub fn member_health(reply: Reply<pb::HealthResponse>) -> MemberHealth {
    let agent = reply.agent.to_string();
    match reply.result {
        Err(e) => MemberHealth {
            name: reply.member,
            agent,
            healthy: false,
            took_us: None,
            member_id: None,
            revision: None,
            error: Some(e.to_string()),
            error_brief: Some(e.brief()),
        },
        Ok(h) => {
            let brief = match (h.healthy, h.error.is_empty()) {
                (true, _) => None,
                (false, false) => Some(h.error),
                (false, true) => Some("unhealthy (the agent gave no reason)".to_string()),
            };
            MemberHealth {
                error: brief
                    .as_ref()
                    .map(|b| format!("member {} unhealthy: {b}", reply.member)),
                error_brief: brief,
                name: reply.member,
                agent,
                healthy: h.healthy,
                took_us: Some(h.latency_us),
                member_id: (h.member_id != 0).then(|| hex_id(h.member_id)),
                revision: (h.healthy || h.revision != 0).then_some(h.revision),
            }
        }
    }
}

/// The verdict: healthy only when every member is and the one set of
/// cluster checks ([`safety::check`], on the view of the same GetStatus and
/// Health replies) finds no problem; a slow disk is a warning.
pub fn evaluate(view: &ClusterView, members: Vec<MemberHealth>) -> HealthReport {
    let problems = safety::check(
        view,
        Tolerate {
            slow_disk: true,
            ..Tolerate::default()
        },
    );
    let healthy = members.iter().filter(|m| m.healthy).count();
    HealthReport {
        cluster: view.cluster.clone(),
        ok: healthy == members.len() && problems.is_empty(),
        healthy,
        total: members.len(),
        problems: problems.iter().map(ToString::to_string).collect(),
        warnings: safety::disk(view).iter().map(ToString::to_string).collect(),
        members,
    }
}

/// The table header of `health`.
pub const HEADER: [&str; 5] = ["MEMBER", "AGENT", "HEALTHY", "TOOK", "ERROR"];

/// One table row per member.
pub fn rows(report: &HealthReport) -> Vec<Vec<String>> {
    report
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.agent.clone(),
                table::yes_no(m.healthy).to_string(),
                m.took_us.map_or(NONE.to_string(), |us| {
                    table::format_took(Duration::from_micros(us))
                }),
                m.error_brief
                    .clone()
                    .or_else(|| m.error.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

/// The summary line under the table.
pub fn summary(report: &HealthReport) -> String {
    let verdict = if report.ok { "healthy" } else { "unhealthy" };
    format!(
        "cluster {} is {verdict}: {}/{} members healthy",
        report.cluster, report.healthy, report.total
    )
}

/// The whole text report: table, the summary, then each problem and warning
/// in full (with what to do).
pub fn render_table(report: &HealthReport) -> String {
    let problems = report.problems.iter().map(|p| ("problem", p.as_str()));
    let warnings = report.warnings.iter().map(|w| ("warning", w.as_str()));
    table::report(&HEADER, rows(report), &summary(report), problems.chain(warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{AgentError, AgentErrorKind};
    use crate::fleet::AgentUrl;

    fn reply(name: &str, result: Result<pb::HealthResponse, AgentErrorKind>) -> Reply<pb::HealthResponse> {
        let agent = AgentUrl::parse("https://127.0.0.12:7443").expect("url");
        Reply {
            member: name.to_string(),
            agent: agent.clone(),
            took: Duration::from_millis(3),
            result: result.map_err(|kind| AgentError {
                member: name.to_string(),
                agent,
                kind,
            }),
        }
    }

    fn ok(latency_us: u64) -> pb::HealthResponse {
        pb::HealthResponse {
            healthy: true,
            latency_us,
            error: String::new(),
            member_id: 0x8e9e05c52164694d,
            revision: 9,
        }
    }

    #[test]
    fn converts_replies() {
        let healthy = member_health(reply("etcd1", Ok(ok(2_345))));
        assert!(healthy.healthy);
        assert_eq!(healthy.error, None);
        assert_eq!(healthy.member_id.as_deref(), Some("8e9e05c52164694d"));
        assert_eq!(healthy.revision, Some(9));

        let sick = pb::HealthResponse {
            healthy: false,
            error: "etcdserver: request timed out".into(),
            ..ok(0)
        };
        let sick = member_health(reply("etcd2", Ok(sick)));
        assert!(!sick.healthy);
        assert_eq!(
            sick.error.as_deref(),
            Some("member etcd2 unhealthy: etcdserver: request timed out")
        );
        assert_eq!(sick.error_brief.as_deref(), Some("etcdserver: request timed out"));

        let silent = member_health(reply(
            "etcd2",
            Ok(pb::HealthResponse {
                healthy: false,
                ..Default::default()
            }),
        ));
        assert!(silent.error.as_deref().is_some_and(|e| e.contains("no reason")));
        assert_eq!(silent.member_id, None);

        let down = member_health(reply(
            "etcd2",
            Err(AgentErrorKind::Unreachable {
                reason: "connection refused".into(),
            }),
        ));
        assert!(!down.healthy);
        assert_eq!(down.took_us, None);
        assert!(
            down.error
                .as_deref()
                .is_some_and(|e| e.starts_with("agent etcd2 at https://127.0.0.12:7443 unreachable"))
        );
    }

    /// The view `etcdops health` builds: each member's GetStatus (answered,
    /// etcd1 leads) beside its Health reply.
    fn view(replies: &[Reply<pb::HealthResponse>]) -> ClusterView {
        let members: Vec<crate::fleet::Member> = replies
            .iter()
            .map(|r| crate::fleet::Member::new(&r.member, &r.agent.to_string()).expect("member"))
            .collect();
        let status: Vec<Reply<pb::GetStatusResponse>> = replies
            .iter()
            .enumerate()
            .map(|(i, r)| Reply {
                member: r.member.clone(),
                agent: r.agent.clone(),
                took: Duration::from_millis(1),
                result: Ok(pb::GetStatusResponse {
                    member: Some(pb::MemberStatus {
                        reachable: true,
                        member_id: i as u64 + 1,
                        member_name: r.member.clone(),
                        cluster_id: 7,
                        leader_id: 1,
                        is_leader: i == 0,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .collect();
        crate::observe::view_of("a", &members, &status, Some(replies))
    }

    fn report(replies: Vec<Reply<pb::HealthResponse>>) -> HealthReport {
        let view = view(&replies);
        evaluate(&view, replies.into_iter().map(member_health).collect())
    }

    #[test]
    fn verdicts_and_rows() {
        let up = |name: &str| reply(name, Ok(ok(2_345)));
        let down = |name: &str| {
            reply(
                name,
                Err(AgentErrorKind::CallTimeout {
                    after: Duration::from_secs(5),
                }),
            )
        };
        let cases = [
            (vec![up("etcd1"), up("etcd2")], true, 2),
            (vec![up("etcd1"), down("etcd2")], false, 1),
            (vec![down("etcd1")], false, 0),
        ];
        for (replies, ok, healthy) in cases {
            let report = report(replies);
            assert_eq!((report.ok, report.healthy), (ok, healthy));
            assert_eq!(report.ok, report.problems.is_empty(), "{:?}", report.problems);
        }
        let report = report(vec![up("etcd1"), down("etcd2")]);
        let rows = rows(&report);
        assert_eq!(
            rows[0],
            ["etcd1", "https://127.0.0.12:7443", "true", "2.345ms", ""]
        );
        assert_eq!(rows[1][2..4], ["false", NONE]);
        assert_eq!(rows[1][4], "agent did not answer within 5s");
        assert_eq!(summary(&report), "cluster a is unhealthy: 1/2 members healthy");
        assert!(
            render_table(&report).contains(
                "problem: etcd2: failed a linearizable read: agent etcd2 at https://127.0.0.12:7443 did not answer"
            ),
            "{}",
            render_table(&report)
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["members"][0]["error"], serde_json::Value::Null);
        assert_eq!(json["members"][0]["took_us"], 2_345);
        assert_eq!(json["members"][1]["took_us"], serde_json::Value::Null);
        assert!(json["problems"][0].is_string(), "{json}");
    }

    #[test]
    fn every_read_passing_is_not_enough_when_the_cluster_checks_find_a_problem() {
        let replies = vec![reply("etcd1", Ok(ok(1))), reply("etcd2", Ok(ok(1)))];
        let mut view = view(&replies);
        // The fleet names etcd2's agent for etcd1: the reads pass, the cluster is not fine.
        view.members[1].etcd_name = "etcd1".into();
        let report = evaluate(&view, replies.into_iter().map(member_health).collect());
        assert_eq!(report.healthy, 2);
        assert!(!report.ok);
        assert!(
            report.problems[0]
                .starts_with("etcd2: its agent https://127.0.0.12:7443 serves the etcd member named etcd1"),
            "{:?}",
            report.problems
        );
    }
}
