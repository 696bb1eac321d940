//! The one wrapper around the local etcd member (etcd-client). Every call
//! is bounded by a timeout and returns domain types, never etcd-client's.

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::Mutex;

use crate::config::{EtcdConfig, TlsConfig};

/// Errors talking to the local member.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("local etcd member at {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("local etcd member at {endpoint}: {message}")]
    Call { endpoint: String, message: String },
    /// etcd answered the call with an error (its gRPC code kept).
    #[error("local etcd member at {endpoint}: {message}")]
    Rejected {
        endpoint: String,
        code: tonic::Code,
        message: String,
    },
    /// A write refused because the cluster's backend quota is exhausted.
    #[error(
        "local etcd member at {endpoint}: the cluster has a NOSPACE alarm (etcd: \"database space exceeded\"); \
         it refuses writes until space is freed and the alarm disarmed: run `etcdops recover nospace`"
    )]
    NoSpace { endpoint: String },
    /// MoveLeader asked of a member that is not the leader.
    #[error(
        "local etcd member {member_id:x} is not the leader; the leader is {leader}: call MoveLeader on the leader's agent"
    )]
    NotLeader { member_id: u64, leader: String },
    /// Compact to a revision the cluster has not reached.
    #[error("revision: {revision} is above the cluster's current revision {current}")]
    FutureRevision { revision: i64, current: i64 },
    /// etcd refused a membership change (add, remove, promote).
    #[error("local etcd member at {endpoint}: {message}{}", .refusal.hint())]
    MemberRefused {
        endpoint: String,
        refusal: MemberRefusal,
        message: String,
    },
    /// MemberAdd refused: etcd allows one learner at a time.
    #[error("etcd allows one learner at a time: promote or remove learner {learner} first")]
    TooManyLearners { learner: String },
    /// A file of `[etcd.tls]` is missing, unreadable, not what it should
    /// be, expired or not yet valid (checked at start-up and by
    /// `--check-config`, before any connection).
    #[error(transparent)]
    TlsFile(Box<TlsFileError>),
}

/// An unusable `[etcd.tls]` file: which, whose, what is wrong, what to do.
#[derive(Debug, thiserror::Error)]
#[error(
    "etcd.tls.{key} {} (the agent's TLS identity towards its etcd member {member} at {endpoint}): {problem}; {fix}",
    path.display()
)]
pub struct TlsFileError {
    pub key: &'static str,
    pub path: std::path::PathBuf,
    pub member: String,
    pub endpoint: String,
    pub problem: String,
    pub fix: String,
}

/// What to check when a connection to etcd failed in its TLS handshake
/// (`None` when the message is not about TLS).
pub(crate) fn handshake_hint(message: &str, with_tls: bool) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let about_tls = [
        "certificate",
        "handshake",
        "tls",
        "unknownissuer",
        "alert",
        "corrupt message",
    ]
    .iter()
    .any(|w| m.contains(w));
    match (about_tls, with_tls) {
        (true, true) => Some(
            " (the TLS handshake with etcd failed: check that etcd.tls.ca is the CA that issued etcd's server \
             certificate, that etcd's certificate is valid now and names this endpoint's address, and that \
             etcd trusts the CA of the agent's etcd client certificate (ETCD_TRUSTED_CA_FILE))",
        ),
        (true, false) => Some(
            " (etcd expects TLS: use an https:// etcd.endpoint and set [etcd.tls] with the agent's etcd client \
             certificate, `etcdops certs issue etcd-client`)",
        ),
        _ => None,
    }
}

