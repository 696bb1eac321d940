//! The cluster as the coordinator observed it at one moment: every fleet
//! member's agent status and linearizable-read health, reduced to the plain
//! data the planners and safety checks (pure functions) work on.

use serde::Serialize;

/// One fleet member as observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemberView {
    /// The fleet's name of the member.
    pub name: String,
    /// Its agent's URL (for messages).
    pub agent: String,
    /// Why the agent or the etcd member could not be read; `None` when both answered.
    pub unreachable: Option<String>,
    /// The agent itself answered (its etcd may still be down).
    pub agent_answered: bool,
    /// Free bytes on the data dir's filesystem (0 when unknown).
    pub fs_free_bytes: u64,
    /// The member's etcd version, when it answered.
    pub etcd_version: String,
    /// Why the linearizable read failed; `None` when it succeeded.
    pub unhealthy: Option<String>,
    pub id: u64,
    /// The name etcd reports for the member the agent serves.
    pub etcd_name: String,
    pub cluster_id: u64,
    pub leader_id: u64,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub db_size: i64,
    pub db_size_in_use: i64,
    /// 0 when unknown.
    pub db_quota: i64,
    /// Active alarms (cluster-wide, as this member reports them): (member ID, kind).
    pub alarms: Vec<(u64, String)>,
    /// Errors etcd reports in the member's own status (alarms among them).
    pub errors: Vec<String>,
    /// The disk verdict: the agent's recent periodic probe, or the short
    /// probe of the disk gate; `None` when unknown.
    pub disk_within_threshold: Option<bool>,
    /// e.g. "fsync p99 14.2 ms (threshold 10.0 ms)".
    pub disk_detail: String,
    /// Why the disk gate could get no verdict (its probe failed); set only
    /// by the gate, which the safety checks then refuse on.
    pub disk_unknown: Option<String>,
    /// The cluster's membership as this member reports it.
    pub members: Vec<EtcdMember>,
    /// The fence records the agent holds: (cluster, epoch, held, operation, kind, holder).
    pub fences: Vec<FenceView>,
}

/// A member of the etcd cluster as a member reports the membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EtcdMember {
    pub id: u64,
    /// Empty while the member was added but has not started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A fence record as an agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FenceView {
    pub cluster: String,
    pub epoch: u64,
    pub held: bool,
    pub operation_id: String,
    pub operation_kind: String,
    pub holder: String,
    pub acquired_at_unix: i64,
}

impl MemberView {
    /// Agent and member answered and the linearizable read succeeded.
    pub fn is_healthy(&self) -> bool {
        self.unreachable.is_none() && self.unhealthy.is_none()
    }

    /// A voting member (not a learner).
    pub fn is_voter(&self) -> bool {
        !self.is_learner
    }

    /// dbSize, dbSizeInUse and dbQuota for defrag rules.
    pub fn db_figures(&self) -> super::rule::DbFigures {
        super::rule::DbFigures {
            db_size: self.db_size,
            db_size_in_use: self.db_size_in_use,
            db_quota: self.db_quota,
        }
    }
}

/// The whole cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterView {
    /// The fleet's name of the cluster.
    pub cluster: String,
    /// Fleet members, in fleet order.
    pub members: Vec<MemberView>,
}

impl ClusterView {
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn member_by_id(&self, id: u64) -> Option<&MemberView> {
        self.members
            .iter()
            .find(|m| m.id == id && m.unreachable.is_none())
    }

    /// The member every reachable member agrees leads, if they agree and it is in the fleet.
    pub fn leader(&self) -> Option<&MemberView> {
        let mut ids = self
            .members
            .iter()
            .filter(|m| m.unreachable.is_none())
            .map(|m| m.leader_id);
        let first = ids.next()?;
        if first == 0 || ids.any(|id| id != first) {
            return None;
        }
        self.member_by_id(first)
    }

    /// The membership as the leader (else the first member that answered) reports it.
    pub fn membership(&self) -> &[EtcdMember] {
        self.leader()
            .or_else(|| self.members.iter().find(|m| m.unreachable.is_none()))
            .map_or(&[], |m| m.members.as_slice())
    }

    /// The highest fence epoch any agent recorded for this cluster.
    pub fn highest_epoch(&self) -> u64 {
        self.fences().map(|f| f.epoch).max().unwrap_or(0)
    }

    /// Fences held for this cluster, deduplicated by operation.
    pub fn holders(&self) -> Vec<&FenceView> {
        let mut held: Vec<&FenceView> = Vec::new();
        for f in self.fences().filter(|f| f.held) {
            if !held.iter().any(|h| h.operation_id == f.operation_id) {
                held.push(f);
            }
        }
        held
    }

    fn fences(&self) -> impl Iterator<Item = &FenceView> {
        self.members
            .iter()
            .flat_map(|m| m.fences.iter())
            .filter(|f| f.cluster == self.cluster)
    }
}

#[cfg(test)]
pub mod fixtures {
    //! Cluster views for planner and safety tests.
    use super::*;

    /// A healthy cluster of `n` voters named etcd1..etcdN with IDs 1..N; `leader` (1-based) leads.
    pub fn healthy(n: usize, leader: usize) -> ClusterView {
        let members: Vec<MemberView> = (1..=n)
            .map(|i| MemberView {
                name: format!("etcd{i}"),
                agent: format!("https://127.0.0.{i}:7443"),
                agent_answered: true,
                id: i as u64,
                etcd_name: format!("etcd{i}"),
                cluster_id: 77,
                leader_id: leader as u64,
                is_leader: i == leader,
                raft_term: 2,
                raft_index: 1000,
                applied_index: 1000,
                revision: 500,
                db_size: 300_000_000,
                db_size_in_use: 50_000_000,
                db_quota: 2_147_483_648,
                disk_within_threshold: Some(true),
                members: (1..=n)
                    .map(|j| EtcdMember {
                        id: j as u64,
                        name: format!("etcd{j}"),
                        peer_urls: vec![format!("http://127.0.0.{j}:2380")],
                        client_urls: vec![format!("http://127.0.0.{j}:2379")],
                        is_learner: false,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        ClusterView {
            cluster: "test".into(),
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::healthy;
    use super::*;

    #[test]
    fn leader_needs_agreement() {
        let mut v = healthy(3, 2);
        assert_eq!(v.leader().map(|m| m.name.as_str()), Some("etcd2"));
        v.members[0].leader_id = 3;
        assert!(v.leader().is_none());
        let mut v = healthy(3, 2);
        v.members[1].unreachable = Some("down".into());
        // etcd2 leads according to the others but cannot be read: no leader we can act on.
        assert!(v.leader().is_none());
    }

    #[test]
    fn epochs_and_holders_are_per_cluster() {
        let mut v = healthy(3, 1);
        let fence = |cluster: &str, epoch, held, op: &str| FenceView {
            cluster: cluster.into(),
            epoch,
            held,
            operation_id: op.into(),
            ..Default::default()
        };
        v.members[0].fences = vec![fence("test", 4, true, "op-a"), fence("other", 9, true, "op-x")];
        v.members[1].fences = vec![fence("test", 4, true, "op-a")];
        v.members[2].fences = vec![fence("test", 3, false, "op-old")];
        assert_eq!(v.highest_epoch(), 4);
        let holders = v.holders();
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].operation_id, "op-a");
    }
}
