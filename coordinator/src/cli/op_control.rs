//! `etcdops op resume` and `etcdops op abort`: carrying on or ending an
//! operation the journal (and the agents' fences) still hold.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;

use super::op::JournalArgs;
use super::operate::watch_ctrl_c;
use crate::cli::target::target;
use crate::cli::{GlobalArgs, emit};
use crate::exec::{Executor, fence};
use crate::exit::ExitStatus;
use crate::fleet;
use crate::journal::{self, OpState};
use crate::output::ops;

pub(crate) const RESUME_ABOUT: &str = "\
Carry on an operation from the journal: one whose coordinator was killed or lost its
connection (state running), or one that stopped at an unsafe state or a failed step (state
failed) once the cause is fixed. Steps already done are not redone: the next one starts with
the usual checks of the whole cluster. The cluster's fence is taken again under the same
operation ID with a higher epoch, so the agents refuse any call still in flight from the old
coordinator.

A running operation whose coordinator still runs on this host is refused (stop that process
first). --takeover takes the fence from another operation that holds it (its coordinator is
gone and its journal elsewhere): an explicit choice, the other operation's calls are refused
from then on.

With the home journal of `etcdops serve` (`[home] journal = \"home\"` in the fleet file, no
--journal), the serve leader resumes it, under its own term: this asks the leader, waits up
to --wait until it takes the request (else withdraws it: nothing changed), and shows the
operation. A running operation there is the leader's own and is refused.";

/// `etcdops op resume`
#[derive(Debug, Clone, Args)]
pub struct OpResumeArgs {
    #[command(flatten)]
    pub journal: JournalArgs,
    /// The operation's ID, or a prefix of it no other ID shares.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Take the cluster's fence from another operation that holds it.
    #[arg(long)]
    pub takeover: bool,
    #[command(flatten)]
    pub wait: super::op_home::LeaderWait,
}

pub(crate) const ABORT_ABOUT: &str = "\
End an operation: mark it aborted in the journal, and free the cluster's fence wherever an
agent still records it as held by that operation (taking it over with a higher epoch, then
releasing it). Nothing is undone: steps already done stay done (see `etcdops op show`).

Works without a journal entry too (the coordinator that ran the operation is gone with its
journal): the ID is then looked up in the agents' fences of the chosen cluster.

