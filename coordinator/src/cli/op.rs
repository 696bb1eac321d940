//! `etcdops op list|show`: the operation journal, where every cluster-wide operation and each step's outcome is kept.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::fleet::home::{HomeEtcd, JournalLocation};
use crate::journal::{self, Journal, JournalError, OperationRecord};
use crate::output::grouped::{self, Grouped};
use crate::output::ops;

/// `op list` without `--all` hides finished operations not updated for this long.
pub const RECENT_SECS: i64 = 7 * 86_400;

pub(crate) const LONG_ABOUT: &str = "\
The operation journal: every cluster-wide operation etcdops runs (defrag, restart, compact,
recover-nospace, alarm-disarm, ...) and each step's outcome, kept in an embedded database on
the machine that runs etcdops.

Each step is recorded as it starts and as it ends, durably, before the next one begins. A
coordinator that is killed or loses its connection leaves its operation `running`; `op resume`
carries it on from the journal without redoing finished steps, or `op abort` ends it.

The journal is one file per user: --journal, else $ETCDOPS_JOURNAL, else
$XDG_STATE_HOME/etcdops/journal.redb, else ~/.local/state/etcdops/journal.redb (directory
mode 0700, file 0600). Several etcdops processes may use it at once: each holds it only for a
moment, and waits up to 5 s for another.

`etcdops serve` keeps its journal in the home etcd instead. With `journal = \"home\"` in the
fleet file's [home] table (and no --journal / $ETCDOPS_JOURNAL), `op list` and `op show` read
that one; only the serve leader writes it.";

/// `etcdops op ...`
#[derive(Debug, Clone, Subcommand)]
pub enum OpCommand {
    /// List operations: those running, and those of the last 7 days (--all: every one).
    #[command(long_about = LIST_LONG_ABOUT, after_help = LIST_AFTER_HELP)]
    List(OpListArgs),
    /// Show one operation and each step's outcome.
    #[command(long_about = SHOW_LONG_ABOUT, after_help = SHOW_AFTER_HELP)]
    Show(OpShowArgs),
    /// Carry on a running (coordinator gone), paused or failed operation from its first unfinished step.
    #[command(long_about = super::op_control::RESUME_ABOUT, after_help = "Examples:\n  etcdops op resume restart-20261125T183000Z-3f9a\n  etcdops op resume restart-2026 --takeover\n\nExit codes: 0 done and healthy, 1 stopped again (the message says why), 2 usage error (no such operation), 3 another operation holds the cluster.")]
    Resume(super::op_control::OpResumeArgs),
    /// End an operation: mark it aborted and free the cluster's fence it holds. Undoes nothing.
    #[command(long_about = super::op_control::ABORT_ABOUT, after_help = "Example:\n  etcdops op abort defrag-20261125T183000Z-3f9a\n\nExit codes: 0 aborted, 1 the agents could not be reached, 2 usage error.")]
    Abort(super::op_control::OpAbortArgs),
    /// Delete finished operations older than a time span from the journal.
    #[command(long_about = PRUNE_LONG_ABOUT, after_help = PRUNE_AFTER_HELP)]
    Prune(OpPruneArgs),
}

const PRUNE_LONG_ABOUT: &str = "\
Delete from the journal the operations that ended (succeeded or aborted; failed ones too with
--include-failed) and were last updated longer ago than --older-than. Running and paused
operations are never deleted: they hold or may hold a cluster. --cluster prunes one cluster's
operations only. --dry-run lists what would go.

With the home journal of `etcdops serve` (`[home] journal = \"home\"` in the fleet file, no
--journal), the serve leader deletes them: this asks it and waits up to --wait.";

const PRUNE_AFTER_HELP: &str = "\
Examples:
  etcdops op prune --older-than 30d --dry-run
  etcdops --cluster prod-a op prune --older-than 90d --include-failed

Exit codes: 0 pruned (or nothing to prune), 2 usage error.";

