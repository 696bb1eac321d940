//! This host's certificates (issue 17): the files etcd's environment names,
//! what the member serves on its client and peer ports (read from a TLS
//! handshake), the agent's own; and the replacement of leaf certificates in
//! place (validated first, atomic, `.prev` kept, owner kept, keys 0600).
//! Every directory written must be writable here before anything changes:
//! under the packaged unit's `ProtectSystem=strict` that is `/etc/etcd/pki`
//! and `/etc/etcdops/pki` (its `ReadWritePaths=`), others need a drop-in.
//!
//! The agent never writes a path a caller sends: a new certificate names its
//! kind (`etcd-server`, `etcd-peer`, `agent`, `etcd-client`), and the files
//! replaced are the ones etcd's environment file and the agent's config name
//! for that kind — files that already exist (nothing is created elsewhere).
//!
//! etcd's trust (issue 17, `etcdops certs rotate-ca`): the kind
//! `etcd-trusted-ca` carries a CA bundle (one or more CA certificates, no
//! key). The agent writes it to a file of its own choosing beside etcd's
//! current trusted CA file, `<ETCD_NAME>.etcd-ca-bundle.crt` (never the
//! current file: in a shared layout that file is also the fleet CA the agents
//! and the coordinator trust each other with), and points
//! `ETCD_TRUSTED_CA_FILE` and `ETCD_PEER_TRUSTED_CA_FILE` (when set) at it
//! in etcd's env file (atomic, `.prev` kept). etcd reads it at its next
//! start. A bundle is refused unless every CA in it is valid now and it
//! verifies the member's server, peer and agent-client certificates as they
//! are after the request (so installing it cannot lock the member out).
//! Once etcd's env file names such a bundle, the agent's own etcd client
//! trusts it instead of `[etcd.tls] ca` ([`etcd_client_tls`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcdops_certs::Role;
use etcdops_certs::inspect::{CertInfo, LeafCheck, LeafError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{AgentConfig, TlsConfig};
use crate::envfile::EnvFile;

/// Where this host's certificates are: the agent's config and etcd's env file.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub env_file: PathBuf,
    /// The agent's own identity (`[tls]`).
    pub agent: TlsConfig,
    /// The agent's client identity towards etcd (`[etcd.tls]`).
    pub etcd_client: Option<TlsConfig>,
    /// The member's client URL the agent talks to.
    pub endpoint: String,
    /// Where the agent listens.
    pub listen: std::net::SocketAddr,
}

impl CertPaths {
    pub fn new(config: &AgentConfig) -> CertPaths {
        CertPaths {
            env_file: config.etcd.env_file.clone(),
            agent: config.tls.clone(),
            etcd_client: config.etcd.tls.clone(),
            endpoint: config.etcd.endpoint.clone(),
            listen: config.listen,
        }
    }
}

/// The certificate settings of etcd's environment file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdCertEnv {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    pub peer_trusted_ca: Option<PathBuf>,
    /// Hosts of `ETCD_ADVERTISE_CLIENT_URLS` and of `ETCD_INITIAL_ADVERTISE_PEER_URLS`.
    pub client_hosts: Vec<String>,
    pub peer_hosts: Vec<String>,
    /// The first advertised peer URL's `host:port`.
    pub peer_address: Option<String>,
    /// `ETCD_NAME`.
    pub name: Option<String>,
}

impl EtcdCertEnv {
    /// Reads the settings from the env file (a missing file: none).
    pub fn read(path: &Path) -> Result<EtcdCertEnv, String> {
        let file = match EnvFile::load(path) {
            Ok(f) => f,
            Err(crate::envfile::EnvFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(EtcdCertEnv::default());
            }
            Err(e) => return Err(e.to_string()),
        };
        let path_of = |key: &str| file.get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        let urls = |key: &str| -> Vec<String> {
            file.get(key)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect()
        };
        let peer_urls = urls("ETCD_INITIAL_ADVERTISE_PEER_URLS");
        Ok(EtcdCertEnv {
            cert: path_of("ETCD_CERT_FILE"),
            key: path_of("ETCD_KEY_FILE"),
            trusted_ca: path_of("ETCD_TRUSTED_CA_FILE"),
            peer_cert: path_of("ETCD_PEER_CERT_FILE"),
            peer_key: path_of("ETCD_PEER_KEY_FILE"),
            peer_trusted_ca: path_of("ETCD_PEER_TRUSTED_CA_FILE"),
            client_hosts: dedup(
                urls("ETCD_ADVERTISE_CLIENT_URLS")
                    .iter()
                    .filter_map(|u| url_host_port(u).map(|(h, _)| h))
                    .collect(),
            ),
            peer_hosts: dedup(
                peer_urls
                    .iter()
                    .filter_map(|u| url_host_port(u).map(|(h, _)| h))
                    .collect(),
            ),
            peer_address: peer_urls
                .iter()
                .find_map(|u| url_host_port(u).map(|(h, p)| join_host_port(&h, p))),
            name: file
                .get("ETCD_NAME")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        })
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|h| seen.insert(h.clone()));
    v
}

