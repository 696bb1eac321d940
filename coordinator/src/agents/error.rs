//! What can go wrong with one agent, and how transport, TLS and gRPC failures are told apart.
//!
//! tonic, hyper and h2 wrap the cause several layers deep (and sometimes only
//! as text); the classifiers here walk the source chain once so that every
//! failure gets a kind, and every kind says what to check.

use std::error::Error as StdError;
use std::time::Duration;

use rustls::AlertDescription;
use tonic::{Code, Status};

use crate::duration;
use crate::fleet::{AgentUrl, Member};

/// A failure to get an answer from one agent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("agent {member} at {agent} {kind}")]
pub struct AgentError {
    pub member: String,
    pub agent: AgentUrl,
    pub kind: AgentErrorKind,
}

/// What went wrong with one agent, with what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentErrorKind {
    #[error("has an unusable endpoint: {reason}")]
    InvalidEndpoint { reason: String },
    #[error(
        "unreachable: {reason} — is etcdops-agent running on that host, and is its address in the fleet file right?"
    )]
    Unreachable { reason: String },
    #[error(
        "could not connect within {} — is the host up, is a firewall dropping packets, and is that the agent's port?",
        duration::format(*after)
    )]
    ConnectTimeout { after: Duration },
    #[error(
        "did not answer within {} — is the agent or its host overloaded? (--timeout waits longer)",
        duration::format(*after)
    )]
    CallTimeout { after: Duration },
    #[error(
        "presented a certificate we do not trust: {reason} — was it issued by the fleet CA with --host {host}?"
    )]
    AgentCertificate { host: String, reason: String },
    #[error("is not the agent of this member: {reason}")]
    AgentIdentity { reason: String },
    #[error(
        "refused our client certificate: {reason} — is [tls] cert in the fleet file an operator (or observer) certificate from the same fleet CA as the agent's?"
    )]
    ClientCertificateRefused { reason: String },
    #[error(
        "denied the call: {message} — [tls] cert in the fleet file must carry a role that may make this call (etcdops certs issue operator)"
    )]
    PermissionDenied { message: String },
    #[error(
        "closed the connection during the call ({reason}) — under TLS 1.3 that is how an agent refuses a client \
         certificate: is [tls] cert in the fleet file an operator certificate from the same fleet CA as the \
         agent's? If it is, the agent may have restarted: try again"
    )]
    ConnectionClosed { reason: String },
    #[error(
        "TLS failed: {reason} — does the agent serve TLS on that port with a certificate from the fleet CA?"
    )]
    Tls { reason: String },
    #[error("failed: {code}: {message}")]
    Rpc { code: Code, message: String },
    #[error("could not be queried: {reason}")]
    Internal { reason: String },
}

impl AgentError {
    /// The error of `member`'s agent.
    pub fn new(member: &Member, kind: AgentErrorKind) -> AgentError {
        AgentError {
            member: member.name.clone(),
            agent: member.agent.clone(),
            kind,
        }
    }

    /// A short form for a table cell, where the member and agent have columns
    /// of their own: `agent unreachable: connection refused`.
    pub fn brief(&self) -> String {
        format!("agent {}", self.kind.brief())
    }
}

impl AgentErrorKind {
    /// What went wrong, without the advice.
    pub fn brief(&self) -> String {
        match self {
            AgentErrorKind::InvalidEndpoint { reason } => format!("endpoint unusable: {reason}"),
            AgentErrorKind::Unreachable { reason } => format!("unreachable: {reason}"),
            AgentErrorKind::ConnectTimeout { after } => {
                format!("connect timed out after {}", duration::format(*after))
            }
            AgentErrorKind::CallTimeout { after } => {
                format!("did not answer within {}", duration::format(*after))
            }
            AgentErrorKind::AgentCertificate { reason, .. } => format!("certificate not trusted: {reason}"),
            AgentErrorKind::AgentIdentity { reason } => format!("not this member's agent: {reason}"),
            AgentErrorKind::ClientCertificateRefused { reason } => {
                format!("refused our certificate: {reason}")
            }
            AgentErrorKind::PermissionDenied { message } => format!("denied: {message}"),
            AgentErrorKind::ConnectionClosed { reason } => {
                format!("closed the connection: {reason} (our certificate refused?)")
            }
            AgentErrorKind::Tls { reason } => format!("TLS failed: {reason}"),
            AgentErrorKind::Rpc { code, message } => format!("failed: {code}: {message}"),
            AgentErrorKind::Internal { reason } => format!("could not be queried: {reason}"),
        }
    }
}

