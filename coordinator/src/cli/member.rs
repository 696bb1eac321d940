//! `etcdops member ...`: the cluster's membership.

use std::io::Write;

use clap::{Args, Subcommand};

use super::maintain::snapshot_to;
use super::operate::{Planned, RunArgs, observe, plan_error, run_plan};
use crate::cli::target::{Target, target};
use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::fleet::{AgentUrl, Member};
use crate::output::members;
use crate::plan::membership::{self, HostView, Joining, MembershipArgs};
use crate::plan::operation::Operation;
use crate::plan::view::ClusterView;

/// `etcdops member` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum MemberCommand {
    /// List the members as etcd reports them, like `etcdctl member list`.
    #[command(long_about = LIST_LONG_ABOUT, after_help = LIST_AFTER_HELP)]
    List,
    /// Add a member learner-first: add as learner, configure and start it, wait until caught up, promote.
    #[command(long_about = ADD_ABOUT, after_help = ADD_AFTER_HELP)]
    Add(AddArgs),
    /// Remove a member, refusing when the healthy voters left would not keep quorum.
    #[command(long_about = REMOVE_ABOUT, after_help = REMOVE_AFTER_HELP)]
    Remove(RemoveArgs),
    /// Replace a member by a new host in one journaled operation, never lowering fault tolerance.
    #[command(long_about = REPLACE_ABOUT, after_help = REPLACE_AFTER_HELP)]
    Replace(ReplaceArgs),
    /// Promote a learner to voter (etcd waits until it is in sync; so does this).
    #[command(
        after_help = "Example:\n  etcdops member promote etcd4 --yes\n\nExit codes: 0 promoted, 1 refused or failed, 2 usage, 3 busy."
    )]
    Promote(PromoteArgs),
}

const ADD_ABOUT: &str = "\
Add a member to the cluster, learner-first, as one journaled and resumable operation.

Preflight, before anything changes: the cluster passes the usual checks (every member healthy,
one leader, no alarm); no learner or never-started member is pending (etcd allows one learner,
and an unstarted voter counts against quorum); the new host's agent answers, its etcd is not
running, its disk is within the fsync threshold, and a data dir with old member data is renamed
aside first (never deleted).

Then: etcd adds the member as a learner (no vote: quorum is unchanged); the new host's agent
writes etcd's environment (initial-cluster-state existing, the full initial cluster) and starts
etcd; etcdops waits until it has caught up with the leader, promotes it (etcd refuses until the
learner is in sync; the agent retries), checks it is a healthy voter and adds it to the fleet
file. If a step fails before promotion the learner is removed again, its etcd stopped and its
data dir renamed: no stuck voter, no stale member.

The new host runs an etcdops agent with a certificate from the fleet CA and etcd installed but
not started (`etcdops sandbox up --spares 1` gives one locally). Peer and client URLs default
to the agent's host with ports 2380 and 2379, in the scheme the cluster's members use.";

const ADD_AFTER_HELP: &str = "\
Examples:
  etcdops member add etcd4 --agent https://198.18.0.14:7443 --dry-run
  etcdops member add etcd4 --agent https://198.18.0.14:7443 --yes
  etcdops member add etcd4 --agent https://etcd4.example:7443 --peer-url https://10.0.0.14:2380 --yes

Exit codes: 0 added and healthy, 1 refused or stopped (rolled back before promotion), 2 usage,
3 another operation holds the cluster.";

const REMOVE_ABOUT: &str = "\
Remove a member: by NAME, or by its ID (hex, as `member list` shows it).

Identity guard: the member must be the same in the fleet file and in the cluster — its name, the
ID its agent reports, and a peer URL on its agent's host; any disagreement is refused. Quorum
guard: the voters that stay must include a healthy quorum of the smaller cluster; --force
removes anyway and says what is lost. A leader hands leadership over first. The removed host's
agent then stops etcd and renames its data dir aside (never deleted); a host that does not answer
is left as it is (etcd refuses to rejoin a removed member). The fleet file is updated last.

The first step saves a verified snapshot of a healthy, caught-up member: into the cluster's
backup target when the fleet file has a [clusters.backup] table, else into `snapshots/` beside
the journal (the plan names where; `etcdops op show OP` names the file). --no-snapshot skips it.";

const REMOVE_AFTER_HELP: &str = "\
Examples:
  etcdops member remove etcd3 --dry-run
  etcdops member remove 8e9e05c52164694d --yes
  etcdops member remove etcd3 --no-snapshot --yes

