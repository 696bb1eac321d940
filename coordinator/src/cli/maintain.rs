//! `etcdops defrag`, `restart`, `compact`, `alarm` and `recover nospace`:
//! cluster maintenance as journaled, fenced plans (see `crate::plan`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::operate::{Planned, RunArgs, observe, plan_error, run_plan};
use crate::cli::target::target;
use crate::cli::{GlobalArgs, emit};
use crate::duration;
use crate::exit::ExitStatus;
use crate::fleet::Cluster;
use crate::output::table;
use crate::plan::operation::{Operation, PreSnapshot};
use crate::plan::planner::{self, DefragOptions, RestartOptions, SnapshotTo};
use crate::plan::rule::{RULE_HELP, Rule};

pub(crate) const DEFRAG_ABOUT: &str = "\
Defragment members one at a time, the leader last, without stalling the cluster.

etcd's defragmentation rewrites a member's database and blocks that member's reads and
writes meanwhile; on the leader it stalls every write in the cluster. etcdops plans the
operation from the cluster it observes: learners first, then followers one at a time, then
— once leadership has moved to a healthy, caught-up follower that was already defragmented —
the former leader, as a follower. Before every step it checks the whole cluster again (every
member reachable and passing a linearizable read, one agreed leader, no alarm, disks within
their fsync threshold, followers caught up with the leader) and stops at the first unsafe
state, saying what it saw. After each member it waits until that member is healthy and caught
up. Every step is journaled (`etcdops op show`); a killed run continues with `etcdops op
resume`. Only one operation runs on a cluster at a time: the agents refuse a second one.

--compact first compacts the key history up to the current revision (what etcd keeps for
watchers and MVCC reads) so the defragmentation can free it.

--rolling is the only mode and may be omitted; it is accepted for clarity.";

