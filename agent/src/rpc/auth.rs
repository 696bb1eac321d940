//! Authorisation: every RPC must come from a certificate of the fleet CA
//! (checked by the TLS layer) whose role grants the access the RPC needs.
//!
//! [`REQUIRED`] is the one table of every RPC and the access it needs
//! (`observer` reads, `operator` changes; `coordinator` certificates count
//! as `operator`, see `etcdops_certs::role`). [`Authorized`] is the tower
//! service in front of the generated one that checks it: it sees the gRPC
//! method in the request path (a tonic interceptor does not). A call refused
//! there is answered `Unauthenticated` (no readable client certificate) or
//! `PermissionDenied` naming the access it needs and the caller's role, and
//! is written to the audit trail. An RPC missing from the table needs
//! `operator` (fail closed); a unit test keeps the table complete.
//!
//! ProbeDisk needs `operator`: it changes nothing of etcd, but it writes
//! and fdatasyncs tens of MB beside the data dir, competing with etcd's WAL
//! fsyncs on the same disk; an observer must not be able to load a member.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use etcdops_certs::{Access, CertDetails, Identity};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::audit::{AuditLog, AuditRecord};

/// Every RPC of the agent API and the access it needs; `true` when a call
/// is audited even when allowed (it changes something, or reads the audit).
pub const REQUIRED: &[(&str, Access, bool)] = &[
    ("GetStatus", Access::Observer, false),
    ("Health", Access::Observer, false),
    ("SaveSnapshot", Access::Observer, false),
    ("GetUnitStatus", Access::Observer, false),
    ("RevisionAt", Access::Observer, false),
    ("HashKv", Access::Observer, false),
    ("ProbeDisk", Access::Operator, true),
    ("StartEtcd", Access::Operator, true),
    ("StopEtcd", Access::Operator, true),
    ("RestartEtcd", Access::Operator, true),
    ("SetEtcdEnv", Access::Operator, true),
    ("MoveDataDirAside", Access::Operator, true),
    ("AcquireFence", Access::Operator, true),
    ("ReleaseFence", Access::Operator, true),
    ("Defragment", Access::Operator, true),
    ("Compact", Access::Operator, true),
    ("MoveLeader", Access::Operator, true),
    ("DisarmAlarms", Access::Operator, true),
    ("WriteProbe", Access::Operator, true),
    ("AddMember", Access::Operator, true),
    ("RemoveMember", Access::Operator, true),
    ("PromoteMember", Access::Operator, true),
    ("StageRestore", Access::Operator, true),
    ("SwapInRestore", Access::Operator, true),
    ("RollBackRestore", Access::Operator, true),
    ("PruneKeptCopies", Access::Operator, true),
    // Certificate metadata (serials, expiry) and served certificates: a read.
    ("GetCertificates", Access::Observer, false),
    ("InstallCertificates", Access::Operator, true),
    // The etcd binaries' versions: a read.
    ("EtcdVersions", Access::Observer, false),
    ("SetEtcdBinary", Access::Operator, true),
    // The audit trail names operators and what they did: operators only.
    ("GetAudit", Access::Operator, false),
];

/// The access `method` needs, and whether it is audited when allowed.
/// Unknown methods need `operator` and are audited.
pub fn required(method: &str) -> (Access, bool) {
    REQUIRED
        .iter()
        .find(|(m, _, _)| *m == method)
        .map_or((Access::Operator, true), |(_, access, audited)| {
            (*access, *audited)
        })
}

/// The authenticated caller, stored in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// Subject, serial, role and fingerprint, for the audit trail.
    pub details: CertDetails,
}

/// Who presented what: the verified peer certificate, or why there is none.
fn authenticate(extensions: &http::Extensions) -> Result<Caller, Status> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or_else(|| {
            Status::unauthenticated(
                "no client certificate: call the agent with an operator or observer certificate of the fleet CA",
            )
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    let (identity, details) = CertDetails::from_der(leaf)
        .map_err(|e| Status::unauthenticated(format!("unreadable client certificate: {e}")))?;
    Ok(Caller { identity, details })
}

/// Whether `caller` may call `method`: `PermissionDenied` naming the access
/// needed and the caller's role when not.
#[allow(clippy::result_large_err)]
pub fn authorize(method: &str, caller: &Identity) -> Result<(), Status> {
    let (needed, _) = required(method);
    match caller.role.and_then(|r| r.access()) {
        Some(access) if access.allows(needed) => Ok(()),
        _ => {
            let role = caller
                .role
                .map_or_else(|| "no etcdops role".to_string(), |r| format!("role {r}"));
            Err(Status::permission_denied(format!(
                "{method} needs the {needed} role; certificate {:?} has {role} \
                 (issue one with `etcdops certs issue {needed} --name NAME`)",
                caller.name
            )))
        }
    }
}

/// The gRPC method of a request path: `/etcdops.agent.v1.Agent/Defragment` → `Defragment`.
fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The generated service behind the role check (see the module doc).
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    audit: Arc<AuditLog>,
    /// This agent's name, for audit records.
    agent: Arc<str>,
}

