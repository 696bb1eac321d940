//! What every plan-running command shares: `--dry-run`, `--yes`, the
//! journal, the step timeout; planning against the observed cluster, the
//! confirmation, Ctrl-C, and running the plan through the executor.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use time::OffsetDateTime;

use crate::cli::target::Target;
use crate::cli::{GlobalArgs, emit};
use crate::duration;
use crate::exec::{ExecError, Executor};
use crate::exit::ExitStatus;
use crate::journal::{self, Journal, OpState, OperationRecord};
use crate::output::plan::PlanReport;
use crate::output::{ops, plan as plan_output};
use crate::plan::operation::{Operation, RunOptions};
use crate::plan::planner::{OpKind, Plan, PlanError};
use crate::plan::safety;
use crate::plan::view::ClusterView;

/// Options of every command that runs a plan.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operation options")]
pub struct RunArgs {
    /// Print the plan and the pre-check verdict; change nothing (exit 1 when the cluster is not safe now).
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// The operation journal (default: $XDG_STATE_HOME/etcdops/journal.redb).
    #[arg(long, value_name = "PATH", env = "ETCDOPS_JOURNAL")]
    pub journal: Option<PathBuf>,

    /// Time limit of each step, its action and its wait together (default per step: defrag 10m,
    /// restart 3m, compact 2m, others 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub step_timeout: Option<Duration>,

    /// Go ahead although a member's periodic disk probe is over the fsync threshold.
    #[arg(long)]
    pub ignore_slow_disk: bool,

    /// Do not compare etcd's HashKV across members after each step that restarts, defragments or
    /// joins a member (the check stops the operation when members' data differ).
    #[arg(long)]
    pub skip_hashkv_check: bool,

    /// Stop after step STEP (an ID from --dry-run, e.g. `stage-all` of a restore, or the first
    /// member's `restart:NAME` as a canary); the operation is `paused` and keeps the cluster
    /// (other operations are refused) until `etcdops op resume OP` or `etcdops op abort OP`.
    #[arg(long, value_name = "STEP")]
    pub pause_after: Option<String>,
}

impl RunArgs {
    pub fn journal(&self) -> anyhow::Result<Journal> {
        let path = self.journal.clone().unwrap_or_else(journal::default_path);
        Ok(Journal::open(path)?)
    }

    /// Kept in the journal so a resume runs with the same options.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            step_timeout_secs: self.step_timeout.map(|d| d.as_secs_f64()),
            ignore_slow_disk: self.ignore_slow_disk,
            skip_hashkv_check: self.skip_hashkv_check,
        }
    }
}

/// Observes the cluster (once, for planning).
pub(crate) async fn observe(target: &Target) -> ClusterView {
    crate::observe::observe(&target.agents, &target.cluster.name, &target.cluster.members).await
}

