//! Reading who a certificate belongs to: its role, name and expiry; and the
//! exact certificate ([`CertDetails`]: subject, serial, SHA-256 fingerprint)
//! for audit records and the journal.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::role::Role;

/// The identity a certificate of the fleet CA carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None` for certificates without an etcdops role (the CA, foreign certs).
    pub role: Option<Role>,
    /// The subject's common name.
    pub name: String,
    /// Expiry, seconds since the Unix epoch (UTC).
    pub not_after_unix: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: cannot read a PEM certificate: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("malformed certificate: {0}")]
    Der(String),
}

impl Identity {
    /// Parses a DER certificate, as presented by a TLS peer.
    pub fn from_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Der(e.to_string()))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let role = subject
            .iter_organizational_unit()
            .filter_map(|ou| ou.as_str().ok())
            .find_map(Role::from_organizational_unit);
        Ok(Identity {
            role,
            name,
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }

    /// Reads the first certificate of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Identity, IdentityError> {
        let der = CertificateDer::from_pem_file(path).map_err(|e| IdentityError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Identity::from_der(&der)
    }

    /// A short description for error messages: `coordinator "ops"`.
    pub fn describe(&self) -> String {
        match self.role {
            Some(role) => format!("{role} {:?}", self.name),
            None => format!("{:?} (no etcdops role)", self.name),
        }
    }
}

/// Which certificate exactly: what an audit record names. Read from the
/// verified TLS peer certificate (or our own), never from what a caller says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertDetails {
    /// The subject, RFC 4514 style: `CN=ops, O=etcdops, OU=etcdops-operator`.
    pub subject: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// The role (`operator`, `observer`, ...), empty without an etcdops role.
    pub role: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
}

impl CertDetails {
    /// The details of a DER certificate, with its parsed identity.
    pub fn from_der(der: &[u8]) -> Result<(Identity, CertDetails), IdentityError> {
        use sha2::Digest;
        let identity = Identity::from_der(der)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Der(e.to_string()))?;
        let details = CertDetails {
            subject: cert.subject().to_string(),
            serial: hex::encode(cert.raw_serial()),
            role: identity.role.map(|r| r.to_string()).unwrap_or_default(),
            fingerprint_sha256: hex::encode(sha2::Sha256::digest(der)),
        };
        Ok((identity, details))
    }

    /// The details of the first certificate of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<(Identity, CertDetails), IdentityError> {
        let der = CertificateDer::from_pem_file(path).map_err(|e| IdentityError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        CertDetails::from_der(&der)
    }
}

/// A certificate's validity window, seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl Validity {
    /// The validity of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Validity, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Der(e.to_string()))?;
        Ok(Validity {
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }

    /// The validity of the first certificate of PEM text; `None` when the
    /// text holds no PEM certificate.
    pub fn from_pem(pem: &[u8]) -> Option<Result<Validity, IdentityError>> {
        let der = CertificateDer::pem_slice_iter(pem).next()?;
        Some(
            der.map_err(|e| IdentityError::Der(e.to_string()))
                .and_then(|d| Validity::from_der(&d)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Identity::from_der(b"not a certificate").is_err());
        assert!(Identity::from_der(&[]).is_err());
        assert!(CertDetails::from_der(b"junk").is_err());
    }
}
