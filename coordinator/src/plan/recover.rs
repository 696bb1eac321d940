//! The pure core of majority-loss recovery (`etcdops recover
//! --force-new-cluster`): is the majority really lost, which survivor (the
//! highest raft index: the most of the log), who can be rejoined, and the
//! plan. No I/O: unit-tested over observed cluster views.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::planner::{OpKind, Plan, PlanError, Step};
use super::safety::Finding;
use super::step::{RecoverStep, StepKind};
use super::view::{ClusterView, MemberView};

/// A member to rejoin, with the URLs the old membership gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

/// What a recovery keeps in the journal (`args.recover`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverArgs {
    pub survivor: String,
    /// Where the survivor's snapshot is written first.
    pub snapshot_dir: PathBuf,
    pub rejoin: Vec<RejoinMember>,
    /// Fleet members whose agent did not answer: not rejoined.
    pub left_out: Vec<String>,
    /// The snapshot written by the first step.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
}

/// The survivor and who comes back, or why recovery is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub survivor: String,
    pub rejoin: Vec<RejoinMember>,
    pub left_out: Vec<String>,
    pub notes: Vec<String>,
}

fn finding(member: Option<&str>, seen: String, action: &str) -> Finding {
    Finding {
        member: member.map(str::to_string),
        seen,
        action: action.to_string(),
    }
}

/// The member's etcd answered (its local status; no quorum needed).
fn etcd_answers(m: &MemberView) -> bool {
    m.unreachable.is_none() && m.raft_index > 0
}

/// How the coordinator words an agent refused for serving another member's
/// certificate (`agents::AgentErrorKind::AgentIdentity`), as the view keeps it.
const NOT_THIS_MEMBERS_AGENT: &str = "is not the agent of this member";

/// Decides the recovery: refuses while a majority of voters is healthy (that
/// is not a lost majority: replace the dead members instead), picks the
/// survivor (`from`, which must have the highest raft index of the members
/// whose etcd answers, or that member when `from` is `None`), and rejoins
/// every other member whose agent answers.
pub fn plan_recovery(view: &ClusterView, from: Option<&str>) -> Result<Recovery, PlanError> {
    if let Some(name) = from
        && view.member(name).is_none()
    {
        let known: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        return Err(PlanError::UnknownMember {
            name: name.to_string(),
            cluster: view.cluster.clone(),
            known: known.join(", "),
        });
    }
    // An agent refused because it is not the member's (the fleet file names
    // the wrong agent, e.g. two URLs swapped) says nothing about that
    // member's etcd: it may be healthy, and forcing a new cluster beside it
    // would split the cluster in two. Never count it as lost.
    if let Some(m) = view.members.iter().find(|m| {
        m.unreachable
            .as_deref()
            .is_some_and(|e| e.contains(NOT_THIS_MEMBERS_AGENT))
    }) {
        return Err(PlanError::Unsafe(finding(
            Some(&m.name),
            format!(
                "the agent dialled for {} is not its agent, so its etcd's state is unknown: {}",
                m.name,
                m.unreachable.as_deref().unwrap_or_default()
            ),
            "fix the fleet file's agent URLs first; a member whose state is unknown is never counted as lost",
        )));
    }
    let voters: Vec<&MemberView> = view.members.iter().filter(|m| !m.is_learner).collect();
    let healthy = voters.iter().filter(|m| m.is_healthy()).count();
    if !voters.is_empty() && healthy > voters.len() / 2 {
        return Err(PlanError::Unsafe(finding(
            None,
            format!(
                "{healthy} of {} voters are healthy: cluster {} has its majority",
                voters.len(),
                view.cluster
            ),
            "force-new-cluster is only for a lost majority; replace dead members with `etcdops member replace`",
        )));
    }
    let candidates: Vec<&MemberView> = view.members.iter().filter(|m| etcd_answers(m)).collect();
    let best = candidates
        .iter()
        .copied()
        .max_by(|a, b| a.raft_index.cmp(&b.raft_index).then(b.name.cmp(&a.name)));
    let Some(best) = best else {
        return Err(PlanError::Refused(format!(
            "no member's etcd answers in cluster {}: there is no survivor to recover from; start etcd on the host with the \
             newest data (it runs without quorum) or restore from a backup with `etcdops restore --snapshot`",
            view.cluster
        )));
    };
    let survivor = match from {
        None => best,
        Some(name) => {
            let chosen = view.member(name).expect("checked above");
            if !etcd_answers(chosen) {
                return Err(PlanError::Refused(format!(
                    "--from {name}: its etcd does not answer ({}); start it first (it runs without quorum), or pick {} \
                     (raft index {})",
                    chosen
                        .unreachable
                        .clone()
                        .unwrap_or_else(|| "no raft index".into()),
                    best.name,
                    best.raft_index
                )));
            }
            if chosen.raft_index < best.raft_index {
                return Err(PlanError::Refused(format!(
                    "--from {name}: its raft index {} is behind {}'s {}: recovering from it would lose committed writes; \
                     use --from {}",
                    chosen.raft_index, best.name, best.raft_index, best.name
                )));
            }
            chosen
        }
    };
    // The old membership as the survivor knows it gives every member's URLs.
    let urls = |m: &MemberView| -> Option<(String, String)> {
        let listed = survivor
            .members
            .iter()
            .chain(m.members.iter())
            .find(|e| e.name == m.name || (m.id != 0 && e.id == m.id))?;
        Some((
            listed.peer_urls.first()?.clone(),
            listed.client_urls.first()?.clone(),
        ))
    };
    let mut rejoin = Vec::new();
    let mut left_out = Vec::new();
    let mut notes = vec![format!(
        "survivor {} (raft index {}, revision {}): every other member's data is replaced by its log",
        survivor.name, survivor.raft_index, survivor.revision
    )];
    for m in view.members.iter().filter(|m| m.name != survivor.name) {
        if !m.agent_answered {
            left_out.push(m.name.clone());
            notes.push(format!(
                "{}: its agent does not answer ({}): not rejoined. Make sure its etcd is not running (power the host off): \
                 a majority still running elsewhere would serve as a second cluster. Rejoin it later with \
                 `etcdops member replace`",
                m.name,
                m.unreachable.clone().unwrap_or_default()
            ));
            continue;
        }
        match urls(m) {
            Some((peer_url, client_url)) => rejoin.push(RejoinMember {
                name: m.name.clone(),
                peer_url,
                client_url,
            }),
            None => {
                return Err(PlanError::Refused(format!(
                    "{}: its peer and client URLs are not in {}'s membership: cannot rejoin it; remove it from the fleet \
                     file and add it later with `etcdops member add`",
                    m.name, survivor.name
                )));
            }
        }
    }
    if let Some(m) = candidates
        .iter()
        .find(|m| m.name != survivor.name && m.raft_index > survivor.raft_index)
    {
        notes.push(format!(
            "{} is ahead (raft index {}) and will be replaced anyway",
            m.name, m.raft_index
        ));
    }
    Ok(Recovery {
        survivor: survivor.name.clone(),
        rejoin,
        left_out,
        notes,
    })
}