/// `https://10.0.0.1:2379` → (`10.0.0.1`, 2379); IPv6 brackets removed.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        (
            host.to_string(),
            tail.strip_prefix(':').and_then(|p| p.parse().ok()),
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()),
            None => (authority.to_string(), None),
        }
    };
    let default = if url.starts_with("https") { 443 } else { 80 };
    (!host.is_empty()).then(|| (host, port.unwrap_or(default)))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One certificate as GetCertificates reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub cert: String,
    pub source: &'static str,
    pub location: String,
    pub info: Result<CertInfo, String>,
}

fn file(cert: &str, path: &Path) -> Seen {
    let info = fs::read(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|pem| CertInfo::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display())));
    Seen {
        cert: cert.to_string(),
        source: "file",
        location: path.display().to_string(),
        info,
    }
}

/// The certificate files of this host (blocking: small files).
pub fn files(paths: &CertPaths) -> Vec<Seen> {
    let mut out = Vec::new();
    match EtcdCertEnv::read(&paths.env_file) {
        Ok(env) => {
            for (cert, path) in [
                ("etcd-server", &env.cert),
                ("etcd-peer", &env.peer_cert),
                ("etcd-trusted-ca", &env.trusted_ca),
                ("etcd-peer-trusted-ca", &env.peer_trusted_ca),
            ] {
                if let Some(path) = path {
                    out.push(file(cert, path));
                }
            }
        }
        Err(e) => out.push(Seen {
            cert: "etcd-env".into(),
            source: "file",
            location: paths.env_file.display().to_string(),
            info: Err(e),
        }),
    }
    out.push(file("agent", &paths.agent.cert));
    out.push(file("agent-ca", &paths.agent.ca));
    if let Some(tls) = &paths.etcd_client {
        out.push(file("etcd-client", &tls.cert));
    }
    out
}

/// Every certificate of this host: the files, what etcd serves on its
/// client and peer ports, and what the agent's own listener serves.
pub async fn all(paths: &CertPaths, timeout: Duration) -> Vec<Seen> {
    let p = paths.clone();
    let (mut out, env) = tokio::task::spawn_blocking(move || (files(&p), EtcdCertEnv::read(&p.env_file)))
        .await
        .unwrap_or_else(|e| (Vec::new(), Err(e.to_string())));
    let env = env.unwrap_or_default();
    let client = paths
        .etcd_client
        .as_ref()
        .filter(|_| paths.endpoint.starts_with("https"));
    let mut targets = Vec::new();
    if let (Some(_), Some((host, port))) = (client, url_host_port(&paths.endpoint)) {
        targets.push(("etcd-server", join_host_port(&host, port), host));
    }
    if env.peer_cert.is_some()
        && let Some(address) = &env.peer_address
        && let Some((host, _)) = url_host_port(&format!("https://{address}"))
    {
        targets.push(("etcd-peer", address.clone(), host));
    }
    let listen = if paths.listen.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], paths.listen.port()))
    } else {
        paths.listen
    };
    targets.push(("agent", listen.to_string(), listen.ip().to_string()));
    let handshakes = targets.into_iter().map(|(cert, address, host)| {
        let identity = paths.etcd_client.clone().filter(|_| cert != "agent");
        async move {
            let info = served(&address, &host, identity.as_ref(), timeout).await;
            Seen {
                cert: cert.to_string(),
                source: "served",
                location: address,
                info,
            }
        }
    });
    out.extend(futures_join(handshakes).await);
    out
}

async fn futures_join<F: Future<Output = Seen>>(futures: impl Iterator<Item = F>) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    for f in set {
        out.push(f.await);
    }
    out
}

