//! AcquireFence and ReleaseFence, and [`fenced`]: the gate every mutating
//! RPC passes (fence check under the one writer lock, then the record of
//! completed calls answers retries).

use etcdops_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::fence::{AcquireRequest, FenceError, FenceRecord, FenceToken};
use crate::state::AgentState;

/// A request's `fence`, validated; missing = `FenceError::Missing`.
pub fn token(fence: Option<&pb::Fence>) -> Result<FenceToken, FenceError> {
    let f = fence.ok_or(FenceError::Missing)?;
    FenceToken::new(&f.cluster, f.epoch, &f.operation_id, &f.step)
}

pub fn record_to_pb(r: FenceRecord) -> pb::FenceState {
    pb::FenceState {
        cluster: r.cluster,
        epoch: r.epoch,
        held: r.held,
        operation_id: r.operation_id,
        operation_kind: r.operation_kind,
        holder: r.holder,
        acquired_at_unix: r.acquired_at_unix,
    }
}

pub async fn acquire(state: &AgentState, request: pb::AcquireFenceRequest) -> Result<pb::FenceState, Status> {
    let req = AcquireRequest {
        token: token(request.fence.as_ref())?,
        holder: request.holder,
        operation_kind: request.operation_kind,
        takeover: request.takeover,
    };
    let record = state.fences.acquire(&req).await?;
    tracing::info!(
        cluster = %record.cluster, epoch = record.epoch, operation = %record.operation_id,
        kind = %record.operation_kind, holder = %record.holder, takeover = req.takeover, "fence acquired"
    );
    Ok(record_to_pb(record))
}

pub async fn release(state: &AgentState, request: pb::ReleaseFenceRequest) -> Result<pb::FenceState, Status> {
    let token = token(request.fence.as_ref())?;
    let record = state.fences.release(&token).await?;
    tracing::info!(cluster = %record.cluster, epoch = record.epoch, operation = %record.operation_id, "fence released");
    Ok(record_to_pb(record))
}

/// Runs a mutating call: only with the cluster's fence held by the caller's
/// operation, one at a time; a call already completed with the same
/// (operation_id, step, method) is answered from the record without running
/// `act` again (empty step: no deduplication). Only successful answers are
/// recorded: a failed call may be retried for real.
pub async fn fenced<R, F>(
    state: &AgentState,
    method: &'static str,
    fence: Option<&pb::Fence>,
    act: F,
) -> Result<R, Status>
where
    R: Message + Default,
    F: Future<Output = Result<R, Status>>,
{
    let token = token(fence)?;
    let _writer = state.fences.writer().await;
    state.fences.check(&token).await?;
    let key = (!token.step.is_empty()).then(|| (token.operation_id.clone(), token.step.clone(), method));
    if let Some(key) = &key
        && let Some(answer) = state.fences.recorded(key)
    {
        tracing::info!(method, operation = %token.operation_id, step = %token.step, "retried call answered from the record");
        return R::decode(answer.as_slice())
            .map_err(|e| Status::internal(format!("decoding the recorded answer of {method}: {e}")));
    }
    // On the heap: the maintenance futures are large (etcd-client).
    let answer = Box::pin(act).await?;
    if let Some(key) = key {
        state.fences.record(key, answer.encode_to_vec());
    }
    Ok(answer)
}
