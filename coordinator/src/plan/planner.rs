//! Plans: ordered steps computed by pure functions from an observed
//! [`ClusterView`]. No I/O here; the executor runs what these return.
//!
//! Ordering rule shared by every rolling operation: learners first, then
//! followers one at a time, then the leader last — after a step that moves
//! leadership to a healthy, caught-up follower that was already processed,
//! so the former leader is handled as a follower.
//!
//! Disruptive plans (restart here, member remove and replace in
//! `membership.rs`) start with [`snapshot_first`]: a verified snapshot into
//! where the CLI decided ([`SnapshotTo`]), or none with `--no-snapshot`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rule::Rule;
use super::safety::{self, Finding, Tolerate};
use super::step::{RollingStep, SafeguardStep};
pub use super::step::{SnapshotTo, StepKind};
use super::view::{ClusterView, MemberView};

/// What kind of operation a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    Defrag,
    Restart,
    Compact,
    RecoverNospace,
    AlarmDisarm,
    MemberAdd,
    MemberRemove,
    MemberReplace,
    MemberPromote,
    Restore,
    RestoreRollback,
    RecoverQuorum,
    /// A scheduled backup of `etcdops serve` (issue 15).
    Backup,
    Drill,
    Housekeeping,
    CertsRenew,
    Upgrade,
    UpgradeRollback,
    CertsRotateCa,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Defrag => "defrag",
            OpKind::Restart => "restart",
            OpKind::Compact => "compact",
            OpKind::RecoverNospace => "recover-nospace",
            OpKind::AlarmDisarm => "alarm-disarm",
            OpKind::MemberAdd => "member-add",
            OpKind::MemberRemove => "member-remove",
            OpKind::MemberReplace => "member-replace",
            OpKind::MemberPromote => "member-promote",
            OpKind::Restore => "restore",
            OpKind::RestoreRollback => "restore-rollback",
            OpKind::RecoverQuorum => "recover-quorum",
            OpKind::Backup => "backup",
            OpKind::Drill => "drill",
            OpKind::Housekeeping => "housekeeping",
            OpKind::CertsRenew => "certs-renew",
            OpKind::Upgrade => "upgrade",
            OpKind::UpgradeRollback => "upgrade-rollback",
            OpKind::CertsRotateCa => "certs-rotate-ca",
        }
    }

    /// Every kind.
    pub const ALL: [OpKind; 19] = [
        OpKind::Defrag,
        OpKind::Restart,
        OpKind::Compact,
        OpKind::RecoverNospace,
        OpKind::AlarmDisarm,
        OpKind::MemberAdd,
        OpKind::MemberRemove,
        OpKind::MemberReplace,
        OpKind::MemberPromote,
        OpKind::Restore,
        OpKind::RestoreRollback,
        OpKind::RecoverQuorum,
        OpKind::Backup,
        OpKind::Drill,
        OpKind::Housekeeping,
        OpKind::CertsRenew,
        OpKind::Upgrade,
        OpKind::UpgradeRollback,
        OpKind::CertsRotateCa,
    ];

    pub fn parse(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What the operation tolerates in its safety checks.
    pub fn tolerate(self, ignore_slow_disk: bool) -> Tolerate<'static> {
        Tolerate {
            nospace_alarm: matches!(self, OpKind::RecoverNospace | OpKind::AlarmDisarm),
            // A renewal neither restarts nor moves leadership.
            slow_disk: ignore_slow_disk || self == OpKind::CertsRenew,
            down: None,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
    pub description: String,
    pub waits_for: String,
    #[serde(rename = "timeout_secs", serialize_with = "as_secs")]
    pub timeout: Duration,
    /// Where a snapshot step saves (the plan names it; the executor reads
    /// it from the operation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_to: Option<SnapshotTo>,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Step {
    pub fn new(kind: StepKind, timeout: Option<Duration>) -> Step {
        Step {
            id: kind.id(),
            description: kind.describe(),
            waits_for: kind.waits_for(),
            timeout: timeout.unwrap_or_else(|| kind.default_timeout()),
            kind,
            snapshot_to: None,
        }
    }

    /// The verified snapshot step, naming where it goes.
    pub fn snapshot(to: &SnapshotTo) -> Step {
        let mut step = Step::new(StepKind::Safeguard(SafeguardStep::Snapshot), None);
        step.description = format!("save a verified snapshot into {to}");
        step.snapshot_to = Some(to.clone());
        step
    }
}

/// A disruptive plan's steps with a verified snapshot into `to` first, or
/// as they are (with a note saying so) when there is none (`--no-snapshot`).
pub fn snapshot_first(steps: Vec<Step>, to: Option<&SnapshotTo>, notes: &mut Vec<String>) -> Vec<Step> {
    if steps.is_empty() {
        return steps;
    }
    let Some(to) = to else {
        notes.push("--no-snapshot: no snapshot is taken before the first change".into());
        return steps;
    };
    notes.push(format!(
        "a verified snapshot goes into {to} first; `etcdops op show` names it, `etcdops restore --snapshot` brings it back"
    ));
    let mut all = vec![Step::snapshot(to)];
    all.extend(steps);
    all
}

/// An operation's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub kind: OpKind,
    pub cluster: String,
    pub steps: Vec<Step>,
    /// Why members were included or left out, and other remarks.
    pub notes: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown member {name:?}: the fleet's members of cluster {cluster} are {known}")]
    UnknownMember {
        name: String,
        cluster: String,
        known: String,
    },
    #[error("member {member}: {reason}")]
    Rule { member: String, reason: String },
    #[error("{0}")]
    Unsafe(Finding),
    #[error("cannot plan: {0}")]
    NoLeader(String),
    #[error("nothing to compact: {0}")]
    NothingToCompact(String),
    /// The cluster or the host is not in a state to do it (nothing was changed).
    #[error("{0}")]
    Refused(String),
    /// Bad input on the command line: a member that does not match, a step that does not exist (usage).
    #[error("{0}")]
    Usage(String),
}

