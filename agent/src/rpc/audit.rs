//! What an audited call records of its request ([`Audited`]: the fence and
//! the arguments, secrets left out, payloads summarised), and GetAudit.

use std::sync::Arc;
use std::time::Instant;

use etcdops_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Status;

use crate::audit::{AuditLog, AuditRecord};
use crate::rpc::auth::Caller;

/// The most records one GetAudit returns (and its default).
pub const MAX_RECORDS: u32 = 1000;

/// What an audit record keeps of a request.
pub trait Audited {
    /// The request's fence (cluster, epoch, operation, step).
    fn fence(&self) -> Option<&pb::Fence>;
    /// The arguments, without the fence, secrets or bulk bytes.
    fn arguments(&self) -> Value;
}

/// Whether an etcd environment variable may hold a secret: its value is not recorded.
fn secret_name(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN", "CREDENTIAL"]
        .iter()
        .any(|s| key.contains(s))
}

macro_rules! fenced_request {
    ($t:ty, |$r:ident| $args:expr) => {
        impl Audited for $t {
            fn fence(&self) -> Option<&pb::Fence> {
                self.fence.as_ref()
            }
            fn arguments(&self) -> Value {
                let $r = self;
                $args
            }
        }
    };
}

fenced_request!(
    pb::UnitRequest,
    |r| json!({"timeout_ms": r.timeout_ms, "boot": r.boot})
);
fenced_request!(pb::SetEtcdEnvRequest, |r| {
    let set: serde_json::Map<String, Value> = r
        .set
        .iter()
        .map(|v| {
            let value = if secret_name(&v.key) {
                Value::String(format!("<{} bytes, not recorded>", v.value.len()))
            } else {
                Value::String(v.value.clone())
            };
            (v.key.clone(), value)
        })
        .collect();
    json!({"set": set, "unset": r.unset})
});
fenced_request!(pb::MoveDataDirAsideRequest, |r| json!({"reason": r.reason}));
fenced_request!(pb::AcquireFenceRequest, |r| json!({
    "holder": r.holder, "operation_kind": r.operation_kind, "takeover": r.takeover
}));
fenced_request!(pb::ReleaseFenceRequest, |_r| json!({}));
fenced_request!(pb::DefragmentRequest, |r| json!({"timeout_ms": r.timeout_ms}));
fenced_request!(pb::CompactRequest, |r| json!({
    "revision": r.revision, "physical": r.physical, "timeout_ms": r.timeout_ms
}));
fenced_request!(pb::MoveLeaderRequest, |r| json!({
    "target_member_id": format!("{:016x}", r.target_member_id), "timeout_ms": r.timeout_ms
}));
fenced_request!(pb::DisarmAlarmsRequest, |r| json!({
    "alarms": r.alarms.iter().map(|a| json!({"member_id": format!("{:016x}", a.member_id), "kind": a.kind})).collect::<Vec<_>>()
}));
fenced_request!(pb::WriteProbeRequest, |r| json!({"timeout_ms": r.timeout_ms}));
fenced_request!(pb::InstallCertificatesRequest, |r| json!({
    // The certificates by kind; private keys are never recorded.
    "certificates": r.certificates.iter().map(|c| json!({"cert": c.cert, "cert_pem_bytes": c.cert_pem.len()})).collect::<Vec<_>>(),
    "check_only": r.check_only
}));
fenced_request!(pb::SetEtcdBinaryRequest, |r| json!({"path": r.path}));
fenced_request!(pb::PruneKeptCopiesRequest, |r| json!({
    "keep": r.keep, "max_age_secs": r.max_age_secs, "protect": r.protect, "dry_run": r.dry_run
}));
fenced_request!(pb::AddMemberRequest, |r| json!({
    "peer_urls": r.peer_urls, "is_learner": r.is_learner, "timeout_ms": r.timeout_ms
}));
fenced_request!(pb::RemoveMemberRequest, |r| json!({
    "member_id": format!("{:016x}", r.member_id), "timeout_ms": r.timeout_ms
}));
fenced_request!(pb::PromoteMemberRequest, |r| json!({
    "member_id": format!("{:016x}", r.member_id), "timeout_ms": r.timeout_ms
}));
fenced_request!(pb::SwapInRestoreRequest, |r| json!({"staged_dir": r.staged_dir}));
fenced_request!(pb::RollBackRestoreRequest, |r| json!({"previous": r.previous}));
// The snapshot's bytes are summarised by the header's size and sha256.
fenced_request!(pb::RestoreHeader, |r| json!({
    "size": r.size,
    "sha256": r.sha256,
    "name": r.name,
    "initial_cluster": r.initial_cluster,
    "initial_cluster_token": r.initial_cluster_token,
    "initial_advertise_peer_urls": r.initial_advertise_peer_urls,
    "bump_revision": r.bump_revision,
}));

/// A request that could not be read (a restore stream without its header).
#[derive(Debug)]
pub struct Unread;

impl Audited for Unread {
    fn fence(&self) -> Option<&pb::Fence> {
        None
    }
    fn arguments(&self) -> Value {
        Value::Null
    }
}

impl Audited for pb::ProbeDiskRequest {
    fn fence(&self) -> Option<&pb::Fence> {
        None
    }
    fn arguments(&self) -> Value {
        json!({"total_bytes": self.total_bytes, "block_size": self.block_size})
    }
}

/// An audited call under way: what its record keeps of the request, taken
/// before the request is consumed. [`Pending::finish`] writes the record
/// with the outcome; dropped unfinished (the caller went away and the
/// handler with it), it writes a `cancelled` record.
#[derive(Debug)]
pub struct Pending {
    log: Arc<AuditLog>,
    agent: Arc<str>,
    method: &'static str,
    caller: Option<Caller>,
    fence: Option<pb::Fence>,
    arguments: Value,
    started: Instant,
    done: bool,
}

