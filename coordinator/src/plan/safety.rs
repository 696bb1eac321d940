//! The one set of cluster checks: pure functions over a [`ClusterView`],
//! used by `status` and `health` for their verdict, by `--dry-run`, and by
//! the executor before every step. Each finding says what was seen and what
//! to do, in the same words wherever it is printed.

use std::fmt;

use serde::Serialize;

use super::view::{ClusterView, MemberView};

/// What an operation tolerates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tolerate<'a> {
    /// A NOSPACE alarm (recover nospace, alarm disarm).
    pub nospace_alarm: bool,
    /// A disk probe over the fsync threshold.
    pub slow_disk: bool,
    /// This member being down: the step about to run restarts it (a
    /// resumed restart whose member did not come back). Quorum without it
    /// is checked separately.
    pub down: Option<&'a str>,
}

/// One reason the cluster is not safe to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The member concerned, when there is one.
    pub member: Option<String>,
    /// What was seen.
    pub seen: String,
    /// What to do about it.
    pub action: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(m) => write!(f, "{m}: {} — {}", self.seen, self.action),
            None => write!(f, "{} — {}", self.seen, self.action),
        }
    }
}

fn finding(member: Option<&MemberView>, seen: String, action: &str) -> Finding {
    Finding {
        member: member.map(|m| m.name.clone()),
        seen,
        action: action.to_string(),
    }
}

/// Quorum of `voters` voters.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Everything that makes the cluster unsafe to act on now; empty when safe.
/// The one set of cluster checks: `status`, `health`, `--dry-run` and the
/// executor's gate before every step all report these findings, in these words.
///
/// Safe means: every fleet member's agent serves the etcd member of that
/// name ([`identity`]); every fleet member's agent and etcd member answer
/// and pass a linearizable read; they agree on one cluster ID and one leader
/// that is in the fleet, and no two members claim leadership; every voter
/// etcd knows is in the fleet; no alarm is active (unless tolerated) and no
/// member reports an error; every disk is within its fsync threshold with a
/// known verdict (unless tolerated, see [`disk`]).
pub fn check(view: &ClusterView, tolerate: Tolerate<'_>) -> Vec<Finding> {
    let mut findings = identity(view);
    for m in &view.members {
        if tolerate.down == Some(m.name.as_str()) {
            continue;
        }
        if let Some(why) = &m.unreachable {
            findings.push(unreachable(m, why));
        } else if let Some(why) = &m.unhealthy {
            findings.push(finding(
                Some(m),
                format!("failed a linearizable read: {why}"),
                "find out why (etcdops status, the member's log) and retry when `etcdops health` passes",
            ));
        }
    }
    let answered: Vec<&MemberView> = view.members.iter().filter(|m| m.unreachable.is_none()).collect();
    if answered.is_empty() {
        return findings;
    }
    findings.extend(cluster_ids(&answered));
    findings.extend(leadership(view, &answered));
    findings.extend(unknown_voters(view));
    let mut alarms: Vec<(u64, String)> = answered.iter().flat_map(|m| m.alarms.iter().cloned()).collect();
    alarms.sort();
    alarms.dedup();
    for (member_id, kind) in alarms {
        if kind == "NOSPACE" && tolerate.nospace_alarm {
            continue;
        }
        let action = if kind == "NOSPACE" {
            "the database is over its quota: run `etcdops recover nospace`"
        } else {
            "investigate (a CORRUPT alarm means a member's data differs: do not proceed); disarm with `etcdops alarm disarm` once resolved"
        };
        let owner = view
            .member_by_id(member_id)
            .map_or_else(|| format!("{member_id:016x}"), |m| m.name.clone());
        findings.push(finding(
            None,
            format!("alarm {kind} is active on {owner}"),
            action,
        ));
    }
    for m in &answered {
        // etcd lists every active alarm among its status errors (reported
        // above); a learner serves no alarm or member list (not an error).
        let errors = m
            .errors
            .iter()
            .filter(|e| !e.contains("alarm:"))
            .filter(|e| !(m.is_learner && e.contains("not supported for learner")));
        for error in errors {
            findings.push(finding(
                Some(m),
                format!("its status has an error: {error}"),
                "unread alarms or membership could hide a problem: read the member's log, and retry when `etcdops status` shows none",
            ));
        }
    }
    if !tolerate.slow_disk {
        findings.extend(disk(view));
    }
    findings
}