/// What a failed connect means.
pub(super) fn classify_connect(
    err: &(dyn StdError + 'static),
    host: &str,
    timeout: Duration,
) -> AgentErrorKind {
    classify_chain(err, host, timeout).unwrap_or_else(|| AgentErrorKind::Unreachable {
        reason: chain_message(err),
    })
}

/// What a failed call means: the agent's own answer, or a transport failure underneath.
pub(super) fn classify_status(status: &Status, host: &str, timeout: Duration) -> AgentErrorKind {
    match status.code() {
        Code::PermissionDenied => {
            return AgentErrorKind::PermissionDenied {
                message: status.message().to_string(),
            };
        }
        Code::Unauthenticated => {
            return AgentErrorKind::ClientCertificateRefused {
                reason: status.message().to_string(),
            };
        }
        _ => {}
    }
    let source = StdError::source(status);
    match source.and_then(|source| classify_chain(source, host, timeout)) {
        // We were connected, so a lost connection means the agent closed it.
        Some(AgentErrorKind::Unreachable { reason }) => return AgentErrorKind::ConnectionClosed { reason },
        Some(kind) => return kind,
        None => {}
    }
    match status.code() {
        // The agent's own answer at the end of its budget: what it says
        // (e.g. the state etcd is in) is the news, not our clock.
        Code::DeadlineExceeded if source.is_none() && !status.message().is_empty() => AgentErrorKind::Rpc {
            code: Code::DeadlineExceeded,
            message: status.message().to_string(),
        },
        Code::DeadlineExceeded => AgentErrorKind::CallTimeout { after: timeout },
        Code::Cancelled | Code::Unavailable | Code::Unknown if source.is_some() => {
            AgentErrorKind::ConnectionClosed {
                reason: source.map_or_else(|| status.message().to_string(), deepest_message),
            }
        }
        code => AgentErrorKind::Rpc {
            code,
            message: status.message().to_string(),
        },
    }
}

/// The innermost error's message: `connection closed`.
fn deepest_message(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    // hyper prefixes its kind: "operation was canceled: connection closed".
    text.rsplit(": ").next().unwrap_or(&text).to_string()
}

/// Looks through an error's sources for something we can name: an I/O
/// error, a rustls error or a tonic timeout.
fn classify_chain(err: &(dyn StdError + 'static), host: &str, timeout: Duration) -> Option<AgentErrorKind> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(classify_rustls(tls, host));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // io::Error::source() skips the wrapped error itself, so look at it here.
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(classify_rustls(tls, host));
            }
            // h2 and hyper pass TLS errors on as text inside an I/O error.
            if io.kind() == std::io::ErrorKind::InvalidData
                && let Some(kind) = classify_rustls_text(&io.to_string(), host)
            {
                return Some(kind);
            }
            if let Some(kind) = classify_io(io) {
                return Some(kind);
            }
        }
        if e.is::<tonic::TimeoutExpired>() {
            return Some(AgentErrorKind::CallTimeout { after: timeout });
        }
        current = e.source();
    }
    None
}

