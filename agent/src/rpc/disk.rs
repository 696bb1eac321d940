//! ProbeDisk: fdatasync latency on the data dir's filesystem.

use etcdops_proto::v1::{ProbeDiskRequest, ProbeDiskResponse};
use tonic::Status;

use crate::state::AgentState;

#[allow(clippy::unused_async)]
pub async fn probe_disk(_state: &AgentState, _request: ProbeDiskRequest) -> Result<ProbeDiskResponse, Status> {
    Err(Status::unimplemented("ProbeDisk is not available in this agent version"))
}