Exit codes: 0 removed, 1 refused or stopped, 2 usage (unknown member, fleet and cluster disagree),
3 another operation holds the cluster.";

const REPLACE_ABOUT: &str = "\
Replace member OLD by a new host NEW, in one journaled, resumable operation, in the order that
never lowers fault tolerance below today's:

  OLD alive: NEW joins as a learner, catches up, is promoted; then OLD hands over leadership if it
             leads, is removed, stopped and its data dir renamed aside.
  OLD dead:  OLD is removed first (it gives no fault tolerance now, and a dead voter plus a
             learner is one failure from losing quorum), then NEW joins learner-first.

The checks of `member add` and `member remove` apply, and like `member remove` it starts with a
verified snapshot (into the backup target, else `snapshots/` beside the journal) unless
--no-snapshot is given.";

const REPLACE_AFTER_HELP: &str = "\
Examples:
  etcdops member replace etcd2 --with etcd4 --agent https://198.18.0.14:7443 --dry-run
  etcdops member replace etcd2 --with etcd4 --agent https://198.18.0.14:7443 --yes

Exit codes: 0 replaced, 1 refused or stopped, 2 usage, 3 another operation holds the cluster.";

/// Where the joining host is and the URLs its etcd uses.
#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The new host's agent, e.g. https://198.18.0.14:7443.
    #[arg(long, value_name = "URL")]
    pub agent: String,
    /// The new member's peer URL (default: the agent's host, port 2380, the cluster's scheme).
    #[arg(long, value_name = "URL")]
    pub peer_url: Option<String>,
    /// The new member's client URL (default: the agent's host, port 2379, the cluster's scheme).
    #[arg(long, value_name = "URL")]
    pub client_url: Option<String>,
}

/// `etcdops member add`
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The new member's name (etcd's --name, and its name in the fleet file).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub join: JoinArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `etcdops member remove`
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// The member's name, or its ID in hex.
    #[arg(value_name = "NAME|ID")]
    pub member: String,
    /// Remove even when the healthy voters left are not a quorum (an outage until they are).
    #[arg(long)]
    pub force: bool,
    /// Do not save a verified snapshot first (into the backup target, or snapshots/ beside the journal).
    #[arg(long)]
    pub no_snapshot: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `etcdops member replace`
