//! The one plan executor, built from an operation's journal record
//! ([`Executor::for_record`]). For every step it re-reads the cluster, runs
//! the safety checks and waits for the voters to converge; then it acts
//! through one agent, under the operation's fence, waits for the step's
//! condition and, after a step that changes a member, compares etcd's HashKV
//! across the members. Every step's outcome goes to the journal before the
//! next starts, so a killed coordinator resumes where it stopped. The first
//! unsafe state stops the operation cleanly (journaled, fence released); a
//! failed step is a [`StepError`] saying whether a retry is safe and what to
//! do.
//!
//! Step families, one module each: [`member`] (join, leave, promote),
//! [`restore`] (stage, stop, swap, configure, start, verify, roll back),
//! [`recover`] (force-new-cluster and rejoin), [`snapshot`] (the verified
//! snapshot a disruptive operation starts with, and a recovery's),
//! [`certs`] (a renewal's install and the wait for the served serials; a CA
//! rotation's install, restart and wait),
//! [`upgrade`] (an etcd upgrade's binary switch and cluster version); the
//! rolling and maintenance steps are here. [`fence`] takes and releases the
//! cluster's fence; `fanout` calls every member's agent at once (and runs the
//! HashKV comparison); `error` is [`StepError`].

mod certs;
mod error;
mod fanout;
pub mod fence;
pub mod housekeeping;
mod member;
mod recover;
mod restore;
mod snapshot;
mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcdops_proto::v1 as pb;
use tokio::time::Instant;
use tracing::Instrument;

pub use self::error::{Retry, StepError};
use self::fence::FenceError;
use crate::agents::{AgentErrorKind, Agents, Client};
use crate::plan::planner::{Plan, transfer_target};
use crate::plan::safety::{self, Finding, Tolerate};
use crate::plan::step::{MemberStep, RollingStep, StepKind};
use crate::plan::view::{ClusterView, MemberView};
use crate::{observe, telemetry};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::fleet::{Cluster, Member};
use crate::journal::{Journal, JournalError, OpState, OperationRecord, StepRecord, StepState};
use crate::plan::membership::MembershipArgs;
use crate::plan::operation::Operation;
use crate::units::human_bytes_i64;

/// Observations are repeated at this interval while waiting for a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long the voters get to converge before a step.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of one agent call on transport errors (same step key: idempotent).
const CALL_ATTEMPTS: u32 = 3;

/// Why an operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The cluster was unsafe before anything was done.
    #[error(
        "cluster {cluster} is not safe to operate on; nothing was changed:\n{}",
        list(findings)
    )]
    Unsafe { cluster: String, findings: Vec<Finding> },
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Stopped at a step; journaled, fence released.
    #[error(
        "operation {op} stopped at step {index}/{total} ({step}): {reason}\n\
         Steps before it are done; nothing after it was started. Fix the cause, then \
         `etcdops op resume {op}` (or `etcdops op abort {op}`)."
    )]
    Stopped {
        op: String,
        index: usize,
        total: usize,
        step: String,
        reason: String,
    },
    /// A join failed before promotion and was undone.
    #[error(
        "operation {op} stopped at step {index}/{total} ({step}): {reason}\n\
         The join was rolled back ({rolled_back}): no learner or half-configured member is left. \
         Fix the cause and run the command again."
    )]
    RolledBack {
        op: String,
        index: usize,
        total: usize,
        step: String,
        reason: String,
        rolled_back: String,
    },
    /// Every step ran but the cluster is not healthy afterwards.
    #[error(
        "operation {op} ran every step, but the cluster is not healthy afterwards:\n{}",
        list(findings)
    )]
    UnhealthyAfter { op: String, findings: Vec<Finding> },
    /// The journal says the operation cannot be run (finished, unknown step).
    #[error("operation {op}: {reason}")]
    NotResumable { op: String, reason: String },
}

fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  - {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Progress lines for people (stderr).
pub trait Progress: Send + Sync {
    fn line(&self, text: &str);
}

/// Progress on stderr.
#[derive(Debug, Default)]
pub struct Stderr;

impl Progress for Stderr {
    fn line(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// What the executor works with. Built from an operation's journal record by
/// [`Executor::for_record`], on start and on resume alike.
pub struct Executor {
    pub agents: Agents,
    pub cluster: Cluster,
    pub journal: Journal,
    /// What the operation is and carries.
    pub operation: Operation,
    pub tolerate: Tolerate<'static>,
    /// Accept steps that take the cluster below quorum (`--force`).
    pub force: bool,
    /// Each step's time limit instead of its kind's default.
    pub step_timeout: Option<Duration>,
    /// Set on Ctrl-C: stop cleanly before the next step.
    pub interrupted: Arc<AtomicBool>,
    pub progress: Box<dyn Progress>,
    /// Who joins and who leaves (membership operations).
    pub membership: MembershipArgs,
    /// The fleet file membership steps update.
    pub fleet_path: PathBuf,
    /// The members observed now (the fleet's, changed by membership steps).
    pub current: Mutex<Option<Vec<Member>>>,
    /// A restore, its rollback or a majority-loss recovery: members are
    /// expected down between steps; only their agents must answer before each step.
    pub restore: bool,
    /// Pause (journal `paused`, fence kept) once this step is done.
    pub pause_after: Option<String>,
    /// Compare etcd's HashKV across members after each step that changes a member.
    pub check_hashkv: bool,
    /// `etcdops serve`: the leader's election term (its revision): fence epochs are taken in
    /// it (`fence::term_epoch`); `None` (the CLI): the highest recorded + 1.
    pub term: Option<u64>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("cluster", &self.cluster.name)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// The executor for `record`'s operation on `cluster` (the fleet's; a
    /// recovery sees only its survivor and the members it rejoins): how it
    /// checks, what it tolerates, who joins or leaves, all from the record.
    pub fn for_record(
        record: &OperationRecord,
        agents: Agents,
        mut cluster: Cluster,
        journal: Journal,
        fleet_path: PathBuf,
        interrupted: Arc<AtomicBool>,
    ) -> Executor {
        let operation = record.operation.clone();
        cluster.members.retain(|m| operation.sees_member(&m.name));
        Executor {
            agents,
            cluster,
            journal,
            tolerate: record.options.tolerate(record.kind),
            force: operation.force(),
            step_timeout: record.options.step_timeout(),
            interrupted,
            progress: Box::new(Stderr),
            membership: operation.membership(),
            fleet_path,
            current: Mutex::default(),
            restore: operation.members_may_be_down(),
            pause_after: None,
            check_hashkv: !record.options.skip_hashkv_check,
            term: None,
            operation,
        }
    }

    /// Reads the cluster now.
    pub async fn observe(&self) -> ClusterView {
        observe::observe(&self.agents, &self.cluster.name, &self.members_now()).await
    }

    /// What the checks before the fence and before each step read: a plain
    /// observe, or only the agents' status where members may be down by
    /// design (restore, recovery: their health reads would wait out their budget).
    async fn observe_for_checks(&self) -> ClusterView {
        if self.restore {
            observe::observe_agents(&self.agents, &self.cluster.name, &self.members_now()).await
        } else {
            self.observe().await
        }
    }

    /// The members the safety checks look at: the fleet's, less a member
    /// once removed, plus a joining member once started.
    pub(super) fn members_now(&self) -> Vec<Member> {
        self.current
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| self.cluster.members.clone())
    }

    /// Recomputes [`Executor::members_now`] from the journal record.
    fn refresh_members(&self, record: &OperationRecord) {
        let done = |id: String| record.step(&id).is_some_and(|s| s.state.is_complete());
        let mut members = self.cluster.members.clone();
        if let Some(l) = &self.membership.leaving
            && done(
                StepKind::Member(MemberStep::RemoveMember {
                    member: l.name.clone(),
                })
                .id(),
            )
        {
            members.retain(|m| m.name != l.name);
        }
        if let Some(j) = &self.membership.joining
            && done(
                StepKind::Member(MemberStep::StartMember {
                    member: j.name.clone(),
                })
                .id(),
            )
            && !members.iter().any(|m| m.name == j.name)
            && let Ok(m) = Member::new(&j.name, &j.agent)
        {
            members.push(m);
        }
        if let Ok(mut current) = self.current.lock() {
            *current = Some(members);
        }
    }

    /// The agents the fence is taken on: every member's and the joining host's.
    /// The leaving host stays one after its removal: the fence it was given
    /// is released there too (or a later join of that host finds it held).
    fn fence_holders(&self) -> Cluster {
        let mut members = self.members_now();
        if let Some(j) = &self.membership.joining
            && !members.iter().any(|m| m.name == j.name)
            && let Ok(m) = Member::new(&j.name, &j.agent)
        {
            members.push(m);
        }
        if let Some(l) = &self.membership.leaving
            && !members.iter().any(|m| m.name == l.name)
            && let Some(m) = self.cluster.members.iter().find(|m| m.name == l.name)
        {
            members.push(m.clone());
        }
        Cluster {
            members,
            ..self.cluster.clone()
        }
    }

    /// The agent of `name`: a member, the joining or the leaving host.
    pub(super) fn agent_of(&self, name: &str) -> Option<Member> {
        let joining = self
            .membership
            .joining
            .iter()
            .filter(|j| j.name == name)
            .filter_map(|j| Member::new(&j.name, &j.agent).ok());
        self.members_now()
            .into_iter()
            .chain(self.cluster.members.iter().cloned())
            .chain(joining)
            .find(|m| m.name == name)
    }

    /// Starts a new operation: checks the cluster, takes the fence, journals
    /// the plan and runs it. `args` are the command's options, kept in the
    /// journal. All of it in the operation's span.
    pub async fn start(
        &self,
        plan: &Plan,
        record: OperationRecord,
        takeover: bool,
    ) -> Result<OperationRecord, ExecError> {
        let span = self.operation_span(&record);
        self.start_in_span(plan, record, takeover).instrument(span).await
    }

    /// The span of an operation (a child of the command's): its kind, ID and cluster.
    fn operation_span(&self, record: &OperationRecord) -> tracing::Span {
        tracing::info_span!(
            "operation",
            otel.name = %format!("operation {}", record.kind),
            op = %record.id,
            kind = %record.kind,
            cluster = %self.cluster.name,
        )
    }

    async fn start_in_span(
        &self,
        plan: &Plan,
        record: OperationRecord,
        takeover: bool,
    ) -> Result<OperationRecord, ExecError> {
        let view = self.observe_for_checks().await;
        if !takeover {
            busy(&view, &record.id)?;
        }
        let mut tolerate = self.tolerate;
        if let Some(l) = self.membership.leaving.as_ref().filter(|l| !l.alive) {
            tolerate.down = Some(l.name.as_str());
        }
        let findings = if self.restore {
            safety::agents_answer(&view)
        } else {
            safety::check(&view, tolerate)
        };
        if !findings.is_empty() {
            return Err(ExecError::Unsafe {
                cluster: self.cluster.name.clone(),
                findings,
            });
        }
        let fence = self.acquire(&view, &record, takeover).await?;
        let mut record = record;
        record.epoch = fence.epoch;
        record.steps = plan
            .steps
            .iter()
            .map(|s| StepRecord::pending(s.id.clone(), s.description.clone()))
            .collect();
        if let Err(e) = self.journal.create(&record) {
            fence::release(&self.agents, &self.fence_holders(), &fence).await;
            return Err(e.into());
        }
        self.progress.line(&format!(
            "operation {} ({}) on cluster {}: {} step(s); journal {}",
            record.id,
            record.kind,
            self.cluster.name,
            record.steps.len(),
            self.journal.path().display()
        ));
        self.run(record, fence).await
    }

    /// Resumes a journaled operation from its first unfinished step.
    pub async fn resume(
        &self,
        record: OperationRecord,
        takeover: bool,
    ) -> Result<OperationRecord, ExecError> {
        let span = self.operation_span(&record);
        self.resume_in_span(record, takeover).instrument(span).await
    }

    async fn resume_in_span(
        &self,
        record: OperationRecord,
        takeover: bool,
    ) -> Result<OperationRecord, ExecError> {
        if record.state.is_final() && record.state != OpState::Failed {
            return Err(ExecError::NotResumable {
                op: record.id.clone(),
                reason: format!(
                    "it is {}; only running, paused or failed operations can be resumed",
                    record.state.as_str()
                ),
            });
        }
        for step in &record.steps {
            if StepKind::from_id(&step.id).is_none() {
                return Err(ExecError::NotResumable {
                    op: record.id.clone(),
                    reason: format!("step {:?} in the journal is not one this version knows", step.id),
                });
            }
        }
        self.refresh_members(&record);
        let view = self.observe_for_checks().await;
        let fence = self.acquire(&view, &record, takeover).await?;
        let record = self.journal.update(&record.id, |r| {
            r.state = OpState::Running;
            r.epoch = fence.epoch;
            r.error = None;
        })?;
        self.progress.line(&format!(
            "resuming operation {} ({}) on cluster {} at step {}/{}",
            record.id,
            record.kind,
            self.cluster.name,
            record.steps_complete() + 1,
            record.steps.len()
        ));
        self.run(record, fence).await
    }

    async fn acquire(
        &self,
        view: &ClusterView,
        record: &OperationRecord,
        takeover: bool,
    ) -> Result<pb::Fence, ExecError> {
        let epoch = match self.term {
            None => view.highest_epoch() + 1,
            Some(term) => fence::term_epoch(&self.cluster.name, term, view.highest_epoch())?,
        };
        let request = pb::AcquireFenceRequest {
            fence: Some(fence::fence(&self.cluster.name, epoch, &record.id, "")),
            holder: record.holder.clone(),
            operation_kind: record.kind.as_str().to_string(),
            takeover,
        };
        // A dead leaving host, or one already removed whose agent is gone,
        // cannot act: its fence is not needed.
        let removed = record.steps.iter().any(|s| {
            s.state.is_complete()
                && matches!(
                    StepKind::from_id(&s.id),
                    Some(StepKind::Member(MemberStep::RemoveMember { .. }))
                )
        });
        let optional: Vec<String> = self
            .membership
            .leaving
            .iter()
            .filter(|l| !l.alive || removed)
            .map(|l| l.name.clone())
            .collect();
        Ok(fence::acquire(&self.agents, &self.fence_holders(), request, &optional).await?)
    }

    async fn run(&self, mut record: OperationRecord, fence: pb::Fence) -> Result<OperationRecord, ExecError> {
        self.refresh_members(&record);
        let total = record.steps.len();
        for index in 0..total {
            let step = record.steps[index].clone();
            if step.state.is_complete() {
                continue;
            }
            let number = index + 1;
            let op_id = record.id.clone();
            let stop = |reason: String| ExecError::Stopped {
                op: op_id.clone(),
                index: number,
                total,
                step: step.description.clone(),
                reason,
            };
            if self.interrupted.load(Ordering::SeqCst) {
                let err = stop("interrupted (Ctrl-C) before this step".into());
                return Err(self.stop(&record.id, &fence, err).await);
            }
            let Some(kind) = StepKind::from_id(&step.id) else {
                let err = stop(format!("unknown step {:?}", step.id));
                return Err(self.stop(&record.id, &fence, err).await);
            };
            let timeout = self
                .step_timeout
                .unwrap_or_else(|| kind.default_timeout())
                .max(Duration::from_secs(1));
            let deadline = Instant::now() + timeout;
            // The step's span: its checks, its action on the agents and its
            // wait; its trace ID goes in the step's journal record.
            let step_span = tracing::info_span!(
                "step",
                otel.name = %format!("step {}", step.id),
                step = %step.id,
                number,
                total,
            );
            let view = match self.pre_check(&kind).instrument(step_span.clone()).await {
                Ok(view) => view,
                Err(findings) => {
                    let reason = format!("the cluster is not safe for this step:\n{}", list(&findings));
                    return Err(self.fail(&record, &fence, stop(reason)).await);
                }
            };
            self.progress
                .line(&format!("[{number}/{total}] {} ...", step.description));
            // The agents answer a call repeated under the same key from their
            // record. A step whose coordinator died mid-way (still `running`)
            // keeps its key, so an action that completed is not done twice; a
            // step that failed gets a new key, so its action runs again.
            let attempt = if step.state == StepState::Running {
                step.attempts.max(1)
            } else {
                step.attempts + 1
            };
            record = self.journal.step_started(&record.id, &step.id)?;
            if let Some(trace_id) = telemetry::trace_id(&step_span) {
                record = self
                    .journal
                    .update(&record.id, |r| r.set_step_trace_id(&step.id, trace_id))?;
            }
            let processed = processed(&record);
            let started = Instant::now();
            let step_fence = pb::Fence {
                step: format!("{}#{attempt}", step.id),
                ..fence.clone()
            };
            let outcome = async {
                match self
                    .execute(&kind, &view, &step_fence, deadline, &processed)
                    .await
                {
                    Ok(detail) if self.check_hashkv && kind.changes_a_member() => self
                        .hashkv_after_step(deadline)
                        .await
                        .map(|hashkv| format!("{detail}; {hashkv}")),
                    other => other,
                }
            }
            .instrument(step_span.clone())
            .await;
            match outcome {
                Ok(detail) => {
                    let detail = format!("{detail}; step took {}", format_took(started.elapsed()));
                    self.progress.line(&format!(
                        "[{number}/{total}] {}: done: {detail}",
                        step.description
                    ));
                    record =
                        self.journal
                            .step_finished(&record.id, &step.id, StepState::Done, Some(detail))?;
                    self.refresh_members(&record);
                    if self.pause_after.as_deref() == Some(step.id.as_str()) && number < total {
                        let record = self.journal.update(&record.id, |r| r.state = OpState::Paused)?;
                        self.progress.line(&format!(
                            "operation {id} paused after step {number}/{total} as asked; it keeps cluster {} (other operations are \
                             refused). Continue: `etcdops op resume {id}`; give up: `etcdops op abort {id}`",
                            self.cluster.name,
                            id = record.id,
                        ));
                        return Ok(record);
                    }
                }
                Err(failed) => {
                    let safety = match failed.retry {
                        Retry::Safe => "running the step again is safe",
                        Retry::LookFirst => "look before running the step again",
                    };
                    let reason = format!("{failed}\n  {safety}: {}", failed.advice());
                    self.progress.line(&format!(
                        "[{number}/{total}] {}: FAILED: {reason}",
                        step.description
                    ));
                    let record = self.journal.step_finished(
                        &record.id,
                        &step.id,
                        StepState::Failed,
                        Some(reason.clone()),
                    )?;
                    return Err(self.fail(&record, &fence, stop(reason)).await);
                }
            }
        }
        let view = self.observe().await;
        let findings = safety::check(&view, self.tolerate);
        let (state, error) = if findings.is_empty() {
            (OpState::Succeeded, None)
        } else {
            (
                OpState::Failed,
                Some(format!(
                    "the cluster is not healthy after the last step:\n{}",
                    list(&findings)
                )),
            )
        };
        let record = self.journal.finish(&record.id, state, error)?;
        fence::release(&self.agents, &self.fence_holders(), &fence).await;
        if findings.is_empty() {
            // A renewal's or a rotation's staged keys are installed: not kept beyond it.
            if let Some(dir) = self.operation.staging_dir() {
                let _ = std::fs::remove_dir_all(dir);
            }
            self.progress.line(&format!("operation {} succeeded", record.id));
            Ok(record)
        } else {
            Err(ExecError::UnhealthyAfter {
                op: record.id,
                findings,
            })
        }
    }

    /// A step could not run or failed: a join not yet promoted is rolled
    /// back (the operation ends aborted); otherwise the operation stops,
    /// resumable. Either way the fence is given back.
    async fn fail(&self, record: &OperationRecord, fence: &pb::Fence, stopped: ExecError) -> ExecError {
        let ExecError::Stopped {
            op,
            index,
            total,
            step,
            reason,
        } = stopped
        else {
            return self.stop(&record.id, fence, stopped).await;
        };
        let Some(rolled_back) = self.roll_back_join(record, fence).await else {
            return self
                .stop(
                    &record.id,
                    fence,
                    ExecError::Stopped {
                        op,
                        index,
                        total,
                        step,
                        reason,
                    },
                )
                .await;
        };
        let err = ExecError::RolledBack {
            op,
            index,
            total,
            step,
            reason,
            rolled_back,
        };
        if let Err(e) = self
            .journal
            .finish(&record.id, OpState::Aborted, Some(err.to_string()))
        {
            tracing::error!(error = %e, "could not journal the rollback");
        }
        fence::release(&self.agents, &self.fence_holders(), fence).await;
        err
    }

    /// Journals the stop and gives the fence back.
    async fn stop(&self, op: &str, fence: &pb::Fence, err: ExecError) -> ExecError {
        let reason = err.to_string();
        if let Err(e) = self.journal.finish(op, OpState::Failed, Some(reason)) {
            tracing::error!(error = %e, "could not journal the stop");
        }
        fence::release(&self.agents, &self.fence_holders(), fence).await;
        err
    }

    /// Safety checks, the quorum margin of a restart, and convergence: every
    /// voter's applied index reaches the leader's index of the first look.
    async fn pre_check(&self, kind: &StepKind) -> Result<ClusterView, Vec<Finding>> {
        if self.restore {
            let view = self.observe_for_checks().await;
            let findings = safety::agents_answer(&view);
            return if findings.is_empty() {
                Ok(view)
            } else {
                Err(findings)
            };
        }
        let view = self.observe().await;
        let mut tolerate = self.tolerate;
        if let Some(member) = kind.restarted_member() {
            tolerate.down = Some(member);
        }
        // A dead member being removed is down until it is gone.
        if let Some(l) = &self.membership.leaving
            && !l.alive
        {
            tolerate.down = Some(l.name.as_str());
        }
        let mut findings = safety::check(&view, tolerate);
        if let Some(member) = kind.restarted_member()
            && !self.force
            && let Err(f) = safety::keeps_quorum_without(&view, member)
        {
            findings.push(f);
        }
        if !findings.is_empty() {
            return Err(findings);
        }
        let Some(target) = view.leader().map(|l| l.raft_index) else {
            return Err(safety::check(
                &view,
                Tolerate {
                    nospace_alarm: true,
                    slow_disk: true,
                    down: None,
                },
            ));
        };
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        let mut view = view;
        loop {
            let behind = safety::lagging(&view, target);
            if behind.is_empty() {
                return Ok(view);
            }
            if Instant::now() >= deadline {
                return Err(behind
                    .into_iter()
                    .map(|(member, by)| Finding {
                        member: Some(member),
                        seen: format!("still {by} raft entries behind the leader after {}", format_took(CONVERGE_TIMEOUT)),
                        action: "a follower that cannot keep up is not safe to lean on: check its disk and network".into(),
                    })
                    .collect());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            view = self.observe().await;
        }
    }

    async fn execute(
        &self,
        kind: &StepKind,
        view: &ClusterView,
        fence: &pb::Fence,
        deadline: Instant,
        processed: &[String],
    ) -> Result<String, StepError> {
        match kind {
            StepKind::Restore(step) => self.execute_restore(step, fence, deadline).await,
            StepKind::Recover(step) => self.execute_recover(step, fence, deadline).await,
            StepKind::Safeguard(step) => self.execute_safeguard(step, fence).await,
            StepKind::Certs(step) => self.execute_certs(step, view, fence, deadline).await,
            StepKind::Member(step) => {
                if let MemberStep::RemoveMember { member } = step {
                    let moved = self
                        .transfer_if_leader(view, member, fence, deadline, processed)
                        .await?;
                    let done = self.execute_membership(step, view, fence, deadline).await?;
                    return Ok(format!("{moved}{done}"));
                }
                self.execute_membership(step, view, fence, deadline).await
            }
            StepKind::Rolling(step) => self.execute_rolling(step, view, fence, deadline, processed).await,
        }
    }

    /// A rolling or maintenance step: one member (defrag, restart, a leadership
    /// transfer), or the cluster through its leader (compact, alarms, a write).
    async fn execute_rolling(
        &self,
        step: &RollingStep,
        view: &ClusterView,
        fence: &pb::Fence,
        deadline: Instant,
        processed: &[String],
    ) -> Result<String, StepError> {
        match step {
            RollingStep::TransferLeadership { from } => {
                self.transfer(view, from, fence, deadline, processed).await
            }
            RollingStep::Defrag { member } => {
                let mut detail = self
                    .transfer_if_leader(view, member, fence, deadline, processed)
                    .await?;
                let request = pb::DefragmentRequest {
                    fence: Some(fence.clone()),
                    timeout_ms: ms_until(deadline),
                };
                let answer = self
                    .call(member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.defragment(request).await }
                    })
                    .await?;
                let waited = self.wait_ready(member, deadline).await?;
                detail.push_str(&format!(
                    "db {} -> {} ({} in use) in {}; healthy and caught up {} later",
                    human_bytes_i64(answer.db_size_before),
                    human_bytes_i64(answer.db_size_after),
                    human_bytes_i64(answer.db_size_in_use_after),
                    format_took(Duration::from_millis(answer.took_ms)),
                    format_took(waited)
                ));
                Ok(detail)
            }
            RollingStep::Restart { member } => {
                let mut detail = self
                    .transfer_if_leader(view, member, fence, deadline, processed)
                    .await?;
                detail.push_str(&self.restart_member(member, fence, deadline).await?);
                Ok(detail)
            }
            RollingStep::Compact { revision } => {
                let member = view.leader().map(|l| l.name.clone()).ok_or("no leader")?;
                let request = pb::CompactRequest {
                    fence: Some(fence.clone()),
                    revision: *revision,
                    physical: true,
                    timeout_ms: ms_until(deadline),
                };
                let answer = self
                    .call(&member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.compact(request).await }
                    })
                    .await?;
                Ok(if answer.already_compacted {
                    format!("history was already compacted at or past revision {revision}")
                } else {
                    format!("compacted up to revision {} through {member}", answer.revision)
                })
            }
            RollingStep::DisarmAlarms => {
                let member = view.leader().map(|l| l.name.clone()).ok_or("no leader")?;
                let request = pb::DisarmAlarmsRequest {
                    fence: Some(fence.clone()),
                    alarms: Vec::new(),
                };
                let answer = self
                    .call(&member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.disarm_alarms(request).await }
                    })
                    .await?;
                if !answer.remaining.is_empty() {
                    let left: Vec<String> = answer.remaining.iter().map(|a| a.kind.clone()).collect();
                    return Err(StepError::look_first(format!(
                        "alarms still active after disarming: {} (etcd re-raises NOSPACE while the database is over its quota)",
                        left.join(", ")
                    )));
                }
                let kinds: Vec<String> = answer.disarmed.iter().map(|a| a.kind.clone()).collect();
                Ok(if kinds.is_empty() {
                    "no alarm was active".into()
                } else {
                    format!("disarmed {}", kinds.join(", "))
                })
            }
            RollingStep::VerifyWrites => {
                let member = view.leader().map(|l| l.name.clone()).ok_or("no leader")?;
                let request = pb::WriteProbeRequest {
                    fence: Some(fence.clone()),
                    timeout_ms: ms_until(deadline).min(60_000),
                };
                let answer = self
                    .call(&member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.write_probe(request).await }
                    })
                    .await?;
                Ok(format!(
                    "wrote and deleted {} at revision {}",
                    answer.key, answer.revision
                ))
            }
            RollingStep::SwitchBinary { member } => {
                self.switch_binary(member, view, fence, deadline, processed).await
            }
            RollingStep::ClusterVersion => self.cluster_version(deadline).await,
        }
    }

    /// Moves leadership away from `member` first if it leads now (the plan
    /// put a transfer step before it, but an election may have made it
    /// leader again since).
    pub(super) async fn transfer_if_leader(
        &self,
        view: &ClusterView,
        member: &str,
        fence: &pb::Fence,
        deadline: Instant,
        processed: &[String],
    ) -> Result<String, StepError> {
        let voters = view.members.iter().filter(|m| m.is_voter()).count();
        if view.leader().is_some_and(|l| l.name == member) && voters > 1 {
            let transfer_fence = pb::Fence {
                step: format!("{}+transfer", fence.step),
                ..fence.clone()
            };
            let moved = self
                .transfer(view, member, &transfer_fence, deadline, processed)
                .await?;
            return Ok(format!("{moved}; "));
        }
        Ok(String::new())
    }

    async fn transfer(
        &self,
        view: &ClusterView,
        from: &str,
        fence: &pb::Fence,
        deadline: Instant,
        processed: &[String],
    ) -> Result<String, StepError> {
        let Some(leader) = view.leader() else {
            return Err("no agreed leader".into());
        };
        if leader.name != from {
            return Ok(format!(
                "{from} is not the leader ({} is): nothing to move",
                leader.name
            ));
        }
        let target = transfer_target(view, from, processed).ok_or_else(|| {
            StepError::look_first(format!("no healthy voter to take over leadership from {from}"))
        })?;
        let (target_name, target_id) = (target.name.clone(), target.id);
        let request = pb::MoveLeaderRequest {
            fence: Some(fence.clone()),
            target_member_id: target_id,
            timeout_ms: ms_until(deadline).min(60_000),
        };
        self.call(from, deadline, move |mut c: Client| {
            let request = request.clone();
            async move { c.move_leader(request).await }
        })
        .await?;
        let started = Instant::now();
        loop {
            let now = self.observe().await;
            if let Some(l) = now.leader()
                && l.name != from
            {
                return Ok(format!(
                    "leadership moved from {from} to {} in {}",
                    l.name,
                    format_took(started.elapsed())
                ));
            }
            if Instant::now() >= deadline {
                return Err(StepError::retry(format!(
                    "asked {from} to hand leadership to {target_name}, but no new leader was agreed in time"
                )));
            }
            self.pause("a new leader").await?;
        }
    }

    /// Waits until `member` passes a linearizable read and its applied index
    /// reaches the leader's index as first seen once it was healthy ("caught
    /// up" judged from the members that answer: see [`catch_up_target`]).
    /// Bounded twice: by the step's `deadline`, and — when `member`'s agent
    /// stops answering — by about the agent timeout (`--timeout`), naming the
    /// agent; a Ctrl-C ends the wait. The step's action is done by then, so
    /// every way out here is safe to resume.
    /// Restarts `member`'s etcd through its agent and waits until it is
    /// healthy and caught up: "restarted (pid N); healthy and caught up after T".
    pub(super) async fn restart_member(
        &self,
        member: &str,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let request = pb::UnitRequest {
            operation_id: fence.operation_id.clone(),
            timeout_ms: ms_until(deadline),
            fence: Some(fence.clone()),
            boot: false,
        };
        let unit = self
            .call(member, deadline, move |mut c: Client| {
                let request = request.clone();
                async move { c.restart_etcd(request).await }
            })
            .await?;
        let waited = self.wait_ready(member, deadline).await?;
        let pid = if unit.main_pid > 0 {
            format!(" (pid {})", unit.main_pid)
        } else {
            String::new()
        };
        Ok(format!(
            "restarted{pid}; healthy and caught up after {}",
            format_took(waited)
        ))
    }

    async fn wait_ready(&self, member: &str, deadline: Instant) -> Result<Duration, StepError> {
        let started = Instant::now();
        let mut target = None;
        let mut last = String::from("not observed yet");
        let mut silent = AgentSilence::default();
        loop {
            let view = self.observe().await;
            if let Some(m) = view.member(member) {
                silent.check(m, self.agents.timeout())?;
                if m.is_healthy() {
                    if target.is_none() {
                        target = catch_up_target(&view);
                    }
                    match target {
                        Some(t) if m.applied_index >= t => return Ok(started.elapsed()),
                        Some(t) => {
                            last = format!("applied index {} behind the leader's {t}", m.applied_index)
                        }
                        None => last = "no agreed leader".into(),
                    }
                } else {
                    last = m
                        .unreachable
                        .clone()
                        .or_else(|| m.unhealthy.clone())
                        .unwrap_or_default();
                }
            }
            if Instant::now() >= deadline {
                return Err(StepError::retry(format!(
                    "{member} was not healthy and caught up in time: {last}"
                ))
                .next(format!(
                    "the step's action is done; once {member} is healthy (`etcdops status`), `etcdops op resume` \
                     waits for it again"
                )));
            }
            self.pause(&format!("{member} to be healthy and caught up"))
                .await?;
        }
    }

    /// Waits one poll interval between two looks; a Ctrl-C ends the wait
    /// (the step's action, if any, is done: a resume waits again).
    pub(super) async fn pause(&self, waiting_for: &str) -> Result<(), StepError> {
        tokio::time::sleep(POLL_INTERVAL).await;
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(
                StepError::retry(format!("interrupted (Ctrl-C) while waiting for {waiting_for}"))
                    .next("`etcdops op resume` continues with this step (its action is not repeated)"),
            );
        }
        Ok(())
    }

    /// One call to `member`'s agent within `deadline`, retried on transport
    /// errors (same fence step, so the agent answers a retry from its record).
    pub(super) async fn call<T, F, Fut>(
        &self,
        member: &str,
        deadline: Instant,
        call: F,
    ) -> Result<T, StepError>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let target: Vec<Member> = self.agent_of(member).into_iter().collect();
        if target.is_empty() {
            return Err(StepError::look_first(format!(
                "{member} is not in the fleet file"
            )));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            let agents = self.agents.with_call_timeout(left);
            let reply = agents
                .fan_out(&target, call.clone())
                .await
                .pop()
                .ok_or("no reply")?;
            match reply.result {
                Ok(answer) => return Ok(answer),
                Err(e) if attempt < CALL_ATTEMPTS && transient(&e.kind) && Instant::now() < deadline => {
                    tracing::warn!(member, error = %e, attempt, "retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(StepError::from_agent(member, &e)),
            }
        }
    }
}

