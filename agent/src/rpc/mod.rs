//! The agent's gRPC API: authorisation, request validation and the mapping
//! from domain errors to gRPC status codes. One file per RPC family.

mod auth;
mod disk;
mod health;
mod host_files;
mod snapshot;
mod status;
mod unit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdops_proto::v1::agent_server::{Agent, AgentServer};
use etcdops_proto::v1::{
    GetStatusRequest, GetStatusResponse, HealthRequest, HealthResponse, ProbeDiskRequest, ProbeDiskResponse,
    MoveDataDirAsideRequest, MoveDataDirAsideResponse, SaveSnapshotRequest, SetEtcdEnvRequest, SetEtcdEnvResponse,
    UnitRequest, UnitStatus, UnitStatusRequest,
};
use etcdops_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

pub use auth::{Caller, authorize};

use crate::state::AgentState;

/// The default and the maximum budget a request may ask for.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_TIMEOUT_MS: u32 = 60_000;

/// The role check run before every RPC.
type Authorize = fn(Request<()>) -> Result<Request<()>, Status>;

/// The tonic service, wrapped with the role check.
pub fn service(state: Arc<AgentState>) -> InterceptedService<AgentServer<AgentService>, Authorize> {
    AgentServer::with_interceptor(AgentService { state }, authorize as Authorize)
}

/// Implements the generated trait by delegating to one module per RPC.
#[derive(Debug)]
pub struct AgentService {
    state: Arc<AgentState>,
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

impl AgentService {
    /// Runs one RPC and counts it, with its code and duration, for
    /// `/metrics`. Calls refused by the interceptor, and calls whose caller
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
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_status(&self, request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
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
        self.counted("StartEtcd", unit::act(&self.state, unit::Action::Start, request.get_ref()))
            .await
            .map(Response::new)
    }

    async fn stop_etcd(&self, request: Request<UnitRequest>) -> Result<Response<UnitStatus>, Status> {
        self.counted("StopEtcd", unit::act(&self.state, unit::Action::Stop, request.get_ref()))
            .await
            .map(Response::new)
    }

    async fn restart_etcd(&self, request: Request<UnitRequest>) -> Result<Response<UnitStatus>, Status> {
        self.counted("RestartEtcd", unit::act(&self.state, unit::Action::Restart, request.get_ref()))
            .await
            .map(Response::new)
    }

    async fn get_unit_status(&self, _request: Request<UnitStatusRequest>) -> Result<Response<UnitStatus>, Status> {
        self.counted("GetUnitStatus", async { Ok(Response::new(unit::get(&self.state).await)) }).await
    }

    async fn set_etcd_env(&self, request: Request<SetEtcdEnvRequest>) -> Result<Response<SetEtcdEnvResponse>, Status> {
        self.counted("SetEtcdEnv", host_files::set_env(&self.state, request.into_inner())).await.map(Response::new)
    }

    async fn move_data_dir_aside(
        &self,
        request: Request<MoveDataDirAsideRequest>,
    ) -> Result<Response<MoveDataDirAsideResponse>, Status> {
        self.counted("MoveDataDirAside", host_files::move_data_dir_aside(&self.state, request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn probe_disk(&self, request: Request<ProbeDiskRequest>) -> Result<Response<ProbeDiskResponse>, Status> {
        self.counted("ProbeDisk", disk::probe_disk(&self.state, request.into_inner())).await.map(Response::new)
    }

    // TODO(issue 5): fencing and maintenance RPCs; stubs until the agent side lands.
    async fn acquire_fence(&self, _r: Request<pb::AcquireFenceRequest>) -> Result<Response<pb::FenceState>, Status> {
        Err(Status::unimplemented("AcquireFence"))
    }
    async fn release_fence(&self, _r: Request<pb::ReleaseFenceRequest>) -> Result<Response<pb::FenceState>, Status> {
        Err(Status::unimplemented("ReleaseFence"))
    }
    async fn defragment(&self, _r: Request<pb::DefragmentRequest>) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Status::unimplemented("Defragment"))
    }
    async fn compact(&self, _r: Request<pb::CompactRequest>) -> Result<Response<pb::CompactResponse>, Status> {
        Err(Status::unimplemented("Compact"))
    }
    async fn move_leader(&self, _r: Request<pb::MoveLeaderRequest>) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(Status::unimplemented("MoveLeader"))
    }
    async fn disarm_alarms(
        &self,
        _r: Request<pb::DisarmAlarmsRequest>,
    ) -> Result<Response<pb::DisarmAlarmsResponse>, Status> {
        Err(Status::unimplemented("DisarmAlarms"))
    }
    async fn write_probe(&self, _r: Request<pb::WriteProbeRequest>) -> Result<Response<pb::WriteProbeResponse>, Status> {
        Err(Status::unimplemented("WriteProbe"))
    }
    async fn revision_at(&self, _r: Request<pb::RevisionAtRequest>) -> Result<Response<pb::RevisionAtResponse>, Status> {
        Err(Status::unimplemented("RevisionAt"))
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
