//! StartEtcd, StopEtcd, RestartEtcd, GetUnitStatus: the etcd unit through
//! the configured backend. Quorum safety is the coordinator's plan
//! executor's job (it knows the whole cluster); the agent does what is asked
//! and reports the state reached.
//!
//! A call's budget is its `timeout_ms` ([`Plan`]): etcd's graceful stop gets
//! `unit.stop_timeout_secs`, shortened to fit the budget, then it is killed
//! and, for a restart, started again. The work runs to its end in the agent
//! whatever happens to the call (`fence::detached`); a call whose budget runs
//! out first answers DeadlineExceeded with the state etcd is in, and a retry
//! of the same operation step gets the work's outcome. Every failure names
//! the state etcd was left in ("etcd on etcd1 is stopped (killed after the
//! 30 s graceful stop): the restart failed: ...").

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcdops_proto::v1 as pb;
use tonic::Status;

use super::fence;
use super::status::unit_to_pb;
use crate::envfile::EnvFile;
use crate::state::AgentState;
use crate::unit::{UnitError, UnitInfo, UnitState, seconds};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT_MS: u32 = 600_000;
/// The most a call keeps back from its budget to answer in time.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// What the RPC asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    /// The RPC's name, the key of its record of calls.
    pub fn method(self) -> &'static str {
        match self {
            Action::Start => "StartEtcd",
            Action::Stop => "StopEtcd",
            Action::Restart => "RestartEtcd",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        })
    }
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

/// How one call spends its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The call's `timeout_ms` (or the default).
    pub budget: Duration,
    /// When the call answers at the latest: a little before `budget`, so the
    /// answer is on its way before the caller's own deadline.
    pub answer_by: Duration,
    /// etcd's graceful stop before the kill: `stop_timeout`, at most three
    /// quarters of the budget (the kill and a start fit in the rest).
    pub graceful: Duration,
}

/// The plan of a call with `timeout_ms` on an agent whose graceful stop is `stop_timeout`.
pub fn plan(timeout_ms: u32, stop_timeout: Duration) -> Result<Plan, Status> {
    let budget = unit_timeout(timeout_ms)?;
    let answer_by = budget.saturating_sub((budget / 20).min(ANSWER_MARGIN));
    let graceful = stop_timeout.min(budget * 3 / 4).max(Duration::from_millis(100));
    Ok(Plan {
        budget,
        answer_by,
        graceful,
    })
}

pub(super) fn code(e: &UnitError) -> tonic::Code {
    match e {
        UnitError::BinaryMissing { .. } | UnitError::EnvFile(_) | UnitError::BinarySwitch { .. } => {
            tonic::Code::FailedPrecondition
        }
        UnitError::StopTimeout { .. }
        | UnitError::Start { .. }
        | UnitError::Signal { .. }
        | UnitError::BootFile { .. } => tonic::Code::Internal,
        UnitError::Systemd(s) if s.is_transient() => tonic::Code::Unavailable,
        UnitError::Systemd(_) => tonic::Code::FailedPrecondition,
    }
}

/// The member's name for messages: ETCD_NAME, else the agent's certificate name.
pub(super) fn member(state: &AgentState) -> String {
    EnvFile::load(&state.env_file)
        .ok()
        .and_then(|f| f.get("ETCD_NAME").map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| state.identity.name.clone())
}

/// Runs the action to its end (in a task of its own: a restart is never cut
/// between stop and start), answering within the request's budget.
pub async fn act(
    state: Arc<AgentState>,
    action: Action,
    request: pb::UnitRequest,
) -> Result<pb::UnitStatus, Status> {
    let plan = plan(request.timeout_ms, state.stop_timeout)?;
    tracing::info!(?action, operation = %request.operation_id, ?plan, "unit request");
    let work = {
        let state = state.clone();
        async move { run(&state, action, request.boot, plan.graceful).await }
    };
    let late = {
        let state = state.clone();
        move || async move {
            let info = state.unit.info().await;
            Status::deadline_exceeded(format!(
                "etcd on {} is {}: the {action} did not finish within this call's {} budget and goes on in the \
                 agent; call again with the same operation step to wait for its outcome",
                member(&state),
                info.describe(),
                seconds(plan.budget)
            ))
        }
    };
    fence::detached(
        &state,
        action.method(),
        request.fence.as_ref(),
        plan.answer_by,
        work,
        late,
    )
    .await
}

async fn run(
    state: &AgentState,
    action: Action,
    boot: bool,
    graceful: Duration,
) -> Result<pb::UnitStatus, Status> {
    let mut stopped: Option<UnitInfo> = None;
    let result = match action {
        Action::Start => match state.unit.start().await {
            Ok(info) if boot => state.unit.set_boot(true).await.map(|()| info),
            other => other,
        },
        Action::Stop => match state.unit.stop(graceful).await {
            Ok(info) if boot => state.unit.set_boot(false).await.map(|()| info),
            other => other,
        },
        Action::Restart => match state.unit.stop(graceful).await {
            Ok(info) => {
                let killed = info.detail.starts_with("killed after");
                stopped = Some(info.clone());
                state.unit.start().await.map(|mut started| {
                    if killed {
                        started.detail = match started.detail.as_str() {
                            "" => info.detail,
                            now => format!("{now}; before: {}", info.detail),
                        };
                    }
                    started
                })
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(info) => Ok(unit_to_pb(state.unit.backend(), state.unit.unit(), info)),
        Err(e) => {
            let now = state.unit.info().await;
            // A restart whose start failed: how it stopped says more than "stopped".
            let words = match stopped {
                Some(s) if now.state == UnitState::Inactive && now.main_pid.is_none() => s.describe(),
                _ => now.describe(),
            };
            let message = format!("etcd on {} is {words}: the {action} failed: {e}", member(state));
            tracing::error!(%message, "unit request failed");
            Err(Status::new(code(&e), message))
        }
    }
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

    #[test]
    fn the_plan_fits_the_budget() {
        let s = Duration::from_secs;
        // A long budget: the configured graceful stop; the answer 1 s early.
        let p = plan(180_000, s(30)).expect("plan");
        assert_eq!((p.budget, p.answer_by, p.graceful), (s(180), s(179), s(30)));
        // A short one: the graceful stop shrinks to three quarters of it.
        let p = plan(8_000, s(30)).expect("plan");
        assert_eq!((p.answer_by, p.graceful), (Duration::from_millis(7_600), s(6)));
        assert!(p.answer_by <= p.budget && p.graceful < p.budget);
        let p = plan(0, s(5)).expect("default");
        assert_eq!((p.budget, p.graceful), (DEFAULT_TIMEOUT, s(5)));
    }
}
