//! PKI for an etcdops fleet and the one TLS setup both binaries share.
//!
//! - [`pki`]: a file-backed certificate authority that issues agent,
//!   coordinator and etcd certificates.
//! - [`role`]: the roles a certificate can carry (agent, operator, observer,
//!   coordinator = operator, etcd's) and the [`Access`] each gives on the
//!   agent API; the role is part of the certificate's subject.
//! - [`identity`]: reading the role and name back out of a peer certificate,
//!   and a certificate's validity window ([`Validity`]).
//! - [`inspect`]: a certificate's serial, names, validity and usages; the
//!   checks of a new leaf before it replaces one in use (issue 17), and of
//!   the coordinator's own client certificate.
//! - [`tls`]: the rustls/tonic configurations for the agent (server, mutual
//!   TLS) and the coordinator (client, checking the agent's role and member
//!   name), and the crypto provider.

#![forbid(unsafe_code)]

pub mod identity;
pub mod inspect;
pub mod pki;
pub mod role;
pub mod tls;

pub use identity::{CertDetails, Identity, IdentityError, Validity};
pub use pki::{IssueRequest, Issued, Pki, PkiError};
pub use role::{Access, Role};
pub use tls::{
    AgentIdentityError, ClientTls, TlsError, TlsFiles, check_agent_identity, install_crypto_provider,
};
