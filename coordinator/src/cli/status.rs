//! `etcdops status`: every member's status through its agent.

use std::io::Write;

use crate::cli::target::target;
use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::observe;
use crate::output::status;

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

Exit codes: 0 healthy, 1 unhealthy or unreachable, 2 usage or configuration error.";

pub(crate) async fn run(global: &GlobalArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    let target = target(global)?;
    let replies = target.agents.get_status(&target.cluster.members).await;
    let view = observe::view_of(&target.cluster.name, &target.cluster.members, &replies, None);
    let members = replies.into_iter().map(status::member_status).collect();
    let report = status::evaluate(&view, members);
    emit(out, global.write_out, &report, status::render_table)?;
    Ok(ExitStatus::from_ok(report.ok))
}