/// `etcdops op prune` options.
#[derive(Debug, Clone, Args)]
pub struct OpPruneArgs {
    #[command(flatten)]
    pub journal: JournalArgs,
    /// Only operations last updated longer ago than this (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub older_than: std::time::Duration,
    /// Failed operations too (otherwise kept: `op resume` may still carry them on).
    #[arg(long)]
    pub include_failed: bool,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: super::op_home::LeaderWait,
}

/// What `op prune` with `args` deletes of `ops` now.
pub(crate) fn prunable_now(
    ops: &[OperationRecord],
    cluster: Option<&str>,
    args: &OpPruneArgs,
) -> Vec<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let secs = i64::try_from(args.older_than.as_secs()).unwrap_or(i64::MAX);
    prunable(ops, cluster, secs, args.include_failed, now)
}

/// What `op prune` deletes (pure): ended operations of `cluster` (when
/// given) last updated before `now_unix - older_than_secs`; failed ones
/// only with `include_failed`; never running or paused ones.
pub fn prunable(
    ops: &[OperationRecord],
    cluster: Option<&str>,
    older_than_secs: i64,
    include_failed: bool,
    now_unix: i64,
) -> Vec<String> {
    ops.iter()
        .filter(|op| cluster.is_none_or(|c| op.cluster == c))
        .filter(|op| op.state.is_final() && (include_failed || op.state != journal::OpState::Failed))
        .filter(|op| op.updated_at_unix < now_unix.saturating_sub(older_than_secs))
        .map(|op| op.id.clone())
        .collect()
}

/// `op prune -w json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpPruneReport {
    pub journal: PathBuf,
    pub dry_run: bool,
    /// The operations deleted (or, with --dry-run, that would be).
    pub deleted: Vec<String>,
}

pub(crate) fn render_prune(report: &OpPruneReport) -> String {
    let verb = if report.dry_run { "would delete" } else { "deleted" };
    let mut text: String = report.deleted.iter().map(|id| format!("{verb} {id}\n")).collect();
    text.push_str(&format!(
        "{} operation(s) {verb} from {}\n",
        report.deleted.len(),
        report.journal.display()
    ));
    text
}

/// `etcdops op prune`.
pub(crate) async fn prune(
    global: &GlobalArgs,
    args: &OpPruneArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    if let Some(home) = home_journal(global, &args.journal)? {
        return super::op_home::prune(global, home, args, operator(global), out).await;
    }
    let path = args.journal.path();
    let mut report = OpPruneReport {
        journal: path.clone(),
        dry_run: args.dry_run,
        deleted: Vec::new(),
    };
    if path.exists() {
        let (journal_args, prune) = (args.journal.clone(), args.clone());
        let cluster = global.cluster.clone();
        report.deleted = tokio::task::spawn_blocking(move || -> Result<Vec<String>, JournalError> {
            let journal = journal_args.open()?;
            let ids = prunable_now(&journal.list()?, cluster.as_deref(), &prune);
            if !prune.dry_run {
                journal.delete(&ids)?;
            }
            Ok(ids)
        })
        .await??;
    }
    emit(out, global.write_out, &report, render_prune)?;
    Ok(ExitStatus::Ok)
}

const LIST_LONG_ABOUT: &str = "\
List the operations in the journal, newest first: ID, kind, cluster, state (running,
paused, succeeded, failed, aborted), steps complete out of all, when it started and was last updated
(UTC), and who ran it (user@host (pid N)).

By default every running operation is listed, however old (a running operation whose holder is
gone waits for `op resume` or `op abort`), and every other operation updated in the last 7 days;
--all lists them all. --cluster lists one cluster's operations only (the fleet file is not read).

A journal that does not exist yet has no operations; listing does not create it.";

const LIST_AFTER_HELP: &str = "\
Examples:
  etcdops op list
  etcdops --cluster prod-a op list --all
  etcdops op list -w json | jq -r '.operations[] | select(.state == \"running\") | .id'
  etcdops op list --all-clusters          grouped by cluster; exit 1 when one has a failed operation

Exit codes: 0 listed (even when empty), 1 the journal cannot be read, 2 usage error.";

