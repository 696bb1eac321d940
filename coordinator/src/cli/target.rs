//! The cluster a command works on: the fleet file, the chosen cluster, and agents reached with the coordinator's identity.
//!
//! [`require_operator`] refuses, before any agent is dialled, a command
//! that changes something when the fleet's `[tls]` certificate is an
//! observer's: one clear message instead of one PermissionDenied per agent.

use anyhow::Context;
use etcdops_certs::{Access, Role};

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
    if own.role.and_then(Role::access).is_none() {
        tracing::warn!(
            cert = %fleet.tls.cert.display(),
            "the certificate in [tls] is {}, not an operator or observer certificate: agents will refuse it",
            own.describe()
        );
    }
    tracing::debug!(identity = %own.describe(), "coordinator identity");
    Ok(Agents::new(tls, global.timeout))
}

/// A command the fleet's certificate may not run, or a member it does not know.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessError {
    #[error(
        "`etcdops {command}` changes the cluster or reads the audit trail and needs an operator certificate; \
         [tls] cert in {fleet} ({cert}) is {identity}, read-only. Point [tls] at an operator certificate \
         (etcdops certs issue operator --name NAME)"
    )]
    NeedsOperator {
        command: &'static str,
        fleet: String,
        cert: String,
        identity: String,
    },
    #[error("--member {member}: no such member in cluster {cluster} (members: {members})")]
    UnknownMember {
        member: String,
        cluster: String,
        members: String,
    },
}

/// Refuses `command` (one that needs the operator role on the agents) when
/// the fleet's `[tls]` certificate is an observer's. Anything it cannot
/// read is left for the command itself to report.
pub(crate) fn require_operator(global: &GlobalArgs, command: &'static str) -> Result<(), AccessError> {
    let Ok(fleet) = Fleet::load(&global.fleet) else {
        return Ok(());
    };
    let Ok(own) = fleet.tls.files().identity() else {
        return Ok(());
    };
    match own.role.and_then(Role::access) {
        Some(access) if !access.allows(Access::Operator) => Err(AccessError::NeedsOperator {
            command,
            fleet: global.fleet.display().to_string(),
            cert: fleet.tls.cert.display().to_string(),
            identity: own.describe(),
        }),
        _ => Ok(()),
    }
}
