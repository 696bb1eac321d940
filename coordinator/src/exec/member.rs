//! The executor's membership steps: add a learner, configure and start the
//! joining host, promote; remove, retire; keep the fleet file in step; and
//! the rollback of a join that failed before promotion.

use std::time::Duration;

use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{AgentSilence, Executor, StepError, catch_up_target, format_took, ms_until};
use crate::agents::Client;
use crate::fleet::{Fleet, Member};
use crate::journal::{OperationRecord, StepState};
use crate::plan::membership::{Joining, Leaving};
use crate::plan::step::{MemberStep, StepKind};
use crate::plan::view::{ClusterView, EtcdMember};

impl Executor {
    pub(super) fn joining(&self, name: &str) -> Result<&Joining, StepError> {
        self.membership
            .joining
            .iter()
            .chain(&self.membership.rejoining)
            .find(|j| j.name == name)
            .ok_or_else(|| StepError::look_first(format!("{name} is not joining in this operation")))
    }

    fn leaving(&self, name: &str) -> Result<&Leaving, StepError> {
        self.membership
            .leaving
            .as_ref()
            .filter(|l| l.name == name)
            .ok_or_else(|| StepError::look_first(format!("{name} is not leaving in this operation")))
    }

    /// The leader's name, to send membership changes to.
    fn leader_name(view: &ClusterView) -> Result<String, StepError> {
        view.leader()
            .map(|l| l.name.clone())
            .ok_or_else(|| StepError::look_first("no agreed leader to send the change to"))
    }

