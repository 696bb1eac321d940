//! Reading a certificate's details (serial, names, validity, usages) and
//! checking a new leaf before it replaces one in use: the key matches, it
//! chains to the CA that trusts it, it is within its validity, it names the
//! member and its addresses. Also the coordinator's check of its own client
//! certificate before it dials any agent ([`client_problem`]).

use std::net::IpAddr;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use crate::identity::IdentityError;
use crate::role::Role;

/// What a certificate says, as `check-expiration` and the renew plan need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Hex serial number (lower case, no separators).
    pub serial: String,
    /// Subject and issuer common names.
    pub subject: String,
    pub issuer: String,
    /// The etcdops role in the subject, if any.
    pub role: Option<Role>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Subject alternative names: IP addresses and DNS names.
    pub hosts: Vec<String>,
    pub client_auth: bool,
    pub server_auth: bool,
    pub is_ca: bool,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Der(e.to_string()))?;
        let cn = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let role = cert
            .subject()
            .iter_organizational_unit()
            .filter_map(|ou| ou.as_str().ok())
            .find_map(Role::from_organizational_unit);
        let mut hosts = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => hosts.push((*d).to_string()),
                    GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            hosts.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let (client_auth, server_auth) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (
                eku.value.client_auth || eku.value.any,
                eku.value.server_auth || eku.value.any,
            ),
            // No extension: any usage.
            Ok(None) => (true, true),
            Err(_) => (false, false),
        };
        Ok(CertInfo {
            serial: hex_serial(cert.raw_serial()),
            subject: cn(cert.subject()),
            issuer: cn(cert.issuer()),
            role,
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
            hosts,
            client_auth,
            server_auth,
            is_ca: cert.is_ca(),
        })
    }

    /// The first certificate of PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<CertInfo, IdentityError> {
        let der = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or_else(|| IdentityError::Der("no PEM certificate".into()))?
            .map_err(|e| IdentityError::Der(e.to_string()))?;
        CertInfo::from_der(&der)
    }

    /// Whole days left at `now` (negative once expired).
    pub fn days_left(&self, now_unix: i64) -> i64 {
        (self.not_after_unix - now_unix).div_euclid(86_400)
    }
}

/// The serial as etcdctl and openssl print it, without leading zero bytes.
fn hex_serial(raw: &[u8]) -> String {
    let trimmed: &[u8] = match raw.iter().position(|b| *b != 0) {
        Some(i) => &raw[i..],
        None => &[0],
    };
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

/// A date for messages: `2026-12-02 01:57 UTC`.
pub fn format_unix(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("unix time {unix}"))
}

/// Why a new leaf certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("not a PEM certificate and key: {0}")]
    Pem(String),
    #[error("the private key does not match the certificate (serial {serial})")]
    KeyMismatch { serial: String },
    #[error("the CA {ca:?} expired on {}: no certificate it signs can be trusted; rotate the CA", format_unix(*not_after))]
    CaExpired { ca: String, not_after: i64 },
    #[error("certificate {serial} expired on {}", format_unix(*not_after))]
    Expired { serial: String, not_after: i64 },
    #[error("certificate {serial} is not valid before {}", format_unix(*not_before))]
    NotYetValid { serial: String, not_before: i64 },
    #[error("certificate {serial} carries role {found}, not {expected}")]
    WrongRole {
        serial: String,
        expected: Role,
        found: String,
    },
    #[error("certificate {serial} is for {found:?}, not {expected:?}")]
    WrongName {
        serial: String,
        expected: String,
        found: String,
    },
    #[error("certificate {serial} is not valid for {host} (it names {names}): {reason}")]
    MissingHost {
        serial: String,
        host: String,
        names: String,
        reason: String,
    },
    #[error("certificate {serial} does not chain to the CA {ca:?}: {reason}")]
    NotFromCa {
        serial: String,
        ca: String,
        reason: String,
    },
}

/// What a new leaf must satisfy.
#[derive(Debug, Clone)]
pub struct LeafCheck<'a> {
    /// The role it must carry.
    pub role: Role,
    /// The common name it must carry (the member's or the agent's name), if known.
    pub name: Option<&'a str>,
    /// Addresses and names it must be valid for as a server.
    pub hosts: &'a [String],
    /// The CA (PEM, one or more certificates) that must have signed it.
    pub ca_pem: &'a [u8],
    pub now_unix: i64,
}

