//! The serve leader's side of `etcdops op resume|abort|prune` with the home
//! journal (the CLI's side is `cli::op_home`). The leader alone writes the
//! journal, so people ask it: every second it lists the waiting requests
//! (`journal::OpRequest`), takes each (a delete guarded by its election key:
//! a deposed leader takes nothing) and carries it out under its term:
//!
//! - resume: a failed or paused operation runs on from its first unfinished
//!   step, as `op resume` does, with this term's fence epochs; it runs
//!   beside the jobs and stops with the term like them. A resume refused
//!   before it started (the cluster held, the operation not resumable) is
//!   noted in the record's `error`, for the person who asked.
//! - abort: the fence the operation may still hold is freed (taken over at
//!   an epoch of this term, then released) and the record marked aborted.
//! - prune: the ended operations named are deleted (the leader looks again:
//!   one that is no longer ended stays).
//!
//! A running operation is never resumed or aborted here: the CLI refuses
//! those before asking, and the leader checks again.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::Validated;
use crate::agents::Agents;
use crate::exec::{Executor, fence};
use crate::journal::{Journal, JournalError, OpRequest, OpState, OperationRecord, RequestRecord};

/// How often the leader looks for requests.
const POLL: Duration = Duration::from_secs(1);

/// Everything a request needs.
#[derive(Clone)]
pub(super) struct Leader {
    pub validated: Arc<Validated>,
    pub agents: Agents,
    pub journal: Arc<Journal>,
    pub term: u64,
    pub interrupted: Arc<AtomicBool>,
    /// Turns true when serve stops: no more requests are taken.
    pub stop: watch::Receiver<bool>,
}

/// Takes and carries out requests until serve stops (then waits for the
/// operations it resumed: they end after their current step) or the term
/// ends (the future is dropped: resumed operations stop with it, as jobs do).
pub(super) async fn serve(leader: Leader) {
    let mut resumed = JoinSet::new();
    let mut stop = leader.stop.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        while resumed.try_join_next().is_some() {}
        let journal = leader.journal.clone();
        let Some(store) = journal.home() else {
            return;
        };
        let (requests, unreadable) = match store.requests() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the requests in the home journal: {e}");
                continue;
            }
        };
        for bad in unreadable {
            if matches!(store.take(&bad.id), Ok(true)) {
                tracing::warn!(request = %bad.id, "dropped a request this etcdops cannot read: {}", bad.reason);
            }
        }
        for request in requests {
            match store.take(&request.id) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e @ JournalError::NotLeader { .. }) => {
                    return tracing::warn!("{e}; no more requests taken in this term");
                }
                Err(e) => {
                    tracing::warn!(request = %request.id, "cannot take the request: {e}");
                    continue;
                }
            }
            tracing::info!(request = %request.id, by = %request.by, "taken: {:?}", request.request);
            match &request.request {
                OpRequest::Resume { operation } => {
                    if let Some(run) = leader.resume(operation, &request) {
                        resumed.spawn(run);
                    }
                }
                OpRequest::Abort { operation } => leader.abort(operation, &request).await,
                OpRequest::Prune { operations } => leader.prune(operations, &request),
            }
        }
    }
    while resumed.join_next().await.is_some() {}
}

