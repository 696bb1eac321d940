//! `etcdops member ...`: the cluster's membership.

use std::io::Write;

use clap::Subcommand;

use crate::cli::target::target;
use crate::cli::{GlobalArgs, emit};
use crate::exit::ExitStatus;
use crate::output::members;

/// `etcdops member` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum MemberCommand {
    /// List the members as etcd reports them, like `etcdctl member list`.
    #[command(long_about = LIST_LONG_ABOUT, after_help = LIST_AFTER_HELP)]
    List,
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
