//! The one TLS setup: mutual TLS between coordinator and agents, with the
//! fleet CA as the only trust anchor, on rustls with the ring provider.
//!
//! The coordinator checks more than the CA chain and the host name: the
//! agent's certificate must carry the `agent` role and be named after the
//! fleet member it was dialled for ([`ClientTls::for_agent`], a rustls
//! server certificate verifier wrapping WebPKI's), so a host serving another
//! member's certificate, or a non-agent one, is refused at the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig};

use crate::identity::{CertDetails, Identity, IdentityError};
use crate::pki::{PkiError, check_key_permissions};
use crate::role::Role;

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
    #[error("CA certificate {path}: not usable as the trust anchor: {reason}")]
    Roots { path: PathBuf, reason: String },
}

/// Why the coordinator refuses the certificate an agent presented, although
/// it chains to the fleet CA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentIdentityError {
    #[error(
        "the agent dialled for member {member:?} presented a {found} certificate, not an agent certificate; \
         issue one with `etcdops certs issue agent --name {member} --host HOST` and configure it in the agent's [tls]"
    )]
    NotAnAgent { member: String, found: String },
    #[error(
        "the agent dialled for member {member:?} presented the agent certificate of {name:?}: is the fleet \
         file's agent URL for {member} right, and was that agent's certificate issued with --name {member}?"
    )]
    WrongName { member: String, name: String },
    #[error("the agent dialled for member {member:?} presented an unreadable certificate: {reason}")]
    Unreadable { member: String, reason: String },
}

/// Whether `identity` may serve as the agent of fleet member `member`.
pub fn check_agent_identity(identity: &Identity, member: &str) -> Result<(), AgentIdentityError> {
    if identity.role != Some(Role::Agent) {
        return Err(AgentIdentityError::NotAnAgent {
            member: member.to_string(),
            found: identity.describe(),
        });
    }
    if identity.name != member {
        return Err(AgentIdentityError::WrongName {
            member: member.to_string(),
            name: identity.name.clone(),
        });
    }
    Ok(())
}

/// WebPKI's verification against the fleet CA and the dialled host, then
/// the agent role and the member's name ([`check_agent_identity`]).
#[derive(Debug)]
struct AgentVerifier {
    inner: Arc<WebPkiServerVerifier>,
    member: String,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let refused = |e: AgentIdentityError| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        let identity = Identity::from_der(end_entity).map_err(|e| {
            refused(AgentIdentityError::Unreadable {
                member: self.member.clone(),
                reason: e.to_string(),
            })
        })?;
        check_agent_identity(&identity, &self.member).map_err(refused)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Loaded PEM material, validated enough to fail early with a clear error.
#[derive(Debug)]
struct Loaded {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    identity: Identity,
    details: CertDetails,
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
        let (identity, details) = CertDetails::from_der(&der)?;
        Ok(Loaded {
            ca,
            cert,
            key,
            identity,
            details,
        })
    }

    /// The identity and details of this side's own certificate.
    pub fn details(&self) -> Result<(Identity, CertDetails), TlsError> {
        let cert = read("certificate", &self.cert)?;
        let der = first_cert("certificate", &self.cert, &cert)?;
        Ok(CertDetails::from_der(&der)?)
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
        let roots_error = |reason: String| TlsError::Roots {
            path: self.ca.clone(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&l.ca) {
            let der = der.map_err(|e| roots_error(e.to_string()))?;
            roots.add(der).map_err(|e| roots_error(e.to_string()))?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| roots_error(e.to_string()))?;
        Ok(ClientTls {
            ca: Certificate::from_pem(l.ca),
            identity: TonicIdentity::from_pem(l.cert, l.key),
            own: l.identity,
            details: l.details,
            verifier,
        })
    }
}

/// A loaded client identity (the coordinator's).
#[derive(Debug, Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: TonicIdentity,
    own: Identity,
    details: CertDetails,
    verifier: Arc<WebPkiServerVerifier>,
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

    /// The configuration for the agent of fleet member `member`, reached
    /// under `domain`, and the verifier to pass with it
    /// (`Endpoint::tls_config_with_verifier`): the fleet CA and `domain` as
    /// [`ClientTls::for_domain`], plus the agent role and `member` as the
    /// certificate's name ([`check_agent_identity`]).
    pub fn for_agent(&self, domain: &str, member: &str) -> (ClientTlsConfig, Arc<dyn ServerCertVerifier>) {
        let config = ClientTlsConfig::new()
            .identity(self.identity.clone())
            .domain_name(domain);
        let verifier = Arc::new(AgentVerifier {
            inner: self.verifier.clone(),
            member: member.to_string(),
        });
        (config, verifier)
    }

    /// Who this client is.
    pub fn identity(&self) -> &Identity {
        &self.own
    }

    /// This client's certificate exactly (subject, serial, fingerprint).
    pub fn details(&self) -> &CertDetails {
        &self.details
    }
}
