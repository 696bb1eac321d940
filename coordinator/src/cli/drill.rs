//! `etcdops backup drill`: restore a backup into a throwaway etcd and check
//! it (the library is `crate::drill`). Exit 0 when it passes, 1 when the
//! restored backup does not match (or the drill could not finish).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::backup::{BackupEnv, Setup, Target};
use crate::cli::GlobalArgs;
use crate::cli::backup::TargetArgs;
use crate::cli::op::JournalArgs;
use crate::drill::{self, DrillRequest, report};
use crate::duration;
use crate::exit::ExitStatus;
use crate::fleet::Fleet;

pub(crate) const AFTER_HELP: &str = "\
Takes the newest verified backup (or --backup NAME) from the cluster's backup target, checks the
file against its sidecar (size, sha256, revision), restores it into a throwaway single-member etcd
on 127.0.0.1 (etcdutl, else etcdctl 3.4; plain HTTP on loopback, its directory 0700 under
--work-dir), and compares the member's revision, key count and HashKV with the file's own. The
cluster itself is only read from its backup target: no fence is taken. The drill is journaled
(`etcdops op list` shows it, with the figures), and everything it created is removed on every way
out; a drill killed outright leaves a directory the next drill removes.

Exit codes: 0 passed, 1 the restored backup does not match (or the drill failed), 2 usage.

Examples:
  etcdops backup drill
  etcdops --cluster prod-a backup drill --backup prod-a-20261201T000000Z.db -w json";

/// `etcdops backup drill` options.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The backup to drill (its name in the target); default: the newest verified one.
    #[arg(long, value_name = "NAME")]
    pub backup: Option<String>,
    /// Where the throwaway etcd's data goes (default: `drills/` beside the journal).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The whole drill's time limit.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration::parse)]
    pub deadline: Duration,
    #[command(flatten)]
    pub journal: JournalArgs,
}

/// Where drills work by default: `drills/` beside the journal file.
pub(crate) fn default_work_dir(journal: &std::path::Path) -> PathBuf {
    journal
        .parent()
        .map_or_else(|| PathBuf::from("drills"), |p| p.join("drills"))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub(crate) async fn run(
    global: &GlobalArgs,
    args: &DrillArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let fleet = Fleet::load(&global.fleet)?;
    let cluster = fleet.select(global.cluster.as_deref())?.clone();
    let setup = Setup::resolve(&cluster, args.target.target.as_ref())?;
    let target = Target::open(&setup.url, &setup.s3, &BackupEnv::from_process(), global.timeout)?;
    let journal_path = args.journal.path();
    let journal = args.journal.open()?;
    let request = DrillRequest {
        cluster: cluster.name.clone(),
        fleet: global.fleet.clone(),
        target: &target,
        backup: args.backup.clone(),
        journal: &journal,
        drills_dir: args
            .work_dir
            .clone()
            .unwrap_or_else(|| default_work_dir(&journal_path)),
        deadline: args.deadline,
    };
    let report = drill::run(request, interrupted()).await?;
    crate::cli::emit(out, global.write_out, &report, report::render_drill)?;
    Ok(ExitStatus::from_ok(report.passed))
}