/// The index a member must have applied to count as caught up: the agreed
/// leader's raft index when its agent answers, else the highest raft index
/// among the healthy members that agree on a leader (a leader whose agent is
/// gone still leads; its followers' logs show how far it got).
pub fn catch_up_target(view: &ClusterView) -> Option<u64> {
    if let Some(leader) = view.leader() {
        return Some(leader.raft_index);
    }
    let answering: Vec<_> = view.members.iter().filter(|m| m.is_healthy()).collect();
    let leader_id = answering.first()?.leader_id;
    if leader_id == 0 || answering.iter().any(|m| m.leader_id != leader_id) {
        return None;
    }
    answering.iter().map(|m| m.raft_index).max()
}

/// How long the agent of the member a step waits for has not answered.
#[derive(Debug, Default)]
struct AgentSilence {
    since: Option<Instant>,
}

impl AgentSilence {
    /// Fails once `m`'s agent has not answered for `limit` (at least 5 s).
    fn check(&mut self, m: &MemberView, limit: Duration) -> Result<(), StepError> {
        if m.agent_answered {
            self.since = None;
            return Ok(());
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        let limit = limit.max(Duration::from_secs(5));
        if since.elapsed() < limit {
            return Ok(());
        }
        Err(StepError::retry(format!(
            "{}'s agent {} has not answered for {}: {}",
            m.name,
            m.agent,
            format_took(since.elapsed()),
            m.unreachable.clone().unwrap_or_default()
        ))
        .next(format!(
            "start etcdops-agent on {}'s host again (the step's action went through), then `etcdops op resume`",
            m.name
        )))
    }
}

/// Another operation holds the cluster's fence: refuse before anything
/// else, naming it (its own work is the likely cause of anything unsafe).
pub fn busy(view: &ClusterView, own_operation: &str) -> Result<(), FenceError> {
    let Some(holder) = view
        .holders()
        .into_iter()
        .find(|h| h.operation_id != own_operation)
    else {
        return Ok(());
    };
    let since = time::OffsetDateTime::from_unix_timestamp(holder.acquired_at_unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| holder.acquired_at_unix.to_string());
    Err(FenceError::Held {
        cluster: view.cluster.clone(),
        message: format!(
            "operation {} ({}) of {} holds its fence since {since} (epoch {}): wait for it to finish, \
             or if its coordinator is gone: `etcdops op resume {}` where it was journaled, or `etcdops op abort {}`",
            holder.operation_id,
            holder.operation_kind,
            holder.holder,
            holder.epoch,
            holder.operation_id,
            holder.operation_id
        ),
    })
}

fn transient(kind: &AgentErrorKind) -> bool {
    match kind {
        AgentErrorKind::Unreachable { .. }
        | AgentErrorKind::ConnectTimeout { .. }
        | AgentErrorKind::ConnectionClosed { .. } => true,
        AgentErrorKind::Rpc { code, .. } => *code == tonic::Code::Unavailable,
        _ => false,
    }
}

/// Members whose defrag or restart step is done.
fn processed(record: &OperationRecord) -> Vec<String> {
    record
        .steps
        .iter()
        .filter(|s| s.state == StepState::Done)
        .filter_map(|s| match StepKind::from_id(&s.id) {
            Some(
                StepKind::Rolling(RollingStep::Defrag { member })
                | StepKind::Rolling(RollingStep::Restart { member })
                | StepKind::Rolling(RollingStep::SwitchBinary { member }),
            ) => Some(member),
            _ => None,
        })
        .collect()
}

/// A step's duration for people: `85 ms`, `3.2 s`.
pub(super) fn format_took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Milliseconds left until `deadline`, at least 1 s, as an agent `timeout_ms`.
pub(super) fn ms_until(deadline: Instant) -> u32 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    u32::try_from(left.as_millis()).unwrap_or(u32::MAX).min(3_600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_members_come_from_done_steps() {
        let mut record = OperationRecord {
            id: "op".into(),
            kind: crate::plan::planner::OpKind::Defrag,
            cluster: "c".into(),
            fleet: "f".into(),
            operation: crate::plan::operation::Operation::Defrag {
                rule: None,
                compact: false,
                members: Vec::new(),
            },
            options: Default::default(),
            holder: "h".into(),
            operator: None,
            epoch: 1,
            state: OpState::Running,
            created_at_unix: 0,
            updated_at_unix: 0,
            error: None,
            steps: Vec::new(),
        };
        record.steps = vec![
            StepRecord::pending("defrag:etcd2", "x"),
            StepRecord::pending("transfer-leadership:etcd1", "x"),
            StepRecord::pending("defrag:etcd3", "x"),
        ];
        record.steps[0].state = StepState::Done;
        record.steps[1].state = StepState::Done;
        assert_eq!(processed(&record), ["etcd2"]);
    }

    #[test]
    fn transient_errors_are_transport_ones() {
        assert!(transient(&AgentErrorKind::Unreachable {
            reason: "refused".into()
        }));
        assert!(transient(&AgentErrorKind::Rpc {
            code: tonic::Code::Unavailable,
            message: String::new()
        }));
        assert!(!transient(&AgentErrorKind::Rpc {
            code: tonic::Code::FailedPrecondition,
            message: String::new()
        }));
    }

    #[test]
    fn caught_up_is_judged_from_the_members_that_answer() {
        let mut view = crate::plan::view::fixtures::healthy(3, 1);
        view.members[1].raft_index = 1_010;
        assert_eq!(catch_up_target(&view), Some(1_000), "the leader's own index");
        // The leader's agent is gone: its followers' logs show how far it got.
        view.members[0].unreachable = Some("refused".into());
        view.members[0].agent_answered = false;
        assert_eq!(catch_up_target(&view), Some(1_010));
        // Followers that disagree on the leader give no target.
        view.members[2].leader_id = 3;
        assert_eq!(catch_up_target(&view), None);
    }

    #[test]
    fn a_silent_agent_ends_the_wait_after_the_limit() {
        let mut m = crate::plan::view::fixtures::healthy(1, 1).members.remove(0);
        let mut silence = AgentSilence::default();
        m.agent_answered = true;
        assert!(silence.check(&m, Duration::from_secs(5)).is_ok());
        m.agent_answered = false;
        m.unreachable = Some("connection refused".into());
        assert!(silence.check(&m, Duration::from_secs(5)).is_ok(), "not yet");
        silence.since = Some(Instant::now() - Duration::from_secs(6));
        let err = silence
            .check(&m, Duration::from_secs(5))
            .expect_err("silent too long");
        assert_eq!(err.retry, Retry::Safe);
        assert!(
            err.seen.contains("etcd1's agent") && err.seen.contains("connection refused"),
            "{err}"
        );
        m.agent_answered = true;
        assert!(
            silence.check(&m, Duration::from_secs(5)).is_ok(),
            "answering again resets it"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_took(Duration::from_micros(85_400)), "85 ms");
        assert_eq!(format_took(Duration::from_millis(3_240)), "3.2 s");
    }
}
