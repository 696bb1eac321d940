//! `etcdops backup run|list|prune`: backup sets in a local directory or an S3 bucket.

use std::io::Write;

use clap::{Args, Subcommand};

use crate::backup::{self, BackupEnv, RunOptions, Setup, Target, TargetUrl, report};
use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::fleet::{Cluster, Fleet};

pub(crate) const LONG_ABOUT: &str = "\
Backup sets: verified snapshots stored in a local directory or an S3 bucket, with retention.

`run` saves a verified snapshot through a member's agent (as `snapshot save`), stores it in the
cluster's target as <cluster>-<YYYYMMDDTHHMMSSZ>.db and then its sidecar <name>.json (a backup
without its sidecar is incomplete), reads back what was stored, and applies the retention policy.
`list` shows every backup and its state; `prune` applies the policy (`--dry-run` to see it first).

The target and policy come from the cluster's [clusters.backup] table in the fleet file:

  [clusters.backup]
  target = \"s3://etcd-backups/prod-a\"   # or \"file:///var/backups/etcd/prod-a\"
  s3_endpoint = \"https://minio.example.com:9000\"   # S3-compatible servers only
  s3_region = \"us-east-1\"                # the default
  keep_last = 3                          # the 3 newest
  keep_hourly = 24                       # the newest of each of the last 24 hours with one
  keep_daily = 7                         # the newest of each of the last 7 days with one
  keep_within = \"2d\"                     # everything younger than 2 days

The newest verified backup is never deleted, whatever the policy; prune refuses without one.
--timeout also bounds connecting to S3; the first request gives up after three times it.

Environment:
  AWS_ACCESS_KEY_ID      S3 credentials, with AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN
                         for temporary ones); never read from the fleet file
  TMPDIR                 where a snapshot is staged before an S3 upload (room for one snapshot)";

/// `etcdops backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Save a verified snapshot into the backup target, verify it there, then prune.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// List the backups in the target with their state.
    #[command(
        after_help = "Examples:\n  etcdops backup list\n  etcdops backup list -w json --target s3://etcd-backups/prod-a\n  etcdops backup list --all-clusters   every cluster's backups in its own target"
    )]
    List(TargetArgs),
    /// Delete the backups the retention policy does not keep.
    #[command(after_help = "Examples:\n  etcdops backup prune --dry-run\n  etcdops backup prune -w json")]
    Prune(PruneArgs),
    /// Restore a backup into a throwaway etcd and compare its figures (a restore drill).
    #[command(after_help = crate::cli::drill::AFTER_HELP)]
    Drill(crate::cli::drill::DrillArgs),
}

const RUN_HELP: &str = "Examples:\n  etcdops backup run\n  etcdops --cluster prod-a backup run --member etcd2 --no-prune\n  \
AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... etcdops backup run --target s3://etcd-backups/prod-a";

/// The target, when not the fleet file's.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Backup target instead of the fleet file's: file:///dir or s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    pub target: Option<TargetUrl>,
}

/// `etcdops backup run` options.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Member to snapshot. Default: a healthy, caught-up follower.
    #[arg(long)]
    pub member: Option<String>,
    /// Store the backup but do not apply the retention policy.
    #[arg(long)]
    pub no_prune: bool,
}

/// `etcdops backup prune` options.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The fleet's cluster (no TLS needed to read a target).
fn cluster(global: &GlobalArgs) -> anyhow::Result<Cluster> {
    let fleet = Fleet::load(&global.fleet)?;
    Ok(fleet.select(global.cluster.as_deref())?.clone())
}

fn open(global: &GlobalArgs, cluster: &Cluster, args: &TargetArgs) -> anyhow::Result<(Setup, Target)> {
    let setup = Setup::resolve(cluster, args.target.as_ref())?;
    let target = Target::open(&setup.url, &setup.s3, &BackupEnv::from_process(), global.timeout)?;
    Ok((setup, target))
}

pub(crate) async fn run(
    global: &GlobalArgs,
    command: &BackupCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    match command {
        BackupCommand::Run(args) => {
            let cluster = cluster(global)?;
            // backup::run checks the target before it calls any agent.
            let (setup, target) = open(global, &cluster, &args.target)?;
            let agents = crate::cli::target::target(global)?.agents;
            let opts = RunOptions {
                member: args.member.clone(),
                prune: !args.no_prune,
                progress: true,
            };
            let outcome = backup::run(&agents, &cluster, &target, &setup.retention, &opts).await?;
            let report = report::run_report(&cluster.name, target.url(), &outcome);
            crate::cli::emit(out, global.write_out, &report, report::render_run)?;
            Ok(ExitStatus::from_ok(report.ok))
        }
        BackupCommand::List(args) if crate::cli::clusters::wants_many(global)? => {
            list_many(global, args, out).await
        }
        BackupCommand::List(args) => {
            let cluster = cluster(global)?;
            let (_, target) = open(global, &cluster, args)?;
            let entries = backup::list(&target, &cluster.name).await?;
            let report = report::list_report(&cluster.name, target.url(), &entries);
            crate::cli::emit(out, global.write_out, &report, report::render_list)?;
            Ok(ExitStatus::Ok)
        }
        BackupCommand::Drill(args) => crate::cli::drill::run(global, args, out).await,
        BackupCommand::Prune(args) => {
            let cluster = cluster(global)?;
            let (setup, target) = open(global, &cluster, &args.target)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let pruned = backup::prune(&target, &cluster.name, &setup.retention, now, args.dry_run).await?;
            let report = report::prune_report(&cluster.name, target.url(), &pruned);
            crate::cli::emit(out, global.write_out, &report, report::render_prune)?;
            Ok(ExitStatus::from_ok(report.ok))
        }
    }
}

/// `backup list --all-clusters` / `--cluster GLOB`: each cluster's own target; a
/// cluster without one, or whose target cannot be read, is a problem.
async fn list_many(
    global: &GlobalArgs,
    args: &TargetArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    use crate::cli::clusters;
    if args.target.is_some() {
        anyhow::bail!(clusters::ScopeError::Unsupported {
            flag: "--target".into(),
            command: "backup list over several clusters (each lists its own [clusters.backup] target)",
        });
    }
    let fleet = Fleet::load(&global.fleet)?;
    let chosen = clusters::chosen(global, &fleet)?;
    let grouped = clusters::for_each(global, chosen, |cluster| async move {
        let (_, target) = open(global, &cluster, args)?;
        let entries = backup::list(&target, &cluster.name).await?;
        let report = report::list_report(&cluster.name, target.url(), &entries);
        let ok = report.ok;
        Ok((report, ok))
    })
    .await;
    clusters::emit(
        out,
        global.write_out,
        &grouped,
        |r| r.cluster.clone(),
        report::render_list,
    )
}
