//! The roles a certificate of the fleet CA can carry, and what each may do
//! on the agent API ([`Access`]).
//!
//! Clients of the agent API are `observer` (read-only) or `operator`
//! (everything). `coordinator` is the older name of `operator`: certificates
//! issued with it before roles existed keep operator rights, so existing
//! fleets keep working; new ones are issued as `operator`.

use std::fmt;
use std::str::FromStr;

/// What a certificate is for. Written into the subject's organizational
/// unit (`OU=etcdops-<role>`), so it is signed by the CA and cannot be
/// changed by the holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An etcdops agent's serving certificate (one per etcd host).
    Agent,
    /// A client that may call every agent RPC (defrag, restart, restore, ...).
    Operator,
    /// A read-only client: status, health, metrics, hashkv, snapshots.
    Observer,
    /// The older name of [`Role::Operator`] (operator rights); still issued
    /// and accepted so that fleets set up before roles keep working.
    Coordinator,
    /// etcd's client-facing server certificate (`--cert-file`).
    EtcdServer,
    /// etcd's peer certificate (`--peer-cert-file`), server and client.
    EtcdPeer,
    /// A client certificate for etcdctl or the agent talking to etcd.
    EtcdClient,
}

impl Role {
    /// Every role, in the order `certs issue --help` lists them.
    pub const ALL: [Role; 7] = [
        Role::Agent,
        Role::Operator,
        Role::Observer,
        Role::Coordinator,
        Role::EtcdServer,
        Role::EtcdPeer,
        Role::EtcdClient,
    ];

    /// The short name used on the command line and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Observer => "observer",
            Role::Coordinator => "coordinator",
            Role::EtcdServer => "etcd-server",
            Role::EtcdPeer => "etcd-peer",
            Role::EtcdClient => "etcd-client",
        }
    }

    /// The organizational unit that carries the role in the subject.
    pub fn organizational_unit(self) -> String {
        format!("etcdops-{}", self.as_str())
    }

    /// Parses an organizational unit written by [`Role::organizational_unit`].
    pub fn from_organizational_unit(ou: &str) -> Option<Role> {
        ou.strip_prefix("etcdops-").and_then(|r| r.parse().ok())
    }

    /// What a client certificate of this role may do on the agent API;
    /// `None` for roles that may not call it at all (agents, etcd's).
    pub fn access(self) -> Option<Access> {
        match self {
            Role::Operator | Role::Coordinator => Some(Access::Operator),
            Role::Observer => Some(Access::Observer),
            Role::Agent | Role::EtcdServer | Role::EtcdPeer | Role::EtcdClient => None,
        }
    }

    /// Whether certificates of this role serve TLS (need host names).
    pub fn is_server(self) -> bool {
        matches!(self, Role::Agent | Role::EtcdServer | Role::EtcdPeer)
    }

    /// Whether certificates of this role are used as TLS clients.
    /// Server certificates carry clientAuth too: etcd's grpc-gateway and its
    /// peers reuse them as client certificates.
    pub fn is_client(self) -> bool {
        true
    }
}

/// What a client may do on the agent API. Ordered: an operator may do
/// everything an observer may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Reads only: nothing on the host or in etcd changes.
    Observer,
    /// Everything, reads included.
    Operator,
}

impl Access {
    /// The role to issue for this access (`etcdops certs issue <role>`).
    pub fn role(self) -> Role {
        match self {
            Access::Observer => Role::Observer,
            Access::Operator => Role::Operator,
        }
    }

    /// Whether a caller with this access may call an RPC that needs `needed`.
    pub fn allows(self, needed: Access) -> bool {
        self >= needed
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role().as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown certificate role {0:?}: expected one of agent, operator, observer, coordinator, etcd-server, etcd-peer, etcd-client"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_names_and_ou() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                Role::from_organizational_unit(&role.organizational_unit()),
                Some(role)
            );
        }
        assert!("admin".parse::<Role>().is_err());
        assert_eq!(Role::Observer.organizational_unit(), "etcdops-observer");
        assert_eq!(Role::from_organizational_unit("agent"), None);
    }

    #[test]
    fn coordinator_is_an_operator_and_servers_are_nothing() {
        assert_eq!(Role::Coordinator.access(), Some(Access::Operator));
        assert_eq!(Role::Operator.access(), Some(Access::Operator));
        assert_eq!(Role::Observer.access(), Some(Access::Observer));
        for role in [Role::Agent, Role::EtcdServer, Role::EtcdPeer, Role::EtcdClient] {
            assert_eq!(role.access(), None, "{role}");
        }
        assert!(Access::Operator.allows(Access::Observer));
        assert!(Access::Operator.allows(Access::Operator));
        assert!(Access::Observer.allows(Access::Observer));
        assert!(!Access::Observer.allows(Access::Operator));
    }
}
