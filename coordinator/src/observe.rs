//! Observing a cluster: every fleet member's agent read at one moment
//! (GetStatus and a linearizable-read Health, concurrently) and reduced to
//! the plain [`ClusterView`] that the planners, the safety checks, `status`
//! and the executor all work on. The one place wire replies become a view.

use etcdops_proto::v1 as pb;

use crate::agents::{AgentError, Agents, Reply};
use crate::fleet::Member;
use crate::plan::view::{ClusterView, EtcdMember, FenceView, MemberView};

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
pub fn member_view(
    member: &Member,
    status: &Result<pb::GetStatusResponse, AgentError>,
    health: &Result<pb::HealthResponse, AgentError>,
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
    if let Some(disk) = &status.disk
        && disk.error.is_empty()
        && disk.writes > 0
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
        view.unreachable = Some(format!("etcd member behind agent {}: {}", member.agent, m.error));
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
        Ok(h) if h.healthy => None,
        // A learner serves no linearizable read; that it answered its status is its health.
        Ok(h) if m.is_learner && h.error.contains("not supported for learner") => None,
        Ok(h) => Some(if h.error.is_empty() {
            "linearizable read failed".to_string()
        } else {
            h.error.clone()
        }),
        Err(e) => Some(e.to_string()),
    };
    view
}

/// Reads every fleet member's agent (status and health at once).
pub async fn observe(agents: &Agents, cluster: &str, members: &[Member]) -> ClusterView {
    let (status, health) = tokio::join!(agents.get_status(members), agents.health(members));
    let members = members
        .iter()
        .zip(status.iter().zip(health.iter()))
        .map(
            |(member, (s, h)): (
                &Member,
                (&Reply<pb::GetStatusResponse>, &Reply<pb::HealthResponse>),
            )| { member_view(member, &s.result, &h.result) },
        )
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
        .map(|(member, s)| member_view(member, &s.result, &not_checked))
        .collect();
    ClusterView {
        cluster: cluster.to_string(),
        members,
    }
}