fn classify_io(io: &std::io::Error) -> Option<AgentErrorKind> {
    use std::io::ErrorKind;
    let reason = match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::TimedOut => "connection timed out",
        ErrorKind::HostUnreachable => "no route to host",
        ErrorKind::NetworkUnreachable => "network unreachable",
        ErrorKind::AddrNotAvailable => "address not available",
        ErrorKind::ConnectionReset => "connection reset by the agent",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::BrokenPipe => "connection closed by the agent",
        ErrorKind::UnexpectedEof => "connection closed by the agent",
        _ => return None,
    };
    Some(AgentErrorKind::Unreachable {
        reason: reason.to_string(),
    })
}

fn classify_rustls(err: &rustls::Error, host: &str) -> AgentErrorKind {
    let reason = err.to_string();
    match err {
        rustls::Error::AlertReceived(alert) if refuses_our_certificate(*alert) => {
            AgentErrorKind::ClientCertificateRefused { reason }
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))
            if other.0.is::<etcdops_certs::AgentIdentityError>() =>
        {
            AgentErrorKind::AgentIdentity {
                reason: other.0.to_string(),
            }
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            AgentErrorKind::AgentCertificate {
                host: host.to_string(),
                reason,
            }
        }
        _ => AgentErrorKind::Tls { reason },
    }
}

/// The same as [`classify_rustls`] for a rustls error that reached us only as
/// its message (`received fatal alert: UnknownCA`).
fn classify_rustls_text(text: &str, host: &str) -> Option<AgentErrorKind> {
    if let Some(alert) = text.strip_prefix("received fatal alert: ") {
        let refused = CERTIFICATE_ALERTS
            .iter()
            .any(|a| format!("{a:?}") == alert.trim());
        let reason = text.to_string();
        return Some(if refused {
            AgentErrorKind::ClientCertificateRefused { reason }
        } else {
            AgentErrorKind::Tls { reason }
        });
    }
    // Our own check of the agent's role and name (etcdops_certs::check_agent_identity).
    if let Some(at) = text.find(AGENT_IDENTITY_MARK) {
        return Some(AgentErrorKind::AgentIdentity {
            reason: text[at..].to_string(),
        });
    }
    if text.starts_with("invalid peer certificate") {
        return Some(AgentErrorKind::AgentCertificate {
            host: host.to_string(),
            reason: text.to_string(),
        });
    }
    if text.starts_with("received corrupt message") || text.starts_with("peer is incompatible") {
        return Some(AgentErrorKind::Tls {
            reason: text.to_string(),
        });
    }
    None
}

/// How every [`etcdops_certs::AgentIdentityError`] message starts.
const AGENT_IDENTITY_MARK: &str = "the agent dialled for member ";

/// Alerts a server sends when it does not accept the client's certificate.
const CERTIFICATE_ALERTS: [AlertDescription; 9] = [
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnknownCA,
    AlertDescription::AccessDenied,
    AlertDescription::CertificateRequired,
    // What rustls answers when the client's CertificateVerify does not check out.
    AlertDescription::DecryptError,
];

/// Whether a server sends this alert when it does not accept the client's certificate.
fn refuses_our_certificate(alert: AlertDescription) -> bool {
    CERTIFICATE_ALERTS.contains(&alert)
}