/// Options of `etcdops defrag`.
#[derive(Debug, Clone, Default)]
pub struct DefragOptions {
    /// Only members this rule selects (all when `None`).
    pub rule: Option<Rule>,
    /// Compact up to this revision first.
    pub compact_to: Option<i64>,
    /// Only these members (all when empty).
    pub members: Vec<String>,
    /// Per-step timeout instead of the defaults.
    pub step_timeout: Option<Duration>,
}

/// Options of `etcdops restart`.
#[derive(Debug, Clone, Default)]
pub struct RestartOptions {
    /// Only these members (all when empty).
    pub members: Vec<String>,
    /// Accept restarts that take the cluster below quorum.
    pub force: bool,
    pub step_timeout: Option<Duration>,
    /// Where the verified snapshot before the first restart goes (`None`: `--no-snapshot`).
    pub snapshot: Option<SnapshotTo>,
}

fn check_members(view: &ClusterView, names: &[String]) -> Result<(), PlanError> {
    for name in names {
        if view.member(name).is_none() {
            return Err(PlanError::UnknownMember {
                name: name.clone(),
                cluster: view.cluster.clone(),
                known: view
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// The rolling order: learners, then followers (fleet order), then the leader.
pub(crate) fn rolling_order<'a>(view: &'a ClusterView, selected: &[&'a MemberView]) -> Vec<&'a MemberView> {
    let leader = view.leader().map(|l| l.name.clone());
    let mut ordered: Vec<&MemberView> = selected.iter().copied().filter(|m| m.is_learner).collect();
    ordered.extend(
        selected
            .iter()
            .copied()
            .filter(|m| !m.is_learner && Some(&m.name) != leader.as_ref()),
    );
    ordered.extend(
        selected
            .iter()
            .copied()
            .filter(|m| Some(&m.name) == leader.as_ref()),
    );
    ordered
}

/// Steps for acting on `members` one at a time, leadership moved before the leader's step.
pub(crate) fn rolling_steps(
    view: &ClusterView,
    members: &[&MemberView],
    step_timeout: Option<Duration>,
    action: fn(String) -> StepKind,
    notes: &mut Vec<String>,
) -> Vec<Step> {
    let voters = view.members.iter().filter(|m| m.is_voter()).count();
    let mut steps = Vec::new();
    for m in rolling_order(view, members) {
        if m.is_leader && voters > 1 {
            steps.push(Step::new(
                StepKind::Rolling(RollingStep::TransferLeadership { from: m.name.clone() }),
                None,
            ));
        } else if m.is_leader {
            notes.push(format!(
                "{} is the only voter: the cluster stalls while it is handled",
                m.name
            ));
        }
        steps.push(Step::new(action(m.name.clone()), step_timeout));
    }
    steps
}

/// `etcdops defrag`: which members (by rule and `--member`), in rolling order.
pub fn plan_defrag(view: &ClusterView, opts: &DefragOptions) -> Result<Plan, PlanError> {
    check_members(view, &opts.members)?;
    let mut notes = Vec::new();
    let mut selected = Vec::new();
    for m in &view.members {
        if !opts.members.is_empty() && !opts.members.contains(&m.name) {
            continue;
        }
        if let Some(rule) = &opts.rule {
            let figures = m.db_figures();
            let chosen = rule.eval(&figures).map_err(|e| PlanError::Rule {
                member: m.name.clone(),
                reason: e.to_string(),
            })?;
            notes.push(format!("{}: {}", m.name, rule.explain(&figures)));
            if !chosen {
                continue;
            }
        }
        selected.push(m);
    }
    let mut steps = Vec::new();
    if let Some(revision) = opts.compact_to {
        steps.push(Step::new(
            StepKind::Rolling(RollingStep::Compact { revision }),
            None,
        ));
    }
    steps.extend(rolling_steps(
        view,
        &selected,
        opts.step_timeout,
        |member| StepKind::Rolling(RollingStep::Defrag { member }),
        &mut notes,
    ));
    if selected.is_empty() {
        notes.push("no member needs defragmenting".into());
    }
    Ok(Plan {
        kind: OpKind::Defrag,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

/// `etcdops restart --rolling`: a verified snapshot, then every (or the
/// named) member, in rolling order; refused when a restart would leave
/// fewer healthy voters than quorum, unless forced.
pub fn plan_restart(view: &ClusterView, opts: &RestartOptions) -> Result<Plan, PlanError> {
    check_members(view, &opts.members)?;
    let selected: Vec<&MemberView> = view
        .members
        .iter()
        .filter(|m| opts.members.is_empty() || opts.members.contains(&m.name))
        .collect();
    let mut notes = Vec::new();
    for m in &selected {
        if let Err(finding) = safety::tolerates_one_down(view, &m.name) {
            if !opts.force {
                return Err(PlanError::Unsafe(finding));
            }
            notes.push(format!("--force: {finding}"));
        }
    }
    let steps = rolling_steps(
        view,
        &selected,
        opts.step_timeout,
        |member| StepKind::Rolling(RollingStep::Restart { member }),
        &mut notes,
    );
    let steps = snapshot_first(steps, opts.snapshot.as_ref(), &mut notes);
    Ok(Plan {
        kind: OpKind::Restart,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

/// The revision to compact to when keeping the last `keep` revisions.
pub fn keep_revisions(view: &ClusterView, keep: u64) -> Result<i64, PlanError> {
    let current = view
        .leader()
        .map(|l| l.revision)
        .ok_or_else(|| PlanError::NoLeader("no leader to read the current revision from".into()))?;
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let revision = current.saturating_sub(keep);
    if revision <= 1 {
        return Err(PlanError::NothingToCompact(format!(
            "the current revision is {current}; keeping {keep} revisions leaves nothing to compact"
        )));
    }
    Ok(revision)
}

/// `etcdops compact`.
pub fn plan_compact(view: &ClusterView, revision: i64) -> Plan {
    Plan {
        kind: OpKind::Compact,
        cluster: view.cluster.clone(),
        steps: vec![Step::new(
            StepKind::Rolling(RollingStep::Compact { revision }),
            None,
        )],
        notes: vec![format!(
            "history before revision {revision} becomes unreadable (watchers from older revisions get ErrCompacted)"
        )],
    }
}

/// `etcdops recover nospace`: compact to the current revision, rolling
/// defrag of every member, disarm, verify writes.
pub fn plan_recover_nospace(view: &ClusterView) -> Result<Plan, PlanError> {
    let current = view
        .leader()
        .map(|l| l.revision)
        .ok_or_else(|| PlanError::NoLeader("no leader to read the current revision from".into()))?;
    let mut notes = vec![format!(
        "compacts all history up to the current revision {current}, as etcd's NOSPACE runbook does"
    )];
    let mut steps = vec![Step::new(
        StepKind::Rolling(RollingStep::Compact { revision: current }),
        None,
    )];
    let all: Vec<&MemberView> = view.members.iter().collect();
    steps.extend(rolling_steps(
        view,
        &all,
        None,
        |member| StepKind::Rolling(RollingStep::Defrag { member }),
        &mut notes,
    ));
    steps.push(Step::new(StepKind::Rolling(RollingStep::DisarmAlarms), None));
    steps.push(Step::new(StepKind::Rolling(RollingStep::VerifyWrites), None));
    let over_quota: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.db_quota > 0 && m.db_size_in_use >= m.db_quota)
        .map(|m| m.name.clone())
        .collect();
    if !over_quota.is_empty() {
        notes.push(format!(
            "{}: the data in use alone fills the quota; defragmenting will not free enough — raise ETCD_QUOTA_BACKEND_BYTES or delete keys",
            over_quota.join(", ")
        ));
    }
    Ok(Plan {
        kind: OpKind::RecoverNospace,
        cluster: view.cluster.clone(),
        steps,
        notes,
    })
}

/// `etcdops alarm disarm`.
pub fn plan_alarm_disarm(view: &ClusterView) -> Plan {
    Plan {
        kind: OpKind::AlarmDisarm,
        cluster: view.cluster.clone(),
        steps: vec![
            Step::new(StepKind::Rolling(RollingStep::DisarmAlarms), None),
            Step::new(StepKind::Rolling(RollingStep::VerifyWrites), None),
        ],
        notes: Vec::new(),
    }
}

/// Who should take over leadership from `from`: a healthy voter, preferring
/// one already processed by this operation, then the most caught-up.
pub fn transfer_target<'a>(
    view: &'a ClusterView,
    from: &str,
    processed: &[String],
) -> Option<&'a MemberView> {
    view.members
        .iter()
        .filter(|m| m.name != from && m.is_voter() && m.is_healthy())
        .max_by_key(|m| {
            (
                processed.contains(&m.name),
                m.applied_index,
                std::cmp::Reverse(m.name.clone()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::super::step::{MemberStep, RestoreStep};
    use super::super::view::fixtures::healthy;
    use super::*;

    fn ids(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn step_ids_round_trip() {
        for kind in [
            StepKind::Rolling(RollingStep::Compact { revision: 42 }),
            StepKind::Rolling(RollingStep::Defrag {
                member: "etcd-2".into(),
            }),
            StepKind::Rolling(RollingStep::Restart { member: "a".into() }),
            StepKind::Rolling(RollingStep::TransferLeadership { from: "b".into() }),
            StepKind::Rolling(RollingStep::DisarmAlarms),
            StepKind::Rolling(RollingStep::VerifyWrites),
            StepKind::Member(MemberStep::MoveAsideBeforeJoin { member: "n".into() }),
            StepKind::Member(MemberStep::AddLearner { member: "n".into() }),
            StepKind::Member(MemberStep::Configure { member: "n".into() }),
            StepKind::Member(MemberStep::StartMember { member: "n".into() }),
            StepKind::Member(MemberStep::Promote { member: "n".into() }),
            StepKind::Member(MemberStep::RemoveMember { member: "o".into() }),
            StepKind::Member(MemberStep::Retire { member: "o".into() }),
            StepKind::Member(MemberStep::FleetAdd { member: "n".into() }),
            StepKind::Member(MemberStep::FleetRemove { member: "o".into() }),
            StepKind::Restore(RestoreStep::StageAll),
            StepKind::Restore(RestoreStep::StopAll),
            StepKind::Restore(RestoreStep::SwapAll),
            StepKind::Restore(RestoreStep::ConfigureAll),
            StepKind::Restore(RestoreStep::StartAll),
            StepKind::Restore(RestoreStep::VerifyRestore),
            StepKind::Restore(RestoreStep::RollBackAll),
            StepKind::Safeguard(SafeguardStep::Snapshot),
            StepKind::Recover(super::super::step::RecoverStep::SnapshotFirst { member: "s".into() }),
        ] {
            assert_eq!(StepKind::from_id(&kind.id()), Some(kind.clone()), "{kind:?}");
        }
        for bad in [
            "",
            "defrag",
            "defrag:",
            "compact:x",
            "compact:-1",
            "disarm-alarms:x",
            "frob:a",
        ] {
            assert_eq!(StepKind::from_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn rolling_defrag_does_the_leader_last_after_moving_leadership() {
        for leader in 1..=3 {
            let plan = plan_defrag(&healthy(3, leader), &DefragOptions::default()).expect("plan");
            let steps = ids(&plan);
            let lead = format!("etcd{leader}");
            assert_eq!(steps.len(), 4, "{steps:?}");
            assert_eq!(steps[2], format!("transfer-leadership:{lead}"));
            assert_eq!(steps[3], format!("defrag:{lead}"));
            assert!(
                steps[..2]
                    .iter()
                    .all(|s| s.starts_with("defrag:") && !s.ends_with(&lead)),
                "{steps:?}"
            );
        }
    }

    #[test]
    fn learners_go_first_and_never_lead() {
        let mut v = healthy(4, 1);
        v.members[3].is_learner = true;
        let plan = plan_defrag(&v, &DefragOptions::default()).expect("plan");
        assert_eq!(
            ids(&plan),
            [
                "defrag:etcd4",
                "defrag:etcd2",
                "defrag:etcd3",
                "transfer-leadership:etcd1",
                "defrag:etcd1"
            ]
        );
    }

    #[test]
    fn compact_comes_first_when_asked() {
        let opts = DefragOptions {
            compact_to: Some(450),
            ..Default::default()
        };
        let plan = plan_defrag(&healthy(3, 3), &opts).expect("plan");
        assert_eq!(ids(&plan)[0], "compact:450");
    }

    #[test]
    fn rules_choose_members_and_say_why() {
        let mut v = healthy(3, 2);
        v.members[0].db_size_in_use = v.members[0].db_size; // nothing to free on etcd1
        let opts = DefragOptions {
            rule: Some(Rule::parse("dbSize - dbSizeInUse > 100 * MB").expect("rule")),
            ..Default::default()
        };
        let plan = plan_defrag(&v, &opts).expect("plan");
        assert_eq!(
            ids(&plan),
            ["defrag:etcd3", "transfer-leadership:etcd2", "defrag:etcd2"]
        );
        assert_eq!(plan.notes.len(), 3, "{:?}", plan.notes);
        // No member selected: an empty plan that says so.
        let opts = DefragOptions {
            rule: Some(Rule::parse("dbSize > 10 * GB").expect("rule")),
            ..Default::default()
        };
        let plan = plan_defrag(&v, &opts).expect("plan");
        assert!(plan.steps.is_empty());
        assert!(
            plan.notes.iter().any(|n| n.contains("no member needs")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn a_quota_rule_without_a_known_quota_is_an_error_naming_the_member() {
        let mut v = healthy(3, 1);
        v.members[1].db_quota = 0;
        let opts = DefragOptions {
            rule: Some(Rule::parse("dbQuotaUsage > 0.5").expect("rule")),
            ..Default::default()
        };
        let err = plan_defrag(&v, &opts).expect_err("unknown quota");
        assert!(
            matches!(&err, PlanError::Rule { member, .. } if member == "etcd2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_members_are_refused() {
        let opts = DefragOptions {
            members: vec!["etcd9".into()],
            ..Default::default()
        };
        let err = plan_defrag(&healthy(3, 1), &opts).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown member \"etcd9\": the fleet's members of cluster test are etcd1, etcd2, etcd3"
        );
        let opts = RestartOptions {
            members: vec!["x".into()],
            ..Default::default()
        };
        assert!(plan_restart(&healthy(3, 1), &opts).is_err());
    }

    #[test]
    fn one_named_follower_needs_no_transfer() {
        let opts = RestartOptions {
            members: vec!["etcd3".into()],
            ..Default::default()
        };
        assert_eq!(
            ids(&plan_restart(&healthy(3, 1), &opts).expect("plan")),
            ["restart:etcd3"]
        );
        let opts = RestartOptions {
            members: vec!["etcd1".into()],
            ..Default::default()
        };
        assert_eq!(
            ids(&plan_restart(&healthy(3, 1), &opts).expect("plan")),
            ["transfer-leadership:etcd1", "restart:etcd1"]
        );
    }

    #[test]
    fn restarts_that_break_quorum_need_force() {
        for n in [1, 2] {
            let err = plan_restart(&healthy(n, 1), &RestartOptions::default()).expect_err("quorum");
            assert!(matches!(err, PlanError::Unsafe(_)), "{n}: {err}");
            let forced = plan_restart(
                &healthy(n, 1),
                &RestartOptions {
                    force: true,
                    ..Default::default()
                },
            )
            .expect("forced");
            assert_eq!(
                forced
                    .steps
                    .iter()
                    .filter(|s| matches!(s.kind, StepKind::Rolling(RollingStep::Restart { .. })))
                    .count(),
                n
            );
            assert!(
                forced.notes.iter().any(|note| note.starts_with("--force:")),
                "{:?}",
                forced.notes
            );
        }
        let plan = plan_restart(&healthy(5, 4), &RestartOptions::default()).expect("plan");
        assert_eq!(plan.steps.len(), 6);
        assert_eq!(plan.steps.last().map(|s| s.id.as_str()), Some("restart:etcd4"));
    }

    #[test]
    fn a_restart_starts_with_a_snapshot_unless_told_not_to() {
        let to = SnapshotTo::Dir {
            path: "/var/lib/etcdops/snapshots".into(),
        };
        let opts = RestartOptions {
            snapshot: Some(to.clone()),
            ..Default::default()
        };
        let plan = plan_restart(&healthy(3, 1), &opts).expect("plan");
        assert_eq!(
            ids(&plan),
            [
                "snapshot",
                "restart:etcd2",
                "restart:etcd3",
                "transfer-leadership:etcd1",
                "restart:etcd1"
            ]
        );
        let first = &plan.steps[0];
        assert_eq!(first.kind, StepKind::Safeguard(SafeguardStep::Snapshot));
        assert_eq!(first.snapshot_to.as_ref(), Some(&to));
        assert!(
            first.description.contains("/var/lib/etcdops/snapshots"),
            "{}",
            first.description
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("/var/lib/etcdops/snapshots")),
            "{:?}",
            plan.notes
        );
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["steps"][0]["action"], "snapshot");
        assert_eq!(
            json["steps"][0]["snapshot_to"]["path"],
            "/var/lib/etcdops/snapshots"
        );
        assert!(json["steps"][1].get("snapshot_to").is_none(), "{json}");

        // Into the backup target, named as such.
        let opts = RestartOptions {
            snapshot: Some(SnapshotTo::Backup {
                url: "s3://backups/prod".into(),
            }),
            members: vec!["etcd3".into()],
            ..Default::default()
        };
        let plan = plan_restart(&healthy(3, 1), &opts).expect("plan");
        assert_eq!(ids(&plan), ["snapshot", "restart:etcd3"]);
        assert!(
            plan.steps[0]
                .description
                .contains("backup target s3://backups/prod"),
            "{}",
            plan.steps[0].description
        );

        // --no-snapshot: none, and the plan says so.
        let plan = plan_restart(&healthy(3, 1), &RestartOptions::default()).expect("plan");
        assert!(!ids(&plan).contains(&"snapshot".to_string()));
        assert!(
            plan.notes.iter().any(|n| n.starts_with("--no-snapshot")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn single_member_defrag_has_no_transfer_but_says_it_stalls() {
        let plan = plan_defrag(&healthy(1, 1), &DefragOptions::default()).expect("plan");
        assert_eq!(ids(&plan), ["defrag:etcd1"]);
        assert!(
            plan.notes.iter().any(|n| n.contains("only voter")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn recover_nospace_compacts_defrags_disarms_and_verifies() {
        let plan = plan_recover_nospace(&healthy(3, 1)).expect("plan");
        assert_eq!(
            ids(&plan),
            [
                "compact:500",
                "defrag:etcd2",
                "defrag:etcd3",
                "transfer-leadership:etcd1",
                "defrag:etcd1",
                "disarm-alarms",
                "verify-writes"
            ]
        );
        let mut v = healthy(3, 1);
        v.members.iter_mut().for_each(|m| m.leader_id = 0);
        assert!(matches!(plan_recover_nospace(&v), Err(PlanError::NoLeader(_))));
    }

    #[test]
    fn keep_revisions_math() {
        assert_eq!(keep_revisions(&healthy(3, 1), 100), Ok(400));
        assert!(matches!(
            keep_revisions(&healthy(3, 1), 499),
            Err(PlanError::NothingToCompact(_))
        ));
        assert!(matches!(
            keep_revisions(&healthy(3, 1), u64::MAX),
            Err(PlanError::NothingToCompact(_))
        ));
    }

    #[test]
    fn transfer_prefers_processed_then_caught_up_followers() {
        let mut v = healthy(3, 1);
        v.members[1].applied_index = 990;
        assert_eq!(
            transfer_target(&v, "etcd1", &[]).map(|m| m.name.as_str()),
            Some("etcd3")
        );
        assert_eq!(
            transfer_target(&v, "etcd1", &["etcd2".into()]).map(|m| m.name.as_str()),
            Some("etcd2")
        );
        v.members[1].unhealthy = Some("x".into());
        assert_eq!(
            transfer_target(&v, "etcd1", &["etcd2".into()]).map(|m| m.name.as_str()),
            Some("etcd3")
        );
        v.members[2].is_learner = true;
        assert!(transfer_target(&v, "etcd1", &[]).is_none());
    }
}