With the home journal of `etcdops serve` (`[home] journal = \"home\"` in the fleet file, no
--journal), the serve leader frees the fence and marks the operation aborted: this asks the
leader and waits up to --wait (a failed or paused operation; a running one is the leader's).";

/// `etcdops op abort`
#[derive(Debug, Clone, Args)]
pub struct OpAbortArgs {
    #[command(flatten)]
    pub journal: JournalArgs,
    /// The operation's ID (a prefix works for operations in this journal).
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub wait: super::op_home::LeaderWait,
}

/// The fleet file a resumed operation uses: `--fleet`/ETCDOPS_FLEET when
/// given, else the one it was planned with.
fn fleet_for(global: &GlobalArgs, recorded: &std::path::Path) -> PathBuf {
    if global.fleet.as_os_str() == fleet::DEFAULT_PATH && recorded.exists() {
        recorded.to_path_buf()
    } else {
        global.fleet.clone()
    }
}

/// Whether the operation's holder is a live process on this host.
fn holder_alive(holder: &str) -> Option<u32> {
    let me = journal::holder();
    let host = |h: &str| h.split(" (pid ").next().map(str::to_string);
    if host(holder) != host(&me) {
        return None;
    }
    let pid: u32 = holder
        .rsplit_once("(pid ")?
        .1
        .trim_end_matches(')')
        .parse()
        .ok()?;
    if pid == std::process::id() {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
    comm.contains("etcdops").then_some(pid)
}

pub(crate) async fn resume(
    global: &GlobalArgs,
    args: &OpResumeArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    if let Some(home) = super::op::home_journal(global, &args.journal)? {
        if args.takeover {
            anyhow::bail!(
                "--takeover works on the local journal only: with the home journal the serve leader resumes the operation under its own term"
            );
        }
        let operator = super::op::operator(global);
        return super::op_home::resume(global, home, args.id.clone(), operator, args.wait.wait, out).await;
    }
    let journal = args.journal.open()?;
    let record = journal.find(&args.id)?;
    if record.state == OpState::Running
        && let Some(pid) = holder_alive(&record.holder)
    {
        anyhow::bail!(
            "operation {} is still being run by process {pid} on this host ({}); stop it first (Ctrl-C there stops it after its current step)",
            record.id,
            record.holder
        );
    }
    let mut global = global.clone();
    global.fleet = fleet_for(&global, &record.fleet);
    global.cluster = Some(record.cluster.clone());
    let target = target(&global)?;
    // The disk gate fails closed here too: a member without a recent
    // periodic probe result gets a short probe before the next step.
    if !record.options.tolerate(record.kind).slow_disk {
        let members: Vec<_> = target
            .cluster
            .members
            .iter()
            .filter(|m| record.operation.sees_member(&m.name))
            .cloned()
            .collect();
        let findings = crate::observe::disk_gate(&target.agents, &target.cluster.name, &members).await;
        if !findings.is_empty() {
            return Err(anyhow::Error::new(crate::exec::ExecError::Unsafe {
                cluster: target.cluster.name.clone(),
                findings,
            })
            .context(format!(
                "operation {} was not resumed (it stays {})",
                record.id, record.state
            )));
        }
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(interrupted.clone());
    let operator = Some(target.agents.own_certificate().clone());
    let executor = Executor::for_record(
        &record,
        target.agents,
        target.cluster,
        args.journal.open()?,
        global.fleet.clone(),
        interrupted,
    );
    let mut record = record;
    record.holder = journal::holder();
    record.operator = operator;
    let record = executor.resume(record, args.takeover).await?;
    emit(out, global.write_out, &record, ops::render_show)?;
    Ok(ExitStatus::Ok)
}

/// What an aborted restore leaves on the hosts, for the person aborting it.
pub(crate) fn restore_leftovers(record: &journal::OperationRecord) -> Option<String> {
    let args = record.operation.restore()?;
    let mut lines = Vec::new();
    if !args.kept.is_empty() {
        let swapped: Vec<&str> = args.kept.keys().map(String::as_str).collect();
        lines.push(format!(
            "note: {} already run(s) the restored data (old data dirs kept): `etcdops restore --rollback {}` puts them back",
            swapped.join(", "),
            record.id
        ));
    }
    let unswapped: Vec<String> = args
        .staged
        .iter()
        .filter(|(name, _)| !args.kept.contains_key(*name))
        .map(|(name, dir)| format!("{name}: {dir}"))
        .collect();
    if !unswapped.is_empty() {
        lines.push(format!(
            "note: the staged restores stay on their hosts (etcdops never deletes them): {}; remove them when no longer wanted",
            unswapped.join(", ")
        ));
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

pub(crate) async fn abort(
    global: &GlobalArgs,
    args: &OpAbortArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    if let Some(home) = super::op::home_journal(global, &args.journal)? {
        let operator = super::op::operator(global);
        return super::op_home::abort(global, home, args.id.clone(), operator, args.wait.wait, out).await;
    }
    let path = args.journal.path();
    let record = if path.exists() {
        args.journal.open()?.find(&args.id).ok()
    } else {
        None
    };
    let mut global = global.clone();
    let id = record.as_ref().map_or_else(|| args.id.clone(), |r| r.id.clone());
    if let Some(r) = &record {
        if r.state.is_final() && r.state != OpState::Failed {
            anyhow::bail!("operation {} is already {}; nothing to abort", r.id, r.state);
        }
        global.fleet = fleet_for(&global, &r.fleet);
        global.cluster = Some(r.cluster.clone());
    }
    let mut target = target(&global)?;
    // A joining host (not in the fleet yet) may hold the fence too.
    let mut optional = Vec::new();
    if let Some(r) = &record {
        (target.cluster, optional) = fence::members_of(&target.cluster, r);
    }
    let freed = fence::free(&target.agents, &target.cluster, &id, &optional, None).await?;
    if freed.is_none() && record.is_none() {
        anyhow::bail!(
            "no operation {id:?} in the journal {} and no agent of cluster {} holds a fence for it",
            path.display(),
            target.cluster.name
        );
    }
    let freed = freed.unwrap_or_else(|| String::from("no agent held the cluster's fence for it"));
    if let Some(r) = &record
        && let Some(left) = restore_leftovers(r)
    {
        eprintln!("{left}");
    }
    if let Some(r) = record {
        let reason = format!("aborted by {}; {freed}", journal::holder());
        let updated = args
            .journal
            .open()?
            .finish(&r.id, OpState::Aborted, Some(reason))?;
        emit(out, global.write_out, &updated, ops::render_show)?;
    } else {
        writeln!(out, "operation {id}: {freed}")?;
    }
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(args: serde_json::Value) -> journal::OperationRecord {
        let operation = match args.get("restore") {
            Some(restore) => crate::plan::operation::Operation::Restore {
                restore: serde_json::from_value(restore.clone()).expect("restore args"),
            },
            None => crate::plan::operation::Operation::AlarmDisarm,
        };
        journal::OperationRecord {
            id: "restore-1".into(),
            kind: operation.kind(),
            cluster: "prod".into(),
            fleet: "/etc/etcdops/fleet.toml".into(),
            operation,
            options: Default::default(),
            holder: "ops@host:1".into(),
            operator: None,
            epoch: 3,
            state: OpState::Paused,
            created_at_unix: 0,
            updated_at_unix: 0,
            error: None,
            steps: Vec::new(),
        }
    }

    #[test]
    fn an_aborted_restore_says_what_it_leaves_on_the_hosts() {
        let restore = |staged: serde_json::Value, kept: serde_json::Value| {
            serde_json::json!({ "restore": {
                "snapshot": "/b/s.db", "file_size": 1, "db_sha256": "ab", "revision": 1, "bump_revision": 0,
                "initial_cluster": "a=http://a:2380", "token": "t", "peer_urls": {}, "staged": staged, "kept": kept } })
        };
        assert_eq!(
            restore_leftovers(&record(serde_json::json!({}))),
            None,
            "not a restore"
        );
        assert_eq!(
            restore_leftovers(&record(restore(serde_json::json!({}), serde_json::json!({})))),
            None,
            "nothing staged"
        );
        let staged = serde_json::json!({ "a": "/var/lib/etcd/default.restore-restore-1", "b": "/var/lib/etcd/default.restore-restore-1" });
        let text =
            restore_leftovers(&record(restore(staged.clone(), serde_json::json!({})))).expect("staged");
        assert!(
            text.contains("staged restores stay")
                && text.contains("a: /var/lib/etcd/default.restore-restore-1"),
            "{text}"
        );
        assert!(!text.contains("--rollback"), "{text}");
        let text = restore_leftovers(&record(restore(
            staged,
            serde_json::json!({ "a": "/var/lib/etcd/default.pre-restore-x" }),
        )))
        .expect("half swapped");
        assert!(
            text.contains("a already run(s) the restored data")
                && text.contains("etcdops restore --rollback restore-1"),
            "{text}"
        );
        assert!(
            text.contains("b: /var/lib/etcd") && !text.contains("a: /var/lib/etcd"),
            "{text}"
        );
    }
}
