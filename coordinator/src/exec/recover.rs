//! The executor's majority-loss recovery steps: snapshot the survivor
//! (through `snapshot.rs`, into the recovery's directory), stop
//! the others, restart the survivor once with force-new-cluster (and take
//! the flag out again), rejoin every other member as a fresh learner through
//! the membership steps, verify.
//!
//! Each step converges when run again (a coordinator that died mid-step
//! resumes it): the force-new-cluster restart is skipped once the survivor
//! leads a one-member cluster; a rejoin skips what is already done.

use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{Executor, StepError, format_took, ms_until};
use crate::agents::Client;
use crate::fleet::Cluster;
use crate::plan::operation::Operation;
use crate::plan::recover::RecoverArgs;
use crate::plan::step::{MemberStep, RecoverStep, SnapshotTo};
use crate::plan::view::ClusterView;

/// The env var etcd reads for --force-new-cluster.
const FORCE_NEW_CLUSTER: &str = "ETCD_FORCE_NEW_CLUSTER";

/// The fence of one agent call within a step: its own key, so two calls of
/// one kind in a step (set then unset) are not answered from one record.
fn sub_fence(fence: &pb::Fence, call: &str) -> pb::Fence {
    pb::Fence {
        step: format!("{}/{call}", fence.step),
        ..fence.clone()
    }
}

impl Executor {
    fn recover_args(&self, op: &str) -> Result<RecoverArgs, StepError> {
        let record = self
            .journal
            .get(op)
            .map_err(|e| StepError::look_first(e.to_string()))?
            .ok_or_else(|| StepError::look_first(format!("operation {op} is not in the journal")))?;
        record.operation.recover().cloned().ok_or_else(|| {
            StepError::look_first(format!("operation {op} is a {}, not a recovery", record.kind))
        })
    }

    async fn set_flag(
        &self,
        member: &str,
        fence: &pb::Fence,
        on: bool,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let var = pb::EnvVar {
            key: FORCE_NEW_CLUSTER.into(),
            value: "true".into(),
        };
        let request = pb::SetEtcdEnvRequest {
            operation_id: fence.operation_id.clone(),
            set: if on { vec![var] } else { Vec::new() },
            unset: if on {
                Vec::new()
            } else {
                vec![FORCE_NEW_CLUSTER.into()]
            },
            fence: Some(sub_fence(fence, if on { "set-flag" } else { "unset-flag" })),
        };
        let answer = self
            .call(member, deadline, move |mut c: Client| {
                let request = request.clone();
                async move { c.set_etcd_env(request).await }
            })
            .await?;
        Ok(answer.path)
    }

    /// The survivor leads a one-member cluster and serves linearizable reads.
    fn leads_alone(view: &ClusterView, member: &str) -> bool {
        view.member(member)
            .is_some_and(|m| m.is_healthy() && m.is_leader && m.members.len() == 1)
    }

