//! The agent's gRPC API: authorisation, request validation and the mapping
//! from domain errors to gRPC status codes. One file per RPC family; this
//! one only wires them. Every operator RPC goes through
//! [`AgentService::audited_call`] (audit record, RPC metrics), and every
//! mutating one (env file, data dir, etcd maintenance and membership,
//! restore, binary) through [`AgentService::fenced_call`]
//! (`fence::fenced`): the caller's operation must hold the cluster's fence.
//! The unit RPCs (stop, start, restart of etcd), Defragment, Compact and
//! InstallCertificates (files written, then the agent's own certificate
//! reloaded) pass `fence::detached`: their work runs to its end whatever
//! happens to the call.
//! In front of the generated service, [`auth::Authorized`] checks the caller's
//! role against the one table of RPCs (`auth::REQUIRED`); every operator
//! RPC writes one audit record (`audit::Pending`) with the caller's verified
//! certificate, the request's fence and arguments and the outcome.
//! InstallCertificates (issue 17) is fenced too (detached); GetCertificates is a read.

mod audit;
mod auth;
mod certs;
mod disk;
mod fence;
mod health;
mod host_files;
mod housekeeping;
mod maintenance;
mod membership;
mod restore;
mod snapshot;
mod status;
mod unit;
mod upgrade;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdops_proto::v1 as pb;
use etcdops_proto::v1::agent_server::{Agent, AgentServer};
use etcdops_proto::v1::{
    GetStatusRequest, GetStatusResponse, HealthRequest, HealthResponse, MoveDataDirAsideRequest,
    MoveDataDirAsideResponse, ProbeDiskRequest, ProbeDiskResponse, SaveSnapshotRequest, SetEtcdEnvRequest,
    SetEtcdEnvResponse, UnitRequest, UnitStatus, UnitStatusRequest,
};
use tonic::{Request, Response, Status};

pub use auth::{Authorized, Caller, REQUIRED, authorize};

use crate::audit::AuditLog;
use crate::state::AgentState;

/// The default and the maximum budget a request may ask for.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_TIMEOUT_MS: u32 = 60_000;

/// The tonic service, behind the role check; audit records go to `audit`.
pub fn service(state: Arc<AgentState>, audit: Arc<AuditLog>) -> Authorized<AgentServer<AgentService>> {
    let agent: Arc<str> = Arc::from(state.identity.name.as_str());
    Authorized::new(
        AgentServer::new(AgentService {
            state,
            audit: audit.clone(),
            agent: agent.clone(),
        }),
        audit,
        &agent,
    )
}

/// Implements the generated trait by delegating to one module per RPC.
#[derive(Debug)]
pub struct AgentService {
    state: Arc<AgentState>,
    audit: Arc<AuditLog>,
    /// This agent's name, for audit records.
    agent: Arc<str>,
}

/// The caller the role check stored, and the request's message.
fn caller_and<T>(request: Request<T>) -> (Option<Caller>, T) {
    let caller = request.extensions().get::<Caller>().cloned();
    (caller, request.into_inner())
}

/// A request's `timeout_ms`: 0 means the default; above the maximum is an
/// InvalidArgument that names the field.
fn timeout_field(timeout_ms: u32) -> Result<Duration, Status> {
    match timeout_ms {
        0 => Ok(DEFAULT_TIMEOUT),
        ms if ms > MAX_TIMEOUT_MS => Err(Status::invalid_argument(format!(
            "timeout_ms: {ms} is above the maximum of {MAX_TIMEOUT_MS} ms; use 0 for the default"
        ))),
        ms => Ok(Duration::from_millis(u64::from(ms))),
    }
}

/// When a call with `budget` answers at the latest: a little before it.
/// How long an InstallCertificates call waits for its (detached) work: a
/// few small files written and fsynced, the agent's certificate reloaded.
const INSTALL_CERTIFICATES_BUDGET: Duration = Duration::from_secs(30);

fn answer_by(budget: Duration) -> Duration {
    budget.saturating_sub((budget / 20).min(Duration::from_secs(1)))
}

/// The answer of a detached call whose budget ran out with its work still running.
async fn outlived(state: &AgentState, what: &str, budget: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the {what} of etcd on {} did not finish within this call's {} budget and goes on in the agent; \
         call again with the same operation step to wait for its outcome",
        unit::member(state),
        crate::unit::seconds(budget)
    ))
}

impl AgentService {
    /// The audit record of an operator call, to finish with its outcome.
    fn audited(
        &self,
        method: &'static str,
        caller: Option<Caller>,
        request: &dyn audit::Audited,
    ) -> audit::Pending {
        audit::Pending::new(self.audit.clone(), self.agent.clone(), method, caller, request)
    }

