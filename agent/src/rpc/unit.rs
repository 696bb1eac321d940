//! StartEtcd, StopEtcd, RestartEtcd, GetUnitStatus: the etcd unit through
//! the configured backend. Quorum safety is the coordinator's plan
//! executor's job (it knows the whole cluster); the agent does what is asked
//! and reports the state reached.

use std::time::Duration;

use etcdops_proto::v1 as pb;
use tonic::Status;

use super::status::unit_to_pb;
use crate::state::AgentState;
use crate::unit::{UnitError, UnitInfo};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT_MS: u32 = 600_000;

/// What the RPC asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// `timeout_ms` of a UnitRequest: 0 = default, above the maximum = InvalidArgument.
pub fn unit_timeout(timeout_ms: u32) -> Result<Duration, Status> {
    match timeout_ms {
        0 => Ok(DEFAULT_TIMEOUT),
        ms if ms > MAX_TIMEOUT_MS => Err(Status::invalid_argument(format!(
            "timeout_ms: {ms} is above the maximum of {MAX_TIMEOUT_MS} ms; use 0 for the default"
        ))),
        ms => Ok(Duration::from_millis(u64::from(ms))),
    }
}

fn to_status(e: UnitError) -> Status {
    match e {
        UnitError::BinaryMissing { .. } | UnitError::EnvFile(_) => Status::failed_precondition(e.to_string()),
        UnitError::StopTimeout { .. } => Status::deadline_exceeded(e.to_string()),
        UnitError::Start { .. } | UnitError::Signal { .. } | UnitError::BootFile { .. } => {
            Status::internal(e.to_string())
        }
        UnitError::Systemd(ref s) if s.is_transient() => Status::unavailable(e.to_string()),
        UnitError::Systemd(_) => Status::failed_precondition(e.to_string()),
    }
}

/// Runs the action in a task of its own: it goes to the end even when the
/// caller goes away, so a restart is never cut between stop and start.
pub async fn act(
    state: std::sync::Arc<AgentState>,
    action: Action,
    request: pb::UnitRequest,
) -> Result<pb::UnitStatus, Status> {
    let timeout = unit_timeout(request.timeout_ms)?;
    tracing::info!(?action, operation = %request.operation_id, "unit request");
    tokio::spawn(async move {
        let info: UnitInfo = match action {
            Action::Start => match state.unit.start().await {
                Ok(info) if request.boot => state.unit.set_boot(true).await.map(|()| info),
                other => other,
            },
            Action::Stop => match state.unit.stop(timeout).await {
                Ok(info) if request.boot => state.unit.set_boot(false).await.map(|()| info),
                other => other,
            },
            Action::Restart => match state.unit.stop(timeout).await {
                Ok(_) => state.unit.start().await,
                Err(e) => Err(e),
            },
        }
        .map_err(to_status)?;
        Ok(unit_to_pb(state.unit.backend(), state.unit.unit(), info))
    })
    .await
    .map_err(|e| Status::internal(format!("the unit action failed: {e}")))?
}

pub async fn get(state: &AgentState) -> pb::UnitStatus {
    unit_to_pb(state.unit.backend(), state.unit.unit(), state.unit.info().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_validation_names_the_field() {
        assert_eq!(unit_timeout(0).expect("default"), DEFAULT_TIMEOUT);
        let err = unit_timeout(MAX_TIMEOUT_MS + 1).expect_err("too long");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("timeout_ms:"));
    }
}