impl<S> Authorized<S> {
    pub fn new(inner: S, audit: Arc<AuditLog>, agent: &str) -> Authorized<S> {
        Authorized {
            inner,
            audit,
            agent: Arc::from(agent),
        }
    }
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Authorized<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_of(request.uri().path()).to_string();
        let checked = match authenticate(request.extensions()) {
            Ok(caller) => match authorize(&method, &caller.identity) {
                Ok(()) => Ok(caller),
                Err(status) => Err((status, Some(caller))),
            },
            Err(status) => Err((status, None)),
        };
        match checked {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err((status, caller)) => {
                let who = caller
                    .as_ref()
                    .map_or_else(|| "no certificate".to_string(), |c| c.identity.describe());
                tracing::warn!(rpc = %method, caller = %who, "refused: {}", status.message());
                self.audit
                    .record(&refusal(&self.agent, &method, caller.as_ref(), &status, started));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The audit record of a call refused before its request was read.
fn refusal(
    agent: &str,
    method: &str,
    caller: Option<&Caller>,
    status: &Status,
    started: Instant,
) -> AuditRecord {
    let (time_unix_ms, time) = crate::audit::now();
    AuditRecord {
        time_unix_ms,
        time,
        agent: agent.to_string(),
        rpc: method.to_string(),
        caller: caller.map(|c| c.details.clone()),
        cluster: String::new(),
        operation_id: String::new(),
        step: String::new(),
        fence_epoch: 0,
        arguments: serde_json::Value::Null,
        outcome: "refused".to_string(),
        code: format!("{:?}", status.code()),
        error: Some(status.message().to_string()),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use etcdops_certs::Role;

    use super::*;

    /// The RPCs of the `Agent` service as the proto file declares them.
    fn proto_rpcs() -> BTreeSet<String> {
        let proto = include_str!("../../../proto/proto/etcdops/agent/v1/agent.proto");
        let service = proto
            .split("service Agent {")
            .nth(1)
            .and_then(|s| s.split("\n}").next())
            .expect("the proto declares service Agent");
        service
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(|name| name.trim().to_string())
            .collect()
    }

    #[test]
    fn the_table_covers_every_rpc_of_the_service() {
        let rpcs = proto_rpcs();
        assert!(rpcs.len() > 20, "{rpcs:?}");
        let table: BTreeSet<String> = REQUIRED.iter().map(|(m, _, _)| m.to_string()).collect();
        assert_eq!(table.len(), REQUIRED.len(), "an RPC is listed twice in REQUIRED");
        let missing: Vec<&String> = rpcs.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "RPCs without a required role: {missing:?}; add them to REQUIRED in agent/src/rpc/auth.rs"
        );
        let stale: Vec<&String> = table.difference(&rpcs).collect();
        assert!(
            stale.is_empty(),
            "REQUIRED lists RPCs the service lacks: {stale:?}"
        );
    }

    #[test]
    fn every_operator_rpc_that_changes_something_is_audited() {
        for (method, access, audited) in REQUIRED {
            if *access == Access::Observer {
                assert!(!audited, "{method}: reads are not audited");
            } else if *method != "GetAudit" {
                assert!(audited, "{method} changes something: it must be audited");
            }
        }
        assert_eq!(required("SomethingNew"), (Access::Operator, true));
    }

    fn identity(role: Option<Role>) -> Identity {
        Identity {
            role,
            name: "someone".into(),
            not_after_unix: 0,
        }
    }

    #[test]
    fn roles_against_the_table() {
        let observer = identity(Some(Role::Observer));
        assert!(authorize("GetStatus", &observer).is_ok());
        assert!(authorize("SaveSnapshot", &observer).is_ok());
        let denied = authorize("Defragment", &observer).expect_err("observer defrag");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("needs the operator role")
                && denied.message().contains("role observer"),
            "{}",
            denied.message()
        );
        for role in [Role::Operator, Role::Coordinator] {
            for (method, _, _) in REQUIRED {
                assert!(
                    authorize(method, &identity(Some(role))).is_ok(),
                    "{role} {method}"
                );
            }
        }
        for role in [Some(Role::Agent), Some(Role::EtcdClient), None] {
            let denied = authorize("GetStatus", &identity(role)).expect_err("not a client role");
            assert_eq!(denied.code(), tonic::Code::PermissionDenied);
            assert!(
                denied.message().contains("needs the observer role"),
                "{}",
                denied.message()
            );
        }
        assert!(authorize("GetAudit", &observer).is_err());
    }

    #[test]
    fn method_names_from_paths() {
        assert_eq!(method_of("/etcdops.agent.v1.Agent/Defragment"), "Defragment");
        assert_eq!(method_of("odd"), "odd");
    }
}
