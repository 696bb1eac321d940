//! The one TLS setup: mutual TLS between coordinator and agents, with the
//! fleet CA as the only trust anchor, on rustls with the ring provider.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig};

use crate::identity::{Identity, IdentityError};
use crate::pki::{PkiError, check_key_permissions};

/// Installs rustls' ring crypto provider for the whole process. Call it
/// first thing in every `main` and test: once any crate enables another
/// provider, rustls can no longer pick one by itself. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The three files of one TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The fleet CA certificate: the only trust anchor.
    pub ca: PathBuf,
    /// This side's certificate.
    pub cert: PathBuf,
    /// This side's private key (must be mode 0600 or stricter).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Key(#[from] PkiError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Loaded PEM material, validated enough to fail early with a clear error.
#[derive(Debug)]
struct Loaded {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    identity: Identity,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn first_cert(what: &'static str, path: &Path, pem: &[u8]) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        })
}

impl TlsFiles {
    fn load(&self) -> Result<Loaded, TlsError> {
        let ca = read("CA certificate", &self.ca)?;
        first_cert("CA certificate", &self.ca, &ca)?;
        let cert = read("certificate", &self.cert)?;
        let der = first_cert("certificate", &self.cert, &cert)?;
        check_key_permissions(&self.key)?;
        let key = read("private key", &self.key)?;
        let identity = Identity::from_der(&der)?;
        Ok(Loaded {
            ca,
            cert,
            key,
            identity,
        })
    }

    /// The identity of this side's own certificate.
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let cert = read("certificate", &self.cert)?;
        let der = first_cert("certificate", &self.cert, &cert)?;
        Ok(Identity::from_der(&der)?)
    }

    /// The agent's server configuration: client certificates are mandatory
    /// and must chain to the fleet CA. Authorisation by role happens per RPC.
    pub fn server_config(&self) -> Result<(ServerTlsConfig, Identity), TlsError> {
        let l = self.load()?;
        let config = ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(l.cert, l.key))
            .client_ca_root(Certificate::from_pem(l.ca))
            .client_auth_optional(false);
        Ok((config, l.identity))
    }

    /// The coordinator's client identity, loaded once for all agents.
    pub fn client(&self) -> Result<ClientTls, TlsError> {
        let l = self.load()?;
        Ok(ClientTls {
            ca: Certificate::from_pem(l.ca),
            identity: TonicIdentity::from_pem(l.cert, l.key),
            own: l.identity,
        })
    }
}

/// A loaded client identity (the coordinator's).
#[derive(Debug, Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: TonicIdentity,
    own: Identity,
}

impl ClientTls {
    /// The configuration for one agent, verified against the fleet CA under
    /// `domain` (an IP address or DNS name in the agent's certificate).
    pub fn for_domain(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(domain)
    }

    /// Who this client is.
    pub fn identity(&self) -> &Identity {
        &self.own
    }
}