/// What to do about a bad `[etcd.tls]` file of the agent of `member`.
fn tls_fix(key: &str, member: &str, problem: TlsProblem) -> String {
    let reissue = format!(
        "reissue the agent's etcd client certificate (`etcdops certs issue etcd-client agent-{member} --force`) \
         and install the .crt and .key at etcd.tls.cert and etcd.tls.key (the key 0600, readable by the agent)"
    );
    match (key, problem) {
        (_, TlsProblem::NotYetValid) => format!(
            "check this host's clock (`timedatectl`): a certificate is valid only from its start; or {reissue}"
        ),
        ("ca", TlsProblem::Expired) => {
            "the CA itself expired: make a new CA (`etcdops certs init`), reissue etcd's server and peer \
             certificates and the agents' etcd client certificates from it, and install them"
                .to_string()
        }
        ("ca", _) => "put the CA certificate that issued etcd's server certificate there (`ca.crt` of the \
             fleet PKI), readable by the agent"
            .to_string(),
        _ => reissue,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsProblem {
    Unusable,
    Expired,
    NotYetValid,
}

/// Checks the `[etcd.tls]` files of the agent of etcd member `member`
/// (none without `[etcd.tls]`): each readable, the CA and the certificate
/// PEM certificates valid at `now_unix`, the key a PEM private key that
/// goes with the certificate. The error names the file, the member and
/// what to do. Run at start-up and by `--check-config`.
pub fn check_tls_files(config: &EtcdConfig, member: &str, now_unix: i64) -> Result<(), EtcdError> {
    let Some(tls) = &config.tls else {
        return Ok(());
    };
    let error = |key: &'static str, path: &std::path::Path, problem: TlsProblem, text: String| {
        EtcdError::TlsFile(Box::new(TlsFileError {
            key,
            path: path.to_path_buf(),
            member: member.to_string(),
            endpoint: config.endpoint.clone(),
            problem: text,
            fix: tls_fix(key, member, problem),
        }))
    };
    for (key, path) in [("ca", &tls.ca), ("cert", &tls.cert)] {
        let pem = std::fs::read(path)
            .map_err(|e| error(key, path, TlsProblem::Unusable, format!("cannot read it: {e}")))?;
        let validity = match etcdops_certs::Validity::from_pem(&pem) {
            None => {
                return Err(error(
                    key,
                    path,
                    TlsProblem::Unusable,
                    "holds no PEM certificate".to_string(),
                ));
            }
            Some(Err(e)) => return Err(error(key, path, TlsProblem::Unusable, e.to_string())),
            Some(Ok(v)) => v,
        };
        let when = |unix: i64| {
            time::OffsetDateTime::from_unix_timestamp(unix)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_else(|| unix.to_string())
        };
        if now_unix > validity.not_after_unix {
            return Err(error(
                key,
                path,
                TlsProblem::Expired,
                format!("the certificate expired at {}", when(validity.not_after_unix)),
            ));
        }
        if now_unix < validity.not_before_unix {
            return Err(error(
                key,
                path,
                TlsProblem::NotYetValid,
                format!(
                    "the certificate is not valid before {}",
                    when(validity.not_before_unix)
                ),
            ));
        }
    }
    let pem = std::fs::read(&tls.key).map_err(|e| {
        error(
            "key",
            &tls.key,
            TlsProblem::Unusable,
            format!("cannot read it: {e}"),
        )
    })?;
    {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            error(
                "key",
                &tls.key,
                TlsProblem::Unusable,
                format!("holds no usable PEM private key ({e})"),
            )
        })?;
    }
    client_config(tls)
        .map(|_| ())
        .map_err(|e| error("cert", &tls.cert, TlsProblem::Unusable, e))
}

/// rustls' client configuration for `[etcd.tls]`: the CA as the only trust
/// anchor, the agent's etcd client certificate as its identity (ring).
fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("etcd.tls.{what} {}: {e}", path.display()))
    };
    let (ca, cert, key) = (
        read("ca", &tls.ca)?,
        read("cert", &tls.cert)?,
        read("key", &tls.key)?,
    );
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&ca) {
        let der = der.map_err(|e| format!("etcd.tls.ca {}: {e}", tls.ca.display()))?;
        roots
            .add(der)
            .map_err(|e| format!("etcd.tls.ca {}: {e}", tls.ca.display()))?;
    }
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("etcd.tls.cert {}: {e}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("etcd.tls.key {}: {e}", tls.key.display()))?;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "etcd.tls.cert {} with etcd.tls.key {}: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })
}

/// etcd 3.4's refusals of a membership change, recognised by their
/// message (etcd's `rpctypes`; its gRPC codes vary, the texts do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRefusal {
    /// "etcdserver: unhealthy cluster": the strict reconfiguration check
    /// (the member was not connected to every voter for 5 s). Transient.
    Unhealthy,
    /// "can only promote a learner member which is in sync with leader".
    /// Transient: the learner is still catching up.
    LearnerNotInSync,
    /// "re-configuration failed due to not enough started members".
    NotEnoughStarted,
    /// "can only promote a learner member": it is a voter already.
    NotALearner,
    /// "Peer URLs already exists": a member has the peer URL.
    PeerUrlExists,
    /// "member not found" (also "ID removed").
    MemberNotFound,
    /// "too many learner members in cluster".
    TooManyLearners,
    /// "given member URLs are invalid".
    BadUrls,
}

impl MemberRefusal {
    /// The refusal an etcd error message names, if any.
    pub fn classify(message: &str) -> Option<MemberRefusal> {
        let m = message.to_ascii_lowercase();
        // Most specific first: the not-in-sync text contains the not-a-learner one.
        let table: [(&str, MemberRefusal); 9] = [
            ("unhealthy cluster", MemberRefusal::Unhealthy),
            ("in sync with leader", MemberRefusal::LearnerNotInSync),
            ("not enough started members", MemberRefusal::NotEnoughStarted),
            ("can only promote a learner member", MemberRefusal::NotALearner),
            ("peer urls already exists", MemberRefusal::PeerUrlExists),
            ("peerurl exists", MemberRefusal::PeerUrlExists),
            ("member not found", MemberRefusal::MemberNotFound),
            ("id removed", MemberRefusal::MemberNotFound),
            ("too many learner members", MemberRefusal::TooManyLearners),
        ];
        table
            .iter()
            .find(|(text, _)| m.contains(text))
            .map(|(_, r)| *r)
            .or_else(|| {
                m.contains("member urls are invalid")
                    .then_some(MemberRefusal::BadUrls)
            })
    }

    /// Whether asking again later can succeed.
    pub fn transient(self) -> bool {
        matches!(self, MemberRefusal::Unhealthy | MemberRefusal::LearnerNotInSync)
    }