/// Checks a new leaf certificate and key against `check`; returns what the
/// certificate says.
pub fn check_leaf(cert_pem: &[u8], key_pem: &[u8], check: &LeafCheck<'_>) -> Result<CertInfo, LeafError> {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or_else(|| LeafError::Pem("no PEM certificate".into()))?
        .map_err(|e| LeafError::Pem(e.to_string()))?;
    let info = CertInfo::from_der(&der).map_err(|e| LeafError::Pem(e.to_string()))?;
    let serial = info.serial.clone();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| LeafError::Pem(format!("key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| LeafError::Pem(format!("key: {e}")))?;
    CertifiedKey::new(vec![der.clone()], signing)
        .keys_match()
        .map_err(|_| LeafError::KeyMismatch {
            serial: serial.clone(),
        })?;

    let mut roots = RootCertStore::empty();
    let mut ca_name = String::new();
    for ca in CertificateDer::pem_slice_iter(check.ca_pem) {
        let ca = ca.map_err(|e| LeafError::Pem(format!("CA: {e}")))?;
        if let Ok(ca_info) = CertInfo::from_der(&ca) {
            if ca_info.not_after_unix <= check.now_unix {
                return Err(LeafError::CaExpired {
                    ca: ca_info.subject,
                    not_after: ca_info.not_after_unix,
                });
            }
            if ca_name.is_empty() {
                ca_name = ca_info.subject;
            }
        }
        roots.add(ca).map_err(|e| LeafError::Pem(format!("CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(LeafError::Pem("CA: no PEM certificate".into()));
    }

    if info.not_after_unix <= check.now_unix {
        return Err(LeafError::Expired {
            serial,
            not_after: info.not_after_unix,
        });
    }
    if info.not_before_unix > check.now_unix {
        return Err(LeafError::NotYetValid {
            serial,
            not_before: info.not_before_unix,
        });
    }
    if info.role != Some(check.role) {
        return Err(LeafError::WrongRole {
            serial,
            expected: check.role,
            found: info.role.map_or_else(|| "none".to_string(), |r| r.to_string()),
        });
    }
    if let Some(name) = check.name
        && info.subject != name
    {
        return Err(LeafError::WrongName {
            serial,
            expected: name.to_string(),
            found: info.subject.clone(),
        });
    }

    let roots = Arc::new(roots);
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(check.now_unix).unwrap_or(0),
    ));
    let not_from_ca = |reason: String| LeafError::NotFromCa {
        serial: serial.clone(),
        ca: ca_name.clone(),
        reason,
    };
    let client = WebPkiClientVerifier::builder(roots.clone())
        .build()
        .map_err(|e| not_from_ca(e.to_string()))?;
    client
        .verify_client_cert(&der, &[], now)
        .map_err(|e| not_from_ca(e.to_string()))?;
    if check.role.is_server() {
        let server = WebPkiServerVerifier::builder(roots)
            .build()
            .map_err(|e| not_from_ca(e.to_string()))?;
        for host in check.hosts {
            let name = ServerName::try_from(host.as_str())
                .map_err(|e| not_from_ca(format!("{host}: {e}")))?
                .to_owned();
            server
                .verify_server_cert(&der, &[], &name, &[], now)
                .map_err(|e| {
                    let reason = e.to_string();
                    if matches!(
                        e,
                        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                            | rustls::Error::InvalidCertificate(
                                rustls::CertificateError::NotValidForNameContext { .. }
                            )
                    ) {
                        LeafError::MissingHost {
                            serial: serial.clone(),
                            host: host.clone(),
                            names: info.hosts.join(", "),
                            reason,
                        }
                    } else {
                        not_from_ca(reason)
                    }
                })?;
        }
    }
    Ok(info)
}

/// What is wrong with the coordinator's own client certificate, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientProblem {
    Expired { not_after: i64 },
    NotYetValid { not_before: i64 },
    NoClientAuth,
    WrongRole { found: Option<Role> },
}

impl std::fmt::Display for ClientProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientProblem::Expired { not_after } => write!(f, "expired on {}", format_unix(*not_after)),
            ClientProblem::NotYetValid { not_before } => {
                write!(
                    f,
                    "is not valid before {} (check this host's clock)",
                    format_unix(*not_before)
                )
            }
            ClientProblem::NoClientAuth => f.write_str("lacks the clientAuth extended key usage"),
            ClientProblem::WrongRole { found: Some(role) } => {
                write!(f, "carries the {role} role, not operator or observer")
            }
            ClientProblem::WrongRole { found: None } => {
                f.write_str("carries no etcdops role (not operator or observer)")
            }
        }
    }
}