impl Pending {
    pub fn new(
        log: Arc<AuditLog>,
        agent: Arc<str>,
        method: &'static str,
        caller: Option<Caller>,
        request: &dyn Audited,
    ) -> Pending {
        Pending {
            log,
            agent,
            method,
            caller,
            fence: request.fence().cloned(),
            arguments: request.arguments(),
            started: Instant::now(),
            done: false,
        }
    }

    /// Writes the record with the call's outcome.
    pub fn finish<T>(mut self, result: &Result<T, Status>) {
        self.done = true;
        let (outcome, code, error) = match result {
            Ok(_) => ("ok", "Ok".to_string(), None),
            Err(status) => (
                "failed",
                format!("{:?}", status.code()),
                Some(status.message().to_string()),
            ),
        };
        self.write(outcome, code, error);
    }

    fn write(&mut self, outcome: &str, code: String, error: Option<String>) {
        let (time_unix_ms, time) = crate::audit::now();
        let fence = self.fence.as_ref();
        let record = AuditRecord {
            time_unix_ms,
            time,
            agent: self.agent.to_string(),
            rpc: self.method.to_string(),
            caller: self.caller.as_ref().map(|c| c.details.clone()),
            cluster: fence.map(|f| f.cluster.clone()).unwrap_or_default(),
            operation_id: fence.map(|f| f.operation_id.clone()).unwrap_or_default(),
            step: fence.map(|f| f.step.clone()).unwrap_or_default(),
            fence_epoch: fence.map_or(0, |f| f.epoch),
            arguments: std::mem::take(&mut self.arguments),
            outcome: outcome.to_string(),
            code,
            error,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.log.record(&record);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.write(
                "cancelled",
                "Cancelled".to_string(),
                Some(
                    "the caller went away before the answer (a detached call's work goes on in the agent)"
                        .to_string(),
                ),
            );
        }
    }
}

/// GetAudit: the newest `limit` records at or after `since_unix_ms`.
pub async fn get_audit(
    log: Arc<AuditLog>,
    request: pb::GetAuditRequest,
) -> Result<pb::GetAuditResponse, Status> {
    let limit = match request.limit {
        0 => MAX_RECORDS,
        n => n.min(MAX_RECORDS),
    } as usize;
    let since = request.since_unix_ms;
    let read = {
        let log = log.clone();
        // One more than asked: tells whether older records were left out.
        tokio::task::spawn_blocking(move || log.read(since, limit + 1))
    };
    let mut records = read
        .await
        .map_err(|e| Status::internal(format!("reading the audit trail failed: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
    let truncated = records.len() > limit;
    if truncated {
        records.remove(0);
    }
    Ok(pb::GetAuditResponse {
        records: records.into_iter().map(to_proto).collect(),
        path: log.path().display().to_string(),
        truncated,
    })
}

fn to_proto(r: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        time_unix_ms: r.time_unix_ms,
        agent: r.agent,
        rpc: r.rpc,
        caller: r.caller.map(|c| pb::CallerCertificate {
            subject: c.subject,
            serial: c.serial,
            role: c.role,
            fingerprint_sha256: c.fingerprint_sha256,
        }),
        cluster: r.cluster,
        operation_id: r.operation_id,
        step: r.step,
        fence_epoch: r.fence_epoch,
        arguments_json: r.arguments.to_string(),
        outcome: r.outcome,
        code: r.code,
        error: r.error.unwrap_or_default(),
        duration_ms: r.duration_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_recorded() {
        let r = pb::SetEtcdEnvRequest {
            operation_id: "op".into(),
            set: vec![
                pb::EnvVar {
                    key: "ETCD_QUOTA_BACKEND_BYTES".into(),
                    value: "8589934592".into(),
                },
                pb::EnvVar {
                    key: "ETCD_AUTH_TOKEN".into(),
                    value: "jwt,priv-key=x".into(),
                },
            ],
            unset: vec!["ETCD_DEBUG".into()],
            fence: None,
        };
        let args = r.arguments();
        assert_eq!(args["set"]["ETCD_QUOTA_BACKEND_BYTES"], "8589934592");
        let hidden = args["set"]["ETCD_AUTH_TOKEN"].as_str().expect("string");
        assert!(
            !hidden.contains("jwt") && hidden.contains("not recorded"),
            "{hidden}"
        );
        assert_eq!(args["unset"][0], "ETCD_DEBUG");
    }

    #[test]
    fn a_record_carries_the_fence() {
        let r = pb::DefragmentRequest {
            fence: Some(pb::Fence {
                cluster: "c".into(),
                epoch: 7,
                operation_id: "defrag-1".into(),
                step: "defrag:etcd1".into(),
            }),
            timeout_ms: 5,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(
            AuditLog::open(crate::audit::AuditSettings {
                path: dir.path().join("audit.jsonl"),
                max_bytes: 1 << 20,
                keep: 1,
            })
            .expect("open"),
        );
        let agent: Arc<str> = Arc::from("etcd1");
        Pending::new(log.clone(), agent.clone(), "Defragment", None, &r).finish(&Ok::<(), Status>(()));
        drop(Pending::new(log.clone(), agent, "Defragment", None, &r));
        let recs = log.read(0, 0).expect("read");
        let rec = &recs[0];
        assert_eq!(
            (rec.cluster.as_str(), rec.fence_epoch, rec.operation_id.as_str()),
            ("c", 7, "defrag-1")
        );
        assert_eq!(rec.arguments, json!({"timeout_ms": 5}));
        assert_eq!(rec.outcome, "ok");
        assert_eq!(recs[1].outcome, "cancelled");
    }
}