/// The certificate a TLS server at `address` presents, read from a
/// handshake. Nothing is sent over the connection; the certificate is not
/// verified (this is an observation: the report shows its issuer).
pub async fn served(
    address: &str,
    host: &str,
    identity: Option<&TlsConfig>,
    timeout: Duration,
) -> Result<CertInfo, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Observe(provider)));
    let config = match identity.and_then(load_identity) {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {address} failed: {e}"))?;
        let (_, session) = tls.get_ref();
        let der = session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| format!("{address} presented no certificate"))?;
        CertInfo::from_der(der).map_err(|e| format!("{address}: {e}"))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no TLS handshake with {address} within {timeout:?}")))
}

fn load_identity(tls: &TlsConfig) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).ok()?;
    Some((chain, key))
}

/// Accepts any server certificate: used only to read what a port serves.
#[derive(Debug)]
struct Observe(Arc<CryptoProvider>);

impl ServerCertVerifier for Observe {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate kinds InstallCertificates replaces.
pub const KINDS: [&str; 4] = ["etcd-server", "etcd-peer", "agent", "etcd-client"];

/// The kind InstallCertificates takes for etcd's trust bundle.
pub const TRUST_KIND: &str = "etcd-trusted-ca";

/// How the name of a trust bundle the agent wrote ends.
pub const BUNDLE_SUFFIX: &str = ".etcd-ca-bundle.crt";

/// Whether `path` is a trust bundle the agent wrote.
pub fn is_bundle(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(BUNDLE_SUFFIX))
}

/// The agent's etcd client identity with the trust anchor it uses: etcd's
/// trust bundle once etcd's env file names one the agent wrote (it holds
/// the CA that signs etcd's server certificate during and after a CA
/// rotation), else `[etcd.tls] ca`.
pub fn etcd_client_tls(tls: &TlsConfig, env_file: &Path) -> TlsConfig {
    match EtcdCertEnv::read(env_file) {
        Ok(EtcdCertEnv {
            trusted_ca: Some(ca), ..
        }) if is_bundle(&ca) && ca.is_file() => TlsConfig { ca, ..tls.clone() },
        _ => tls.clone(),
    }
}

/// Where this member's trust bundle goes: the file etcd's env file names
/// already when it is one the agent wrote, else beside etcd's trusted CA file.
pub fn bundle_path(env: &EtcdCertEnv, env_file: &Path) -> Result<PathBuf, InstallError> {
    let current = env
        .trusted_ca
        .clone()
        .ok_or_else(|| InstallError::NotConfigured {
            cert: TRUST_KIND.into(),
            what: "ETCD_TRUSTED_CA_FILE",
            source_file: env_file.display().to_string(),
        })?;
    if is_bundle(&current) {
        return Ok(current);
    }
    let name = env.name.clone().unwrap_or_else(|| "etcd".into());
    let dir = current.parent().unwrap_or(Path::new("/"));
    Ok(dir.join(format!("{name}{BUNDLE_SUFFIX}")))
}

/// A checked trust bundle, ready to write.
#[derive(Debug, Clone)]
pub struct TrustChecked {
    pub path: PathBuf,
    /// The file whose owner and mode the bundle gets (etcd's trusted CA file now).
    pub template: PathBuf,
    pub pem: Vec<u8>,
    /// The CAs in it, in order.
    pub cas: Vec<CertInfo>,
    /// The env file variables to point at it.
    pub vars: Vec<&'static str>,
}