    fn hint(self) -> &'static str {
        match self {
            MemberRefusal::Unhealthy => {
                " (strict reconfiguration check: a member was not connected to every voter for the last 5 s; \
                 wait until every member is up and healthy)"
            }
            MemberRefusal::LearnerNotInSync => {
                " (the learner has not caught up with the leader yet: check that its etcd runs and reaches its peers)"
            }
            MemberRefusal::NotEnoughStarted => {
                " (too few voters are started for the new quorum: start the stopped members first)"
            }
            _ => "",
        }
    }
}

/// A membership change and the membership after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The member added (its ID and peer URLs; no name before it starts).
    pub member: Option<MemberInfo>,
    pub members: Vec<MemberInfo>,
}

/// HTTP/2 flow-control window for snapshot streams (bytes).
const SNAPSHOT_WINDOW: u32 = 8 * 1024 * 1024;

/// Maintenance.Status alone (answered locally, no raft round trip).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BriefStatus {
    pub member_id: u64,
    pub leader_id: u64,
    pub revision: i64,
    pub db_size: i64,
    pub db_size_in_use: i64,
}

/// A defragmentation of the local member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defragmented {
    pub member_id: u64,
    pub db_size_before: i64,
    pub db_size_after: i64,
    pub db_size_in_use_after: i64,
}

/// etcd's HashKV answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    pub member_id: u64,
    pub hash: u32,
    pub compact_revision: i64,
    pub revision: i64,
}

/// A leadership transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderMoved {
    pub previous_leader_id: u64,
    pub leader_id: u64,
}

/// A write probe's round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteProbed {
    pub revision: i64,
    pub latency: Duration,
}

/// A cluster member as the local member reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// An active alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmInfo {
    pub member_id: u64,
    pub kind: String,
}

/// The local member's status (Maintenance.Status plus alarms and members).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    pub member_name: String,
    pub cluster_id: u64,
    pub leader_id: u64,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub version: String,
    pub alarms: Vec<AlarmInfo>,
    /// Errors the member reports itself, plus failures to read alarms or members.
    pub errors: Vec<String>,
    pub members: Vec<MemberInfo>,
}

/// The result of a linearizable read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub latency: Duration,
    pub member_id: u64,
    pub revision: i64,
}

/// The local member.
pub struct LocalMember {
    endpoint: String,
    /// The connect options and TLS; replaced by [`LocalMember::reload_tls`].
    options: std::sync::RwLock<(ConnectOptions, Option<TlsOptions>)>,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for LocalMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMember")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl LocalMember {
    /// Prepares a connection (made lazily on first use).
    pub fn new(config: &EtcdConfig) -> Result<LocalMember, EtcdError> {
        Ok(LocalMember {
            endpoint: config.endpoint.clone(),
            options: std::sync::RwLock::new(Self::options(&config.endpoint, config.tls.as_ref())?),
            client: Mutex::new(None),
        })
    }

    /// Re-reads the TLS files (`tls`: `[etcd.tls]`, possibly with another
    /// trust anchor) and drops the connection: the next call connects with
    /// them (a certificate rotation changed them). On error nothing changes.
    pub async fn reload_tls(&self, tls: Option<&crate::config::TlsConfig>) -> Result<(), EtcdError> {
        let fresh = Self::options(&self.endpoint, tls)?;
        let mut slot = self.client.lock().await;
        *self
            .options
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        *slot = None;
        Ok(())
    }