/// The first reason agents would refuse `info` as a caller's client certificate.
pub fn client_problem(info: &CertInfo, now_unix: i64) -> Option<ClientProblem> {
    if info.not_after_unix <= now_unix {
        return Some(ClientProblem::Expired {
            not_after: info.not_after_unix,
        });
    }
    if info.not_before_unix > now_unix {
        return Some(ClientProblem::NotYetValid {
            not_before: info.not_before_unix,
        });
    }
    if !info.client_auth {
        return Some(ClientProblem::NoClientAuth);
    }
    // Operators (and `coordinator`, their old name) and observers may call
    // agents; what each may call is the agents' role table.
    if info.role.and_then(Role::access).is_none() {
        return Some(ClientProblem::WrongRole { found: info.role });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{IssueRequest, Pki};

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_good_leaf_passes_and_bad_ones_are_named() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(dir.path(), "ca", 30, false).expect("init");
        let issued = pki
            .issue(&IssueRequest::new(Role::EtcdServer, "e1").host("127.0.0.9"))
            .expect("issue");
        let cert = std::fs::read(&issued.cert_path).expect("cert");
        let key = std::fs::read(&issued.key_path).expect("key");
        let ca = std::fs::read(pki.ca_cert_path()).expect("ca");
        let hosts = vec!["127.0.0.9".to_string()];
        let check = LeafCheck {
            role: Role::EtcdServer,
            name: Some("e1"),
            hosts: &hosts,
            ca_pem: &ca,
            now_unix: now(),
        };
        let info = check_leaf(&cert, &key, &check).expect("good leaf");
        assert_eq!(info.hosts, hosts);
        assert!(info.server_auth && info.client_auth && !info.is_ca);

        let other = pki
            .issue(&IssueRequest::new(Role::EtcdServer, "e2").host("127.0.0.9"))
            .expect("issue");
        let other_key = std::fs::read(&other.key_path).expect("key");
        assert!(matches!(
            check_leaf(&cert, &other_key, &check),
            Err(LeafError::KeyMismatch { .. })
        ));
        let wrong_host = vec!["127.0.0.10".to_string()];
        let err = check_leaf(
            &cert,
            &key,
            &LeafCheck {
                hosts: &wrong_host,
                ..check.clone()
            },
        )
        .expect_err("wrong host");
        assert!(matches!(err, LeafError::MissingHost { .. }), "{err}");
        assert!(matches!(
            check_leaf(
                &cert,
                &key,
                &LeafCheck {
                    name: Some("e9"),
                    ..check.clone()
                }
            ),
            Err(LeafError::WrongName { .. })
        ));
        let other_ca = tempfile::tempdir().expect("tempdir");
        let (pki2, _) = Pki::init(other_ca.path(), "ca2", 30, false).expect("init");
        let ca2 = std::fs::read(pki2.ca_cert_path()).expect("ca2");
        let err = check_leaf(
            &cert,
            &key,
            &LeafCheck {
                ca_pem: &ca2,
                ..check.clone()
            },
        )
        .expect_err("foreign CA");
        assert!(matches!(err, LeafError::NotFromCa { .. }), "{err}");
        let later = now() + 40 * 86_400;
        assert!(matches!(
            check_leaf(
                &cert,
                &key,
                &LeafCheck {
                    now_unix: later,
                    ..check
                }
            ),
            Err(LeafError::CaExpired { .. })
        ));
    }

    #[test]
    fn client_problems_in_order() {
        let mut info = CertInfo {
            serial: "01".into(),
            subject: "ops".into(),
            issuer: "ca".into(),
            role: Some(Role::Coordinator),
            not_before_unix: 100,
            not_after_unix: 200,
            hosts: vec![],
            client_auth: true,
            server_auth: false,
            is_ca: false,
        };
        assert_eq!(client_problem(&info, 150), None);
        assert_eq!(
            client_problem(&info, 250),
            Some(ClientProblem::Expired { not_after: 200 })
        );
        assert_eq!(
            client_problem(&info, 50),
            Some(ClientProblem::NotYetValid { not_before: 100 })
        );
        info.role = Some(Role::Agent);
        assert!(matches!(
            client_problem(&info, 150),
            Some(ClientProblem::WrongRole { .. })
        ));
        info.client_auth = false;
        assert_eq!(client_problem(&info, 150), Some(ClientProblem::NoClientAuth));
        assert_eq!(hex_serial(&[0, 0, 0x1a]), "1a");
    }
}