impl Leader {
    /// The record, or why the request cannot be carried out (noted in the record).
    fn resumable(&self, operation: &str, request: &RequestRecord, action: &str) -> Option<OperationRecord> {
        let record = match self.journal.get(operation) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(request = %request.id, "operation {operation} is not in the journal");
                return None;
            }
            Err(e) => {
                tracing::warn!(request = %request.id, "cannot read operation {operation}: {e}");
                return None;
            }
        };
        if !matches!(record.state, OpState::Failed | OpState::Paused) {
            self.note(
                operation,
                request,
                action,
                &format!("it is {}", record.state.as_str()),
            );
            return None;
        }
        Some(record)
    }

    /// Notes in the record why the request was not carried out.
    fn note(&self, operation: &str, request: &RequestRecord, action: &str, why: &str) {
        tracing::warn!(request = %request.id, by = %request.by, "{action} of {operation} refused: {why}");
        let text = format!(
            "{action} asked by {} was refused by the serve leader: {why}",
            request.by
        );
        if let Err(e) = self.journal.update(operation, |r| r.error = Some(text)) {
            tracing::warn!(request = %request.id, "cannot note the refusal in the journal: {e}");
        }
    }

    /// The resumed operation's run, or `None` (noted) when it cannot be.
    fn resume(
        &self,
        operation: &str,
        request: &RequestRecord,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let record = self.resumable(operation, request, "resume")?;
        let Some(cluster) = self
            .validated
            .fleet
            .clusters
            .iter()
            .find(|c| c.name == record.cluster)
        else {
            self.note(
                operation,
                request,
                "resume",
                &format!("cluster {} is not in serve's fleet file", record.cluster),
            );
            return None;
        };
        // Who runs it now, and who asked (the journal keeps the operator).
        let operator = request.operator.clone();
        let record = match self.journal.update(&record.id, |r| {
            r.holder = super::jobs::holder();
            r.operator = operator;
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(operation, "cannot take the operation over: {e}");
                return None;
            }
        };
        let mut executor = Executor::for_record(
            &record,
            self.agents.clone(),
            cluster.clone(),
            (*self.journal).clone(),
            self.validated.fleet_path.clone(),
            self.interrupted.clone(),
        );
        executor.progress = Box::new(super::jobs::Log {
            job: format!("{}/resume", cluster.name),
        });
        executor.term = Some(self.term);
        let (leader, request) = (self.clone(), request.clone());
        Some(async move {
            let before = record.updated_at_unix;
            let id = record.id.clone();
            match executor.resume(record, false).await {
                Ok(done) => tracing::info!(operation = %done.id, "resumed operation ended {}", done.state),
                Err(e) => {
                    tracing::error!(operation = %id, "resumed operation stopped: {e}");
                    // Refused before it started: the record did not move; say why there.
                    if leader
                        .journal
                        .get(&id)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.updated_at_unix == before)
                    {
                        leader.note(&id, &request, "resume", &e.to_string());
                    }
                }
            }
        })
    }

    async fn abort(&self, operation: &str, request: &RequestRecord) {
        let Some(record) = self.resumable(operation, request, "abort") else {
            return;
        };
        let freed = match self
            .validated
            .fleet
            .clusters
            .iter()
            .find(|c| c.name == record.cluster)
        {
            Some(cluster) => {
                let (cluster, optional) = fence::members_of(cluster, &record);
                match fence::free(&self.agents, &cluster, operation, &optional, Some(self.term)).await {
                    Ok(freed) => freed.unwrap_or_else(|| "no agent held the cluster's fence for it".into()),
                    Err(e) => return self.note(operation, request, "abort", &e.to_string()),
                }
            }
            None => format!(
                "cluster {} is not in serve's fleet file: its agents were not asked",
                record.cluster
            ),
        };
        let reason = format!("aborted by {} through the serve leader; {freed}", request.by);
        match self.journal.finish(operation, OpState::Aborted, Some(reason)) {
            Ok(_) => tracing::info!(operation, by = %request.by, "aborted: {freed}"),
            Err(e) => tracing::error!(operation, "cannot mark the operation aborted: {e}"),
        }
    }

    fn prune(&self, operations: &[String], request: &RequestRecord) {
        let ended: Vec<String> = operations
            .iter()
            .filter(|id| {
                self.journal.get(id).ok().flatten().is_some_and(|r| {
                    matches!(r.state, OpState::Succeeded | OpState::Aborted | OpState::Failed)
                })
            })
            .cloned()
            .collect();
        match self.journal.delete(&ended) {
            Ok(n) => tracing::info!(request = %request.id, by = %request.by, "pruned {n} ended operation(s)"),
            Err(e) => tracing::error!(request = %request.id, "cannot prune: {e}"),
        }
    }
}