    fn options(
        endpoint: &str,
        tls: Option<&crate::config::TlsConfig>,
    ) -> Result<(ConnectOptions, Option<TlsOptions>), EtcdError> {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let mut tls_options = None;
        if let Some(tls) = tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    EtcdError::TlsFile(Box::new(TlsFileError {
                        key: if path == tls.ca {
                            "ca"
                        } else if path == tls.cert {
                            "cert"
                        } else {
                            "key"
                        },
                        path: path.to_path_buf(),
                        member: String::new(),
                        endpoint: endpoint.to_string(),
                        problem: format!("cannot read it: {e}"),
                        fix: "make it readable by the agent (see `etcdops-agent --check-config`)".to_string(),
                    }))
                })
            };
            let tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
                .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
            options = options.with_tls(tls.clone());
            tls_options = Some(tls);
        }
        Ok((options, tls_options))
    }

    fn tls(&self) -> Option<TlsOptions> {
        self.options
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn client(&self) -> Result<Client, EtcdError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let options = self
            .options
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone();
        let client = Client::connect([self.endpoint.as_str()], Some(options))
            .await
            .map_err(|e| self.call_error(e))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// An error of a maintenance call: etcd's own refusals keep their code;
    /// transport failures are `Call` (retry).
    fn maintenance_error(&self, e: etcd_client::Error) -> EtcdError {
        match e {
            etcd_client::Error::GRpcStatus(s) if s.message().contains("database space exceeded") => {
                EtcdError::NoSpace {
                    endpoint: self.endpoint.clone(),
                }
            }
            etcd_client::Error::GRpcStatus(s)
                if !matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                ) =>
            {
                EtcdError::Rejected {
                    endpoint: self.endpoint.clone(),
                    code: s.code(),
                    message: s.message().to_string(),
                }
            }
            other => self.call_error(other),
        }
    }

    fn call_error(&self, e: etcd_client::Error) -> EtcdError {
        let mut message = match &e {
            etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
            other => other.to_string(),
        };
        // The causes say what a failed connection really was (a transport
        // error's own text is only "transport error").
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        if let Some(hint) = handshake_hint(&message, self.tls().is_some()) {
            message.push_str(hint);
        }
        EtcdError::Call {
            endpoint: self.endpoint.clone(),
            message,
        }
    }

    async fn bounded<T>(
        &self,
        timeout: Duration,
        fut: impl Future<Output = Result<T, EtcdError>>,
    ) -> Result<T, EtcdError> {
        // Boxed: etcd-client's futures are large, and debug builds keep
        // several copies of a future in each frame that awaits it; nested
        // unboxed they overflowed a worker thread's 2 MiB stack.
        tokio::time::timeout(timeout, Box::pin(fut))
            .await
            .map_err(|_| EtcdError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout,
            })?
    }

    /// Status, alarms and membership, read concurrently within `timeout`.
    ///
    /// Maintenance.Status is answered locally, but listing alarms goes
    /// through raft and stalls while the cluster has no leader: those extra
    /// reads get a shorter budget and their failure is reported in `errors`
    /// instead of hiding the member's own status.
    pub async fn status(&self, timeout: Duration) -> Result<MemberStatus, EtcdError> {
        self.status_with(timeout, true).await
    }

    /// [`LocalMember::status`] without the alarms (which wait for a leader):
    /// what a snapshot's header needs, also from a member without quorum.
    pub async fn status_without_alarms(&self, timeout: Duration) -> Result<MemberStatus, EtcdError> {
        self.status_with(timeout, false).await
    }

    async fn status_with(&self, timeout: Duration, with_alarms: bool) -> Result<MemberStatus, EtcdError> {
        let extras = timeout.mul_f32(0.75);
        self.bounded(timeout, async {
            let client = self.client().await?;
            let (mut m1, mut m2, mut c) = (
                client.maintenance_client(),
                client.maintenance_client(),
                client.cluster_client(),
            );
            // Status first (local): a member that knows no leader cannot list
            // alarms (raft-bound) and would only wait out the budget.
            let status = m1.status().await.map_err(|e| self.call_error(e))?;
            let leaderless = status.leader() == 0;
            let alarms = async {
                if with_alarms && !leaderless {
                    Some(
                        tokio::time::timeout(extras, m2.alarm(AlarmAction::Get, AlarmType::None, None)).await,
                    )
                } else {
                    None
                }
            };
            let (alarms, members) = tokio::join!(alarms, tokio::time::timeout(extras, c.member_list()));
            let too_slow = |what: &str| {
                format!("reading {what}: no answer within {extras:?} (does the cluster have a leader?)")
            };
            let header = status.header();
            let member_id = header.map(|h| h.member_id()).unwrap_or_default();
            let mut out = MemberStatus {
                member_id,
                cluster_id: header.map(|h| h.cluster_id()).unwrap_or_default(),
                leader_id: status.leader(),
                is_learner: status.is_learner(),
                raft_term: status.raft_term(),
                raft_index: status.raft_index(),
                raft_applied_index: status.raft_applied_index(),
                revision: header.map(|h| h.revision()).unwrap_or_default(),
                db_size: status.db_size(),
                db_size_in_use: status.raft_used_db_size(),
                version: status.version().to_string(),
                errors: status.errors().to_vec(),
                ..Default::default()
            };
            if with_alarms && leaderless {
                out.errors
                    .push("no leader: alarms cannot be read (they go through raft)".to_string());
            }
            match alarms {
                None => {}
                Some(Err(_)) => out.errors.push(too_slow("alarms")),
                Some(Ok(Ok(a))) => {
                    out.alarms = a
                        .alarms()
                        .iter()
                        .map(|m| AlarmInfo {
                            member_id: m.member_id(),
                            kind: alarm_name(m.alarm()),
                        })
                        .collect()
                }
                Some(Ok(Err(e))) => out.errors.push(format!("reading alarms: {}", self.call_error(e))),
            }
            match members {
                Err(_) => out.errors.push(too_slow("members")),
                Ok(Ok(list)) => {
                    out.members = list
                        .members()
                        .iter()
                        .map(|m| MemberInfo {
                            id: m.id(),
                            name: m.name().to_string(),
                            peer_urls: m.peer_urls().to_vec(),
                            client_urls: m.client_urls().to_vec(),
                            is_learner: m.is_learner(),
                        })
                        .collect();
                    out.member_name = out
                        .members
                        .iter()
                        .find(|m| m.id == member_id)
                        .map(|m| m.name.clone())
                        .unwrap_or_default();
                }
                Ok(Err(e)) => out
                    .errors
                    .push(format!("reading members: {}", self.call_error(e))),
            }
            Ok(out)
        })
        .await
    }

    /// A linearizable read of the key `health`, as `etcdctl endpoint health`
    /// does: it succeeds only if the member reaches its leader and quorum.
    pub async fn health(&self, timeout: Duration) -> Result<HealthCheck, EtcdError> {
        self.bounded(timeout, async {
            let mut kv = self.client().await?.kv_client();
            let started = Instant::now();
            let result = kv.get("health", None).await;
            let latency = started.elapsed();
            let (member_id, revision) = match result {
                Ok(resp) => resp
                    .header()
                    .map(|h| (h.member_id(), h.revision()))
                    .unwrap_or_default(),
                // Like etcdctl: a permission error still proves the member serves.
                Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("permission denied") => (0, 0),
                Err(e) => return Err(self.call_error(e)),
            };
            Ok(HealthCheck {
                latency,
                member_id,
                revision,
            })
        })
        .await
    }
}