/// An error and its sources as one line, without repeating a source that
/// its wrapper already quotes.
pub(super) fn chain_message(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.last().is_some_and(|prev| prev.contains(&text)) && !text.is_empty() {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn io_err(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "boom")
    }

    #[test]
    fn classifies_transport_failures() {
        let cases: Vec<(Box<dyn StdError + 'static>, AgentErrorKind)> = vec![
            (
                Box::new(io_err(io::ErrorKind::ConnectionRefused)),
                AgentErrorKind::Unreachable {
                    reason: "connection refused".into(),
                },
            ),
            (
                Box::new(io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                )),
                AgentErrorKind::ClientCertificateRefused {
                    reason: "received fatal alert: UnknownCA".into(),
                },
            ),
            (
                Box::new(io::Error::new(
                    io::ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                )),
                AgentErrorKind::ClientCertificateRefused {
                    reason: "received fatal alert: CertificateRequired".into(),
                },
            ),
            (
                Box::new(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                AgentErrorKind::AgentCertificate {
                    host: "h".into(),
                    reason: "invalid peer certificate: UnknownIssuer".into(),
                },
            ),
            (
                Box::new(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                AgentErrorKind::Tls {
                    reason: "received corrupt message of type InvalidContentType".into(),
                },
            ),
            (
                Box::new(tonic::TimeoutExpired(())),
                AgentErrorKind::CallTimeout { after: T },
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(classify_connect(err.as_ref(), "h", T), expected, "{err}");
        }
        let as_text = io::Error::new(io::ErrorKind::InvalidData, "received fatal alert: DecryptError");
        assert!(matches!(
            classify_connect(&as_text, "h", T),
            AgentErrorKind::ClientCertificateRefused { .. }
        ));
        let as_text = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: HandshakeFailure",
        );
        assert!(matches!(
            classify_connect(&as_text, "h", T),
            AgentErrorKind::Tls { .. }
        ));
        let as_text = io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        assert!(matches!(
            classify_connect(&as_text, "h", T),
            AgentErrorKind::AgentCertificate { .. }
        ));
        let other = io_err(io::ErrorKind::Other);
        assert_eq!(
            classify_connect(&other, "h", T),
            AgentErrorKind::Unreachable {
                reason: "boom".into()
            }
        );
    }

    #[test]
    fn classifies_statuses() {
        let cases = [
            (
                Status::permission_denied("role agent may not call"),
                "PermissionDenied",
            ),
            (
                Status::unauthenticated("no client certificate"),
                "ClientCertificateRefused",
            ),
            (Status::deadline_exceeded(""), "CallTimeout"),
            (
                Status::deadline_exceeded("etcd on etcd1 is stopping: the restart goes on"),
                "Rpc",
            ),
            (Status::failed_precondition("etcd is stopped"), "Rpc"),
            (Status::unavailable("busy"), "Rpc"),
        ];
        for (status, expected) in cases {
            let kind = classify_status(&status, "h", T);
            assert!(
                format!("{kind:?}").starts_with(expected),
                "{status:?} -> {kind:?}"
            );
        }
        let with_source = Status::from_error(Box::new(io_err(io::ErrorKind::ConnectionReset)));
        assert_eq!(
            classify_status(&with_source, "h", T),
            AgentErrorKind::ConnectionClosed {
                reason: "connection reset by the agent".into()
            }
        );
        let mut cancelled = Status::cancelled("operation was canceled");
        cancelled.set_source(std::sync::Arc::new(io::Error::other(
            "operation was canceled: connection closed",
        )));
        assert_eq!(
            classify_status(&cancelled, "h", T),
            AgentErrorKind::ConnectionClosed {
                reason: "connection closed".into()
            }
        );
    }

    #[test]
    fn messages_name_the_member_and_what_to_check() {
        let member = Member::new("etcd2", "https://127.0.0.12:7443").expect("member");
        let err = AgentError::new(
            &member,
            AgentErrorKind::Unreachable {
                reason: "connection refused".into(),
            },
        );
        assert_eq!(
            err.to_string(),
            "agent etcd2 at https://127.0.0.12:7443 unreachable: connection refused — is etcdops-agent running \
             on that host, and is its address in the fleet file right?"
        );
        assert_eq!(err.brief(), "agent unreachable: connection refused");
        let err = AgentError::new(
            &member,
            AgentErrorKind::CallTimeout {
                after: Duration::from_millis(500),
            },
        );
        assert!(err.to_string().contains("within 500ms"), "{err}");
        assert_eq!(err.brief(), "agent did not answer within 500ms");
    }

    #[test]
    fn chain_message_skips_repeats() {
        let inner = io_err(io::ErrorKind::Other);
        let status = Status::from_error(Box::new(inner));
        assert_eq!(chain_message(&status), status.to_string());
    }
}
