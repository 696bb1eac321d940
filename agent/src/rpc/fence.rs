//! AcquireFence and ReleaseFence, and [`fenced`]: the gate every mutating
//! RPC passes (fence check under the one writer lock, then the record of
//! completed calls answers retries). [`detached`] is the same gate for work
//! that runs to its end whatever happens to its call (etcd's stop, start and
//! restart): a retry waits for the running work's outcome.

use std::sync::Arc;
use std::time::Duration;

use etcdops_proto::v1 as pb;
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use crate::fence::{AcquireRequest, CallKey, CallOutcome, FenceError, FenceRecord, FenceToken, Running};
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

/// The call's key for deduplication (empty step: none).
fn call_key(token: &FenceToken, method: &'static str) -> Option<CallKey> {
    (!token.step.is_empty()).then(|| (token.operation_id.clone(), token.step.clone(), method.to_string()))
}

/// A recorded outcome as the call's answer.
fn answer<R: Message + Default>(method: &'static str, outcome: CallOutcome) -> Result<R, Status> {
    match outcome {
        CallOutcome::Answer(bytes) => R::decode(bytes.as_slice())
            .map_err(|e| Status::internal(format!("decoding the recorded answer of {method}: {e}"))),
        CallOutcome::Failure { code, message } => Err(Status::new(code, message)),
    }
}

fn outcome<R: Message>(result: &Result<R, Status>) -> CallOutcome {
    match result {
        Ok(r) => CallOutcome::Answer(r.encode_to_vec()),
        Err(s) => CallOutcome::Failure {
            code: s.code(),
            message: s.message().to_string(),
        },
    }
}

/// Runs a mutating call: only with the cluster's fence held by the caller's
/// operation, one at a time; a call already completed with the same
/// (operation_id, step, method) is answered from the record without running
/// `act` again (empty step: no deduplication). Only successful answers are
/// recorded: a failed call may be retried for real. `act` ends with the
/// call; work that must outlive it goes through [`detached`].
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
    let key = call_key(&token, method);
    if let Some(key) = &key
        && let Some(recorded) = state.fences.recorded(key).await
    {
        tracing::info!(method, operation = %token.operation_id, step = %token.step, "retried call answered from the record");
        return answer(method, recorded);
    }
    // On the heap: the maintenance futures are large (etcd-client).
    let answer = Box::pin(act).await?;
    if let Some(key) = key {
        state
            .fences
            .record(key, CallOutcome::Answer(answer.encode_to_vec()))
            .await;
    }
    Ok(answer)
}

/// Like [`fenced`], for work that must not be cut in the middle (stop,
/// start, restart of etcd): `work` runs in a task of its own, holding the
/// writer lock, to its end whatever happens to the call. The caller waits
/// for it at most `budget`; when that runs out first, the call answers with
/// `late` (what state things are in; the work goes on). A retry with the
/// same (operation_id, step, method) while the work runs waits for the same
/// outcome; after it ended, it gets the recorded outcome (an answer, or a
/// failure nobody received yet).
pub async fn detached<R, W, L, LFut>(
    state: &Arc<AgentState>,
    method: &'static str,
    fence: Option<&pb::Fence>,
    budget: Duration,
    work: W,
    late: L,
) -> Result<R, Status>
where
    R: Message + Default + 'static,
    W: Future<Output = Result<R, Status>> + Send + 'static,
    L: FnOnce() -> LFut,
    LFut: Future<Output = Status>,
{
    let deadline = Instant::now() + budget;
    let token = token(fence)?;
    let key = call_key(&token, method);
    if let Some(key) = &key
        && let Some(running) = state.fences.running(key)
    {
        // Only the caller holding the fence may learn the outcome.
        state.fences.check(&token).await?;
        tracing::info!(method, operation = %token.operation_id, step = %token.step, "retried call waits for the running one");
        return wait(method, running, deadline, late).await;
    }
    let writer = tokio::time::timeout_at(deadline, state.fences.writer_owned())
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "{method}: another mutating call kept this agent busy for the whole {} budget; nothing was done, \
                 try again",
                crate::unit::seconds(budget)
            ))
        })?;
    state.fences.check(&token).await?;
    if let Some(key) = &key
        && let Some(recorded) = state.fences.recorded(key).await
    {
        tracing::info!(method, operation = %token.operation_id, step = %token.step, "retried call answered from the record");
        return answer(method, recorded);
    }
    let Some(key) = key else {
        // No step to deduplicate on: the work still runs to its end.
        let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let _writer = writer;
            work.await
        }));
        return match tokio::time::timeout_at(deadline, task).await {
            Ok(joined) => joined.map_err(|e| Status::internal(format!("{method}: the work failed: {e}")))?,
            Err(_) => Err(late().await),
        };
    };
    let tx = state.fences.begin(key.clone());
    let running = tx.subscribe();
    let task_state = state.clone();
    // The work outlives the call's answer, still in its span (trace, logs).
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        // Forgets the running call if the work panics.
        struct Abandon(Arc<AgentState>, Option<CallKey>);
        impl Drop for Abandon {
            fn drop(&mut self) {
                if let Some(key) = self.1.take() {
                    self.0.fences.abandon(&key);
                }
            }
        }
        let mut guard = Abandon(task_state.clone(), Some(key.clone()));
        let result = work.await;
        guard.1 = None;
        task_state.fences.finish(key, outcome(&result), &tx).await;
        // Released only now: a retry waiting for the lock finds the record.
        drop(writer);
    }));
    wait(method, running, deadline, late).await
}

/// Waits for a running call's outcome until `deadline`, else answers `late`.
async fn wait<R, L, LFut>(
    method: &'static str,
    mut running: Running,
    deadline: Instant,
    late: L,
) -> Result<R, Status>
where
    R: Message + Default,
    L: FnOnce() -> LFut,
    LFut: Future<Output = Status>,
{
    let waited = tokio::time::timeout_at(deadline, async {
        running.wait_for(Option::is_some).await.map(|done| done.clone())
    })
    .await;
    match waited {
        Ok(Ok(Some(outcome))) => answer(method, outcome),
        Ok(Ok(None) | Err(_)) => Err(Status::internal(format!(
            "{method}: the work ended without an outcome (see the agent's log); try again"
        ))),
        Err(_) => Err(late().await),
    }
}