const SHOW_LONG_ABOUT: &str = "\
Show one operation: its ID, kind, cluster, state, holder, fence epoch, fleet file, options,
when it started and was last updated (UTC), and why it stopped; then a table of its steps in
order with each step's state (pending, running, done, failed, skipped), how many times it was
started, how long its latest attempt took, and its outcome. For a running operation, the last
line names the step a resume starts at.

ID is an operation ID as `op list` prints it, or any prefix of one that no other ID shares.";

const SHOW_AFTER_HELP: &str = "\
Examples:
  etcdops op show defrag-20261125T183000Z-3f9a
  etcdops op show defrag-20261125T18
  etcdops op show restart- -w json | jq '.steps[] | select(.state != \"done\")'

Exit codes: 0 shown (whatever the operation's state), 1 the journal cannot be read,
2 usage error: no such operation, an ambiguous prefix, or a file that is not a journal.";

/// Where the journal is; shared by every `op` subcommand.
#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    /// The operation journal file. Default: $XDG_STATE_HOME/etcdops/journal.redb, else
    /// ~/.local/state/etcdops/journal.redb.
    #[arg(long, value_name = "PATH", env = journal::path::ENV)]
    pub journal: Option<PathBuf>,
}

impl JournalArgs {
    /// The journal file: `--journal`, `$ETCDOPS_JOURNAL`, or [`journal::default_path`].
    pub fn path(&self) -> PathBuf {
        self.journal.clone().unwrap_or_else(journal::default_path)
    }

    /// Opens (creating when missing) the journal.
    pub fn open(&self) -> Result<Journal, JournalError> {
        Journal::open(self.path())
    }
}

/// The certificate the fleet file's `[tls]` names (who asks, in a request to the serve leader).
pub(crate) fn operator(global: &GlobalArgs) -> Option<etcdops_certs::CertDetails> {
    let fleet = crate::fleet::Fleet::load(&global.fleet).ok()?;
    fleet.tls.files().details().ok().map(|(_, details)| details)
}

/// The home etcd when `op list|show|resume|abort|prune` use the serve replicas' journal there: no `--journal` /
/// the serve replicas' journal there: no `--journal` / `$ETCDOPS_JOURNAL` given, and the fleet
/// file (when there is one) says `[home] journal = "home"`.
pub(crate) fn home_journal(global: &GlobalArgs, args: &JournalArgs) -> anyhow::Result<Option<HomeEtcd>> {
    if args.journal.is_some() || !global.fleet.exists() {
        return Ok(None);
    }
    let fleet = crate::fleet::Fleet::load(&global.fleet)?;
    Ok(fleet.home.filter(|h| h.journal == JournalLocation::Home))
}

/// `etcdops op list` options.
#[derive(Debug, Clone, Args)]
pub struct OpListArgs {
    #[command(flatten)]
    pub journal: JournalArgs,
    /// List every operation, including finished ones not updated in the last 7 days.
    #[arg(long)]
    pub all: bool,
}