/// `etcdops defrag`
#[derive(Debug, Clone, Args)]
pub struct DefragArgs {
    /// One member at a time, leader last (the only mode; accepted for clarity).
    #[arg(long)]
    pub rolling: bool,
    /// Only members this rule (CEL) selects, e.g. 'dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8'.
    #[arg(long, value_name = "EXPR", long_help = RULE_HELP)]
    pub rule: Option<String>,
    /// Compact the key history up to the current revision first.
    #[arg(long)]
    pub compact: bool,
    /// Only this member (repeatable); default: every member.
    #[arg(long = "member", value_name = "NAME")]
    pub members: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub(crate) const DEFRAG_AFTER_HELP: &str = "\
Examples:
  etcdops defrag --rolling --dry-run
  etcdops defrag --rolling --rule 'dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8' --yes
  etcdops defrag --compact --member etcd2

Exit codes: 0 done and healthy, 1 refused or stopped (the message says why and what to do),
2 usage error, 3 another operation holds the cluster.";

pub(crate) async fn defrag(
    global: &GlobalArgs,
    args: &DefragArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let rule = args.rule.as_deref().map(Rule::parse).transpose()?;
    let target = target(global)?;
    let view = observe(&target).await;
    let compact_to = if args.compact {
        Some(view.leader().map(|l| l.revision).ok_or_else(|| {
            plan_error(planner::PlanError::NoLeader(
                "--compact needs the current revision, and no member leads".into(),
            ))
        })?)
    } else {
        None
    };
    let options = DefragOptions {
        rule,
        compact_to,
        members: args.members.clone(),
        step_timeout: args.run.step_timeout,
    };
    let plan = planner::plan_defrag(&view, &options).map_err(plan_error)?;
    let operation = Operation::Defrag {
        rule: args.rule.clone(),
        compact: args.compact,
        members: args.members.clone(),
    };
    run_plan(global, target, &view, Planned { plan, operation }, &args.run, out).await
}

pub(crate) const RESTART_ABOUT: &str = "\
Restart etcd on every member, one at a time, the leader last, through each host's agent
(systemd's etcd.service, or the agent's own process supervision).

The order and checks are those of `etcdops defrag`: learners, then followers, then — after
leadership moves to a healthy, caught-up, already restarted follower — the former leader.
Before each restart the whole cluster is checked and the restart must leave a quorum of
healthy voters (a one- or two-member cluster cannot keep one: --force accepts the outage).
After each restart etcdops waits until the member passes a linearizable read and has caught
up with the leader before it goes on. Journaled and resumable like every operation.

The first step saves a verified snapshot (etcd's sha256 trailer checked, a `.json` sidecar
beside it) of a healthy, caught-up follower: into the cluster's backup target when the fleet
file has a [clusters.backup] table, else into `snapshots/` beside the journal. The plan names
where; `etcdops op show OP` names the file. --no-snapshot goes without one.";

/// The directory beside the journal that takes the snapshot a disruptive
/// operation starts with, when the cluster has no backup target.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";

/// Where the verified snapshot a disruptive operation starts with goes: the
/// cluster's backup target (`[clusters.backup]`), else [`SNAPSHOT_DIR`]
/// beside the journal; `None` with `--no-snapshot`.
pub(crate) fn snapshot_to(cluster: &Cluster, run: &RunArgs, no_snapshot: bool) -> Option<SnapshotTo> {
    if no_snapshot {
        return None;
    }
    if let Some(backup) = &cluster.backup {
        return Some(SnapshotTo::Backup {
            url: backup.target.to_string(),
        });
    }
    let journal = run.journal.clone().unwrap_or_else(crate::journal::default_path);
    let journal = std::path::absolute(&journal).unwrap_or(journal);
    let path = journal
        .parent()
        .map_or_else(|| PathBuf::from(SNAPSHOT_DIR), |p| p.join(SNAPSHOT_DIR));
    Some(SnapshotTo::Dir { path })
}

/// `etcdops restart`
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// One member at a time, leader last (the only mode; accepted for clarity).
    #[arg(long)]
    pub rolling: bool,
    /// Only this member (repeatable); default: every member.
    #[arg(long = "member", value_name = "NAME")]
    pub members: Vec<String>,
    /// Restart even when a member's restart leaves fewer healthy voters than quorum (an outage).
    #[arg(long)]
    pub force: bool,
    /// Do not save a verified snapshot first (into the backup target, or snapshots/ beside the journal).
    #[arg(long)]
    pub no_snapshot: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

pub(crate) const RESTART_AFTER_HELP: &str = "\
Examples:
  etcdops restart --rolling --dry-run
  etcdops restart --rolling --yes
  etcdops restart --member etcd3 --yes
  etcdops restart --rolling --no-snapshot --yes

Exit codes: 0 done and healthy, 1 refused or stopped, 2 usage error, 3 another operation
holds the cluster.";

pub(crate) async fn restart(
    global: &GlobalArgs,
    args: &RestartArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    let snapshot = snapshot_to(&target.cluster, &args.run, args.no_snapshot);
    let options = RestartOptions {
        members: args.members.clone(),
        force: args.force,
        step_timeout: args.run.step_timeout,
        snapshot: snapshot.clone(),
    };
    let plan = planner::plan_restart(&view, &options).map_err(plan_error)?;
    let operation = Operation::Restart {
        members: args.members.clone(),
        force: args.force,
        snapshot: PreSnapshot::to(snapshot),
    };
    run_plan(global, target, &view, Planned { plan, operation }, &args.run, out).await
}

pub(crate) const COMPACT_ABOUT: &str = "\
Compact the cluster's key history: revisions before the chosen one become unreadable and
their space reusable (reclaimed on disk by `etcdops defrag`). Compaction is cluster-wide in
etcd; etcdops asks the leader's agent and waits until it is applied.

--keep-revisions N keeps the newest N revisions. --keep-duration D keeps what changed in the
last D: the agents sample their member's revision every minute and keep 8 days of samples,
so D must be within what they have seen (the error says how far back they go).";

/// `etcdops compact`
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("keep").required(true).args(["keep_revisions", "keep_duration"])))]
pub struct CompactArgs {
    /// Keep the newest N revisions.
    #[arg(long, value_name = "N")]
    pub keep_revisions: Option<u64>,
    /// Keep the revisions of the last DURATION, e.g. 30m, 6h, 2d (at most the agents' 8 days of samples).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_span)]
    pub keep_duration: Option<Duration>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub(crate) const COMPACT_AFTER_HELP: &str = "\
Examples:
  etcdops compact --keep-revisions 10000 --dry-run
  etcdops compact --keep-duration 1h --yes

Exit codes: 0 done, 1 refused or failed, 2 usage error, 3 another operation holds the cluster.";

pub(crate) async fn compact(
    global: &GlobalArgs,
    args: &CompactArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    let revision = match (args.keep_revisions, args.keep_duration) {
        (Some(keep), _) => planner::keep_revisions(&view, keep).map_err(plan_error)?,
        (None, Some(keep)) => revision_at(&target, &view, keep).await?,
        (None, None) => anyhow::bail!("--keep-revisions or --keep-duration is required"),
    };
    let plan = planner::plan_compact(&view, revision);
    run_plan(
        global,
        target,
        &view,
        Planned {
            plan,
            operation: Operation::Compact { revision },
        },
        &args.run,
        out,
    )
    .await
}

/// The revision the leader's agent sampled `keep` ago.
async fn revision_at(
    target: &crate::cli::target::Target,
    view: &crate::plan::view::ClusterView,
    keep: Duration,
) -> anyhow::Result<i64> {
    let leader = view
        .leader()
        .ok_or_else(|| plan_error(planner::PlanError::NoLeader("no member leads".into())))?;
    let member: Vec<_> = target
        .cluster
        .members
        .iter()
        .filter(|m| m.name == leader.name)
        .cloned()
        .collect();
    let at = time::OffsetDateTime::now_utc().unix_timestamp()
        - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2);
    let reply = target
        .agents
        .fan_out(&member, move |mut c| async move {
            c.revision_at(etcdops_proto::v1::RevisionAtRequest { unix_time: at })
                .await
        })
        .await
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no reply from {}", leader.name))?;
    let answer = reply.result?;
    if !answer.found {
        let since = if answer.oldest_sample_unix > 0 {
            format!(
                "its oldest sample is from {}",
                table::format_date(answer.oldest_sample_unix)
            )
        } else {
            "it has no samples yet".to_string()
        };
        anyhow::bail!(
            "agent {} cannot tell the revision of {} ago: {since}; use a shorter --keep-duration or --keep-revisions",
            leader.name,
            duration::format(keep)
        );
    }
    if answer.revision <= 1 {
        anyhow::bail!(
            "nothing to compact: the revision {} ago was {}",
            duration::format(keep),
            answer.revision
        );
    }
    Ok(answer.revision)
}

