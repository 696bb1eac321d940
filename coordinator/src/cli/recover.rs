//! `etcdops recover`: `nospace`, and `--force-new-cluster` for a cluster
//! that lost its majority.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::maintain;
use super::operate::{Planned, RunArgs, observe, run_plan};
use crate::cli::GlobalArgs;
use crate::cli::target::{Target, target};
use crate::exit::ExitStatus;
use crate::plan::membership::{Joining, MembershipArgs};
use crate::plan::operation::Operation;
use crate::plan::planner::PlanError;
use crate::plan::recover::{self, RecoverArgs};

pub(crate) const ABOUT: &str = "\
Recovery procedures, each a journaled plan.

`etcdops recover nospace`: the NOSPACE alarm (compact, rolling defrag, disarm, verify writes).

`etcdops recover --force-new-cluster [--from MEMBER]`: the cluster lost its majority (most
voters' hosts or data are gone; etcd serves nothing). Refused while a majority of voters is
healthy. The survivor is the member with the highest raft index among those whose etcd still
answers (`--from` must name that member or one equal to it). Then: a snapshot of the survivor
is written first (on this host); every other member whose agent answers has its etcd stopped
and disabled; the survivor is restarted once with ETCD_FORCE_NEW_CLUSTER=true, which makes it
a one-member cluster keeping its data, and the flag is removed from its env file right after
(a later restart with it would drop the members again); each other member is rejoined in
turn as a fresh learner (its old data dir renamed to <dir>.before-join-<time>, never
deleted), caught up and promoted; the cluster is verified (every member a healthy voter, one
leader, the same hashkv everywhere).

Members whose agent does not answer are left out, and the plan says so: make sure their etcd
is not running (power the hosts off) before going ahead, since a majority still running
elsewhere would serve as a second cluster; rejoin them later with `etcdops member replace`.
Writes the survivor never received are lost: that is what a lost majority costs. On a
terminal, going ahead takes typing the cluster's name (or --yes).";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  etcdops recover --force-new-cluster --dry-run
  etcdops recover --force-new-cluster --from etcd2
  etcdops recover nospace --yes

Exit codes: 0 recovered and healthy, 1 refused (nothing changed) or stopped (see `etcdops op
show`; resume with `etcdops op resume`), 2 usage, 3 another operation holds the cluster.";

/// `etcdops recover`
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RecoverCmd {
    #[command(subcommand)]
    pub procedure: Option<Procedure>,
    #[command(flatten)]
    pub quorum: QuorumArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Procedure {
    /// Out of space (NOSPACE alarm): compact, rolling defrag, disarm, verify writes work.
    #[command(long_about = maintain::NOSPACE_ABOUT, after_help = "Examples:\n  etcdops recover nospace --dry-run\n  etcdops recover nospace --yes")]
    Nospace(RunArgs),
}

/// `etcdops recover --force-new-cluster`
#[derive(Debug, Clone, Args)]
pub struct QuorumArgs {
    /// The majority is lost: rebuild the cluster from one survivor (see above).
    #[arg(long)]
    pub force_new_cluster: bool,
    /// The survivor (default: the member with the highest raft index whose etcd answers).
    #[arg(long, value_name = "MEMBER", requires = "force_new_cluster")]
    pub from: Option<String>,
    /// Where the survivor's snapshot is written first (default: `recover/` beside the journal).
    #[arg(long, value_name = "DIR", requires = "force_new_cluster")]
    pub snapshot_dir: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Asked for neither procedure.
#[derive(Debug, thiserror::Error)]
#[error(
    "say what to recover: `etcdops recover nospace` or `etcdops recover --force-new-cluster` (see --help)"
)]
pub struct NoProcedure;

pub(crate) async fn run(
    global: &GlobalArgs,
    cmd: &RecoverCmd,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    match &cmd.procedure {
        Some(Procedure::Nospace(run)) => maintain::recover_nospace(global, run, out).await,
        None if cmd.quorum.force_new_cluster => force_new_cluster(global, &cmd.quorum, out).await,
        None => Err(PlanError::Usage(NoProcedure.to_string()).into()),
    }
}

/// A recovery's executor sees the survivor and the members it rejoins only:
/// hosts left out (agent down) must not block its checks.
pub(crate) fn restrict(mut target: Target, args: &RecoverArgs) -> Target {
    target
        .cluster
        .members
        .retain(|m| m.name == args.survivor || args.rejoin.iter().any(|r| r.name == m.name));
    target
}

/// The rejoining members for the membership steps.
pub(crate) fn membership(target: &Target, args: &RecoverArgs) -> MembershipArgs {
    let rejoining = args
        .rejoin
        .iter()
        .filter_map(|r| {
            let agent = target.cluster.member(&r.name)?.agent.to_string();
            Some(Joining {
                name: r.name.clone(),
                agent,
                peer_url: r.peer_url.clone(),
                client_url: r.client_url.clone(),
            })
        })
        .collect();
    MembershipArgs {
        joining: None,
        leaving: None,
        rejoining,
    }
}

async fn force_new_cluster(
    global: &GlobalArgs,
    args: &QuorumArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    let recovery = recover::plan_recovery(&view, args.from.as_deref())?;
    let snapshot_dir = match &args.snapshot_dir {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
        None => {
            let journal = args
                .run
                .journal
                .clone()
                .unwrap_or_else(crate::journal::default_path);
            journal
                .parent()
                .map_or_else(|| PathBuf::from("recover"), |p| p.join("recover"))
        }
    };
    let recover_args = RecoverArgs {
        survivor: recovery.survivor.clone(),
        snapshot_dir,
        rejoin: recovery.rejoin.clone(),
        left_out: recovery.left_out.clone(),
        snapshot: None,
    };
    let plan = recover::plan(&target.cluster.name, &recovery);
    let target = restrict(target, &recover_args);
    let membership = membership(&target, &recover_args);
    // Checked like a restore: the agents of the survivor and of the members rejoined answer.
    let mut view = view;
    view.members.retain(|m| target.cluster.member(&m.name).is_some());
    let planned = Planned {
        plan,
        operation: Operation::RecoverQuorum {
            recover: recover_args,
            membership,
        },
    };
    run_plan(global, target, &view, planned, &args.run, out).await
}