impl TrustChecked {
    /// The CAs' serials, `+`-joined.
    pub fn serials(&self) -> String {
        self.cas
            .iter()
            .map(|c| c.serial.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

fn trust_refused(reason: String) -> InstallError {
    InstallError::Trust { reason }
}

/// Checks a trust bundle: PEM CA certificates only, each valid at
/// `now_unix`, and it verifies `leaves` — the member's certificates as they
/// are after the request: (kind, PEM).
pub fn check_trust(
    env: &EtcdCertEnv,
    env_file: &Path,
    bundle_pem: &[u8],
    leaves: &[(String, Vec<u8>)],
    now_unix: i64,
) -> Result<TrustChecked, InstallError> {
    let path = bundle_path(env, env_file)?;
    let template = env.trusted_ca.clone().unwrap_or_else(|| path.clone());
    let mut cas = Vec::new();
    let mut ders = Vec::new();
    for der in CertificateDer::pem_slice_iter(bundle_pem) {
        let der = der.map_err(|e| trust_refused(format!("not PEM certificates: {e}")))?;
        let info = CertInfo::from_der(&der).map_err(|e| trust_refused(e.to_string()))?;
        if !info.is_ca {
            return Err(trust_refused(format!(
                "{:?} (serial {}) is not a CA certificate",
                info.subject, info.serial
            )));
        }
        if info.not_after_unix <= now_unix {
            return Err(trust_refused(format!(
                "the CA {:?} (serial {}) expired on {}",
                info.subject,
                info.serial,
                etcdops_certs::inspect::format_unix(info.not_after_unix)
            )));
        }
        if info.not_before_unix > now_unix {
            return Err(trust_refused(format!(
                "the CA {:?} (serial {}) is not valid before {}",
                info.subject,
                info.serial,
                etcdops_certs::inspect::format_unix(info.not_before_unix)
            )));
        }
        cas.push(info);
        ders.push(der);
    }
    if cas.is_empty() {
        return Err(trust_refused("the bundle holds no PEM certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in &ders {
        roots
            .add(der.clone())
            .map_err(|e| trust_refused(format!("CA: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| trust_refused(e.to_string()))?;
    let now = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now_unix).unwrap_or(0)));
    for (kind, pem) in leaves {
        let der = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or_else(|| trust_refused(format!("{kind}: no PEM certificate")))?
            .map_err(|e| trust_refused(format!("{kind}: {e}")))?;
        if let Err(e) = verifier.verify_client_cert(&der, &[], now) {
            let serial = CertInfo::from_der(&der).map(|i| i.serial).unwrap_or_default();
            return Err(trust_refused(format!(
                "it does not verify this member's {kind} certificate (serial {serial}): {e}; \
                 etcd would refuse it after its next start"
            )));
        }
    }
    // The bundle's dir must be writable here (under systemd's
    // ProtectSystem=strict only ReadWritePaths= are): a check_only says so
    // before any host changes, not the install half-way through a rotation.
    if let Some(dir) = path.parent()
        && let Err(errno) = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK)
    {
        return Err(InstallError::Unusable {
            cert: TRUST_KIND.into(),
            path: dir.display().to_string(),
            reason: format!(
                "the agent cannot write the trust bundle here ({errno}); under systemd add the directory to \
                 the agent unit's ReadWritePaths= (`systemctl edit etcdops-agent`)"
            ),
        });
    }
    let mut vars = vec!["ETCD_TRUSTED_CA_FILE"];
    if env.peer_trusted_ca.is_some() {
        vars.push("ETCD_PEER_TRUSTED_CA_FILE");
    }
    Ok(TrustChecked {
        path,
        template,
        pem: bundle_pem.to_vec(),
        cas,
        vars,
    })
}

/// The member's certificates a trust bundle must verify, as they are after
/// a request installing `new` (kind, PEM): the request's, else the files.
pub fn leaves_after(
    paths: &CertPaths,
    env: &EtcdCertEnv,
    new: &[(String, Vec<u8>)],
) -> Result<Vec<(String, Vec<u8>)>, InstallError> {
    let mut out = Vec::new();
    let client = paths.etcd_client.as_ref().map(|t| t.cert.clone());
    for (kind, file) in [
        ("etcd-server", env.cert.clone()),
        ("etcd-peer", env.peer_cert.clone()),
        ("etcd-client", client),
    ] {
        if let Some((_, pem)) = new.iter().find(|(k, _)| k == kind) {
            out.push((kind.to_string(), pem.clone()));
        } else if let Some(file) = file {
            let pem = fs::read(&file).map_err(|e| InstallError::Unusable {
                cert: kind.to_string(),
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            out.push((kind.to_string(), pem));
        }
    }
    Ok(out)
}

/// Writes a checked trust bundle (temp beside it, fsync, rename; a previous
/// bundle kept as `.prev`) and points etcd's env file at it. False when the
/// file and the env file were already so.
pub fn write_trust(t: &TrustChecked, env_file: &Path) -> Result<bool, InstallError> {
    let err = |path: &Path, reason: String| InstallError::Write {
        cert: TRUST_KIND.into(),
        path: path.display().to_string(),
        reason,
    };
    let mut changed = false;
    if fs::read(&t.path).ok().as_deref() != Some(t.pem.as_slice()) {
        let tmp =
            stage_from(&t.template, &t.path, &t.pem, Some(0o644)).map_err(|e| err(&t.path, e.to_string()))?;
        if t.path.exists() {
            keep_previous(&t.path).map_err(|e| err(&t.path, e.to_string()))?;
        }
        fs::rename(&tmp, &t.path).map_err(|e| err(&t.path, e.to_string()))?;
        if let Some(dir) = t.path.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        changed = true;
    }
    let mut env = EnvFile::load(env_file).map_err(|e| err(env_file, e.to_string()))?;
    let value = t.path.display().to_string();
    if t.vars.iter().any(|k| env.get(k) != Some(value.as_str())) {
        for k in &t.vars {
            env.set(k, &value).map_err(|e| err(env_file, e.to_string()))?;
        }
        env.save(env_file).map_err(|e| err(env_file, e.to_string()))?;
        changed = true;
    }
    if changed {
        tracing::info!(path = %t.path.display(), serials = %t.serials(), "etcd trust bundle installed (etcd reads it at its next start)");
    }
    Ok(changed)
}

/// Where a kind's files are, and what a new certificate of it must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cert: String,
    pub role: Role,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
    pub hosts: Vec<String>,
}

/// Why a new certificate is refused (nothing is changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    #[error(
        "unknown certificate kind {0:?}: expected one of etcd-server, etcd-peer, agent, etcd-client, etcd-trusted-ca"
    )]
    UnknownKind(String),
    #[error("{0} is named twice in one request")]
    Twice(String),
    #[error("{cert}: {what} is not set on this host ({source_file}), so there is no file to replace")]
    NotConfigured {
        cert: String,
        what: &'static str,
        source_file: String,
    },
    #[error(
        "{cert}: {path}: {reason} (only existing files named by the agent's config or etcd's env file are replaced)"
    )]
    Unusable {
        cert: String,
        path: String,
        reason: String,
    },
    #[error("{cert}: refused before any file changed: {source}")]
    Refused {
        cert: String,
        #[source]
        source: LeafError,
    },
    #[error(
        "{cert}: {dir} is {reason} for the agent, so {path} cannot be replaced (refused before any file \
         changed); under the etcdops-agent unit (ProtectSystem=strict) only its ReadWritePaths= are \
         writable: add {dir} in a drop-in (`systemctl edit etcdops-agent`: [Service] ReadWritePaths={dir}), \
         restart the agent, then renew again"
    )]
    NotWritable {
        cert: String,
        path: String,
        dir: String,
        reason: &'static str,
    },
    #[error("etcd-trusted-ca: refused before any file changed: {reason}")]
    Trust { reason: String },
    #[error("{cert}: writing {path}: {reason}")]
    Write {
        cert: String,
        path: String,
        reason: String,
    },
}