    /// Runs one RPC and counts it, with its code and duration, for
    /// `/metrics`. Calls refused by the role check, and calls whose caller
    /// went away before an answer, are not counted.
    async fn counted<T>(
        &self,
        method: &'static str,
        rpc: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = rpc.await;
        let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.state.rpc_metrics.observe(method, code, started.elapsed());
        result
    }

    /// An operator RPC: its audit record opened with the caller and the
    /// request, `rpc` run and counted, the record finished with the outcome.
    async fn audited_call<R, T>(
        &self,
        method: &'static str,
        request: Request<R>,
        rpc: impl AsyncFnOnce(R) -> Result<T, Status>,
    ) -> Result<Response<T>, Status>
    where
        R: audit::Audited,
    {
        let (caller, r) = caller_and(request);
        let audit = self.audited(method, caller, &r);
        let result = self.counted(method, rpc(r)).await;
        audit.finish(&result);
        result.map(Response::new)
    }

    /// [`AgentService::audited_call`] for an RPC that changes something:
    /// `check` validates the request (a refusal names the field) and returns
    /// the work, which runs only while the request's fence holds the cluster
    /// (`fence::fenced`).
    async fn fenced_call<R, T, F>(
        &self,
        method: &'static str,
        request: Request<R>,
        check: impl FnOnce(R) -> Result<F, Status>,
    ) -> Result<Response<T>, Status>
    where
        R: audit::Audited,
        T: prost::Message + Default,
        F: Future<Output = Result<T, Status>>,
    {
        self.audited_call(method, request, async |r| {
            let fence = r.fence().cloned();
            let act = check(r)?;
            fence::fenced(&self.state, method, fence.as_ref(), act).await
        })
        .await
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        self.counted("GetStatus", async {
            let timeout = timeout_field(request.get_ref().timeout_ms)?;
            Ok(Response::new(status::get_status(&self.state, timeout).await))
        })
        .await
    }

    async fn health(&self, request: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        self.counted("Health", async {
            let timeout = timeout_field(request.get_ref().timeout_ms)?;
            Ok(Response::new(health::health(&self.state, timeout).await))
        })
        .await
    }

    type SaveSnapshotStream = snapshot::SnapshotStream;

    async fn save_snapshot(
        &self,
        request: Request<SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        // Counted when the stream starts (or is refused).
        self.counted("SaveSnapshot", async {
            let timeout = match request.get_ref().start_timeout_ms {
                0 => Duration::from_secs(5),
                ms => timeout_field(ms).map_err(|_| {
                    Status::invalid_argument(format!(
                        "start_timeout_ms: {ms} is above the maximum of {MAX_TIMEOUT_MS} ms; use 0 for the default"
                    ))
                })?,
            };
            Ok(Response::new(snapshot::save_snapshot(&self.state, timeout).await?))
        })
        .await
    }

    async fn start_etcd(&self, request: Request<UnitRequest>) -> Result<Response<UnitStatus>, Status> {
        self.audited_call("StartEtcd", request, async |r| {
            unit::act(self.state.clone(), unit::Action::Start, r).await
        })
        .await
    }

    async fn stop_etcd(&self, request: Request<UnitRequest>) -> Result<Response<UnitStatus>, Status> {
        self.audited_call("StopEtcd", request, async |r| {
            unit::act(self.state.clone(), unit::Action::Stop, r).await
        })
        .await
    }

    async fn restart_etcd(&self, request: Request<UnitRequest>) -> Result<Response<UnitStatus>, Status> {
        self.audited_call("RestartEtcd", request, async |r| {
            unit::act(self.state.clone(), unit::Action::Restart, r).await
        })
        .await
    }

    async fn get_unit_status(
        &self,
        _request: Request<UnitStatusRequest>,
    ) -> Result<Response<UnitStatus>, Status> {
        self.counted("GetUnitStatus", async {
            Ok(Response::new(unit::get(&self.state).await))
        })
        .await
    }

    async fn set_etcd_env(
        &self,
        request: Request<SetEtcdEnvRequest>,
    ) -> Result<Response<SetEtcdEnvResponse>, Status> {
        self.fenced_call("SetEtcdEnv", request, |r| Ok(host_files::set_env(&self.state, r)))
            .await
    }

    async fn prune_kept_copies(
        &self,
        request: Request<pb::PruneKeptCopiesRequest>,
    ) -> Result<Response<pb::PruneKeptCopiesResponse>, Status> {
        self.fenced_call("PruneKeptCopies", request, |r| {
            Ok(housekeeping::prune_kept_copies(&self.state, r))
        })
        .await
    }

