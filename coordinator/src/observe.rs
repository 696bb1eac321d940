//! Observing a cluster: every fleet member's agent read at one moment
//! (GetStatus and a linearizable-read Health, concurrently) and reduced to
//! the plain [`ClusterView`] that the planners, the safety checks, `status`,
//! `health` and the executor all work on. The one place wire replies become
//! a view. Also the I/O half of the disk gate ([`probe_unknown_disks`],
//! [`disk_gate`]): a short ProbeDisk through the agent of every member
//! without a recent periodic probe result.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcdops_proto::v1 as pb;

use crate::agents::{AgentError, AgentErrorKind, Agents, Client, Reply};
use crate::fleet::Member;
use crate::plan::safety::{self, Finding};
use crate::plan::view::{ClusterView, EtcdMember, FenceView, MemberView};

/// A periodic probe result older than this is no verdict (the agent's
/// default interval is a minute): the disk gate probes again.
pub const DISK_RESULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// The disk gate's short probe: the agent's light periodic probe, 100
/// fdatasync'd writes of 2300 bytes (about a WAL entry).
pub const GATE_PROBE_WRITES: u64 = 100;
pub const GATE_PROBE_BLOCK_SIZE: u32 = 2300;
/// How long the gate's probe may take on top of --timeout.
const GATE_PROBE_BUDGET: Duration = Duration::from_secs(60);
/// Tries of the gate's probe on an agent whose probe slot is busy.
const GATE_PROBE_ATTEMPTS: u32 = 3;

impl From<&pb::FenceState> for FenceView {
    fn from(f: &pb::FenceState) -> FenceView {
        FenceView {
            cluster: f.cluster.clone(),
            epoch: f.epoch,
            held: f.held,
            operation_id: f.operation_id.clone(),
            operation_kind: f.operation_kind.clone(),
            holder: f.holder.clone(),
            acquired_at_unix: f.acquired_at_unix,
        }
    }
}

/// Builds one member's view from its agent's GetStatus and Health replies.
/// Without a Health reply (`status` reads no linearizable read) the member
/// is not marked unhealthy.
pub fn member_view(
    member: &Member,
    status: &Result<pb::GetStatusResponse, AgentError>,
    health: Option<&Result<pb::HealthResponse, AgentError>>,
) -> MemberView {
    let mut view = MemberView {
        name: member.name.clone(),
        agent: member.agent.to_string(),
        ..Default::default()
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            view.unreachable = Some(e.to_string());
            return view;
        }
    };
    view.agent_answered = true;
    view.fs_free_bytes = status.data_dir.as_ref().map_or(0, |d| d.fs_free_bytes);
    view.fences = status.fences.iter().map(FenceView::from).collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Some(disk) = &status.disk
        && disk.error.is_empty()
        && disk.writes > 0
        && now.saturating_sub(disk.probed_at_unix) <= DISK_RESULT_MAX_AGE.as_secs() as i64
    {
        view.disk_within_threshold = Some(disk.within_threshold);
        view.disk_detail = format!(
            "fsync p99 {:.1} ms (threshold {:.1} ms)",
            disk.p99_us as f64 / 1000.0,
            disk.threshold_p99_us as f64 / 1000.0
        );
    }
    let Some(m) = status.member.as_ref() else {
        view.unreachable = Some(format!("agent {} sent no member status", member.agent));
        return view;
    };
    if !m.reachable {
        let why = if m.error.is_empty() {
            "no reason given"
        } else {
            m.error.as_str()
        };
        view.unreachable = Some(format!(
            "etcd member {} not answering its agent {}: {why}",
            member.name, member.agent
        ));
        return view;
    }
    view.id = m.member_id;
    view.etcd_version = m.etcd_version.clone();
    view.etcd_name = m.member_name.clone();
    view.cluster_id = m.cluster_id;
    view.leader_id = m.leader_id;
    view.is_leader = m.is_leader;
    view.is_learner = m.is_learner;
    view.raft_term = m.raft_term;
    view.raft_index = m.raft_index;
    view.applied_index = m.raft_applied_index;
    view.revision = m.revision;
    view.db_size = m.db_size;
    view.db_size_in_use = m.db_size_in_use;
    view.db_quota = m.db_quota;
    view.alarms = m.alarms.iter().map(|a| (a.member_id, a.kind.clone())).collect();
    view.errors = m.member_errors.clone();
    view.members = m
        .members
        .iter()
        .map(|x| EtcdMember {
            id: x.id,
            name: x.name.clone(),
            peer_urls: x.peer_urls.clone(),
            client_urls: x.client_urls.clone(),
            is_learner: x.is_learner,
        })
        .collect();
    view.unhealthy = match health {
        None => None,
        Some(Ok(h)) if h.healthy => None,
        // A learner serves no linearizable read; that it answered its status is its health.
        Some(Ok(h)) if m.is_learner && h.error.contains("not supported for learner") => None,
        Some(Ok(h)) => Some(if h.error.is_empty() {
            "linearizable read failed".to_string()
        } else {
            h.error.clone()
        }),
        Some(Err(e)) => Some(e.to_string()),
    };
    view
}