/// `etcdops op show` options.
#[derive(Debug, Clone, Args)]
pub struct OpShowArgs {
    #[command(flatten)]
    pub journal: JournalArgs,
    /// The operation's ID, or a prefix of it no other ID shares.
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `op list -w json`: the journal, what was left out, and the operations listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpListReport {
    /// The journal file read.
    pub journal: PathBuf,
    /// The `--cluster` filter, if any.
    pub cluster: Option<String>,
    /// `--all`: nothing hidden for age.
    pub all: bool,
    /// Finished operations not updated in the last 7 days, left out without `--all`.
    pub hidden: usize,
    /// The operations listed, newest first.
    pub operations: Vec<OperationRecord>,
}

/// Which operations `op list` shows: the cluster's (when given); without `all`, running ones and
/// those updated within [`RECENT_SECS`] of `now_unix`. Returns them and how many were hidden for age.
pub fn select(
    ops: Vec<OperationRecord>,
    cluster: Option<&str>,
    all: bool,
    now_unix: i64,
) -> (Vec<OperationRecord>, usize) {
    let (shown, hidden): (Vec<_>, Vec<_>) = ops
        .into_iter()
        .filter(|op| cluster.is_none_or(|c| op.cluster == c))
        .partition(|op| all || !op.state.is_final() || op.updated_at_unix >= now_unix - RECENT_SECS);
    (shown, hidden.len())
}

fn render_list_report(report: &OpListReport) -> String {
    let mut text = ops::render_list(&report.operations);
    if report.hidden > 0 {
        text.push_str(&format!(
            "{} finished operation{} older than 7 days not shown; --all shows {}\n",
            report.hidden,
            if report.hidden == 1 { "" } else { "s" },
            if report.hidden == 1 { "it" } else { "them" },
        ));
    }
    text
}

/// `etcdops op list`.
pub(crate) async fn list(
    global: &GlobalArgs,
    args: &OpListArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let (path, records) = if let Some(home) = home_journal(global, &args.journal)? {
        tokio::task::spawn_blocking(move || {
            let journal = Journal::etcd(journal::EtcdStore::connect(&home, None)?);
            Ok::<_, JournalError>((journal.path().to_path_buf(), journal.list()?))
        })
        .await??
    } else {
        let path = args.journal.path();
        if path.exists() {
            let journal_args = args.journal.clone();
            let records = tokio::task::spawn_blocking(move || journal_args.open()?.list()).await??;
            (path, records)
        } else {
            (path, Vec::new())
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if crate::cli::clusters::wants_many(global)? {
        let pattern = global.cluster.as_deref().unwrap_or("*");
        let grouped = group_by_cluster(records, pattern, args.all, now, &path)?;
        return crate::cli::clusters::emit(
            out,
            global.write_out,
            &grouped,
            |r| r.cluster.clone().unwrap_or_default(),
            render_list_report,
        );
    }
    let (operations, hidden) = select(records, global.cluster.as_deref(), args.all, now);
    let report = OpListReport {
        journal: path,
        cluster: global.cluster.clone(),
        all: args.all,
        hidden,
        operations,
    };
    emit(out, global.write_out, &report, render_list_report)?;
    Ok(ExitStatus::Ok)
}

/// `op list --all-clusters` / `--cluster GLOB` (pure): the journal's
/// operations of every cluster `pattern` matches (the fleet file is not read),
/// one report per cluster in name order; a cluster with a failed operation
/// listed has a problem (it waits for `op resume` or `op abort`).
pub fn group_by_cluster(
    records: Vec<OperationRecord>,
    pattern: &str,
    all: bool,
    now_unix: i64,
    journal: &std::path::Path,
) -> Result<Grouped<OpListReport>, crate::fleet::FleetError> {
    let glob =
        crate::fleet::glob::Glob::new(pattern).map_err(|reason| crate::fleet::FleetError::BadPattern {
            pattern: pattern.to_string(),
            reason,
        })?;
    let mut names: Vec<String> = records
        .iter()
        .map(|op| op.cluster.clone())
        .filter(|c| glob.matches(c))
        .collect();
    names.sort();
    names.dedup();
    let results = names
        .into_iter()
        .map(|cluster| {
            let mine: Vec<OperationRecord> = records
                .iter()
                .filter(|op| op.cluster == cluster)
                .cloned()
                .collect();
            let (operations, hidden) = select(mine, None, all, now_unix);
            let ok = !operations.iter().any(|op| op.state == journal::OpState::Failed);
            let report = OpListReport {
                journal: journal.to_path_buf(),
                cluster: Some(cluster.clone()),
                all,
                hidden,
                operations,
            };
            (cluster, Ok((report, ok)))
        })
        .collect();
    Ok(grouped::group(results))
}

/// `etcdops op show ID`.
pub(crate) async fn show(
    global: &GlobalArgs,
    args: &OpShowArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    if let Some(home) = home_journal(global, &args.journal)? {
        let id = args.id.clone();
        let op = tokio::task::spawn_blocking(move || {
            Journal::etcd(journal::EtcdStore::connect(&home, None)?).find(&id)
        })
        .await??;
        emit(out, global.write_out, &op, ops::render_show)?;
        return Ok(ExitStatus::Ok);
    }
    let path = args.journal.path();
    if !path.exists() {
        return Err(JournalError::NotFound {
            path,
            id: args.id.clone(),
        }
        .into());
    }
    let (journal_args, id) = (args.journal.clone(), args.id.clone());
    let op = tokio::task::spawn_blocking(move || journal_args.open()?.find(&id)).await??;
    emit(out, global.write_out, &op, ops::render_show)?;
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::journal::{OpState, StepRecord};
    use crate::output::WriteOut;

    fn op(id: &str, cluster: &str, state: OpState, updated: i64) -> OperationRecord {
        OperationRecord {
            id: id.into(),
            kind: crate::plan::planner::OpKind::Defrag,
            cluster: cluster.into(),
            fleet: PathBuf::from("/etc/etcdops/fleet.toml"),
            operation: crate::plan::operation::Operation::Defrag {
                rule: None,
                compact: false,
                members: Vec::new(),
            },
            options: Default::default(),
            holder: "alice@ops1 (pid 1)".into(),
            operator: None,
            epoch: 1,
            state,
            created_at_unix: updated,
            updated_at_unix: updated,
            error: None,
            steps: vec![StepRecord::pending("defrag:etcd1", "defragment etcd1")],
        }
    }

    #[test]
    fn prune_takes_only_old_ended_operations() {
        let now = 100 * 86_400;
        let old = now - 31 * 86_400;
        let ops = vec![
            op("running", "prod-a", OpState::Running, old),
            op("paused", "prod-a", OpState::Paused, old),
            op("done", "prod-a", OpState::Succeeded, old),
            op("aborted", "prod-b", OpState::Aborted, old),
            op("failed", "prod-a", OpState::Failed, old),
            op("recent", "prod-a", OpState::Succeeded, now - 86_400),
        ];
        let month = 30 * 86_400;
        assert_eq!(prunable(&ops, None, month, false, now), ["done", "aborted"]);
        assert_eq!(
            prunable(&ops, None, month, true, now),
            ["done", "aborted", "failed"]
        );
        assert_eq!(prunable(&ops, Some("prod-a"), month, false, now), ["done"]);
        assert_eq!(prunable(&ops, None, 0, false, now), ["done", "aborted", "recent"]);
    }

    #[test]
    fn groups_operations_by_cluster() {
        let now = 100 * 86_400;
        let ops = vec![
            op("a1", "prod-a", OpState::Succeeded, now),
            op("b1", "prod-b", OpState::Failed, now),
            op("s1", "staging", OpState::Running, now),
            op("a0", "prod-a", OpState::Succeeded, now - 30 * 86_400),
        ];
        let path = std::path::Path::new("/j.redb");
        let g = group_by_cluster(ops.clone(), "*", false, now, path).expect("group");
        let names: Vec<String> = g
            .clusters
            .iter()
            .map(|o| match o {
                grouped::Outcome::Report(r) => format!(
                    "{}:{}:{}",
                    r.cluster.clone().unwrap_or_default(),
                    r.operations.len(),
                    r.hidden
                ),
                grouped::Outcome::Error(e) => e.cluster.clone(),
            })
            .collect();
        assert_eq!(names, ["prod-a:1:1", "prod-b:1:0", "staging:1:0"]);
        assert_eq!(g.failed, ["prod-b"]);
        assert!(!g.ok);
        let g = group_by_cluster(ops.clone(), "prod-a", true, now, path).expect("group");
        assert!(g.ok && g.total == 1);
        let g = group_by_cluster(ops, "none-*", false, now, path).expect("group");
        assert_eq!((g.ok, g.total), (true, 0));
    }

    #[test]
    fn the_journal_deletes_what_prune_chose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path().join("j.redb")).expect("open");
        for (id, state) in [("a", OpState::Succeeded), ("b", OpState::Running)] {
            journal.create(&op(id, "prod-a", state, 0)).expect("create");
        }
        assert_eq!(journal.delete(&["a".into(), "zzz".into()]).expect("delete"), 1);
        let left: Vec<String> = journal.list().expect("list").into_iter().map(|o| o.id).collect();
        assert_eq!(left, ["b"]);
    }

    #[test]
    fn lists_running_and_recent_unless_all() {
        let now = 100 * 86_400;
        let old = now - 8 * 86_400;
        let ops = vec![
            op("a", "prod-a", OpState::Running, old),
            op("b", "prod-a", OpState::Succeeded, old),
            op("c", "prod-a", OpState::Failed, now - 86_400),
            op("d", "prod-b", OpState::Aborted, now),
        ];
        let ids = |(shown, hidden): (Vec<OperationRecord>, usize)| {
            (shown.into_iter().map(|o| o.id).collect::<Vec<_>>(), hidden)
        };
        assert_eq!(
            ids(select(ops.clone(), None, false, now)),
            (vec!["a".into(), "c".into(), "d".into()], 1)
        );
        assert_eq!(ids(select(ops.clone(), None, true, now)).0.len(), 4);
        assert_eq!(
            ids(select(ops.clone(), Some("prod-a"), false, now)),
            (vec!["a".into(), "c".into()], 1)
        );
        assert_eq!(ids(select(ops, Some("prod-c"), true, now)), (vec![], 0));
    }

    fn run(args: &[&str]) -> anyhow::Result<(ExitStatus, String)> {
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("etcdops").chain(args.iter().copied()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let mut out = Vec::new();
        let status = runtime.block_on(crate::cli::run(&cli, &mut out))?;
        Ok((status, String::from_utf8(out)?))
    }

    #[test]
    fn list_and_show_read_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j/journal.redb");
        let p = path.to_str().expect("utf-8");

        // No journal yet: nothing listed, nothing created.
        let (status, text) = run(&["op", "list", "--journal", p]).expect("list");
        assert_eq!((status, text.as_str()), (ExitStatus::Ok, "no operations\n"));
        assert!(!path.exists());
        let err = run(&["op", "show", "x", "--journal", p]).expect_err("missing");
        assert!(err.downcast_ref::<JournalError>().is_some(), "{err}");

        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let j = Journal::open(&path).expect("open");
        j.create(&op(
            "defrag-20261125T183000Z-3f9a",
            "prod-a",
            OpState::Running,
            now,
        ))
        .expect("create");
        j.create(&op(
            "restart-20261125T183000Z-0b12",
            "prod-b",
            OpState::Succeeded,
            now - 30 * 86_400,
        ))
        .expect("create");

        let (status, text) = run(&["op", "list", "--journal", p]).expect("list");
        assert_eq!(status, ExitStatus::Ok);
        assert!(
            text.contains("defrag-20261125T183000Z-3f9a") && !text.contains("restart-"),
            "{text}"
        );
        assert!(
            text.contains("1 finished operation older than 7 days not shown; --all shows it"),
            "{text}"
        );

        let (_, json) = run(&["op", "list", "--all", "-w", "json", "--journal", p]).expect("list");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["operations"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["hidden"], 0);
        assert_eq!(v["operations"][0]["steps"][0]["state"], "pending");

        let (_, json) = run(&[
            "--cluster",
            "prod-b",
            "op",
            "list",
            "--all",
            "-w",
            "json",
            "--journal",
            p,
        ])
        .expect("list");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["operations"][0]["id"], "restart-20261125T183000Z-0b12");
        assert_eq!(v["cluster"], "prod-b");

        let (status, text) = run(&["op", "show", "defrag-", "--journal", p]).expect("show");
        assert_eq!(status, ExitStatus::Ok);
        assert!(
            text.starts_with("operation: defrag-20261125T183000Z-3f9a\n"),
            "{text}"
        );
        let (_, json) = run(&["op", "show", "restart", "-w", "json", "--journal", p]).expect("show");
        let shown: OperationRecord = serde_json::from_str(&json).expect("record");
        assert_eq!(shown.state, OpState::Succeeded);
        assert_eq!(WriteOut::default(), WriteOut::Table);
    }
}