    /// The joining member as etcd lists it (by its peer URL).
    fn listed<'a>(view: &'a ClusterView, peer_url: &str) -> Option<&'a EtcdMember> {
        view.membership()
            .iter()
            .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
    }

    /// Observes the cluster with the joining member included.
    async fn observe_joining(&self, joining: &Joining) -> Result<ClusterView, StepError> {
        let mut members = self.members_now();
        if !members.iter().any(|m| m.name == joining.name) {
            members.push(
                Member::new(&joining.name, &joining.agent)
                    .map_err(|e| StepError::look_first(e.to_string()))?,
            );
        }
        Ok(crate::observe::observe(&self.agents, &self.cluster.name, &members).await)
    }

    pub(super) async fn execute_membership(
        &self,
        kind: &MemberStep,
        view: &ClusterView,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        match kind {
            MemberStep::MoveAsideBeforeJoin { member } => {
                let request = pb::MoveDataDirAsideRequest {
                    operation_id: fence.operation_id.clone(),
                    reason: "before-join".into(),
                    fence: Some(fence.clone()),
                };
                let moved = self
                    .call(member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.move_data_dir_aside(request).await }
                    })
                    .await?;
                Ok(format!("old data dir kept as {}", moved.moved_to))
            }
            MemberStep::AddLearner { member } => {
                let joining = self.joining(member)?.clone();
                let leader = Self::leader_name(view)?;
                let request = pb::AddMemberRequest {
                    fence: Some(fence.clone()),
                    peer_urls: vec![joining.peer_url.clone()],
                    is_learner: true,
                    timeout_ms: ms_until(deadline).min(600_000),
                };
                let answer = self
                    .call(&leader, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.add_member(request).await }
                    })
                    .await?;
                Ok(format!(
                    "{} learner {:016x} through {leader} ({} attempt(s))",
                    if answer.changed { "added" } else { "already a" },
                    answer.member_id,
                    answer.attempts
                ))
            }
            MemberStep::Configure { member } => {
                let joining = self.joining(member)?.clone();
                let membership = view.membership();
                if Self::listed(view, &joining.peer_url).is_none() {
                    return Err(StepError::look_first(format!(
                        "{member} ({}) is not in the membership: was the learner removed?",
                        joining.peer_url
                    )));
                }
                let initial: Vec<String> = membership
                    .iter()
                    .flat_map(|m| {
                        let name = if m.peer_urls.contains(&joining.peer_url) {
                            joining.name.clone()
                        } else {
                            m.name.clone()
                        };
                        m.peer_urls.iter().map(move |u| format!("{name}={u}"))
                    })
                    .collect();
                if initial.iter().any(|e| e.starts_with('=')) {
                    return Err("another member has not started yet (no name): etcd could not form its initial cluster".into());
                }
                let var = |key: &str, value: &str| pb::EnvVar {
                    key: key.into(),
                    value: value.into(),
                };
                let request = pb::SetEtcdEnvRequest {
                    operation_id: fence.operation_id.clone(),
                    set: vec![
                        var("ETCD_NAME", &joining.name),
                        var("ETCD_INITIAL_CLUSTER", &initial.join(",")),
                        var("ETCD_INITIAL_CLUSTER_STATE", "existing"),
                        var("ETCD_INITIAL_ADVERTISE_PEER_URLS", &joining.peer_url),
                        var("ETCD_LISTEN_PEER_URLS", &joining.peer_url),
                        var("ETCD_ADVERTISE_CLIENT_URLS", &joining.client_url),
                        var("ETCD_LISTEN_CLIENT_URLS", &joining.client_url),
                    ],
                    unset: Vec::new(),
                    fence: Some(fence.clone()),
                };
                let answer = self
                    .call(member, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.set_etcd_env(request).await }
                    })
                    .await?;
                Ok(format!(
                    "{} written (initial cluster {})",
                    answer.path,
                    initial.join(",")
                ))
            }
            MemberStep::StartMember { member } => {
                let joining = self.joining(member)?.clone();
                // Enabled too: the new member's etcd starts at boot.
                let request = pb::UnitRequest {
                    operation_id: fence.operation_id.clone(),
                    timeout_ms: ms_until(deadline).min(600_000),
                    fence: Some(fence.clone()),
                    boot: true,
                };
                self.call(member, deadline, move |mut c: Client| {
                    let request = request.clone();
                    async move { c.start_etcd(request).await }
                })
                .await?;
                let started = Instant::now();
                let mut target = None;
                let mut last = String::from("not observed yet");
                let mut silent = AgentSilence::default();
                loop {
                    let now = self.observe_joining(&joining).await?;
                    if let Some(m) = now.member(member) {
                        silent.check(m, self.agents.timeout())?;
                        if m.unreachable.is_none() {
                            if target.is_none() {
                                target = catch_up_target(&now);
                            }
                            match target {
                                Some(t) if m.applied_index >= t => {
                                    return Ok(format!(
                                        "{member} ({:016x}) started and caught up with the leader in {}",
                                        m.id,
                                        format_took(started.elapsed())
                                    ));
                                }
                                Some(t) => {
                                    last =
                                        format!("applied index {} behind the leader's {t}", m.applied_index)
                                }
                                None => last = "no agreed leader".into(),
                            }
                        } else {
                            last = m.unreachable.clone().unwrap_or_default();
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(StepError::look_first(format!(
                            "{member} did not start and catch up in time: {last}"
                        ))
                        .next(format!(
                            "look at {member}'s etcd log on its host; the operation rolls the join back, or \
                             `etcdops op resume` waits again"
                        )));
                    }
                    self.pause(&format!("{member} to start and catch up")).await?;
                }
            }
            MemberStep::Promote { member } => {
                let id = match self.joining(member).ok() {
                    Some(j) => Self::listed(view, &j.peer_url).map(|m| m.id),
                    None => view.membership().iter().find(|m| &m.name == member).map(|m| m.id),
                }
                .ok_or_else(|| StepError::look_first(format!("{member} is not in the membership")))?;
                let leader = Self::leader_name(view)?;
                let request = pb::PromoteMemberRequest {
                    fence: Some(fence.clone()),
                    member_id: id,
                    timeout_ms: ms_until(deadline).min(600_000),
                };
                let answer = self
                    .call(&leader, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.promote_member(request).await }
                    })
                    .await?;
                loop {
                    let now = match self.joining(member).ok() {
                        Some(j) => self.observe_joining(j).await?,
                        None => self.observe().await,
                    };
                    let voter = now.membership().iter().any(|m| m.id == id && !m.is_learner);
                    let healthy = now.member(member).is_none_or(|m| m.is_healthy());
                    if voter && healthy {
                        return Ok(format!(
                            "{member} ({id:016x}) {} ({} attempt(s))",
                            if answer.changed {
                                "promoted to voter"
                            } else {
                                "was already a voter"
                            },
                            answer.attempts
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(StepError::retry(format!(
                            "{member} was not a healthy voter in time"
                        )));
                    }
                    self.pause(&format!("{member} to be a healthy voter")).await?;
                }
            }
            MemberStep::RemoveMember { member } => {
                let leaving = self.leaving(member)?.clone();
                let now = self.observe().await;
                let via = now
                    .leader()
                    .filter(|l| l.name != leaving.name)
                    .or_else(|| {
                        now.members
                            .iter()
                            .find(|m| m.name != leaving.name && m.is_healthy())
                    })
                    .map(|m| m.name.clone())
                    .ok_or("no healthy member other than the one leaving to send the removal to")?;
                let request = pb::RemoveMemberRequest {
                    fence: Some(fence.clone()),
                    member_id: leaving.id,
                    timeout_ms: ms_until(deadline).min(600_000),
                };
                let answer = self
                    .call(&via, deadline, move |mut c: Client| {
                        let request = request.clone();
                        async move { c.remove_member(request).await }
                    })
                    .await?;
                if answer.members.iter().any(|m| m.id == leaving.id) {
                    return Err(StepError::look_first(format!(
                        "{member} ({:016x}) is still listed after the removal",
                        leaving.id
                    )));
                }
                Ok(format!(
                    "{} {member} ({:016x}) through {via} ({} attempt(s))",
                    if answer.changed {
                        "removed"
                    } else {
                        "already gone:"
                    },
                    leaving.id,
                    answer.attempts
                ))
            }
            MemberStep::Retire { member } => self.retire(member, fence, deadline).await,
            MemberStep::FleetAdd { member } => {
                let joining = self.joining(member)?.clone();
                self.edit_fleet(|members| {
                    if !members.iter().any(|m| m.name == joining.name) {
                        members.push(
                            Member::new(&joining.name, &joining.agent)
                                .map_err(|e| StepError::look_first(e.to_string()))?,
                        );
                    }
                    Ok(())
                })?;
                Ok(format!(
                    "{member} ({}) added to {}",
                    joining.agent,
                    self.fleet_path.display()
                ))
            }
            MemberStep::FleetRemove { member } => {
                self.edit_fleet(|members| {
                    members.retain(|m| &m.name != member);
                    Ok(())
                })?;
                Ok(format!("{member} removed from {}", self.fleet_path.display()))
            }
        }
    }

    /// Stops a removed member's etcd and renames its data dir; a host that
    /// does not answer is left alone (its etcd cannot rejoin a cluster that
    /// removed it).
    async fn retire(&self, member: &str, fence: &pb::Fence, deadline: Instant) -> Result<String, StepError> {
        if self
            .membership
            .leaving
            .as_ref()
            .is_some_and(|l| l.name == member && !l.alive)
        {
            return Ok(format!(
                "skipped: {member} did not answer when the operation was planned; when its host comes back, \
                 its etcd cannot rejoin (it was removed): stop and disable etcd there, and move its data dir aside"
            ));
        }
        // Disabled too: a removed member's etcd must not start at boot.
        let unit = pb::UnitRequest {
            operation_id: fence.operation_id.clone(),
            timeout_ms: ms_until(deadline).min(120_000),
            fence: Some(fence.clone()),
            boot: true,
        };
        let stop = self
            .call(member, deadline, move |mut c: Client| {
                let request = unit.clone();
                async move { c.stop_etcd(request).await }
            })
            .await;
        if let Err(e) = stop {
            return Ok(format!(
                "skipped: {member}'s agent could not stop etcd ({e}); its data dir is left as it is"
            ));
        }
        let aside = pb::MoveDataDirAsideRequest {
            operation_id: fence.operation_id.clone(),
            reason: "removed".into(),
            fence: Some(fence.clone()),
        };
        let moved = self
            .call(member, deadline, move |mut c: Client| {
                let request = aside.clone();
                async move { c.move_data_dir_aside(request).await }
            })
            .await;
        Ok(match moved {
            Ok(m) => format!("etcd stopped; data dir kept as {}", m.moved_to),
            Err(e) => format!("etcd stopped; data dir not moved: {e}"),
        })
    }

    /// Loads the fleet file, changes this cluster's members, saves it atomically.
    fn edit_fleet(
        &self,
        change: impl FnOnce(&mut Vec<Member>) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        let mut fleet = Fleet::load(&self.fleet_path).map_err(|e| StepError::look_first(e.to_string()))?;
        let cluster = fleet
            .clusters
            .iter_mut()
            .find(|c| c.name == self.cluster.name)
            .ok_or_else(|| {
                format!(
                    "cluster {} is no longer in {}",
                    self.cluster.name,
                    self.fleet_path.display()
                )
            })?;
        change(&mut cluster.members)?;
        fleet
            .save(&self.fleet_path)
            .map_err(|e| StepError::look_first(e.to_string()))
    }

    /// After a failed step of a join that was not promoted: removes the
    /// learner, stops the joining host's etcd and renames its data dir, so
    /// no stale member stays behind. `None` when there is nothing to undo.
    pub(super) async fn roll_back_join(&self, record: &OperationRecord, fence: &pb::Fence) -> Option<String> {
        let joining = self.membership.joining.clone()?;
        let state = |kind: StepKind| record.step(&kind.id()).map(|s| s.state);
        let promoted = state(StepKind::Member(MemberStep::Promote {
            member: joining.name.clone(),
        })) == Some(StepState::Done);
        let attempted = state(StepKind::Member(MemberStep::AddLearner {
            member: joining.name.clone(),
        }))
        .is_some_and(|s| s != StepState::Pending);
        if promoted || !attempted {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let rollback = pb::Fence {
            step: "rollback".into(),
            ..fence.clone()
        };
        let mut done = Vec::new();
        let view = self.observe().await;
        if let Some(listed) = Self::listed(&view, &joining.peer_url) {
            let id = listed.id;
            let via = Self::leader_name(&view).unwrap_or_default();
            let request = pb::RemoveMemberRequest {
                fence: Some(rollback.clone()),
                member_id: id,
                timeout_ms: 60_000,
            };
            match self
                .call(&via, deadline, move |mut c: Client| {
                    let request = request.clone();
                    async move { c.remove_member(request).await }
                })
                .await
            {
                Ok(_) => done.push(format!("learner {id:016x} removed")),
                Err(e) => done.push(format!("could not remove learner {id:016x} ({e}): remove it with `etcdops member remove {id:016x}`")),
            }
        }
        done.push(
            self.retire(&joining.name, &rollback, deadline)
                .await
                .unwrap_or_else(|e| e.to_string()),
        );
        self.progress.line(&format!(
            "rolled back the join of {}: {}",
            joining.name,
            done.join("; ")
        ));
        Some(done.join("; "))
    }
}
