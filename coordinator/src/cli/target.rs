//! The cluster a command works on: the fleet file, the chosen cluster, and agents reached with the coordinator's identity.

use anyhow::Context;
use etcdops_certs::Role;

use crate::agents::Agents;
use crate::cli::GlobalArgs;
use crate::fleet::{Cluster, Fleet};

/// What cluster commands need.
pub(crate) struct Target {
    pub cluster: Cluster,
    pub agents: Agents,
}

/// Loads the fleet, picks the cluster and loads the coordinator's TLS identity.
pub(crate) fn target(global: &GlobalArgs) -> anyhow::Result<Target> {
    let fleet = Fleet::load(&global.fleet)?;
    let cluster = fleet.select(global.cluster.as_deref())?.clone();
    tracing::debug!(cluster = %cluster.name, members = cluster.members.len(), "target");
    Ok(Target {
        cluster,
        agents: agents(global, &fleet)?,
    })
}

/// Agents reached with the fleet's `[tls]` identity, each given `--timeout`.
pub(crate) fn agents(global: &GlobalArgs, fleet: &Fleet) -> anyhow::Result<Agents> {
    // Our own certificate first: one clear error instead of every agent refusing it (issue 17).
    crate::cli::cert_lifecycle::check_own(&fleet.tls)?;
    let tls = fleet.tls.files().client().with_context(|| {
        format!(
            "cannot load the coordinator's TLS identity ([tls] in {})",
            global.fleet.display()
        )
    })?;
    let own = tls.identity();
    if own.role != Some(Role::Coordinator) {
        tracing::warn!(
            cert = %fleet.tls.cert.display(),
            "the certificate in [tls] is {}, not a coordinator certificate: agents will refuse it",
            own.describe()
        );
    }
    tracing::debug!(identity = %own.describe(), "coordinator identity");
    Ok(Agents::new(tls, global.timeout))
}