/// snapshot the survivor, stop the others, force-new-cluster, rejoin each, verify.
pub fn plan(cluster: &str, recovery: &Recovery) -> Plan {
    let s = recovery.survivor.clone();
    let mut steps = vec![
        Step::new(
            StepKind::Recover(RecoverStep::SnapshotFirst { member: s.clone() }),
            None,
        ),
        Step::new(StepKind::Recover(RecoverStep::StopOthers), None),
        Step::new(
            StepKind::Recover(RecoverStep::ForceNewCluster { member: s }),
            None,
        ),
    ];
    steps.extend(recovery.rejoin.iter().map(|r| {
        Step::new(
            StepKind::Recover(RecoverStep::Rejoin {
                member: r.name.clone(),
            }),
            None,
        )
    }));
    steps.push(Step::new(StepKind::Recover(RecoverStep::VerifyRecovery), None));
    let mut notes = recovery.notes.clone();
    notes.push(
        "the rejoined members' old data dirs are renamed to <dir>.before-join-<time>, never deleted; the survivor's \
         snapshot is written before anything changes"
            .into(),
    );
    Plan {
        kind: OpKind::RecoverQuorum,
        cluster: cluster.to_string(),
        steps,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::view::EtcdMember;

    fn listed(name: &str, id: u64) -> EtcdMember {
        EtcdMember {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![format!("http://{name}:2379")],
            is_learner: false,
        }
    }

    /// Members a..: `raft` is the raft index (0: etcd down, agent up),
    /// `None`: agent down too. Nobody is healthy (no quorum) unless `healthy`.
    fn view(states: &[Option<u64>], healthy: usize) -> ClusterView {
        let names = ["a", "b", "c", "d", "e"];
        let membership: Vec<EtcdMember> = (0..states.len())
            .map(|i| listed(names[i], i as u64 + 1))
            .collect();
        let members = states
            .iter()
            .enumerate()
            .map(|(i, s)| MemberView {
                name: names[i].into(),
                agent: format!("https://{}:7443", names[i]),
                unreachable: match s {
                    Some(r) if *r > 0 => None,
                    Some(_) => Some("etcd not answering".into()),
                    None => Some("agent unreachable".into()),
                },
                agent_answered: s.is_some(),
                unhealthy: (i >= healthy).then(|| "no leader".into()),
                id: i as u64 + 1,
                raft_index: s.unwrap_or(0),
                members: if s.is_some_and(|r| r > 0) {
                    membership.clone()
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .collect();
        ClusterView {
            cluster: "prod".into(),
            members,
        }
    }

    #[test]
    fn the_survivor_is_the_member_with_the_most_log() {
        let r = plan_recovery(&view(&[Some(100), Some(0), Some(120)], 0), None).expect("recovery");
        assert_eq!(r.survivor, "c");
        assert_eq!(
            r.rejoin.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            r.rejoin[1].peer_url, "http://b:2380",
            "URLs from the survivor's membership"
        );
        assert!(r.left_out.is_empty());
        let p = plan("prod", &r);
        let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "snapshot:c",
                "stop-others",
                "force-new-cluster:c",
                "rejoin:a",
                "rejoin:b",
                "verify-recovery"
            ]
        );
    }

    #[test]
    fn a_member_behind_another_members_agent_is_never_counted_as_lost() {
        // Two agents swapped in the fleet file: both refused in the TLS
        // handshake, their etcd may be healthy. No force-new-cluster then.
        let mut v = view(&[Some(100), None, None], 1);
        for m in &mut v.members[1..] {
            m.unreachable = Some(format!(
                "agent {} at {} is not the agent of this member: the agent dialled for member \"{}\" presented the agent certificate of \"x\"",
                m.name, m.agent, m.name
            ));
        }
        let e = plan_recovery(&v, None).expect_err("unknown state is not lost");
        assert!(
            e.to_string().contains("is not its agent") && e.to_string().contains("fix the fleet file"),
            "{e}"
        );
    }

    #[test]
    fn from_must_be_answering_and_not_behind() {
        let v = view(&[Some(100), Some(0), Some(120)], 0);
        assert_eq!(plan_recovery(&v, Some("c")).expect("ok").survivor, "c");
        let behind = plan_recovery(&v, Some("a")).expect_err("behind");
        assert!(
            behind.to_string().contains("behind c's 120") && behind.to_string().contains("--from c"),
            "{behind}"
        );
        let down = plan_recovery(&v, Some("b")).expect_err("down");
        assert!(
            down.to_string().contains("does not answer") && down.to_string().contains("pick c"),
            "{down}"
        );
        assert!(matches!(
            plan_recovery(&v, Some("z")),
            Err(PlanError::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_cluster_with_its_majority_is_refused() {
        let e = plan_recovery(&view(&[Some(100), Some(100), Some(0)], 2), None).expect_err("majority");
        assert!(
            e.to_string().contains("2 of 3 voters are healthy") && e.to_string().contains("member replace"),
            "{e}"
        );
        // One healthy of three is a lost majority.
        assert!(plan_recovery(&view(&[Some(100), Some(0), Some(0)], 1), None).is_ok());
    }

    #[test]
    fn nobody_answering_is_refused_with_what_to_do() {
        let e = plan_recovery(&view(&[Some(0), None, Some(0)], 0), None).expect_err("no survivor");
        assert!(
            e.to_string().contains("no member's etcd answers") && e.to_string().contains("restore"),
            "{e}"
        );
    }

    #[test]
    fn hosts_whose_agent_is_down_are_left_out_with_a_warning() {
        let r = plan_recovery(&view(&[Some(90), None, None], 0), None).expect("recovery");
        assert_eq!(r.survivor, "a");
        assert!(r.rejoin.is_empty());
        assert_eq!(r.left_out, ["b", "c"]);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("b: its agent does not answer") && n.contains("power the host off")),
            "{:?}",
            r.notes
        );
        let ids: Vec<String> = plan("prod", &r).steps.iter().map(|s| s.id.clone()).collect();
        assert_eq!(
            ids,
            [
                "snapshot:a",
                "stop-others",
                "force-new-cluster:a",
                "verify-recovery"
            ]
        );
    }

    #[test]
    fn step_ids_read_back() {
        for kind in [
            StepKind::Recover(RecoverStep::SnapshotFirst { member: "a".into() }),
            StepKind::Recover(RecoverStep::StopOthers),
            StepKind::Recover(RecoverStep::ForceNewCluster { member: "a".into() }),
            StepKind::Recover(RecoverStep::Rejoin { member: "b".into() }),
            StepKind::Recover(RecoverStep::VerifyRecovery),
        ] {
            assert_eq!(StepKind::from_id(&kind.id()), Some(kind));
        }
    }
}