impl InstallError {
    /// Whether the caller's input is at fault (INVALID_ARGUMENT).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            InstallError::UnknownKind(_)
                | InstallError::Twice(_)
                | InstallError::Refused { .. }
                | InstallError::Trust { .. }
        )
    }
}

/// The files of `cert` on this host.
pub fn target(paths: &CertPaths, env: &EtcdCertEnv, cert: &str) -> Result<Target, InstallError> {
    let env_file = paths.env_file.display().to_string();
    let need = |p: &Option<PathBuf>, what: &'static str| {
        p.clone().ok_or_else(|| InstallError::NotConfigured {
            cert: cert.to_string(),
            what,
            source_file: env_file.clone(),
        })
    };
    let listen_host = (!paths.listen.ip().is_unspecified())
        .then(|| paths.listen.ip().to_string())
        .into_iter()
        .collect();
    let target = match cert {
        "etcd-server" => Target {
            cert: cert.into(),
            role: Role::EtcdServer,
            cert_path: need(&env.cert, "ETCD_CERT_FILE")?,
            key_path: need(&env.key, "ETCD_KEY_FILE")?,
            ca_path: need(&env.trusted_ca, "ETCD_TRUSTED_CA_FILE")?,
            hosts: env.client_hosts.clone(),
        },
        "etcd-peer" => Target {
            cert: cert.into(),
            role: Role::EtcdPeer,
            cert_path: need(&env.peer_cert, "ETCD_PEER_CERT_FILE")?,
            key_path: need(&env.peer_key, "ETCD_PEER_KEY_FILE")?,
            ca_path: need(&env.peer_trusted_ca, "ETCD_PEER_TRUSTED_CA_FILE")?,
            hosts: env.peer_hosts.clone(),
        },
        "agent" => Target {
            cert: cert.into(),
            role: Role::Agent,
            cert_path: paths.agent.cert.clone(),
            key_path: paths.agent.key.clone(),
            ca_path: paths.agent.ca.clone(),
            hosts: listen_host,
        },
        "etcd-client" => {
            let tls = paths
                .etcd_client
                .as_ref()
                .ok_or_else(|| InstallError::NotConfigured {
                    cert: cert.into(),
                    what: "[etcd.tls]",
                    source_file: "the agent config".into(),
                })?;
            Target {
                cert: cert.into(),
                role: Role::EtcdClient,
                cert_path: tls.cert.clone(),
                key_path: tls.key.clone(),
                // The CA etcd checks client certificates against.
                ca_path: env.trusted_ca.clone().unwrap_or_else(|| tls.ca.clone()),
                hosts: Vec::new(),
            }
        }
        other => return Err(InstallError::UnknownKind(other.to_string())),
    };
    Ok(target)
}