/// `etcdops alarm ...`
#[derive(Debug, Clone, Subcommand)]
pub enum AlarmCommand {
    /// List the active alarms (NOSPACE, CORRUPT) as the members report them.
    List,
    /// Disarm every active alarm, then verify the cluster accepts writes (journaled, fenced).
    #[command(
        after_help = "Example:\n  etcdops alarm disarm --yes\n\nA NOSPACE alarm comes back while the database is over its quota: \
    use `etcdops recover nospace`, which compacts and defragments first."
    )]
    Disarm(RunArgs),
}

#[derive(Debug, Serialize)]
struct AlarmReport {
    cluster: String,
    alarms: Vec<AlarmRow>,
    errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct AlarmRow {
    member_id: String,
    member: String,
    alarm: String,
}

fn render_alarms(report: &AlarmReport) -> String {
    let mut text = String::new();
    if report.alarms.is_empty() {
        text.push_str(&format!("no active alarm in cluster {}\n", report.cluster));
    } else {
        let mut t = table::new_table(&["MEMBER ID", "MEMBER", "ALARM"]);
        for a in &report.alarms {
            t.add_row(vec![a.member_id.clone(), a.member.clone(), a.alarm.clone()]);
        }
        text.push_str(&table::render(&t));
    }
    for e in &report.errors {
        text.push_str(&format!("error: {e}\n"));
    }
    text
}

pub(crate) async fn alarm(
    global: &GlobalArgs,
    command: &AlarmCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    match command {
        AlarmCommand::List => {
            let mut alarms: Vec<(u64, String)> = view
                .members
                .iter()
                .flat_map(|m| m.alarms.iter().cloned())
                .collect();
            alarms.sort();
            alarms.dedup();
            let report = AlarmReport {
                cluster: view.cluster.clone(),
                alarms: alarms
                    .into_iter()
                    .map(|(id, kind)| AlarmRow {
                        member_id: crate::output::hex_id(id),
                        member: view.member_by_id(id).map(|m| m.name.clone()).unwrap_or_default(),
                        alarm: kind,
                    })
                    .collect(),
                errors: view
                    .members
                    .iter()
                    .filter_map(|m| m.unreachable.as_ref().map(|e| format!("{}: {e}", m.name)))
                    .collect(),
            };
            emit(out, global.write_out, &report, render_alarms)?;
            Ok(ExitStatus::from_ok(
                report.alarms.is_empty() && report.errors.is_empty(),
            ))
        }
        AlarmCommand::Disarm(run) => {
            let plan = planner::plan_alarm_disarm(&view);
            run_plan(
                global,
                target,
                &view,
                Planned {
                    plan,
                    operation: Operation::AlarmDisarm,
                },
                run,
                out,
            )
            .await
        }
    }
}

pub(crate) const NOSPACE_ABOUT: &str = "\
Recover a cluster that raised the NOSPACE alarm (its database reached the backend quota and
etcd now refuses writes), the way etcd's maintenance guide does it, as one journaled plan:
compact the history up to the current revision, defragment every member one at a time (the
leader last, after moving leadership), disarm the alarm, and verify a write goes through.

If the data in use alone fills the quota, defragmenting cannot help: the plan says so; raise
the quota (ETCD_QUOTA_BACKEND_BYTES) or delete keys.";

/// `etcdops recover nospace`
pub(crate) async fn recover_nospace(
    global: &GlobalArgs,
    run: &RunArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    let plan = planner::plan_recover_nospace(&view).map_err(plan_error)?;
    run_plan(
        global,
        target,
        &view,
        Planned {
            plan,
            operation: Operation::RecoverNospace,
        },
        run,
        out,
    )
    .await
}