/// A plan error is the user's (exit 2) when it names bad input.
pub(crate) fn plan_error(e: PlanError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// A plan to run, and the operation it belongs to (what the journal keeps).
pub(crate) struct Planned {
    pub plan: Plan,
    /// What the operation is and carries: its kind, `--force`, who joins or
    /// leaves, a restore's snapshot and spec, a recovery's survivor.
    pub operation: Operation,
}

/// Shows the plan (dry run), or confirms and runs it.
pub(crate) async fn run_plan(
    global: &GlobalArgs,
    target: Target,
    view: &ClusterView,
    planned: Planned,
    run: &RunArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let Planned { plan, operation } = planned;
    let mut record = new_record(&plan, &target.cluster.name, global, operation, run);
    record.operator = Some(target.agents.own_certificate().clone());
    let membership = record.operation.membership();
    let restore = record.operation.members_may_be_down();
    let tolerate = record.options.tolerate(record.kind);
    // Another operation's fence: refused at once, or listed first by a dry run.
    let busy = match crate::exec::busy(view, "") {
        Err(e) if !run.dry_run => return Err(e.into()),
        Err(e) => Some(e.to_string()),
        Ok(()) => None,
    };
    let mut check_tolerate = tolerate;
    if let Some(l) = membership.leaving.as_ref().filter(|l| !l.alive) {
        check_tolerate.down = Some(l.name.as_str());
    }
    // The disk gate fails closed: a member without a recent periodic probe
    // result gets a short probe now, before the plan is judged.
    let mut view = view.clone();
    if !tolerate.slow_disk {
        crate::observe::probe_unknown_disks(&target.agents, &target.cluster.members, &mut view).await;
    }
    let mut findings = if restore {
        let mut findings = safety::agents_answer(&view);
        if !tolerate.slow_disk {
            findings.extend(safety::disk(&view));
        }
        findings
    } else {
        safety::check(&view, check_tolerate)
    };
    if let Some(seen) = busy {
        findings.insert(
            0,
            safety::Finding {
                member: None,
                seen,
                action: "only one operation runs on a cluster at a time".into(),
            },
        );
    }
    if let Some(step) = &run.pause_after
        && !plan.steps.iter().any(|s| &s.id == step)
    {
        let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        anyhow::bail!(crate::plan::planner::PlanError::Usage(format!(
            "--pause-after {step:?}: this plan has no such step; its steps are: {}",
            if ids.is_empty() {
                "(none)".to_string()
            } else {
                ids.join(", ")
            }
        )));
    }
    let report = PlanReport {
        plan,
        safe: findings.is_empty(),
        findings,
    };
    if run.dry_run {
        emit(out, global.write_out, &report, plan_output::render)?;
        return Ok(ExitStatus::from_ok(report.safe));
    }
    if report.plan.steps.is_empty() {
        eprint!("{}", plan_output::render(&report));
        eprintln!("nothing to do");
        return Ok(if report.safe {
            ExitStatus::Ok
        } else {
            ExitStatus::Failed
        });
    }
    eprint!("{}", plan_output::render(&report));
    if !report.safe {
        return Err(anyhow::Error::new(ExecError::Unsafe {
            cluster: report.plan.cluster,
            findings: report.findings,
        }));
    }
    if !run.yes && !confirm(&report.plan)? {
        eprintln!("not confirmed: nothing was changed");
        return Ok(ExitStatus::Failed);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(interrupted.clone());
    let mut executor = Executor::for_record(
        &record,
        target.agents,
        target.cluster,
        run.journal()?,
        global.fleet.clone(),
        interrupted,
    );
    executor.pause_after = run.pause_after.clone();
    let record = executor.start(&report.plan, record, false).await?;
    emit(out, global.write_out, &record, ops::render_show)?;
    Ok(ExitStatus::Ok)
}

fn new_record(
    plan: &Plan,
    cluster: &str,
    global: &GlobalArgs,
    operation: Operation,
    run: &RunArgs,
) -> OperationRecord {
    let now = OffsetDateTime::now_utc();
    debug_assert_eq!(plan.kind, operation.kind());
    OperationRecord {
        id: journal::new_operation_id(plan.kind.as_str(), now),
        kind: operation.kind(),
        cluster: cluster.to_string(),
        fleet: std::path::absolute(&global.fleet).unwrap_or_else(|_| global.fleet.clone()),
        operation,
        options: run.options(),
        holder: journal::holder(),
        operator: None,
        epoch: 0,
        state: OpState::Running,
        created_at_unix: now.unix_timestamp(),
        updated_at_unix: now.unix_timestamp(),
        error: None,
        steps: Vec::new(),
    }
}

/// Operations that replace every member's data ask for the cluster's name, not a `y`.
fn typed_confirmation(kind: OpKind) -> bool {
    matches!(kind, OpKind::Restore | OpKind::RecoverQuorum)
}

/// Whether `answer` (a line typed on the terminal) confirms `plan`.
fn confirmed(plan: &Plan, answer: &str) -> bool {
    if typed_confirmation(plan.kind) {
        answer.trim() == plan.cluster
    } else {
        matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    }
}

/// Asks on the terminal; refuses without one.
fn confirm(plan: &Plan) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(ConfirmationRequired { kind: plan.kind });
    }
    if typed_confirmation(plan.kind) {
        eprint!(
            "{} replaces the data of every member of cluster {} ({} step(s)). Type the cluster's name to go ahead: ",
            plan.kind,
            plan.cluster,
            plan.steps.len()
        );
    } else {
        eprint!(
            "Run these {} step(s) on cluster {}? [y/N] ",
            plan.steps.len(),
            plan.cluster
        );
    }
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    Ok(confirmed(plan, &answer))
}

/// Running a plan without a terminal and without `--yes`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{kind} changes the cluster and needs a confirmation, but stdin is not a terminal: pass --yes (see the plan with --dry-run)"
)]
pub struct ConfirmationRequired {
    pub kind: OpKind,
}

/// First Ctrl-C: stop cleanly after the current step. Second: quit now
/// (the journal keeps the operation running, for `etcdops op resume`).
pub(crate) fn watch_ctrl_c(flag: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        flag.store(true, Ordering::SeqCst);
        eprintln!(
            "\nCtrl-C: stopping after the current step (Ctrl-C again quits at once; `etcdops op resume` continues later)"
        );
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Ctrl-C again: quitting now; the operation stays `running` in the journal");
            crate::telemetry::shutdown();
            std::process::exit(130);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kind: OpKind) -> Plan {
        Plan {
            kind,
            cluster: "prod-a".into(),
            steps: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn data_replacing_operations_want_the_cluster_name() {
        for kind in [OpKind::Restore, OpKind::RecoverQuorum] {
            assert!(confirmed(&plan(kind), "prod-a\n"));
            assert!(!confirmed(&plan(kind), "y\n"), "{kind}: a y is not enough");
            assert!(!confirmed(&plan(kind), "prod-b\n"));
        }
        for kind in [OpKind::Defrag, OpKind::Restart, OpKind::RestoreRollback] {
            assert!(confirmed(&plan(kind), "y\n"));
            assert!(!confirmed(&plan(kind), "\n"), "{kind}: the default is no");
            assert!(!confirmed(&plan(kind), "prod-a\n"));
        }
    }
}
