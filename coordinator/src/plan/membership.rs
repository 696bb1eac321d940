//! Membership plans (pure): learner-first add, quorum-guarded remove,
//! replace in the order that never lowers fault tolerance below today's,
//! promote. The preflight refusals live here too, so they are unit-tested
//! over cluster views without I/O. A remove or a replace starts with a
//! verified snapshot into where the caller says (`planner::snapshot_first`).

use serde::{Deserialize, Serialize};

use super::planner::{OpKind, Plan, PlanError, SnapshotTo, Step, snapshot_first};
use super::safety::quorum;
use super::step::{MemberStep, RollingStep, StepKind};
use super::view::{ClusterView, EtcdMember};

/// The host that joins: its member name, its agent, and the URLs etcd will use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joining {
    pub name: String,
    pub agent: String,
    pub peer_url: String,
    pub client_url: String,
}

/// The member that leaves, as identified at planning time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaving {
    pub name: String,
    pub id: u64,
    pub peer_urls: Vec<String>,
    /// Its agent and member answered at planning time.
    pub alive: bool,
    pub is_learner: bool,
}

/// What a membership operation keeps in the journal (`args.membership`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipArgs {
    pub joining: Option<Joining>,
    pub leaving: Option<Leaving>,
    /// Members rejoined one after another by a majority-loss recovery
    /// (already in the fleet; never rolled back: the survivor alone is the cluster).
    #[serde(default)]
    pub rejoining: Vec<Joining>,
}

/// The joining host as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    /// Why its agent could not be asked; `None` when it answered.
    pub unreachable: Option<String>,
    /// Its etcd answers (it is running).
    pub etcd_running: bool,
    /// Its data dir holds a member's data (`member/wal`).
    pub data_dir_has_wal: bool,
    pub data_dir: String,
    /// The periodic disk probe's verdict, when known.
    pub disk_within_threshold: Option<bool>,
    pub disk_detail: String,
}

fn refused(reason: String) -> PlanError {
    PlanError::Refused(reason)
}

fn bad(reason: String) -> PlanError {
    PlanError::Usage(reason)
}

/// A learner or a member that never started blocks adding another.
fn pending_member(view: &ClusterView) -> Option<&EtcdMember> {
    view.membership()
        .iter()
        .find(|m| m.is_learner || m.name.is_empty())
}

fn describe(m: &EtcdMember) -> String {
    let name = if m.name.is_empty() {
        "(not started)".to_string()
    } else {
        m.name.clone()
    };
    format!("{name} ({:016x}, {})", m.id, m.peer_urls.join(","))
}

