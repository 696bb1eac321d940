//! `etcdops health`: a linearizable read through every member.

use std::io::Write;

use crate::agents::Agents;
use crate::cli::target::target;
use crate::cli::{GlobalArgs, clusters, emit};
use crate::exit::ExitStatus;
use crate::fleet::Cluster;
use crate::observe;
use crate::output::health::{self, HealthReport};

pub(crate) const LONG_ABOUT: &str = "\
Check every member's health: each agent performs a linearizable read
through its local member and reports whether it succeeded and how long it
took (TOOK). A member is healthy only when the read succeeded; a read
needs a leader and a quorum, so an unhealthy cluster shows on every member.

All agents are asked at once, each bounded by --timeout, for the read and
for their status. The cluster is healthy (exit 0) only when every member is
and the cluster checks that `status` and every mutating command run find
no problem (listed below the table in the same words): a fleet member whose
agent serves an etcd member of another name, differing cluster IDs, no or
two leaders, an alarm. A disk over its fsync threshold is a warning.";

pub(crate) const AFTER_HELP: &str = "\
Examples:
  etcdops health
  etcdops health -w json | jq -e .ok
  etcdops --cluster prod-b health --timeout 500ms
  etcdops health --all-clusters -w json | jq -r '.failed[]'

Exit codes: 0 every member healthy, 1 some member unhealthy or unreachable, 2 usage or configuration error.";

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
            health::render_table,
        );
    }
    let target = target(global)?;
    let agents = target.agents.reusing_channels();
    let report = report(&agents, &target.cluster).await;
    emit(out, global.write_out, &report, health::render_table)?;
    Ok(ExitStatus::from_ok(report.ok))
}

/// One cluster's health report: status and the read on every agent at once, over one channel each.
async fn report(agents: &Agents, cluster: &Cluster) -> HealthReport {
    let members = &cluster.members;
    let (status, replies) = tokio::join!(agents.get_status(members), agents.health(members));
    let view = observe::view_of(&cluster.name, members, &status, Some(&replies));
    let members = replies.into_iter().map(health::member_health).collect();
    health::evaluate(&view, members)
}