/// The agent or the etcd member of `m` did not answer.
fn unreachable(m: &MemberView, why: &str) -> Finding {
    finding(
        Some(m),
        format!("not reachable: {why}"),
        "bring the member (or its agent) back, or replace it, before a cluster-wide operation",
    )
}

/// Every fleet member's agent serves the etcd member of that name, and no
/// two fleet members are served by one etcd member. An operation on a fleet
/// file that names the wrong agents acts on the wrong members, so every
/// plan, a restore's and a recovery's too, refuses it.
pub fn identity(view: &ClusterView) -> Vec<Finding> {
    let mut findings = Vec::new();
    let answered = view
        .members
        .iter()
        .filter(|m| m.unreachable.is_none() && m.id != 0);
    for m in answered.clone() {
        if !m.etcd_name.is_empty() && m.etcd_name != m.name {
            findings.push(finding(
                Some(m),
                format!(
                    "its agent {} serves the etcd member named {} (ID {:016x})",
                    m.agent, m.etcd_name, m.id
                ),
                "the fleet file names the wrong agent for this member: fix the fleet file before any operation",
            ));
        }
    }
    let mut seen: Vec<(u64, Vec<&str>)> = Vec::new();
    for m in answered {
        match seen.iter_mut().find(|(id, _)| *id == m.id) {
            Some((_, names)) => names.push(m.name.as_str()),
            None => seen.push((m.id, vec![m.name.as_str()])),
        }
    }
    for (id, names) in seen.into_iter().filter(|(_, names)| names.len() > 1) {
        findings.push(finding(
            None,
            format!(
                "fleet members {} are served by one etcd member (ID {id:016x})",
                names.join(" and ")
            ),
            "each fleet member needs the agent beside its own etcd member: fix the fleet file before any operation",
        ));
    }
    findings
}

/// The checks of a restore or a recovery, where the cluster may be down:
/// every member's agent answers, and the fleet names the right agents.
pub fn agents_answer(view: &ClusterView) -> Vec<Finding> {
    let mut findings = identity(view);
    findings.extend(view.members.iter().filter(|m| !m.agent_answered).map(|m| {
        finding(
            Some(m),
            format!(
                "its agent does not answer: {}",
                m.unreachable.clone().unwrap_or_default()
            ),
            "every member's agent must answer during a restore: start it (the operation resumes with `etcdops op resume`)",
        )
    }));
    findings
}

/// The disk gate: a disk over its fsync threshold, or a member whose disk
/// verdict the gate could not get (it fails closed). Tolerated with
/// `--ignore-slow-disk`.
pub fn disk(view: &ClusterView) -> Vec<Finding> {
    let mut findings = Vec::new();
    for m in view
        .members
        .iter()
        .filter(|m| m.agent_answered || m.unreachable.is_none())
    {
        if m.disk_within_threshold == Some(false) {
            findings.push(finding(
                Some(m),
                format!("its disk is over the fsync threshold ({})", m.disk_detail),
                "a slow disk makes leader changes and restarts risky; check `etcdops check disk`, or pass --ignore-slow-disk",
            ));
        } else if let Some(why) = m
            .disk_unknown
            .as_ref()
            .filter(|_| m.disk_within_threshold.is_none())
        {
            findings.push(finding(
                Some(m),
                format!("its disk has no verdict: {why}"),
                "find out why the agent cannot probe its disk (`etcdops check disk`), or pass --ignore-slow-disk to go ahead without one",
            ));
        }
    }
    findings
}

/// Members that answered agree on one cluster ID.
fn cluster_ids(answered: &[&MemberView]) -> Option<Finding> {
    let mut groups: Vec<(u64, Vec<&str>)> = Vec::new();
    for m in answered {
        match groups.iter_mut().find(|(id, _)| *id == m.cluster_id) {
            Some((_, names)) => names.push(m.name.as_str()),
            None => groups.push((m.cluster_id, vec![m.name.as_str()])),
        }
    }
    if groups.len() < 2 {
        return None;
    }
    groups.sort();
    Some(finding(
        None,
        format!(
            "members report different cluster IDs: {}",
            groups
                .iter()
                .map(|(id, names)| format!("{id:016x} ({})", names.join(", ")))
                .collect::<Vec<_>>()
                .join(" vs ")
        ),
        "the fleet file mixes clusters or a member was restored on its own; fix the inventory first",
    ))
}