impl LocalMember {
    /// Maintenance.Status only, within `timeout`.
    pub async fn brief_status(&self, timeout: Duration) -> Result<BriefStatus, EtcdError> {
        self.bounded(timeout, async {
            let status = self
                .client()
                .await?
                .maintenance_client()
                .status()
                .await
                .map_err(|e| self.call_error(e))?;
            let header = status.header();
            Ok(BriefStatus {
                member_id: header.map(|h| h.member_id()).unwrap_or_default(),
                leader_id: status.leader(),
                revision: header.map(|h| h.revision()).unwrap_or_default(),
                db_size: status.db_size(),
                db_size_in_use: status.raft_used_db_size(),
            })
        })
        .await
    }

    /// Defragments the local member's backend; sizes from its status before
    /// and after.
    #[tracing::instrument(name = "etcd.defragment", skip_all)]
    pub async fn defragment(&self, timeout: Duration) -> Result<Defragmented, EtcdError> {
        self.bounded(timeout, async {
            let before = self.brief_status(timeout).await?;
            self.client()
                .await?
                .maintenance_client()
                .defragment()
                .await
                .map_err(|e| self.maintenance_error(e))?;
            let after = self.brief_status(timeout).await?;
            Ok(Defragmented {
                member_id: before.member_id,
                db_size_before: before.db_size,
                db_size_after: after.db_size,
                db_size_in_use_after: after.db_size_in_use,
            })
        })
        .await
    }

    /// etcd's HashKV up to `revision` (0: the newest).
    #[tracing::instrument(name = "etcd.hash_kv", skip_all, fields(revision))]
    pub async fn hash_kv(&self, revision: i64, timeout: Duration) -> Result<HashKv, EtcdError> {
        self.bounded(timeout, async {
            match self.client().await?.maintenance_client().hash_kv(revision).await {
                Ok(r) => Ok(HashKv {
                    member_id: r.header().map(|h| h.member_id()).unwrap_or_default(),
                    hash: r.hash(),
                    compact_revision: r.compact_version(),
                    revision: r.header().map(|h| h.revision()).unwrap_or_default(),
                }),
                Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("future revision") => {
                    let current = self
                        .brief_status(timeout)
                        .await
                        .map(|b| b.revision)
                        .unwrap_or_default();
                    Err(EtcdError::FutureRevision { revision, current })
                }
                Err(e) => Err(self.maintenance_error(e)),
            }
        })
        .await
    }

    /// Compacts the key history up to `revision` (cluster-wide). `Ok(true)`
    /// when it was already compacted at or past it.
    #[tracing::instrument(name = "etcd.compact", skip_all, fields(revision, physical))]
    pub async fn compact(&self, revision: i64, physical: bool, timeout: Duration) -> Result<bool, EtcdError> {
        self.bounded(timeout, async {
            let options = physical.then(|| etcd_client::CompactionOptions::new().with_physical());
            match self.client().await?.kv_client().compact(revision, options).await {
                Ok(_) => Ok(false),
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.message().contains("required revision has been compacted") =>
                {
                    Ok(true)
                }
                Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("future revision") => {
                    let current = self
                        .brief_status(timeout)
                        .await
                        .map(|b| b.revision)
                        .unwrap_or_default();
                    Err(EtcdError::FutureRevision { revision, current })
                }
                Err(e) => Err(self.maintenance_error(e)),
            }
        })
        .await
    }

    /// Moves raft leadership from the local member (which must lead) to
    /// `target`; nothing to do when the target leads already.
    #[tracing::instrument(name = "etcd.move_leader", skip_all, fields(to = %format!("{target:016x}")))]
    pub async fn move_leader(&self, target: u64, timeout: Duration) -> Result<LeaderMoved, EtcdError> {
        self.bounded(timeout, async {
            let before = self.brief_status(timeout).await?;
            if before.leader_id == target {
                return Ok(LeaderMoved {
                    previous_leader_id: before.leader_id,
                    leader_id: target,
                });
            }
            if before.leader_id != before.member_id {
                let leader = match before.leader_id {
                    0 => "unknown (no leader now)".to_string(),
                    id => match self.member_name(id).await {
                        Some(name) if !name.is_empty() => format!("{name} ({id:x})"),
                        _ => format!("{id:x}"),
                    },
                };
                return Err(EtcdError::NotLeader {
                    member_id: before.member_id,
                    leader,
                });
            }
            self.client()
                .await?
                .maintenance_client()
                .move_leader(target)
                .await
                .map_err(|e| self.maintenance_error(e))?;
            let after = self.brief_status(timeout).await?;
            Ok(LeaderMoved {
                previous_leader_id: before.leader_id,
                leader_id: after.leader_id,
            })
        })
        .await
    }