/// Reads every fleet member's agent (status and health at once).
pub async fn observe(agents: &Agents, cluster: &str, members: &[Member]) -> ClusterView {
    let (status, health) = tokio::join!(agents.get_status(members), agents.health(members));
    view_of(cluster, members, &status, Some(&health))
}

/// The view of replies already read: GetStatus from every member, and
/// Health when it was asked for (`status` reads GetStatus only).
pub fn view_of(
    cluster: &str,
    members: &[Member],
    status: &[Reply<pb::GetStatusResponse>],
    health: Option<&[Reply<pb::HealthResponse>]>,
) -> ClusterView {
    let members = members
        .iter()
        .zip(status)
        .enumerate()
        .map(|(i, (member, s))| {
            let h = health.and_then(|h| h.get(i)).map(|h| &h.result);
            member_view(member, &s.result, h)
        })
        .collect();
    ClusterView {
        cluster: cluster.to_string(),
        members,
    }
}

/// Reads every member's agent status only: no linearizable read (which waits
/// its whole budget in a cluster without quorum). Every member is marked
/// unhealthy ("not checked"); for checks that only need the agents.
pub async fn observe_agents(agents: &Agents, cluster: &str, members: &[Member]) -> ClusterView {
    let status = agents.get_status(members).await;
    let not_checked = Ok(pb::HealthResponse {
        error: "health not checked (only the agents are)".into(),
        ..Default::default()
    });
    let members = members
        .iter()
        .zip(status.iter())
        .map(|(member, s)| member_view(member, &s.result, Some(&not_checked)))
        .collect();
    ClusterView {
        cluster: cluster.to_string(),
        members,
    }
}