/// The preflight of an add, and its steps.
fn add_steps(
    view: &ClusterView,
    joining: &Joining,
    host: &HostView,
    ignore_slow_disk: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<Step>, PlanError> {
    if view.members.iter().any(|m| m.name == joining.name)
        || view.membership().iter().any(|m| m.name == joining.name)
    {
        return Err(bad(format!(
            "{} is already a member of cluster {}: pick another name",
            joining.name, view.cluster
        )));
    }
    if let Some(m) = view
        .membership()
        .iter()
        .find(|m| m.peer_urls.contains(&joining.peer_url))
    {
        return Err(bad(format!(
            "peer URL {} already belongs to member {}",
            joining.peer_url,
            describe(m)
        )));
    }
    if let Some(m) = pending_member(view) {
        return Err(refused(format!(
            "member {} is {}: etcd allows one learner at a time and a member that never started blocks quorum changes; \
             promote it (`etcdops member promote`) or remove it (`etcdops member remove {:016x}`) first",
            describe(m),
            if m.is_learner {
                "a learner"
            } else {
                "added but not started"
            },
            m.id
        )));
    }
    if let Some(why) = &host.unreachable {
        return Err(refused(format!(
            "the new host's agent {} cannot be asked: {why}",
            joining.agent
        )));
    }
    if host.etcd_running {
        return Err(refused(format!(
            "etcd is already running on the new host ({}): it may belong to another cluster; stop it first",
            joining.agent
        )));
    }
    if host.disk_within_threshold == Some(false) && !ignore_slow_disk {
        return Err(refused(format!(
            "the new host's disk is over the fsync threshold ({}): a slow member slows every write; \
             pass --ignore-slow-disk to add it anyway",
            host.disk_detail
        )));
    }
    let name = joining.name.clone();
    let mut steps = Vec::new();
    if host.data_dir_has_wal {
        notes.push(format!(
            "{name}'s data dir {} holds old member data: it is renamed aside first (never deleted)",
            host.data_dir
        ));
        steps.push(Step::new(
            StepKind::Member(MemberStep::MoveAsideBeforeJoin { member: name.clone() }),
            None,
        ));
    }
    for kind in [
        StepKind::Member(MemberStep::AddLearner { member: name.clone() }),
        StepKind::Member(MemberStep::Configure { member: name.clone() }),
        StepKind::Member(MemberStep::StartMember { member: name.clone() }),
        StepKind::Member(MemberStep::Promote { member: name.clone() }),
        StepKind::Member(MemberStep::FleetAdd { member: name.clone() }),
    ] {
        steps.push(Step::new(kind, None));
    }
    notes.push(format!(
        "{name} joins as a learner (no vote, no quorum change) and is promoted only once caught up; \
         if it fails before promotion it is removed again"
    ));
    Ok(steps)
}

/// `etcdops member add`.
pub fn plan_add(
    view: &ClusterView,
    joining: &Joining,
    host: &HostView,
    ignore_slow_disk: bool,
) -> Result<Plan, PlanError> {
    let mut notes = Vec::new();
    let steps = add_steps(view, joining, host, ignore_slow_disk, &mut notes)?;
    Ok(Plan {
        kind: OpKind::MemberAdd,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

/// Finds the member to remove and checks that the fleet and the cluster
/// agree on who it is: NAME or a hex ID; the etcd member's name must be the
/// fleet member's, its ID the one that member's agent reports (when it
/// answers), and its peer URL on that agent's host.
pub fn resolve_leaving(view: &ClusterView, name_or_id: &str) -> Result<Leaving, PlanError> {
    let by_id = u64::from_str_radix(name_or_id.trim_start_matches("0x"), 16).ok();
    let membership = view.membership();
    let etcd_member = membership
        .iter()
        .find(|m| !m.name.is_empty() && m.name == name_or_id)
        .or_else(|| by_id.and_then(|id| membership.iter().find(|m| m.id == id)))
        .ok_or_else(|| {
            bad(format!(
                "no member {name_or_id:?} in cluster {}: its members are {}",
                view.cluster,
                membership.iter().map(describe).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let fleet_member = view.members.iter().find(|m| m.name == etcd_member.name);
    let Some(fleet_member) = fleet_member else {
        if etcd_member.name.is_empty() {
            // Added but never started: only etcd knows it; nothing to cross-check.
            return Ok(Leaving {
                name: format!("{:016x}", etcd_member.id),
                id: etcd_member.id,
                peer_urls: etcd_member.peer_urls.clone(),
                alive: false,
                is_learner: etcd_member.is_learner,
            });
        }
        return Err(bad(format!(
            "member {} is not in the fleet file's cluster {}: add it to the fleet file first, so its agent can be checked",
            describe(etcd_member),
            view.cluster
        )));
    };
    if fleet_member.unreachable.is_none() && fleet_member.id != etcd_member.id {
        return Err(bad(format!(
            "the fleet's {} (agent {}) serves member {:016x}, but the cluster's {} is {:016x}: the fleet file and the cluster disagree; fix the fleet file",
            fleet_member.name, fleet_member.agent, fleet_member.id, etcd_member.name, etcd_member.id
        )));
    }
    let agent_host = host_of(&fleet_member.agent);
    if !etcd_member.peer_urls.iter().any(|u| host_of(u) == agent_host) {
        return Err(bad(format!(
            "member {} has peer URL(s) {} but the fleet's agent for {} is on {}: refusing to guess which host is meant",
            etcd_member.name,
            etcd_member.peer_urls.join(","),
            fleet_member.name,
            agent_host
        )));
    }
    Ok(Leaving {
        name: etcd_member.name.clone(),
        id: etcd_member.id,
        peer_urls: etcd_member.peer_urls.clone(),
        alive: fleet_member.is_healthy(),
        is_learner: etcd_member.is_learner,
    })
}

/// The host part of a URL (`https://198.18.0.11:7443` → `198.18.0.11`).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string(),
    }
}

/// The quorum margin of removing `leaving`: the healthy voters left must be a
/// quorum of the smaller cluster.
fn removal_margin(
    view: &ClusterView,
    leaving: &Leaving,
    force: bool,
    notes: &mut Vec<String>,
) -> Result<(), PlanError> {
    if leaving.is_learner {
        return Ok(());
    }
    let voters = view.membership().iter().filter(|m| !m.is_learner).count();
    if voters <= 1 {
        return Err(refused(format!(
            "{} is the cluster's only voter: removing it would end the cluster",
            leaving.name
        )));
    }
    let after = voters - 1;
    let healthy_left = view
        .members
        .iter()
        .filter(|m| m.name != leaving.name && m.is_voter() && m.is_healthy())
        .count();
    if healthy_left >= quorum(after) {
        return Ok(());
    }
    let what = format!(
        "after removing {} the cluster has {after} voter(s), of which {healthy_left} are healthy; quorum needs {}",
        leaving.name,
        quorum(after)
    );
    if force {
        notes.push(format!(
            "--force: {what}: the cluster stops serving writes until enough members are back"
        ));
        Ok(())
    } else {
        Err(refused(format!(
            "{what}: bring members back first, or pass --force to accept an outage"
        )))
    }
}

fn remove_steps(leaving: &Leaving) -> Vec<Step> {
    let name = leaving.name.clone();
    let mut steps = Vec::new();
    if leaving.alive && !leaving.is_learner {
        steps.push(Step::new(
            StepKind::Rolling(RollingStep::TransferLeadership { from: name.clone() }),
            None,
        ));
    }
    steps.push(Step::new(
        StepKind::Member(MemberStep::RemoveMember { member: name.clone() }),
        None,
    ));
    steps.push(Step::new(
        StepKind::Member(MemberStep::Retire { member: name.clone() }),
        None,
    ));
    steps.push(Step::new(
        StepKind::Member(MemberStep::FleetRemove { member: name }),
        None,
    ));
    steps
}

/// `etcdops member remove`: a verified snapshot into `snapshot` first
/// (none when `None`: `--no-snapshot`).
pub fn plan_remove(
    view: &ClusterView,
    leaving: &Leaving,
    force: bool,
    snapshot: Option<&SnapshotTo>,
) -> Result<Plan, PlanError> {
    let mut notes = Vec::new();
    removal_margin(view, leaving, force, &mut notes)?;
    if !leaving.alive {
        notes.push(format!(
            "{} does not answer: it is removed from the cluster; its host's etcd and data dir are left as they are \
             (if it comes back, etcd refuses to rejoin a removed member)",
            leaving.name
        ));
    }
    let steps = snapshot_first(remove_steps(leaving), snapshot, &mut notes);
    Ok(Plan {
        kind: OpKind::MemberRemove,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

/// `etcdops member replace OLD --with NEW`: a dead OLD is removed first (it
/// gives no fault tolerance now); a live one only after NEW is a voter.
/// Either way a verified snapshot into `snapshot` comes first (none when
/// `None`: `--no-snapshot`).
pub fn plan_replace(
    view: &ClusterView,
    leaving: &Leaving,
    joining: &Joining,
    host: &HostView,
    ignore_slow_disk: bool,
    snapshot: Option<&SnapshotTo>,
) -> Result<Plan, PlanError> {
    let mut notes = Vec::new();
    let mut steps = Vec::new();
    if leaving.alive {
        // The add's preflight sees the cluster as it is now.
        steps.extend(add_steps(view, joining, host, ignore_slow_disk, &mut notes)?);
        steps.extend(remove_steps(leaving));
        notes.push(format!(
            "{} answers: {} joins and becomes a voter first, then {} is removed — fault tolerance never drops below today's",
            leaving.name, joining.name, leaving.name
        ));
    } else {
        removal_margin(view, leaving, false, &mut notes)?;
        // The add's checks must not count the dead member's learner/URL.
        let mut without = view.clone();
        for m in &mut without.members {
            m.members.retain(|e| e.id != leaving.id);
        }
        steps.extend(remove_steps(leaving));
        steps.extend(add_steps(&without, joining, host, ignore_slow_disk, &mut notes)?);
        notes.push(format!(
            "{} does not answer: it is removed first (it gives no fault tolerance now, and a cluster with a dead voter \
             plus a learner is one failure from losing quorum), then {} joins learner-first",
            leaving.name, joining.name
        ));
    }
    let steps = snapshot_first(steps, snapshot, &mut notes);
    Ok(Plan {
        kind: OpKind::MemberReplace,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

/// `etcdops member promote`.
pub fn plan_promote(view: &ClusterView, name: &str) -> Result<Plan, PlanError> {
    let m = view
        .membership()
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| bad(format!("no started member {name:?} in cluster {}", view.cluster)))?;
    if !m.is_learner {
        return Err(bad(format!("{name} is already a voter")));
    }
    Ok(Plan {
        kind: OpKind::MemberPromote,
        cluster: view.cluster.clone(),
        steps: vec![Step::new(
            StepKind::Member(MemberStep::Promote {
                member: name.to_string(),
            }),
            None,
        )],
        notes: vec![
            "etcd refuses until the learner is in sync with the leader; the agent retries meanwhile".into(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::super::view::fixtures::healthy;
    use super::*;

    fn joining() -> Joining {
        Joining {
            name: "etcd4".into(),
            agent: "https://127.0.0.4:7443".into(),
            peer_url: "http://127.0.0.4:2380".into(),
            client_url: "http://127.0.0.4:2379".into(),
        }
    }

    fn ids(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn add_is_learner_first_then_promote_then_fleet() {
        let plan = plan_add(&healthy(3, 1), &joining(), &HostView::default(), false).expect("plan");
        assert_eq!(
            ids(&plan),
            [
                "add-learner:etcd4",
                "configure:etcd4",
                "start:etcd4",
                "promote:etcd4",
                "fleet-add:etcd4"
            ]
        );
        let host = HostView {
            data_dir_has_wal: true,
            data_dir: "/var/lib/etcd".into(),
            ..Default::default()
        };
        let plan = plan_add(&healthy(3, 1), &joining(), &host, false).expect("plan");
        assert_eq!(ids(&plan)[0], "move-aside:etcd4");
    }

    #[test]
    fn add_preflight_refusals() {
        type Case = (
            &'static str,
            fn(&mut ClusterView, &mut Joining, &mut HostView),
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "name taken",
                |_, j, _| j.name = "etcd2".into(),
                "already a member",
            ),
            (
                "url taken",
                |_, j, _| j.peer_url = "http://127.0.0.2:2380".into(),
                "already belongs to member etcd2",
            ),
            (
                "learner pending",
                |v, _, _| {
                    v.members[0].members.push(EtcdMember {
                        id: 9,
                        name: "x".into(),
                        is_learner: true,
                        ..Default::default()
                    })
                },
                "one learner at a time",
            ),
            (
                "unstarted pending",
                |v, _, _| {
                    v.members[0].members.push(EtcdMember {
                        id: 9,
                        ..Default::default()
                    })
                },
                "added but not started",
            ),
            (
                "agent down",
                |_, _, h| h.unreachable = Some("refused".into()),
                "cannot be asked",
            ),
            ("etcd running", |_, _, h| h.etcd_running = true, "already running"),
            (
                "slow disk",
                |_, _, h| h.disk_within_threshold = Some(false),
                "--ignore-slow-disk",
            ),
        ];
        for (what, change, expected) in cases {
            let (mut v, mut j, mut h) = (healthy(3, 1), joining(), HostView::default());
            change(&mut v, &mut j, &mut h);
            let err = plan_add(&v, &j, &h, false).expect_err(what);
            assert!(err.to_string().contains(expected), "{what}: {err}");
        }
        let h = HostView {
            disk_within_threshold: Some(false),
            ..Default::default()
        };
        assert!(plan_add(&healthy(3, 1), &joining(), &h, true).is_ok());
    }

    #[test]
    fn identity_guard() {
        let v = healthy(3, 1);
        let by_name = resolve_leaving(&v, "etcd2").expect("by name");
        assert_eq!((by_name.id, by_name.alive), (2, true));
        assert_eq!(resolve_leaving(&v, "0000000000000002").expect("by id"), by_name);
        assert!(matches!(resolve_leaving(&v, "etcd9"), Err(PlanError::Usage(_))));
        // The fleet's agent serves another member than the cluster's etcd2.
        let mut v2 = healthy(3, 1);
        v2.members[1].id = 7;
        let err = resolve_leaving(&v2, "etcd2").expect_err("mismatch");
        assert!(err.to_string().contains("disagree"), "{err}");
        // Peer URL on another host than the fleet's agent.
        let mut v3 = healthy(3, 1);
        v3.members[0].members[1].peer_urls = vec!["http://10.9.9.9:2380".into()];
        let err = resolve_leaving(&v3, "etcd2").expect_err("host mismatch");
        assert!(err.to_string().contains("refusing to guess"), "{err}");
        // A dead member: no ID to cross-check, still found and marked dead.
        let mut v4 = healthy(3, 1);
        v4.members[2].unreachable = Some("down".into());
        let dead = resolve_leaving(&v4, "etcd3").expect("dead");
        assert!(!dead.alive);
    }

    #[test]
    fn removal_keeps_quorum_unless_forced() {
        let v = healthy(3, 1);
        let plan =
            plan_remove(&v, &resolve_leaving(&v, "etcd1").expect("leaving"), false, None).expect("plan");
        assert_eq!(
            ids(&plan),
            [
                "transfer-leadership:etcd1",
                "remove:etcd1",
                "retire:etcd1",
                "fleet-remove:etcd1"
            ]
        );
        // 3 voters, one already dead: removing a healthy one leaves 1 healthy of 2.
        let mut v = healthy(3, 1);
        v.members[2].unreachable = Some("down".into());
        let leaving = resolve_leaving(&v, "etcd2").expect("leaving");
        let err = plan_remove(&v, &leaving, false, None).expect_err("quorum");
        assert!(err.to_string().contains("1 are healthy; quorum needs 2"), "{err}");
        assert!(plan_remove(&v, &leaving, true, None).expect("forced").notes[0].starts_with("--force"));
        // Removing the dead one is fine and has no transfer.
        let dead = resolve_leaving(&v, "etcd3").expect("dead");
        assert_eq!(
            ids(&plan_remove(&v, &dead, false, None).expect("plan")),
            ["remove:etcd3", "retire:etcd3", "fleet-remove:etcd3"]
        );
        assert!(
            plan_remove(
                &healthy(1, 1),
                &resolve_leaving(&healthy(1, 1), "etcd1").expect("l"),
                true,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn replace_order_depends_on_whether_the_old_member_lives() {
        let v = healthy(3, 1);
        let alive = resolve_leaving(&v, "etcd3").expect("alive");
        let plan = plan_replace(&v, &alive, &joining(), &HostView::default(), false, None).expect("plan");
        let steps = ids(&plan);
        assert_eq!(steps[0], "add-learner:etcd4");
        assert!(
            steps.iter().position(|s| s == "promote:etcd4") < steps.iter().position(|s| s == "remove:etcd3"),
            "{steps:?}"
        );
        let mut v = healthy(3, 1);
        v.members[2].unreachable = Some("down".into());
        let dead = resolve_leaving(&v, "etcd3").expect("dead");
        let plan = plan_replace(&v, &dead, &joining(), &HostView::default(), false, None).expect("plan");
        let steps = ids(&plan);
        assert_eq!(
            &steps[..3],
            ["remove:etcd3", "retire:etcd3", "fleet-remove:etcd3"]
        );
        assert_eq!(steps[3], "add-learner:etcd4");
    }

    #[test]
    fn remove_and_replace_start_with_the_snapshot() {
        let to = SnapshotTo::Backup {
            url: "file:///srv/backups".into(),
        };
        let v = healthy(3, 1);
        let leaving = resolve_leaving(&v, "etcd3").expect("leaving");
        let plan = plan_remove(&v, &leaving, false, Some(&to)).expect("plan");
        assert_eq!(
            ids(&plan),
            [
                "snapshot",
                "transfer-leadership:etcd3",
                "remove:etcd3",
                "retire:etcd3",
                "fleet-remove:etcd3"
            ]
        );
        assert_eq!(plan.steps[0].snapshot_to.as_ref(), Some(&to));
        assert!(
            plan.steps[0].description.contains("file:///srv/backups"),
            "{}",
            plan.steps[0].description
        );
        let plan =
            plan_replace(&v, &leaving, &joining(), &HostView::default(), false, Some(&to)).expect("plan");
        let steps = ids(&plan);
        assert_eq!(&steps[..2], ["snapshot", "add-learner:etcd4"]);
        assert_eq!(steps.iter().filter(|s| *s == "snapshot").count(), 1);
        // A dead OLD: still the snapshot first (from a healthy member), then the removal.
        let mut v = healthy(3, 1);
        v.members[2].unreachable = Some("down".into());
        let dead = resolve_leaving(&v, "etcd3").expect("dead");
        let plan = plan_replace(&v, &dead, &joining(), &HostView::default(), false, Some(&to)).expect("plan");
        assert_eq!(&ids(&plan)[..2], ["snapshot", "remove:etcd3"]);
        // --no-snapshot: none, and a note says so.
        let plan = plan_remove(&v, &dead, false, None).expect("plan");
        assert_eq!(ids(&plan)[0], "remove:etcd3");
        assert!(
            plan.notes.iter().any(|n| n.starts_with("--no-snapshot")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn promote_needs_a_started_learner() {
        let mut v = healthy(3, 1);
        v.members[0].members.push(EtcdMember {
            id: 9,
            name: "etcd4".into(),
            is_learner: true,
            ..Default::default()
        });
        assert_eq!(ids(&plan_promote(&v, "etcd4").expect("plan")), ["promote:etcd4"]);
        assert!(plan_promote(&v, "etcd2").is_err());
        assert!(plan_promote(&v, "nope").is_err());
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host_of("https://198.18.0.11:7443"), "198.18.0.11");
        assert_eq!(host_of("http://[::1]:2380"), "::1");
        assert_eq!(host_of("http://etcd1"), "etcd1");
    }
}