/// A validated new certificate, ready to write.
#[derive(Debug, Clone)]
pub struct Checked {
    pub target: Target,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub info: CertInfo,
}

fn existing_regular(cert: &str, path: &Path) -> Result<fs::Metadata, InstallError> {
    let unusable = |reason: String| InstallError::Unusable {
        cert: cert.to_string(),
        path: path.display().to_string(),
        reason,
    };
    if !path.is_absolute() {
        return Err(unusable("not an absolute path".into()));
    }
    let meta = fs::symlink_metadata(path).map_err(|e| unusable(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(unusable("not a regular file".into()));
    }
    Ok(meta)
}

/// The directory of `path` is writable here: a temporary is renamed over
/// `path` and `<path>.prev` linked beside it. Under the packaged unit's
/// `ProtectSystem=strict` a directory outside `ReadWritePaths=` is read-only
/// (EROFS); finding that out before writing keeps an install all or nothing.
fn writable_dir(cert: &str, path: &Path) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|errno| InstallError::NotWritable {
        cert: cert.to_string(),
        path: path.display().to_string(),
        dir: dir.display().to_string(),
        reason: match errno {
            nix::errno::Errno::EROFS => "read-only",
            nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => "not writable",
            _ => "not usable",
        },
    })
}

/// Checks one new certificate against its target: both files exist and
/// their directories are writable here, then the same name as the one it
/// replaces, the member's addresses, its key, the CA that trusts it.
/// `trust`: the bundle the same request installs, checked against instead
/// of the CA file that trusts the kind now (etcd's kinds; not the agent's).
pub fn check(
    target: &Target,
    cert_pem: &[u8],
    key_pem: &[u8],
    trust: Option<&[u8]>,
    now_unix: i64,
) -> Result<Checked, InstallError> {
    existing_regular(&target.cert, &target.cert_path)?;
    existing_regular(&target.cert, &target.key_path)?;
    writable_dir(&target.cert, &target.cert_path)?;
    writable_dir(&target.cert, &target.key_path)?;
    let unusable = |path: &Path, reason: String| InstallError::Unusable {
        cert: target.cert.clone(),
        path: path.display().to_string(),
        reason,
    };
    let current = fs::read(&target.cert_path)
        .map_err(|e| unusable(&target.cert_path, e.to_string()))
        .and_then(|pem| CertInfo::from_pem(&pem).map_err(|e| unusable(&target.cert_path, e.to_string())))?;
    let ca_pem = match trust.filter(|_| target.role != Role::Agent) {
        Some(bundle) => bundle.to_vec(),
        None => fs::read(&target.ca_path).map_err(|e| unusable(&target.ca_path, e.to_string()))?,
    };
    let info = etcdops_certs::inspect::check_leaf(
        cert_pem,
        key_pem,
        &LeafCheck {
            role: target.role,
            name: Some(&current.subject),
            hosts: &target.hosts,
            ca_pem: &ca_pem,
            now_unix,
        },
    )
    .map_err(|source| InstallError::Refused {
        cert: target.cert.clone(),
        source,
    })?;
    Ok(Checked {
        target: target.clone(),
        cert_pem: cert_pem.to_vec(),
        key_pem: key_pem.to_vec(),
        info,
    })
}