    pub(super) async fn execute_recover(
        &self,
        kind: &RecoverStep,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let op = fence.operation_id.clone();
        let args = self.recover_args(&op)?;
        match kind {
            RecoverStep::SnapshotFirst { member } => {
                let survivor = self
                    .agent_of(member)
                    .ok_or_else(|| StepError::look_first(format!("{member} is not in the fleet file")))?;
                let cluster = Cluster {
                    members: vec![survivor],
                    ..self.cluster.clone()
                };
                let to = SnapshotTo::Dir {
                    path: args.snapshot_dir.clone(),
                };
                let saved = self
                    .save_snapshot(&cluster, Some(member.clone()), &to, true)
                    .await?;
                let mut args = args;
                args.snapshot = Some(saved.location.clone().into());
                self.journal
                    .update(&op, |r| {
                        if let Operation::RecoverQuorum { recover, .. } = &mut r.operation {
                            *recover = args.clone();
                        }
                    })
                    .map_err(|e| StepError::look_first(e.to_string()))?;
                Ok(format!(
                    "{} ({} bytes, revision {}): `etcdops restore --snapshot` brings this state back if the recovery goes wrong",
                    saved.location, saved.size, saved.revision
                ))
            }
            RecoverStep::StopOthers => {
                let others: Vec<_> = self
                    .members_now()
                    .into_iter()
                    .filter(|m| args.rejoin.iter().any(|r| r.name == m.name))
                    .collect();
                if others.is_empty() {
                    return Ok("no other member's agent answers: nothing to stop".into());
                }
                let fence = fence.clone();
                let timeout_ms = ms_until(deadline).min(600_000);
                let answers = self
                    .on_members(others, deadline, move |_, mut c: Client| {
                        // Disabled too: a reboot must not start the old member again.
                        let request = pb::UnitRequest {
                            operation_id: fence.operation_id.clone(),
                            timeout_ms,
                            fence: Some(fence.clone()),
                            boot: true,
                        };
                        async move { c.stop_etcd(request).await }
                    })
                    .await?;
                Ok(format!(
                    "stopped on {}",
                    answers
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            RecoverStep::ForceNewCluster { member } => {
                let started = Instant::now();
                let mut detail = String::new();
                if Self::leads_alone(&self.observe().await, member) {
                    detail.push_str(&format!("{member} already leads a one-member cluster; "));
                } else {
                    self.set_flag(member, fence, true, deadline).await?;
                    let request = pb::UnitRequest {
                        operation_id: fence.operation_id.clone(),
                        timeout_ms: ms_until(deadline).min(600_000),
                        fence: Some(sub_fence(fence, "restart")),
                        boot: false,
                    };
                    self.call(member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.restart_etcd(request).await }
                    })
                    .await?;
                    loop {
                        let view = self.observe().await;
                        if Self::leads_alone(&view, member) {
                            break;
                        }
                        if Instant::now() >= deadline {
                            let seen = view.member(member).map_or_else(
                                || "not observed".to_string(),
                                |m| {
                                    format!(
                                        "leader {}, {} member(s) listed, {}",
                                        m.is_leader,
                                        m.members.len(),
                                        m.unreachable
                                            .clone()
                                            .or(m.unhealthy.clone())
                                            .unwrap_or_else(|| "answering".into())
                                    )
                                },
                            );
                            return Err(StepError::look_first(format!(
                                "{member} did not come back as the leader of a one-member cluster in time ({seen}); \
                                 {FORCE_NEW_CLUSTER}=true is still in its env file: fix the cause, then `etcdops op resume`"
                            )));
                        }
                        self.pause("the step's condition").await?;
                    }
                    detail.push_str(&format!(
                        "{member} restarted with force-new-cluster and leads alone after {}; ",
                        format_took(started.elapsed())
                    ));
                }
                // Never left behind: a later restart with it would drop the rejoined members again.
                let path = self.set_flag(member, fence, false, deadline).await?;
                detail.push_str(&format!(
                    "{FORCE_NEW_CLUSTER} removed from {path} (the running etcd keeps going)"
                ));
                Ok(detail)
            }
            RecoverStep::Rejoin { member } => self.rejoin(member, fence, deadline).await,
            RecoverStep::VerifyRecovery => {
                let started = Instant::now();
                loop {
                    let view = self.observe().await;
                    let findings = crate::plan::safety::check(&view, self.tolerate);
                    let learners: Vec<&str> = view
                        .membership()
                        .iter()
                        .filter(|m| m.is_learner)
                        .map(|m| m.name.as_str())
                        .collect();
                    let mut problem = None;
                    if findings.is_empty()
                        && learners.is_empty()
                        && let Some(leader) = view.leader()
                    {
                        let at = view.members.iter().map(|m| m.revision).min().unwrap_or(0);
                        match self.hashes_agree(at, deadline).await {
                            Ok(hash) => {
                                // The rebuilt quorum commits a write.
                                let request = pb::WriteProbeRequest {
                                    fence: Some(sub_fence(fence, "write-probe")),
                                    timeout_ms: ms_until(deadline).min(60_000),
                                };
                                let wrote = self
                                    .call(&leader.name, deadline, move |mut c: Client| {
                                        let request = request.clone();
                                        async move { c.write_probe(request).await }
                                    })
                                    .await?;
                                return Ok(format!(
                                    "{} voters healthy, leader {}, cluster ID {:016x}, the same hashkv {hash:08x} at revision {at} \
                                     on every member, a write committed at revision {}, after {}",
                                    view.members.len(),
                                    leader.name,
                                    leader.cluster_id,
                                    wrote.revision,
                                    format_took(started.elapsed())
                                ));
                            }
                            Err(e) => problem = Some(e),
                        }
                    }
                    if Instant::now() >= deadline {
                        let mut all: Vec<String> = findings.iter().map(ToString::to_string).collect();
                        all.extend(learners.iter().map(|l| format!("{l} is still a learner")));
                        all.extend(problem.map(|e| e.to_string()));
                        return Err(StepError::look_first(format!(
                            "the recovered cluster is not whole: {}",
                            all.join("; ")
                        )));
                    }
                    self.pause("the step's condition").await?;
                }
            }
        }
    }

    /// Stop (and disable) its etcd, move its old data dir aside, add it as
    /// a learner, configure, start and catch up, promote — skipping what a
    /// run before did already.
    async fn rejoin(&self, member: &str, fence: &pb::Fence, deadline: Instant) -> Result<String, StepError> {
        let joining = self.joining(member)?.clone();
        let view = self.observe().await;
        let listed = view
            .membership()
            .iter()
            .find(|m| m.peer_urls.contains(&joining.peer_url))
            .cloned();
        if let Some(m) = &listed
            && !m.is_learner
            && view.member(member).is_some_and(|v| v.is_healthy())
        {
            return Ok(format!("{member} is already a healthy voter ({:016x})", m.id));
        }
        let mut done = Vec::new();
        if listed.is_none() {
            let stop = pb::UnitRequest {
                operation_id: fence.operation_id.clone(),
                timeout_ms: ms_until(deadline).min(600_000),
                fence: Some(sub_fence(fence, "stop")),
                boot: false,
            };
            let status = self
                .call(member, deadline, move |mut c: Client| {
                    let stop = stop.clone();
                    async move {
                        c.stop_etcd(stop).await?;
                        c.get_status(pb::GetStatusRequest::default()).await
                    }
                })
                .await?;
            if status.data_dir.as_ref().is_some_and(|d| d.exists) {
                let moved = self
                    .execute_membership(
                        &MemberStep::MoveAsideBeforeJoin {
                            member: member.to_string(),
                        },
                        &view,
                        &sub_fence(fence, "move-aside"),
                        deadline,
                    )
                    .await?;
                done.push(moved);
            }
            let view = self.observe().await;
            done.push(
                self.execute_membership(
                    &MemberStep::AddLearner {
                        member: member.to_string(),
                    },
                    &view,
                    &sub_fence(fence, "add"),
                    deadline,
                )
                .await?,
            );
        }
        let view = self.observe().await;
        done.push(
            self.execute_membership(
                &MemberStep::Configure {
                    member: member.to_string(),
                },
                &view,
                &sub_fence(fence, "configure"),
                deadline,
            )
            .await?,
        );
        done.push(
            self.execute_membership(
                &MemberStep::StartMember {
                    member: member.to_string(),
                },
                &view,
                &sub_fence(fence, "start"),
                deadline,
            )
            .await?,
        );
        let view = self.observe().await;
        done.push(
            self.execute_membership(
                &MemberStep::Promote {
                    member: member.to_string(),
                },
                &view,
                &sub_fence(fence, "promote"),
                deadline,
            )
            .await?,
        );
        Ok(done.join("; "))
    }
}