    async fn member_name(&self, id: u64) -> Option<String> {
        let list = tokio::time::timeout(Duration::from_secs(1), async {
            self.client()
                .await
                .ok()?
                .cluster_client()
                .member_list()
                .await
                .ok()
        })
        .await
        .ok()??;
        list.members()
            .iter()
            .find(|m| m.id() == id)
            .map(|m| m.name().to_string())
    }

    /// The active alarms.
    pub async fn alarms(&self, timeout: Duration) -> Result<Vec<AlarmInfo>, EtcdError> {
        self.bounded(timeout, async {
            let resp = self
                .client()
                .await?
                .maintenance_client()
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
                .map_err(|e| self.maintenance_error(e))?;
            Ok(resp
                .alarms()
                .iter()
                .map(|m| AlarmInfo {
                    member_id: m.member_id(),
                    kind: alarm_name(m.alarm()),
                })
                .collect())
        })
        .await
    }

    /// Disarms one alarm (kind "NOSPACE" or "CORRUPT").
    #[tracing::instrument(name = "etcd.alarm_disarm", skip_all)]
    pub async fn disarm(&self, alarm: &AlarmInfo, timeout: Duration) -> Result<(), EtcdError> {
        let kind = match alarm.kind.as_str() {
            "NOSPACE" => AlarmType::Nospace,
            "CORRUPT" => AlarmType::Corrupt,
            other => {
                return Err(EtcdError::Rejected {
                    endpoint: self.endpoint.clone(),
                    code: tonic::Code::InvalidArgument,
                    message: format!("alarm kind {other:?} cannot be disarmed; known: NOSPACE, CORRUPT"),
                });
            }
        };
        self.bounded(timeout, async {
            let mut options = etcd_client::AlarmOptions::new();
            options.with_member(alarm.member_id);
            self.client()
                .await?
                .maintenance_client()
                .alarm(AlarmAction::Deactivate, kind, Some(options))
                .await
                .map_err(|e| self.maintenance_error(e))?;
            Ok(())
        })
        .await
    }

    /// Puts `value` at `key`, reads it back (linearizable) and deletes it.
    pub async fn write_probe(
        &self,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<WriteProbed, EtcdError> {
        self.bounded(timeout, async {
            let mut kv = self.client().await?.kv_client();
            let started = Instant::now();
            let put = kv
                .put(key, value, None)
                .await
                .map_err(|e| self.maintenance_error(e))?;
            let got = kv.get(key, None).await.map_err(|e| self.maintenance_error(e))?;
            kv.delete(key, None)
                .await
                .map_err(|e| self.maintenance_error(e))?;
            let latency = started.elapsed();
            if got.kvs().first().map(etcd_client::KeyValue::value) != Some(value.as_bytes()) {
                return Err(EtcdError::Call {
                    endpoint: self.endpoint.clone(),
                    message: format!("write probe: {key} did not read back the value just written"),
                });
            }
            Ok(WriteProbed {
                revision: put.header().map(|h| h.revision()).unwrap_or_default(),
                latency,
            })
        })
        .await
    }
}

impl LocalMember {
    /// The cluster's members as the local member sees them.
    pub async fn member_list(&self, timeout: Duration) -> Result<Vec<MemberInfo>, EtcdError> {
        self.bounded(timeout, async {
            let list = self
                .client()
                .await?
                .cluster_client()
                .member_list()
                .await
                .map_err(|e| self.call_error(e))?;
            Ok(members_of(list.members()))
        })
        .await
    }