/// The disk gate's I/O: every member whose agent answered but whose disk
/// has no verdict (no recent periodic probe) gets a short ProbeDisk through
/// its agent, all at once; its verdict goes into the view, or, when the
/// probe fails, the reason (`disk_unknown`), on which the safety checks
/// refuse ([`safety::disk`]).
pub async fn probe_unknown_disks(agents: &Agents, members: &[Member], view: &mut ClusterView) {
    let mut unknown: Vec<Member> = view
        .members
        .iter()
        .filter(|m| m.agent_answered && m.disk_within_threshold.is_none())
        .filter_map(|m| members.iter().find(|f| f.name == m.name).cloned())
        .collect();
    // An observer's preview (`--dry-run`) may not probe (ProbeDisk loads the
    // member's disk: operators only); it says so instead of being refused.
    if agents.own_certificate().role == "observer" {
        for m in view.members.iter_mut() {
            if unknown.iter().any(|u| u.name == m.name) {
                m.disk_unknown = Some(
                    "no recent periodic probe result, and an observer certificate may not probe a disk \
                     (ProbeDisk needs the operator role): an operator's run probes it first"
                        .to_string(),
                );
            }
        }
        return;
    }
    let budget = agents.with_call_timeout(agents.timeout().saturating_add(GATE_PROBE_BUDGET));
    let mut replies = Vec::new();
    for attempt in 1..=GATE_PROBE_ATTEMPTS {
        if unknown.is_empty() {
            break;
        }
        let answers = budget
            .fan_out(&unknown, |mut client: Client| async move {
                client
                    .probe_disk(pb::ProbeDiskRequest {
                        total_bytes: GATE_PROBE_WRITES * u64::from(GATE_PROBE_BLOCK_SIZE),
                        block_size: GATE_PROBE_BLOCK_SIZE,
                    })
                    .await
            })
            .await;
        // An agent runs one probe at a time: its periodic probe may hold the slot for a moment.
        let (busy, done): (Vec<_>, Vec<_>) = answers.into_iter().partition(|r| {
            attempt < GATE_PROBE_ATTEMPTS
                && r.result.as_ref().is_err_and(|e| {
                    matches!(&e.kind, AgentErrorKind::Rpc { code, .. } if *code == tonic::Code::ResourceExhausted)
                })
        });
        replies.extend(done);
        unknown.retain(|m| busy.iter().any(|r| r.member == m.name));
        if !unknown.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    for reply in replies {
        let Some(m) = view.members.iter_mut().find(|m| m.name == reply.member) else {
            continue;
        };
        match reply.result {
            Ok(p) => {
                m.disk_within_threshold = Some(p.within_threshold);
                m.disk_detail = format!(
                    "fsync p99 {:.1} ms (threshold {:.1} ms), by a short probe now: the agent had no recent periodic result",
                    p.p99_us as f64 / 1000.0,
                    p.threshold_p99_us as f64 / 1000.0
                );
            }
            Err(e) => {
                m.disk_unknown = Some(format!(
                    "no recent periodic probe result, and the short probe through its agent failed: {e}"
                ));
            }
        }
    }
}

/// The disk gate on its own (before `op resume`): reads every member's
/// agent, probes the disks without a verdict, and returns what
/// [`safety::disk`] finds. Members whose agent does not answer are left to
/// the executor's checks.
pub async fn disk_gate(agents: &Agents, cluster: &str, members: &[Member]) -> Vec<Finding> {
    let mut view = observe_agents(agents, cluster, members).await;
    probe_unknown_disks(agents, members, &mut view).await;
    safety::disk(&view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(probed_at_unix: i64) -> pb::GetStatusResponse {
        pb::GetStatusResponse {
            member: Some(pb::MemberStatus {
                reachable: true,
                member_id: 2,
                member_name: "etcd2".into(),
                member_errors: vec!["reading alarms: no answer".into()],
                ..Default::default()
            }),
            disk: Some(pb::DiskHealth {
                probed_at_unix,
                writes: 100,
                p99_us: 25_000,
                threshold_p99_us: 10_000,
                within_threshold: false,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_periodic_disk_result_counts_only_while_recent() {
        let member = Member::new("etcd1", "https://127.0.0.11:7443").expect("member");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let fresh = member_view(&member, &Ok(answered(now - 30)), None);
        assert_eq!(fresh.disk_within_threshold, Some(false));
        assert_eq!(fresh.disk_detail, "fsync p99 25.0 ms (threshold 10.0 ms)");
        let stale = now - DISK_RESULT_MAX_AGE.as_secs() as i64 - 60;
        let stale = member_view(&member, &Ok(answered(stale)), None);
        assert_eq!(stale.disk_within_threshold, None, "the gate probes again");
        // What status needs from the same reply: the name etcd reports, its errors;
        // without a Health reply the member is not called unhealthy.
        assert_eq!(
            (fresh.etcd_name.as_str(), fresh.unhealthy.as_deref()),
            ("etcd2", None)
        );
        assert_eq!(fresh.errors, ["reading alarms: no answer"]);
    }

    #[test]
    fn an_etcd_that_does_not_answer_its_agent_is_named() {
        let member = Member::new("etcd1", "https://127.0.0.11:7443").expect("member");
        let mut status = answered(0);
        status.member = Some(pb::MemberStatus {
            reachable: false,
            ..Default::default()
        });
        let view = member_view(&member, &Ok(status), None);
        assert!(view.agent_answered);
        assert_eq!(
            view.unreachable.as_deref(),
            Some("etcd member etcd1 not answering its agent https://127.0.0.11:7443: no reason given")
        );
    }
}