#[derive(Debug, Clone, Args)]
pub struct ReplaceArgs {
    /// The member to replace (name or hex ID).
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The new member's name.
    #[arg(long = "with", value_name = "NEW")]
    pub new: String,
    #[command(flatten)]
    pub join: JoinArgs,
    /// Do not save a verified snapshot first (into the backup target, or snapshots/ beside the journal).
    #[arg(long)]
    pub no_snapshot: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `etcdops member promote`
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The learner's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The joining host from the arguments, URLs defaulted from the cluster's schemes.
fn joining(view: &ClusterView, name: &str, join: &JoinArgs) -> anyhow::Result<Joining> {
    let agent = AgentUrl::parse(&join.agent)
        .map_err(|e| crate::plan::planner::PlanError::Usage(format!("--agent {}: {e}", join.agent)))?;
    let scheme = |urls: fn(&crate::plan::view::EtcdMember) -> &Vec<String>| {
        view.membership()
            .iter()
            .flat_map(|m| urls(m).iter())
            .find_map(|u| u.split_once("://").map(|(s, _)| s.to_string()))
            .unwrap_or_else(|| "http".to_string())
    };
    let host = agent.host().to_string();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let peer_url = join
        .peer_url
        .clone()
        .unwrap_or_else(|| format!("{}://{host}:2380", scheme(|m| &m.peer_urls)));
    let client_url = join
        .client_url
        .clone()
        .unwrap_or_else(|| format!("{}://{host}:2379", scheme(|m| &m.client_urls)));
    for (flag, url) in [("--peer-url", &peer_url), ("--client-url", &client_url)] {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(',') {
            anyhow::bail!(crate::plan::planner::PlanError::Usage(format!(
                "{flag} {url}: one http:// or https:// URL is needed"
            )));
        }
    }
    Member::new(name, &join.agent)?;
    Ok(Joining {
        name: name.to_string(),
        agent: join.agent.clone(),
        peer_url,
        client_url,
    })
}

/// What the joining host's agent says.
async fn host_view(target: &Target, joining: &Joining) -> anyhow::Result<HostView> {
    let member = Member::new(&joining.name, &joining.agent)?;
    let reply = target
        .agents
        .get_status(std::slice::from_ref(&member))
        .await
        .pop();
    let mut host = HostView::default();
    match reply.map(|r| r.result) {
        Some(Ok(status)) => {
            host.etcd_running = status.member.as_ref().is_some_and(|m| m.reachable);
            if let Some(d) = &status.data_dir {
                host.data_dir_has_wal = d.has_wal;
                host.data_dir = d.path.clone();
            }
            if let Some(disk) = status
                .disk
                .as_ref()
                .filter(|d| d.error.is_empty() && d.writes > 0)
            {
                host.disk_within_threshold = Some(disk.within_threshold);
                host.disk_detail = format!("fsync p99 {:.1} ms", disk.p99_us as f64 / 1000.0);
            }
        }
        Some(Err(e)) => host.unreachable = Some(e.to_string()),
        None => host.unreachable = Some("no reply".into()),
    }
    Ok(host)
}

pub(crate) async fn change(
    global: &GlobalArgs,
    command: &MemberCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let view = observe(&target).await;
    let (plan, run, force, args, snapshot) = match command {
        MemberCommand::List => return list(global, out).await,
        MemberCommand::Add(a) => {
            let joining = joining(&view, &a.name, &a.join)?;
            let host = host_view(&target, &joining).await?;
            let plan =
                membership::plan_add(&view, &joining, &host, a.run.ignore_slow_disk).map_err(plan_error)?;
            (
                plan,
                &a.run,
                false,
                MembershipArgs {
                    joining: Some(joining),
                    leaving: None,
                    rejoining: Vec::new(),
                },
                None,
            )
        }
        MemberCommand::Remove(a) => {
            let leaving = membership::resolve_leaving(&view, &a.member).map_err(plan_error)?;
            let snapshot = snapshot_to(&target.cluster, &a.run, a.no_snapshot);
            let plan =
                membership::plan_remove(&view, &leaving, a.force, snapshot.as_ref()).map_err(plan_error)?;
            (
                plan,
                &a.run,
                a.force,
                MembershipArgs {
                    joining: None,
                    leaving: Some(leaving),
                    rejoining: Vec::new(),
                },
                snapshot,
            )
        }
        MemberCommand::Replace(a) => {
            let leaving = membership::resolve_leaving(&view, &a.old).map_err(plan_error)?;
            let joining = joining(&view, &a.new, &a.join)?;
            let host = host_view(&target, &joining).await?;
            let snapshot = snapshot_to(&target.cluster, &a.run, a.no_snapshot);
            let plan = membership::plan_replace(
                &view,
                &leaving,
                &joining,
                &host,
                a.run.ignore_slow_disk,
                snapshot.as_ref(),
            )
            .map_err(plan_error)?;
            (
                plan,
                &a.run,
                false,
                MembershipArgs {
                    joining: Some(joining),
                    leaving: Some(leaving),
                    rejoining: Vec::new(),
                },
                snapshot,
            )
        }
        MemberCommand::Promote(a) => {
            let plan = membership::plan_promote(&view, &a.name).map_err(plan_error)?;
            (plan, &a.run, false, MembershipArgs::default(), None)
        }
    };
    let operation = Operation::membership_op(plan.kind, args, force)
        .ok_or_else(|| anyhow::anyhow!("{} is not a membership operation", plan.kind))?
        .with_snapshot(snapshot);
    let planned = Planned { plan, operation };
    run_plan(global, target, &view, planned, run, out).await
}

const LIST_LONG_ABOUT: &str = "\
List the cluster's members as etcd reports them: ID, whether the member has
started (an added member stays unstarted, with no name, until its process
joins), name, peer and client URLs, whether it is a learner, and the
fleet's agent for it (\"-\" when the fleet does not list that name).

Every agent is asked for its member's view; the leader's view is shown.
Views that disagree, agents that do not answer, and fleet members missing
from the membership are reported under the table, and make the exit code 1.";

const LIST_AFTER_HELP: &str = "\
Examples:
  etcdops member list
  etcdops member list -w json | jq -r '.members[] | select(.status == \"unstarted\") | .id'

Exit codes: 0 every agent answered and all agree, 1 otherwise, 2 usage or configuration error.";

pub(crate) async fn list(global: &GlobalArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let replies = target.agents.get_status(&target.cluster.members).await;
    let views = replies.into_iter().map(members::view).collect();
    let report = members::evaluate(&target.cluster, views);
    emit(out, global.write_out, &report, members::render_table)?;
    Ok(ExitStatus::from_ok(report.ok))
}
