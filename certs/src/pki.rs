//! A file-backed certificate authority for one fleet.
//!
//! Layout of a PKI directory:
//! `ca.crt`, `ca.key` (0600), and one `<role>-<name>.crt` / `<role>-<name>.key`
//! pair per issued certificate. Keys are written 0600 and never overwritten
//! unless the caller asks for it explicitly.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::Identity;
use crate::role::Role;

/// Default lifetime of the CA certificate.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Default lifetime of an issued certificate.
pub const LEAF_VALIDITY_DAYS: u32 = 365;

/// Errors of the PKI. Each names the file or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path} already exists; refusing to overwrite it (pass --force to replace it on purpose)")]
    AlreadyExists { path: PathBuf },
    #[error("no CA in {dir}: run `etcdops certs init --dir {dir}` first")]
    NoCa { dir: PathBuf },
    #[error("invalid certificate name {name:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    InvalidName { name: String },
    #[error("invalid host {host:?}: expected an IP address or a DNS name")]
    InvalidHost { host: String },
    #[error("a {role} certificate serves TLS and needs at least one --host (IP address or DNS name)")]
    MissingHost { role: Role },
    #[error("invalid validity of {days} days: use 1 to 36500")]
    InvalidValidity { days: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable key or certificate: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: key file is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    UnsafeKeyPermissions { path: PathBuf, mode: u32 },
    #[error("could not generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub role: Role,
    /// The certificate's common name, e.g. the etcd member or operator name.
    pub name: String,
    /// IP addresses and DNS names the certificate is valid for (servers).
    pub hosts: Vec<String>,
    pub validity_days: u32,
    /// Replace an existing certificate and key of the same role and name.
    pub overwrite: bool,
}

impl IssueRequest {
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        IssueRequest {
            role,
            name: name.into(),
            hosts: Vec::new(),
            validity_days: LEAF_VALIDITY_DAYS,
            overwrite: false,
        }
    }

    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }
}

/// A certificate written to disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub role: Option<Role>,
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub not_after: OffsetDateTime,
    /// True when an existing certificate was replaced (`overwrite`).
    pub replaced: bool,
}

/// A PKI directory holding a CA.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Creates a new CA in `dir` (created if missing). Refuses to replace an
    /// existing CA unless `overwrite` is set.
    pub fn init(
        dir: &Path,
        ca_name: &str,
        validity_days: u32,
        overwrite: bool,
    ) -> Result<(Pki, Issued), PkiError> {
        check_validity(validity_days)?;
        check_name(ca_name)?;
        fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let (cert_path, key_path) = (pki.ca_cert_path(), pki.ca_key_path());
        let replaced = refuse_existing(&[&cert_path, &key_path], overwrite)?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "etcdops");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = validity(validity_days);
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;

        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok((
            pki,
            Issued {
                role: None,
                name: ca_name.to_string(),
                cert_path,
                key_path,
                not_after,
                replaced,
            },
        ))
    }

    /// Opens an existing PKI directory.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        if !pki.ca_cert_path().exists() || !pki.ca_key_path().exists() {
            return Err(PkiError::NoCa {
                dir: dir.to_path_buf(),
            });
        }
        Ok(pki)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Where the certificate of `role` and `name` lives: (cert, key).
    pub fn paths(&self, role: Role, name: &str) -> (PathBuf, PathBuf) {
        let stem = format!("{}-{}", role.as_str(), name);
        (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        )
    }

    /// Issues a certificate signed by this CA and writes it and its key.
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued, PkiError> {
        let (cert_path, key_path) = self.paths(req.role, &req.name);
        self.issue_to(req, &cert_path, &key_path, None)
    }

    /// Like [`Pki::issue`], written to `cert_path` and `key_path` (a renewal's
    /// staging dir), valid within `window` (not before, not after) instead of
    /// from now for `validity_days`: tests issue expired or not yet valid
    /// certificates with it.
    pub fn issue_to(
        &self,
        req: &IssueRequest,
        cert_path: &Path,
        key_path: &Path,
        window: Option<(OffsetDateTime, OffsetDateTime)>,
    ) -> Result<Issued, PkiError> {
        check_name(&req.name)?;
        check_validity(req.validity_days)?;
        let sans = req
            .hosts
            .iter()
            .map(|h| parse_host(h))
            .collect::<Result<Vec<_>, _>>()?;
        if req.role.is_server() && sans.is_empty() {
            return Err(PkiError::MissingHost { role: req.role });
        }
        let (cert_path, key_path) = (cert_path.to_path_buf(), key_path.to_path_buf());
        let replaced = refuse_existing(&[&cert_path, &key_path], req.overwrite)?;

        let ca_key_path = self.ca_key_path();
        check_key_permissions(&ca_key_path)?;
        let ca_key_pem = read_to_string(&ca_key_path)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|source| PkiError::Parse {
            path: ca_key_path.clone(),
            source,
        })?;
        let ca_cert_path = self.ca_cert_path();
        let ca_pem = read_to_string(&ca_cert_path)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(|source| PkiError::Parse {
            path: ca_cert_path,
            source,
        })?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, req.name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "etcdops");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, req.role.organizational_unit());
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = Vec::new();
        if req.role.is_server() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if req.role.is_client() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = window.unwrap_or_else(|| validity(req.validity_days));
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &issuer)?;

        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(Issued {
            role: Some(req.role),
            name: req.name.clone(),
            cert_path,
            key_path,
            not_after,
            replaced,
        })
    }

    /// Every certificate in the directory with its identity, CA first.
    pub fn list(&self) -> Result<Vec<(PathBuf, Identity)>, PkiError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|source| io(&self.dir, source))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        paths.sort_by_key(|p| (p.file_name() != Some("ca.crt".as_ref()), p.clone()));
        for path in paths {
            let identity = Identity::from_pem_file(&path)?;
            out.push((path, identity));
        }
        Ok(out)
    }
}

fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    // Backdate a little so a slightly slow clock on another host accepts it.
    (now - Duration::minutes(5), now + Duration::days(i64::from(days)))
}

fn check_validity(days: u32) -> Result<(), PkiError> {
    if (1..=36500).contains(&days) {
        Ok(())
    } else {
        Err(PkiError::InvalidValidity { days })
    }
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn parse_host(host: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        });
    if !valid_dns {
        return Err(PkiError::InvalidHost {
            host: host.to_string(),
        });
    }
    let name = host.to_string().try_into().map_err(|_| PkiError::InvalidHost {
        host: host.to_string(),
    })?;
    Ok(SanType::DnsName(name))
}

/// Errors unless none of `paths` exists or `overwrite` is set; returns
/// whether something will be replaced.
fn refuse_existing(paths: &[&Path], overwrite: bool) -> Result<bool, PkiError> {
    let existing = paths.iter().find(|p| p.exists());
    match existing {
        Some(path) if !overwrite => Err(PkiError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// Checks that a private key is not readable by group or others.
pub fn check_key_permissions(path: &Path) -> Result<(), PkiError> {
    let meta = fs::metadata(path).map_err(|source| io(path, source))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::UnsafeKeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Writes `data` to a temporary file beside `path`, fsyncs it, and renames
/// it into place, so a crash never leaves a half-written key.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!(
        "{}.tmp-{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| io(path, source))
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki() -> (tempfile::TempDir, Pki) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(dir.path(), "test-ca", 30, false).expect("init");
        (dir, pki)
    }

    #[test]
    fn issues_certificates_whose_identity_reads_back() {
        let (_d, pki) = pki();
        let issued = pki
            .issue(
                &IssueRequest::new(Role::Agent, "etcd1")
                    .host("198.18.0.11")
                    .host("etcd1.example"),
            )
            .expect("issue");
        let id = Identity::from_pem_file(&issued.cert_path).expect("identity");
        assert_eq!(id.role, Some(Role::Agent));
        assert_eq!(id.name, "etcd1");
        assert_eq!(id.not_after_unix, issued.not_after.unix_timestamp());
        let mode = fs::metadata(&issued.key_path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ca_mode = fs::metadata(pki.ca_key_path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(ca_mode, 0o600);
    }

    #[test]
    fn never_overwrites_silently() {
        let (_d, pki) = pki();
        let req = IssueRequest::new(Role::Coordinator, "ops");
        let first = pki.issue(&req).expect("issue");
        let before = fs::read(&first.key_path).expect("read");
        let err = pki.issue(&req).expect_err("second issue must be refused");
        assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err}");
        assert_eq!(fs::read(&first.key_path).expect("read"), before, "key untouched");
        let mut forced = req.clone();
        forced.overwrite = true;
        assert!(pki.issue(&forced).expect("forced").replaced);
        assert!(matches!(
            Pki::init(pki.dir(), "x", 30, false),
            Err(PkiError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn rejects_bad_input() {
        let (_d, pki) = pki();
        assert!(matches!(
            pki.issue(&IssueRequest::new(Role::Agent, "etcd1")),
            Err(PkiError::MissingHost { .. })
        ));
        assert!(matches!(
            pki.issue(&IssueRequest::new(Role::Coordinator, "../x")),
            Err(PkiError::InvalidName { .. })
        ));
        assert!(matches!(
            pki.issue(&IssueRequest::new(Role::EtcdServer, "e1").host("bad host!")),
            Err(PkiError::InvalidHost { .. })
        ));
        let mut req = IssueRequest::new(Role::Coordinator, "ops");
        req.validity_days = 0;
        assert!(matches!(
            pki.issue(&req),
            Err(PkiError::InvalidValidity { days: 0 })
        ));
        let missing = tempfile::tempdir().expect("tempdir");
        assert!(matches!(Pki::open(missing.path()), Err(PkiError::NoCa { .. })));
    }

    #[test]
    fn refuses_a_world_readable_ca_key() {
        let (_d, pki) = pki();
        fs::set_permissions(pki.ca_key_path(), fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = pki
            .issue(&IssueRequest::new(Role::Coordinator, "ops"))
            .expect_err("refused");
        assert!(matches!(err, PkiError::UnsafeKeyPermissions { .. }), "{err}");
    }

    #[test]
    fn lists_ca_first() {
        let (_d, pki) = pki();
        pki.issue(&IssueRequest::new(Role::Coordinator, "ops"))
            .expect("issue");
        pki.issue(&IssueRequest::new(Role::EtcdPeer, "e1").host("127.0.0.1"))
            .expect("issue");
        let list = pki.list().expect("list");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].1.role, None);
        assert_eq!(list[0].1.name, "test-ca");
    }
}