/// Writes checked certificates: both files of each to temporaries first,
/// then the key and the certificate renamed into place back to back (etcd
/// reads the pair per new connection). Returns, per certificate, whether
/// anything changed.
pub fn write(checked: &[Checked]) -> Result<Vec<bool>, InstallError> {
    let mut out = Vec::new();
    for c in checked {
        let t = &c.target;
        let same = fs::read(&t.cert_path).is_ok_and(|b| b == c.cert_pem)
            && fs::read(&t.key_path).is_ok_and(|b| b == c.key_pem);
        if same {
            out.push(false);
            continue;
        }
        let err = |path: &Path, e: std::io::Error| InstallError::Write {
            cert: t.cert.clone(),
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let key_tmp = stage(&t.key_path, &c.key_pem, Some(0o600)).map_err(|e| err(&t.key_path, e))?;
        let cert_tmp = match stage(&t.cert_path, &c.cert_pem, None) {
            Ok(tmp) => tmp,
            Err(e) => {
                let _ = fs::remove_file(&key_tmp);
                return Err(err(&t.cert_path, e));
            }
        };
        keep_previous(&t.key_path).map_err(|e| err(&t.key_path, e))?;
        keep_previous(&t.cert_path).map_err(|e| err(&t.cert_path, e))?;
        fs::rename(&key_tmp, &t.key_path).map_err(|e| err(&t.key_path, e))?;
        fs::rename(&cert_tmp, &t.cert_path).map_err(|e| err(&t.cert_path, e))?;
        for dir in [t.key_path.parent(), t.cert_path.parent()].into_iter().flatten() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        tracing::info!(cert = %t.cert, path = %t.cert_path.display(), serial = %c.info.serial, "certificate replaced");
        out.push(true);
    }
    Ok(out)
}

/// Writes `data` to a temporary beside `path`, with `path`'s owner and
/// mode (or `mode`), fsynced.
fn stage(path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<PathBuf> {
    stage_from(path, path, data, mode)
}

/// [`stage`] for `path` with `template`'s owner and mode (`path` may not exist yet).
fn stage_from(template: &Path, path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<PathBuf> {
    let meta = fs::metadata(template)?;
    let mode = mode.unwrap_or(meta.permissions().mode() & 0o7777);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.etcdops-new-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        // Keep the owner etcd reads the file as. Only root may give files
        // away: failing is an error only when the owner would change.
        if let Err(e) = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid())) {
            let mine = f.metadata()?;
            if mine.uid() != meta.uid() || mine.gid() != meta.gid() {
                return Err(e);
            }
        }
        f.write_all(data)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Keeps the current file as `<file>.prev` (a hard link: same owner and mode).
fn keep_previous(path: &Path) -> std::io::Result<()> {
    let mut prev = path.as_os_str().to_owned();
    prev.push(".prev");
    let prev = PathBuf::from(prev);
    match fs::remove_file(&prev) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::hard_link(path, &prev).or_else(|_| fs::copy(path, &prev).map(|_| ()))
}

/// The file expiries `/metrics` exports: (cert, path, not after).
pub fn expiries(paths: &CertPaths) -> Vec<(String, String, i64)> {
    files(paths)
        .into_iter()
        .filter_map(|s| s.info.ok().map(|i| (s.cert, s.location, i.not_after_unix)))
        .collect()
}

/// The file that expires first: (cert, not after).
pub fn nearest(paths: &CertPaths) -> Option<(String, i64)> {
    expiries(paths)
        .into_iter()
        .min_by_key(|(_, _, at)| *at)
        .map(|(cert, _, at)| (cert, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_hosts_and_ports() {
        assert_eq!(
            url_host_port("https://10.0.0.1:2380"),
            Some(("10.0.0.1".into(), 2380))
        );
        assert_eq!(url_host_port("https://[::1]:2379"), Some(("::1".into(), 2379)));
        assert_eq!(
            url_host_port("https://etcd1.example"),
            Some(("etcd1.example".into(), 443))
        );
        assert_eq!(url_host_port("https://"), None);
        assert_eq!(join_host_port("::1", 2379), "[::1]:2379");
    }

    #[test]
    fn a_trust_bundle_must_hold_valid_cas_that_verify_the_members_certificates() {
        use etcdops_certs::{IssueRequest, Pki};
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, _) = Pki::init(&dir.path().join("old"), "old-ca", 30, false).expect("old");
        let (new, _) = Pki::init(&dir.path().join("new"), "new-ca", 30, false).expect("new");
        let leaf = |pki: &Pki| {
            let issued = pki
                .issue(&IssueRequest::new(Role::EtcdServer, "etcd1").host("127.0.0.1"))
                .expect("leaf");
            fs::read(issued.cert_path).expect("read")
        };
        let (old_leaf, new_leaf) = (leaf(&old), leaf(&new));
        let old_ca = fs::read(old.ca_cert_path()).expect("ca");
        let new_ca = fs::read(new.ca_cert_path()).expect("ca");
        let both = [old_ca.clone(), new_ca.clone()].concat();
        let env = EtcdCertEnv {
            trusted_ca: Some(old.ca_cert_path()),
            peer_trusted_ca: Some(old.ca_cert_path()),
            name: Some("etcd1".into()),
            ..EtcdCertEnv::default()
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let env_file = dir.path().join("etcd.env");
        let server = |pem: &[u8]| vec![("etcd-server".to_string(), pem.to_vec())];
        let ok = check_trust(&env, &env_file, &both, &server(&old_leaf), now).expect("old + new");
        assert_eq!(ok.cas.len(), 2);
        assert_eq!(ok.path, dir.path().join("old").join("etcd1.etcd-ca-bundle.crt"));
        assert_eq!(ok.vars, ["ETCD_TRUSTED_CA_FILE", "ETCD_PEER_TRUSTED_CA_FILE"]);
        check_trust(&env, &env_file, &new_ca, &server(&new_leaf), now).expect("new alone, new leaves");
        let err = check_trust(&env, &env_file, &new_ca, &server(&old_leaf), now).expect_err("old leaf");
        assert!(
            err.to_string()
                .contains("does not verify this member's etcd-server"),
            "{err}"
        );
        assert!(err.is_input());
        let err = check_trust(&env, &env_file, &old_leaf, &[], now).expect_err("a leaf");
        assert!(err.to_string().contains("not a CA certificate"), "{err}");
        let err = check_trust(&env, &env_file, &both, &[], now + 31 * 86_400).expect_err("expired");
        assert!(err.to_string().contains("expired on"), "{err}");
        let err = check_trust(&env, &env_file, b"", &[], now).expect_err("empty");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        // A bundle already in place is replaced in place.
        let bundled = EtcdCertEnv {
            trusted_ca: Some(ok.path.clone()),
            ..env.clone()
        };
        assert_eq!(bundle_path(&bundled, &env_file).expect("path"), ok.path);
        assert!(is_bundle(&ok.path) && !is_bundle(&old.ca_cert_path()));

        // Written once, the env file pointed at it; again: no change.
        let ca = old.ca_cert_path().display().to_string();
        fs::write(
            &env_file,
            format!("ETCD_NAME=etcd1\nETCD_TRUSTED_CA_FILE={ca}\nETCD_PEER_TRUSTED_CA_FILE={ca}\n"),
        )
        .expect("env");
        assert!(write_trust(&ok, &env_file).expect("write"));
        assert!(!write_trust(&ok, &env_file).expect("again"));
        assert_eq!(fs::read(&ok.path).expect("bundle"), both);
        let now_env = EtcdCertEnv::read(&env_file).expect("env");
        assert_eq!(now_env.trusted_ca.as_ref(), Some(&ok.path));
        assert_eq!(now_env.peer_trusted_ca.as_ref(), Some(&ok.path));
        assert_eq!(
            fs::read(old.ca_cert_path()).expect("ca"),
            old_ca,
            "the old CA file is never written"
        );
        let tls = TlsConfig {
            ca: old.ca_cert_path(),
            cert: dir.path().join("c.crt"),
            key: dir.path().join("c.key"),
        };
        assert_eq!(etcd_client_tls(&tls, &env_file).ca, ok.path);
    }

    #[test]
    fn a_replaced_file_keeps_its_previous_version_owner_and_key_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c.crt");
        let key = dir.path().join("c.key");
        fs::write(&cert, b"old cert").expect("write");
        fs::write(&key, b"old key").expect("write");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
        let tmp = stage(&key, b"new key", Some(0o600)).expect("stage");
        keep_previous(&key).expect("prev");
        fs::rename(&tmp, &key).expect("rename");
        assert_eq!(fs::read(&key).expect("read"), b"new key");
        assert_eq!(fs::read(dir.path().join("c.key.prev")).expect("read"), b"old key");
        let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let tmp = stage(&cert, b"new cert", None).expect("stage");
        keep_previous(&cert).expect("prev");
        fs::rename(&tmp, &cert).expect("rename");
        assert_eq!(
            fs::read(dir.path().join("c.crt.prev")).expect("read"),
            b"old cert"
        );
    }
}