    async fn move_data_dir_aside(
        &self,
        request: Request<MoveDataDirAsideRequest>,
    ) -> Result<Response<MoveDataDirAsideResponse>, Status> {
        self.fenced_call("MoveDataDirAside", request, |r| {
            Ok(host_files::move_data_dir_aside(&self.state, r))
        })
        .await
    }

    async fn probe_disk(
        &self,
        request: Request<ProbeDiskRequest>,
    ) -> Result<Response<ProbeDiskResponse>, Status> {
        self.audited_call("ProbeDisk", request, async |r| {
            disk::probe_disk(&self.state, r).await
        })
        .await
    }

    async fn acquire_fence(
        &self,
        request: Request<pb::AcquireFenceRequest>,
    ) -> Result<Response<pb::FenceState>, Status> {
        self.audited_call("AcquireFence", request, async |r| {
            fence::acquire(&self.state, r).await
        })
        .await
    }

    async fn release_fence(
        &self,
        request: Request<pb::ReleaseFenceRequest>,
    ) -> Result<Response<pb::FenceState>, Status> {
        self.audited_call("ReleaseFence", request, async |r| {
            fence::release(&self.state, r).await
        })
        .await
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.audited_call("Defragment", request, async |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, maintenance::DEFRAGMENT)?;
            // etcd defragments to the end once asked: so does the agent's call.
            let work = {
                let state = self.state.clone();
                async move { maintenance::defragment(&state, timeout).await }
            };
            let late = || outlived(&self.state, "defragmentation", timeout);
            fence::detached(
                &self.state,
                "Defragment",
                r.fence.as_ref(),
                answer_by(timeout),
                work,
                late,
            )
            .await
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        self.audited_call("Compact", request, async |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, maintenance::COMPACT)?;
            let revision = maintenance::compact_revision(r.revision)?;
            let work = {
                let state = self.state.clone();
                async move { maintenance::compact(&state, revision, r.physical, timeout).await }
            };
            let late = || outlived(&self.state, "compaction", timeout);
            fence::detached(
                &self.state,
                "Compact",
                r.fence.as_ref(),
                answer_by(timeout),
                work,
                late,
            )
            .await
        })
        .await
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.fenced_call("MoveLeader", request, |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, maintenance::MOVE_LEADER)?;
            let target = maintenance::move_target(r.target_member_id)?;
            Ok(maintenance::move_leader(&self.state, target, timeout))
        })
        .await
    }

    async fn disarm_alarms(
        &self,
        request: Request<pb::DisarmAlarmsRequest>,
    ) -> Result<Response<pb::DisarmAlarmsResponse>, Status> {
        self.fenced_call("DisarmAlarms", request, |r| {
            let wanted = maintenance::alarm_filter(&r.alarms)?;
            Ok(maintenance::disarm_alarms(&self.state, wanted))
        })
        .await
    }

    async fn write_probe(
        &self,
        request: Request<pb::WriteProbeRequest>,
    ) -> Result<Response<pb::WriteProbeResponse>, Status> {
        self.fenced_call("WriteProbe", request, |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, maintenance::WRITE_PROBE)?;
            let operation_id = r.fence.map(|f| f.operation_id).unwrap_or_default();
            Ok(maintenance::write_probe(&self.state, operation_id, timeout))
        })
        .await
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.fenced_call("AddMember", request, |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, membership::ADD_MEMBER)?;
            let urls = membership::peer_urls(&r.peer_urls)?;
            Ok(membership::add_member(&self.state, urls, r.is_learner, timeout))
        })
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.fenced_call("RemoveMember", request, |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, membership::REMOVE_MEMBER)?;
            let id = membership::member_id(r.member_id)?;
            Ok(membership::remove_member(&self.state, id, timeout))
        })
        .await
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.fenced_call("PromoteMember", request, |r| {
            let timeout = maintenance::budget("timeout_ms", r.timeout_ms, membership::PROMOTE_MEMBER)?;
            let id = membership::member_id(r.member_id)?;
            Ok(membership::promote_member(&self.state, id, timeout))
        })
        .await
    }

    async fn stage_restore(
        &self,
        r: Request<tonic::Streaming<pb::RestoreChunk>>,
    ) -> Result<Response<pb::StageRestoreResponse>, Status> {
        let (caller, mut stream) = caller_and(r);
        self.counted("StageRestore", async {
            let header = match restore::header(&mut stream).await {
                Ok(header) => header,
                Err(status) => {
                    self.audited("StageRestore", caller, &audit::Unread)
                        .finish::<()>(&Err(status.clone()));
                    return Err(status);
                }
            };
            // The record keeps the header (size, sha256), not the bytes.
            let audit = self.audited("StageRestore", caller, &header);
            let result = async {
                let token = fence::token(header.fence.as_ref())?;
                let spec = restore::spec(&header, &token.operation_id)?;
                let act = restore::stage(self.state.clone(), spec, stream);
                fence::fenced(&self.state, "StageRestore", header.fence.as_ref(), act).await
            }
            .await;
            audit.finish(&result);
            result
        })
        .await
        .map(Response::new)
    }

    async fn swap_in_restore(
        &self,
        request: Request<pb::SwapInRestoreRequest>,
    ) -> Result<Response<pb::SwapInRestoreResponse>, Status> {
        self.fenced_call("SwapInRestore", request, |r| Ok(restore::swap_in(&self.state, r)))
            .await
    }

    async fn roll_back_restore(
        &self,
        request: Request<pb::RollBackRestoreRequest>,
    ) -> Result<Response<pb::RollBackRestoreResponse>, Status> {
        self.fenced_call("RollBackRestore", request, |r| {
            Ok(restore::roll_back(&self.state, r))
        })
        .await
    }

    async fn hash_kv(&self, r: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        self.counted("HashKv", async {
            maintenance::hash_kv(&self.state, r.get_ref())
                .await
                .map(Response::new)
        })
        .await
    }

    async fn revision_at(
        &self,
        r: Request<pb::RevisionAtRequest>,
    ) -> Result<Response<pb::RevisionAtResponse>, Status> {
        self.counted("RevisionAt", async {
            Ok(Response::new(maintenance::revision_at(
                &self.state,
                r.get_ref().unix_time,
            )))
        })
        .await
    }

    async fn get_audit(
        &self,
        r: Request<pb::GetAuditRequest>,
    ) -> Result<Response<pb::GetAuditResponse>, Status> {
        self.counted("GetAudit", audit::get_audit(self.audit.clone(), r.into_inner()))
            .await
            .map(Response::new)
    }

    async fn get_certificates(
        &self,
        r: Request<pb::GetCertificatesRequest>,
    ) -> Result<Response<pb::GetCertificatesResponse>, Status> {
        self.counted("GetCertificates", async {
            let timeout = timeout_field(r.get_ref().timeout_ms)?;
            Ok(Response::new(certs::get_certificates(&self.state, timeout).await))
        })
        .await
    }

    async fn etcd_versions(
        &self,
        r: Request<pb::EtcdVersionsRequest>,
    ) -> Result<Response<pb::EtcdVersionsResponse>, Status> {
        self.counted("EtcdVersions", async {
            let timeout = timeout_field(r.get_ref().timeout_ms)?;
            upgrade::etcd_versions(&self.state, r.get_ref(), timeout)
                .await
                .map(Response::new)
        })
        .await
    }

    async fn install_certificates(
        &self,
        request: Request<pb::InstallCertificatesRequest>,
    ) -> Result<Response<pb::InstallCertificatesResponse>, Status> {
        self.audited_call("InstallCertificates", request, async |r| {
            if r.check_only {
                // Writes nothing: no fence.
                return certs::install(&self.state, r).await;
            }
            // To its end whatever happens to the call: a coordinator killed
            // mid-call must not leave new files written but the agent's own
            // certificate not reloaded (a retry finds the files in place).
            let fence = r.fence.clone();
            let work = {
                let state = self.state.clone();
                async move { certs::install(&state, r).await }
            };
            let late = || outlived(&self.state, "certificate install", INSTALL_CERTIFICATES_BUDGET);
            fence::detached(
                &self.state,
                "InstallCertificates",
                fence.as_ref(),
                answer_by(INSTALL_CERTIFICATES_BUDGET),
                work,
                late,
            )
            .await
        })
        .await
    }

    async fn set_etcd_binary(
        &self,
        request: Request<pb::SetEtcdBinaryRequest>,
    ) -> Result<Response<pb::SetEtcdBinaryResponse>, Status> {
        self.fenced_call("SetEtcdBinary", request, |r| {
            Ok(upgrade::set_etcd_binary(&self.state, r))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_field_validation() {
        assert_eq!(timeout_field(0).expect("default"), DEFAULT_TIMEOUT);
        assert_eq!(timeout_field(1500).expect("ms"), Duration::from_millis(1500));
        let err = timeout_field(60_001).expect_err("too big");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("timeout_ms:"), "{}", err.message());
    }
}
