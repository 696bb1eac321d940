//! `etcdops status`: every member's status through its agent.

use std::io::Write;

use crate::agents::Agents;
use crate::cli::target::target;
use crate::cli::{GlobalArgs, clusters, emit};
use crate::exit::ExitStatus;
use crate::fleet::Cluster;
use crate::observe;
use crate::output::status::{self, StatusReport};

pub(crate) const LONG_ABOUT: &str = "\
Show every member's status, as its agent sees it: the etcd member (ID,
version, database size and how much of it is in use, leadership, raft term
and index, revision, alarms and errors) and the etcd unit's state.

All agents are asked at once; an agent that cannot be reached or does not
answer within --timeout shows its error in the ERRORS column. A summary
line follows the table: the cluster ID, the leader, and how many members
are healthy.

Below the summary, one line per problem: the same checks, in the same
words, that every mutating command runs at --dry-run and before each step.
The cluster is unhealthy (exit 1) when a fleet member's agent serves an etcd
member of another name, an agent or a member is unreachable, members
disagree on the cluster ID or the leader, no member or two members lead, a
voter is missing from the fleet file, an alarm is raised, or a member
reports errors. A disk over its fsync threshold (the agent's periodic
probe) is a warning: the cluster is healthy, but mutating commands refuse
it unless given --ignore-slow-disk.";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  etcdops status
  etcdops --cluster prod-a status -w json | jq '.members[] | {name, db: .etcd.db_size}'
  etcdops status --timeout 2s
  etcdops status --all-clusters              every cluster, grouped, 16 at a time
  etcdops status --cluster 'prod-*' --parallel 4 -w json | jq -r '.failed[]'

Exit codes: 0 healthy, 1 unhealthy or unreachable, 2 usage or configuration error.";

pub(crate) async fn run(global: &GlobalArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    if clusters::wants_many(global)? {
        let (chosen, agents) = clusters::targets(global)?;
        let grouped = clusters::for_each(global, chosen, |cluster| {
            let agents = agents.clone();
            async move {
                let report = report(&agents, &cluster).await;
                let ok = report.ok;
                Ok((report, ok))
            }
        })
        .await;
        return clusters::emit(
            out,
            global.write_out,
            &grouped,
            |r| r.cluster.clone(),
            status::render_table,
        );
    }
    let target = target(global)?;
    let agents = target.agents.reusing_channels();
    let report = report(&agents, &target.cluster).await;
    emit(out, global.write_out, &report, status::render_table)?;
    Ok(ExitStatus::from_ok(report.ok))
}

/// One cluster's status report.
async fn report(agents: &Agents, cluster: &Cluster) -> StatusReport {
    let replies = agents.get_status(&cluster.members).await;
    let view = observe::view_of(&cluster.name, &cluster.members, &replies, None);
    let members = replies.into_iter().map(status::member_status).collect();
    status::evaluate(&view, members)
}