/// One leader, agreed on, answering and in the fleet; no second member claiming to lead.
fn leadership(view: &ClusterView, answered: &[&MemberView]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let claimants: Vec<&str> = answered
        .iter()
        .filter(|m| m.is_leader)
        .map(|m| m.name.as_str())
        .collect();
    if claimants.len() > 1 {
        findings.push(finding(
            None,
            format!("several members claim leadership: {}", claimants.join(", ")),
            "a partition or members of different clusters; do not operate until one leader remains",
        ));
    }
    let mut leaders: Vec<u64> = answered.iter().map(|m| m.leader_id).collect();
    leaders.sort_unstable();
    leaders.dedup();
    if leaders == [0] {
        findings.push(finding(
            None,
            "no member has a leader".into(),
            "the cluster has lost quorum or is electing; wait and retry, or see `etcdops status`",
        ));
    } else if leaders.len() > 1 {
        findings.push(finding(
            None,
            format!(
                "members disagree on the leader ({})",
                leaders
                    .iter()
                    .map(|id| format!("{id:016x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "an election is in progress or a member is partitioned; retry in a few seconds",
        ));
    } else if view.member_by_id(leaders[0]).is_none() {
        let listed = view.membership().iter().find(|e| e.id == leaders[0]);
        let silent = listed.and_then(|e| {
            view.members
                .iter()
                .find(|m| m.unreachable.is_some() && m.name == e.name)
        });
        findings.push(match silent {
            Some(m) => finding(
                None,
                format!(
                    "the members still follow {} ({:016x}), which does not answer",
                    m.name, leaders[0]
                ),
                "the cluster elects a new leader within seconds when it has quorum; retry then",
            ),
            None => finding(
                None,
                format!("the leader {:016x} is not a member of the fleet file", leaders[0]),
                "add every member of the cluster to the fleet file",
            ),
        });
    }
    findings
}

/// Voters etcd knows about that the fleet does not: we could not check them.
fn unknown_voters(view: &ClusterView) -> Vec<Finding> {
    let mut findings = Vec::new();
    for etcd_member in view.membership() {
        let (id, name) = (&etcd_member.id, &etcd_member.name);
        if etcd_member.is_learner {
            continue;
        }
        // A fleet member that did not answer is reported already, by name.
        let unreachable_by_name = view
            .members
            .iter()
            .any(|m| m.unreachable.is_some() && m.name == *name);
        if !view.members.iter().any(|m| m.id == *id) && !unreachable_by_name {
            let shown = if name.is_empty() {
                "(not started)".to_string()
            } else {
                name.clone()
            };
            findings.push(finding(
                None,
                format!("voter {id:016x} {shown} is in the cluster but not in the fleet file (or its agent is down)"),
                "add it to the fleet file, or remove it from the cluster with `etcdops member remove`",
            ));
        }
    }
    findings
}

/// Whether every voter's applied index has reached `target` (a leader index
/// sampled earlier): the followers have caught up with the leader. Returns
/// the members still behind, with how far.
pub fn lagging(view: &ClusterView, target: u64) -> Vec<(String, u64)> {
    view.members
        .iter()
        .filter(|m| m.unreachable.is_none() && m.is_voter() && m.applied_index < target)
        .map(|m| (m.name.clone(), target - m.applied_index))
        .collect()
}

/// Whether the cluster's size lets one voter be down at all: with every
/// other voter healthy, is there still a quorum? (Not with one or two voters.)
pub fn tolerates_one_down(view: &ClusterView, member: &str) -> Result<(), Finding> {
    let Some(target) = view.member(member) else {
        return Ok(());
    };
    let total = view.members.iter().filter(|m| !m.is_learner).count();
    if target.is_learner || total > quorum(total) {
        return Ok(());
    }
    Err(finding(
        Some(target),
        format!(
            "with {total} voter(s), taking one down leaves {} of the {} quorum needs",
            total - 1,
            quorum(total)
        ),
        "the cluster would stop serving meanwhile: add members first, or pass --force to accept the outage",
    ))
}

/// Whether taking `member` out of service for a while (restart) keeps
/// quorum: the voters still healthy without it must be a quorum.
pub fn keeps_quorum_without(view: &ClusterView, member: &str) -> Result<(), Finding> {
    let voters: Vec<&MemberView> = view
        .members
        .iter()
        .filter(|m| m.unreachable.is_none() && m.is_voter())
        .collect();
    let Some(target) = view.member(member) else {
        return Ok(());
    };
    if target.is_learner {
        return Ok(());
    }
    let total = view.members.iter().filter(|m| !m.is_learner).count();
    let healthy_others = voters
        .iter()
        .filter(|m| m.name != member && m.is_healthy())
        .count();
    if healthy_others >= quorum(total) {
        Ok(())
    } else {
        Err(finding(
            Some(target),
            format!(
                "taking it down leaves {healthy_others} healthy voter(s) of {total}; quorum needs {}",
                quorum(total)
            ),
            "the cluster would stop serving: add members first, or pass --force to accept the outage",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::view::EtcdMember;
    use super::super::view::fixtures::healthy;
    use super::*;

    #[test]
    fn a_healthy_cluster_is_safe() {
        for n in [1, 3, 5] {
            assert!(check(&healthy(n, 1), Tolerate::default()).is_empty(), "{n}");
        }
    }

    #[test]
    fn each_unsafe_state_is_reported_with_an_action() {
        type Break = fn(&mut ClusterView);
        let cases: Vec<(&str, Break, &str)> = vec![
            (
                "unreachable",
                |v| v.members[1].unreachable = Some("refused".into()),
                "etcd2: not reachable",
            ),
            (
                "unhealthy",
                |v| v.members[2].unhealthy = Some("timeout".into()),
                "etcd3: failed a linearizable read",
            ),
            (
                "no leader",
                |v| v.members.iter_mut().for_each(|m| m.leader_id = 0),
                "no member has a leader",
            ),
            (
                "split leader",
                |v| v.members[0].leader_id = 3,
                "disagree on the leader",
            ),
            (
                "cluster ids",
                |v| v.members[0].cluster_id = 1,
                "different cluster IDs",
            ),
            (
                "nospace",
                |v| v.members[0].alarms = vec![(2, "NOSPACE".into())],
                "alarm NOSPACE is active on etcd2",
            ),
            (
                "corrupt",
                |v| v.members[1].alarms = vec![(1, "CORRUPT".into())],
                "alarm CORRUPT",
            ),
            (
                "slow disk",
                |v| v.members[0].disk_within_threshold = Some(false),
                "etcd1: its disk is over",
            ),
            (
                "swapped agents",
                |v| {
                    v.members[0].etcd_name = "etcd2".into();
                    v.members[1].etcd_name = "etcd1".into();
                },
                "etcd1: its agent https://127.0.0.1:7443 serves the etcd member named etcd2 (ID 0000000000000001) — the fleet file names the wrong agent",
            ),
            (
                "one member behind two fleet names",
                |v| v.members[2].id = 2,
                "fleet members etcd2 and etcd3 are served by one etcd member (ID 0000000000000002)",
            ),
            (
                "two claim leadership",
                |v| v.members[2].is_leader = true,
                "several members claim leadership: etcd1, etcd3",
            ),
            (
                "the leader does not answer",
                |v| {
                    v.members[0].unreachable = Some("refused".into());
                    v.members[0].id = 0;
                },
                "the members still follow etcd1 (0000000000000001), which does not answer",
            ),
            (
                "cluster id groups",
                |v| v.members[1].cluster_id = 78,
                "members report different cluster IDs: 000000000000004d (etcd1, etcd3) vs 000000000000004e (etcd2)",
            ),
            (
                "member error",
                |v| v.members[1].errors = vec!["raft: slow apply".into()],
                "etcd2: its status has an error: raft: slow apply",
            ),
            (
                "no disk verdict",
                |v| {
                    v.members[2].disk_within_threshold = None;
                    v.members[2].disk_unknown = Some("probe failed: No space left".into());
                },
                "etcd3: its disk has no verdict: probe failed: No space left — ",
            ),
            (
                "unknown voter",
                |v| {
                    v.members[0].members.push(EtcdMember {
                        id: 99,
                        name: "etcd9".into(),
                        ..Default::default()
                    })
                },
                "voter 0000000000000063 etcd9 is in the cluster but not in the fleet",
            ),
        ];
        for (what, break_it, expected) in cases {
            let mut v = healthy(3, 1);
            break_it(&mut v);
            let findings = check(&v, Tolerate::default());
            let text = findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(text.contains(expected), "{what}: {text}");
            assert!(findings.iter().all(|f| !f.action.is_empty()), "{what}");
        }
    }

    #[test]
    fn tolerated_states_pass() {
        let mut v = healthy(3, 1);
        v.members[0].alarms = vec![(2, "NOSPACE".into())];
        v.members[1].disk_within_threshold = Some(false);
        let tolerate = Tolerate {
            nospace_alarm: true,
            slow_disk: true,
            down: None,
        };
        assert!(check(&v, tolerate).is_empty());
        v.members[0].alarms = vec![(2, "CORRUPT".into())];
        assert_eq!(check(&v, tolerate).len(), 1);
        // The member a restart step is about to start may be down; nothing else.
        let mut v = healthy(3, 1);
        v.members[2].unreachable = Some("refused".into());
        assert_eq!(check(&v, Tolerate::default()).len(), 1, "reported once, by name");
        assert!(
            check(
                &v,
                Tolerate {
                    down: Some("etcd3"),
                    ..Tolerate::default()
                }
            )
            .is_empty()
        );
        assert_eq!(
            check(
                &v,
                Tolerate {
                    down: Some("etcd2"),
                    ..Tolerate::default()
                }
            )
            .len(),
            1
        );
    }

    #[test]
    fn alarms_in_the_status_errors_are_reported_once() {
        let mut v = healthy(3, 1);
        v.members[2].is_learner = true;
        v.members[2].errors = vec!["reading members: etcdserver: rpc not supported for learner".into()];
        v.members[1].alarms = vec![(2, "NOSPACE".into())];
        v.members[1].errors = vec!["memberID:2 alarm:NOSPACE".into()];
        let findings = check(&v, Tolerate::default());
        assert_eq!(findings.len(), 1, "{findings:?}");
        let nospace = Tolerate {
            nospace_alarm: true,
            ..Tolerate::default()
        };
        assert!(check(&v, nospace).is_empty());
    }

    #[test]
    fn identity_applies_to_restores_too_and_the_disk_gate_fails_closed() {
        let mut v = healthy(3, 1);
        v.members[0].etcd_name = "etcd2".into();
        v.members[2].agent_answered = false;
        v.members[2].unreachable = Some("refused".into());
        let text: Vec<String> = agents_answer(&v).iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("etcd1: its agent https://127.0.0.1:7443 serves the etcd member named etcd2")
        );
        assert!(text[1].starts_with("etcd3: its agent does not answer: refused"));
        // The same words as check() prints.
        assert_eq!(
            identity(&v)[0].to_string(),
            check(&v, Tolerate::default())[0].to_string()
        );
        // A member whose etcd is down (name unknown) cannot be checked, and is not misreported.
        let mut v = healthy(3, 1);
        v.members[0].unreachable = Some("etcd down".into());
        v.members[0].etcd_name = String::new();
        v.members[0].id = 0;
        assert!(identity(&v).is_empty());

        // No verdict without a gate probe is no finding (the gate decides);
        // a failed gate probe is; --ignore-slow-disk tolerates both.
        let mut v = healthy(3, 1);
        v.members[0].disk_within_threshold = None;
        assert!(disk(&v).is_empty());
        v.members[0].disk_unknown = Some("timeout".into());
        v.members[1].disk_within_threshold = Some(false);
        assert_eq!(disk(&v).len(), 2);
        let ignore = Tolerate {
            slow_disk: true,
            ..Tolerate::default()
        };
        assert!(check(&v, ignore).is_empty());
        assert_eq!(check(&v, Tolerate::default()), disk(&v));
    }

    #[test]
    fn learners_are_not_required_in_quorum_or_fleet() {
        let mut v = healthy(3, 1);
        v.members[0].members.push(EtcdMember {
            id: 42,
            is_learner: true,
            ..Default::default()
        });
        assert!(check(&v, Tolerate::default()).is_empty());
    }

    #[test]
    fn lag_is_measured_against_a_sampled_leader_index() {
        let mut v = healthy(3, 1);
        v.members[2].applied_index = 990;
        assert_eq!(lagging(&v, 995), vec![("etcd3".to_string(), 5)]);
        assert!(lagging(&v, 990).is_empty());
    }

    #[test]
    fn quorum_margin() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert!(keeps_quorum_without(&healthy(3, 1), "etcd1").is_ok());
        assert!(keeps_quorum_without(&healthy(1, 1), "etcd1").is_err());
        assert!(keeps_quorum_without(&healthy(2, 1), "etcd2").is_err());
        let mut v = healthy(3, 1);
        v.members[1].unhealthy = Some("slow".into());
        let err = keeps_quorum_without(&v, "etcd3").expect_err("1 of 3 left");
        assert!(
            err.seen
                .contains("leaves 1 healthy voter(s) of 3; quorum needs 2"),
            "{err}"
        );
        assert!(keeps_quorum_without(&healthy(5, 1), "etcd2").is_ok());
    }
}
