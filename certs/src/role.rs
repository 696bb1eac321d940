//! The roles a certificate of the fleet CA can carry.

use std::fmt;
use std::str::FromStr;

/// What a certificate is for. Written into the subject's organizational
/// unit (`OU=etcdops-<role>`), so it is signed by the CA and cannot be
/// changed by the holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An etcdops agent's serving certificate (one per etcd host).
    Agent,
    /// The coordinator's client certificate: the only role that may call agents.
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
    pub const ALL: [Role; 5] = [
        Role::Agent,
        Role::Coordinator,
        Role::EtcdServer,
        Role::EtcdPeer,
        Role::EtcdClient,
    ];

    /// The short name used on the command line and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
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

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown certificate role {0:?}: expected one of agent, coordinator, etcd-server, etcd-peer, etcd-client"
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
        assert_eq!(Role::from_organizational_unit("agent"), None);
    }
}