    /// Adds a member with `peer_urls` (a learner when `learner`): one
    /// attempt; refusals are [`EtcdError::MemberRefused`] (retries are the
    /// caller's), "too many learners" names the learner.
    #[tracing::instrument(name = "etcd.member_add", skip_all)]
    pub async fn member_add(
        &self,
        peer_urls: &[String],
        learner: bool,
        timeout: Duration,
    ) -> Result<MembershipChange, EtcdError> {
        self.bounded(timeout, async {
            let mut options = etcd_client::MemberAddOptions::new();
            if learner {
                options = options.with_is_learner();
            }
            let added = self
                .client()
                .await?
                .cluster_client()
                .member_add(peer_urls.to_vec(), Some(options))
                .await;
            match added {
                Ok(resp) => Ok(MembershipChange {
                    member: resp.member().map(member_of),
                    members: members_of(resp.member_list()),
                }),
                Err(e) => match self.membership_error(e) {
                    EtcdError::MemberRefused {
                        refusal: MemberRefusal::TooManyLearners,
                        ..
                    } => {
                        let learners = Box::pin(self.member_list(timeout))
                            .await
                            .map(|list| {
                                list.iter()
                                    .filter(|m| m.is_learner)
                                    .map(|m| match m.name.as_str() {
                                        "" => format!("{:x} (not started)", m.id),
                                        name => format!("{name} ({:x})", m.id),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default();
                        let learner = if learners.is_empty() {
                            "(unknown)".to_string()
                        } else {
                            learners
                        };
                        Err(EtcdError::TooManyLearners { learner })
                    }
                    other => Err(other),
                },
            }
        })
        .await
    }

    /// Removes member `id`: one attempt (see [`LocalMember::member_add`]).
    #[tracing::instrument(name = "etcd.member_remove", skip_all, fields(id = %format!("{id:016x}")))]
    pub async fn member_remove(&self, id: u64, timeout: Duration) -> Result<MembershipChange, EtcdError> {
        self.bounded(timeout, async {
            let resp = self
                .client()
                .await?
                .cluster_client()
                .member_remove(id)
                .await
                .map_err(|e| self.membership_error(e))?;
            Ok(MembershipChange {
                member: None,
                members: members_of(resp.members()),
            })
        })
        .await
    }

    /// Promotes learner `id` to a voter: one attempt (see [`LocalMember::member_add`]).
    #[tracing::instrument(name = "etcd.member_promote", skip_all, fields(id = %format!("{id:016x}")))]
    pub async fn member_promote(&self, id: u64, timeout: Duration) -> Result<MembershipChange, EtcdError> {
        self.bounded(timeout, async {
            let resp = self
                .client()
                .await?
                .cluster_client()
                .member_promote(id)
                .await
                .map_err(|e| self.membership_error(e))?;
            Ok(MembershipChange {
                member: None,
                members: members_of(resp.members()),
            })
        })
        .await
    }

    /// An error of a membership call: etcd's known refusals by message,
    /// the rest as for maintenance calls.
    fn membership_error(&self, e: etcd_client::Error) -> EtcdError {
        if let etcd_client::Error::GRpcStatus(s) = &e
            && let Some(refusal) = MemberRefusal::classify(s.message())
        {
            return EtcdError::MemberRefused {
                endpoint: self.endpoint.clone(),
                refusal,
                message: s.message().to_string(),
            };
        }
        self.maintenance_error(e)
    }
}

fn member_of(m: &etcd_client::Member) -> MemberInfo {
    MemberInfo {
        id: m.id(),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

fn members_of(list: &[etcd_client::Member]) -> Vec<MemberInfo> {
    list.iter().map(member_of).collect()
}

fn alarm_name(t: AlarmType) -> String {
    match t {
        AlarmType::None => "NONE".to_string(),
        AlarmType::Nospace => "NOSPACE".to_string(),
        AlarmType::Corrupt => "CORRUPT".to_string(),
    }
}

/// A snapshot being streamed from the local member.
pub struct SnapshotReader {
    endpoint: String,
    stream: etcd_client::SnapshotStreaming,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    /// The next bytes of the snapshot file, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, EtcdError> {
        match self.stream.message().await {
            Ok(Some(msg)) => Ok(Some(msg.blob().to_vec())),
            Ok(None) => Ok(None),
            Err(e) => Err(EtcdError::Call {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            }),
        }
    }
}

impl LocalMember {
    /// Starts etcd's Maintenance.Snapshot; `timeout` bounds the start only.
    ///
    /// The snapshot gets a connection of its own with large HTTP/2 windows:
    /// with the 64 KiB default, flow control, not the disk or the network,
    /// bounds the transfer.
    #[tracing::instrument(name = "etcd.snapshot", skip_all)]
    pub async fn snapshot(&self, timeout: Duration) -> Result<SnapshotReader, EtcdError> {
        self.bounded(timeout, async {
            let call = |message: String| EtcdError::Call {
                endpoint: self.endpoint.clone(),
                message,
            };
            let mut endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
                .map_err(|e| call(e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .initial_stream_window_size(Some(SNAPSHOT_WINDOW))
                .initial_connection_window_size(Some(SNAPSHOT_WINDOW * 2));
            if let Some(tls) = self.tls() {
                endpoint = endpoint.tls_config(tls).map_err(|e| call(e.to_string()))?;
            }
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| call(format!("connecting for a snapshot: {e}")))?;
            let client = Client::from_channel(etcd_client::Channel::Tonic(channel), None)
                .await
                .map_err(|e| self.call_error(e))?;
            let stream = client
                .maintenance_client()
                .snapshot()
                .await
                .map_err(|e| self.call_error(e))?;
            Ok(SnapshotReader {
                endpoint: self.endpoint.clone(),
                stream,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKI with an etcd client certificate for `agent-etcd1` (1 day valid,
    /// made by rcgen through the certs crate) and the `[etcd.tls]` pointing at it.
    fn etcd_tls() -> (tempfile::TempDir, EtcdConfig, i64) {
        use etcdops_certs::{IssueRequest, Pki, Role};
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(dir.path(), "test-ca", 30, false).expect("ca");
        let mut request = IssueRequest::new(Role::EtcdClient, "agent-etcd1");
        request.validity_days = 1;
        let issued = pki.issue(&request).expect("issue");
        let config = EtcdConfig {
            endpoint: "https://10.0.0.1:2379".into(),
            env_file: "/etc/default/etcd".into(),
            data_dir: None,
            tls: Some(crate::config::TlsConfig {
                ca: pki.ca_cert_path(),
                cert: issued.cert_path,
                key: issued.key_path,
            }),
        };
        (dir, config, issued.not_after.unix_timestamp())
    }

    #[test]
    fn tls_files_are_checked_before_any_connection() {
        let (_dir, config, not_after) = etcd_tls();
        let tls = config.tls.clone().expect("tls");
        let now = not_after - 3600;
        check_tls_files(&config, "etcd1", now).expect("valid now");
        let plain = EtcdConfig {
            tls: None,
            ..config.clone()
        };
        check_tls_files(&plain, "etcd1", now).expect("nothing to check without [etcd.tls]");

        let text = |e: EtcdError| e.to_string();
        // Expired: names the file, the member and the reissue command.
        let err = text(check_tls_files(&config, "etcd1", not_after + 1).expect_err("expired"));
        assert!(
            err.contains("etcd.tls.cert")
                && err.contains(tls.cert.to_str().expect("utf-8"))
                && err.contains("etcd member etcd1 at https://10.0.0.1:2379")
                && err.contains("expired at")
                && err.contains("etcdops certs issue etcd-client agent-etcd1 --force"),
            "{err}"
        );
        // Not yet valid (the certs crate backdates by 5 minutes): the clock.
        let err = text(check_tls_files(&config, "etcd1", now - 2 * 86_400).expect_err("not yet"));
        assert!(
            err.contains("etcd.tls.ca") && err.contains("not valid before") && err.contains("clock"),
            "the CA is checked first: {err}"
        );
        // Missing, unreadable, not PEM.
        for (key, field) in [("ca", 0), ("cert", 1), ("key", 2)] {
            let mut broken = config.clone();
            let t = broken.tls.as_mut().expect("tls");
            let path = [&mut t.ca, &mut t.cert, &mut t.key];
            *path.into_iter().nth(field).expect("field") = "/nonexistent/file.pem".into();
            let err = text(check_tls_files(&broken, "etcd1", now).expect_err("missing"));
            assert!(
                err.contains(&format!("etcd.tls.{key} /nonexistent/file.pem"))
                    && err.contains("cannot read it"),
                "{err}"
            );
        }
        let mut swapped = config.clone();
        let t = swapped.tls.as_mut().expect("tls");
        t.key = t.cert.clone();
        let err = text(check_tls_files(&swapped, "etcd1", now).expect_err("a certificate as the key"));
        assert!(
            err.contains("etcd.tls.key") && err.contains("no usable PEM private key"),
            "{err}"
        );
        let mut swapped = config.clone();
        let t = swapped.tls.as_mut().expect("tls");
        t.cert = t.key.clone();
        let err = text(check_tls_files(&swapped, "etcd1", now).expect_err("a key as the certificate"));
        assert!(
            err.contains("etcd.tls.cert") && err.contains("holds no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn an_expired_ca_says_to_make_a_new_one() {
        let (_dir, config, _) = etcd_tls();
        let tls = config.tls.clone().expect("tls");
        let ca = etcdops_certs::Validity::from_pem(&std::fs::read(&tls.ca).expect("ca"))
            .expect("pem")
            .expect("validity");
        // Past the CA's 30 days (and the leaf's 1 day): the CA is checked first.
        let err = check_tls_files(&config, "etcd1", ca.not_after_unix + 1)
            .expect_err("expired CA")
            .to_string();
        assert!(
            err.contains("etcd.tls.ca") && err.contains("make a new CA"),
            "{err}"
        );
    }

    #[test]
    fn membership_refusals_are_recognised_by_etcds_messages() {
        let cases = [
            ("etcdserver: unhealthy cluster", Some(MemberRefusal::Unhealthy)),
            (
                "etcdserver: can only promote a learner member which is in sync with leader",
                Some(MemberRefusal::LearnerNotInSync),
            ),
            (
                "etcdserver: can only promote a learner member",
                Some(MemberRefusal::NotALearner),
            ),
            (
                "etcdserver: re-configuration failed due to not enough started members",
                Some(MemberRefusal::NotEnoughStarted),
            ),
            (
                "etcdserver: Peer URLs already exists",
                Some(MemberRefusal::PeerUrlExists),
            ),
            ("membership: peerURL exists", Some(MemberRefusal::PeerUrlExists)),
            (
                "etcdserver: member not found",
                Some(MemberRefusal::MemberNotFound),
            ),
            ("membership: ID removed", Some(MemberRefusal::MemberNotFound)),
            (
                "etcdserver: too many learner members in cluster",
                Some(MemberRefusal::TooManyLearners),
            ),
            (
                "etcdserver: given member URLs are invalid",
                Some(MemberRefusal::BadUrls),
            ),
            ("etcdserver: request timed out", None),
            ("etcdserver: no leader", None),
        ];
        for (message, want) in cases {
            assert_eq!(MemberRefusal::classify(message), want, "{message}");
        }
        let transient: Vec<_> = cases
            .iter()
            .filter_map(|(_, r)| *r)
            .filter(|r| r.transient())
            .collect();
        assert_eq!(
            transient,
            [MemberRefusal::Unhealthy, MemberRefusal::LearnerNotInSync]
        );
    }

    #[test]
    fn refusals_explain_themselves() {
        let e = EtcdError::MemberRefused {
            endpoint: "http://e:2379".into(),
            refusal: MemberRefusal::Unhealthy,
            message: "etcdserver: unhealthy cluster".into(),
        };
        assert!(e.to_string().contains("strict reconfiguration check"), "{e}");
        let e = EtcdError::TooManyLearners {
            learner: "etcd4 (8e9e05c52164694d)".into(),
        };
        assert_eq!(
            e.to_string(),
            "etcd allows one learner at a time: promote or remove learner etcd4 (8e9e05c52164694d) first"
        );
    }
}
