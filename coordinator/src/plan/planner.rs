//! Plans: ordered steps computed by pure functions from an observed
//! [`ClusterView`]. No I/O here; the executor runs what these return.
//!
//! Ordering rule shared by every rolling operation: learners first, then
//! followers one at a time, then the leader last — after a step that moves
//! leadership to a healthy, caught-up follower that was already processed,
//! so the former leader is handled as a follower.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::rule::Rule;
use super::safety::{self, Finding, Tolerate};
use super::view::{ClusterView, MemberView};

/// What kind of operation a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        [
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
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// What the operation tolerates in its safety checks.
    pub fn tolerate(self, ignore_slow_disk: bool) -> Tolerate<'static> {
        Tolerate {
            nospace_alarm: matches!(self, OpKind::RecoverNospace | OpKind::AlarmDisarm),
            slow_disk: ignore_slow_disk,
            down: None,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step's action. The step ID (see [`StepKind::id`]) encodes it, so a
/// journaled plan can be read back without re-planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum StepKind {
    /// Compact the key history up to `revision` (physically).
    Compact { revision: i64 },
    /// Defragment one member.
    Defrag { member: String },
    /// Restart one member's etcd unit.
    Restart { member: String },
    /// Make sure `from` is not the leader: move leadership to a healthy,
    /// caught-up follower (preferring one already processed).
    TransferLeadership { from: String },
    /// Disarm every active alarm.
    DisarmAlarms,
    /// Write, read back and delete a key: the cluster accepts writes.
    VerifyWrites,
    /// Move a host's data dir aside before it joins (it holds old data).
    MoveAsideBeforeJoin { member: String },
    /// Add the new member to the cluster as a learner.
    AddLearner { member: String },
    /// Write the new member's etcd environment (existing cluster, full initial-cluster).
    Configure { member: String },
    /// Start the new member's etcd; wait until it has caught up.
    StartMember { member: String },
    /// Promote the learner to a voter.
    Promote { member: String },
    /// Remove a member from the cluster.
    RemoveMember { member: String },
    /// Stop the removed member's etcd and move its data dir aside.
    Retire { member: String },
    /// Add the member to the fleet file.
    FleetAdd { member: String },
    /// Remove the member from the fleet file.
    FleetRemove { member: String },
    /// Stream the snapshot to every member's agent at once; each verifies it
    /// and restores it beside its data dir (the cluster keeps serving).
    StageAll,
    /// Stop etcd on every member.
    StopAll,
    /// Swap every staged restore in (the old data dirs kept).
    SwapAll,
    /// Write every member's environment for the new cluster (state `new`, the token).
    ConfigureAll,
    /// Start etcd on every member at once.
    StartAll,
    /// Every member healthy, one cluster ID, one leader, the snapshot's data.
    VerifyRestore,
    /// Put every member's kept pre-restore data dir back.
    RollBackAll,
    /// Save a snapshot of the survivor before anything changes (recovery).
    SnapshotFirst { member: String },
    /// Stop etcd on every member but the survivor whose agent answers.
    StopOthers,
    /// Restart the survivor once with force-new-cluster: a one-member cluster
    /// with its data; the flag is removed again.
    ForceNewCluster { member: String },
    /// Rejoin a member as a fresh learner (its old data dir moved aside),
    /// catch it up, promote it.
    Rejoin { member: String },
    /// Every rejoined member a healthy voter, one leader, one hashkv, writes accepted.
    VerifyRecovery,
}

impl StepKind {
    /// The stable ID within an operation, e.g. `defrag:etcd2`.
    pub fn id(&self) -> String {
        match self {
            StepKind::Compact { revision } => format!("compact:{revision}"),
            StepKind::Defrag { member } => format!("defrag:{member}"),
            StepKind::Restart { member } => format!("restart:{member}"),
            StepKind::TransferLeadership { from } => format!("transfer-leadership:{from}"),
            StepKind::DisarmAlarms => "disarm-alarms".into(),
            StepKind::VerifyWrites => "verify-writes".into(),
            StepKind::MoveAsideBeforeJoin { member } => format!("move-aside:{member}"),
            StepKind::AddLearner { member } => format!("add-learner:{member}"),
            StepKind::Configure { member } => format!("configure:{member}"),
            StepKind::StartMember { member } => format!("start:{member}"),
            StepKind::Promote { member } => format!("promote:{member}"),
            StepKind::RemoveMember { member } => format!("remove:{member}"),
            StepKind::Retire { member } => format!("retire:{member}"),
            StepKind::FleetAdd { member } => format!("fleet-add:{member}"),
            StepKind::FleetRemove { member } => format!("fleet-remove:{member}"),
            StepKind::StageAll => "stage-all".into(),
            StepKind::StopAll => "stop-all".into(),
            StepKind::SwapAll => "swap-all".into(),
            StepKind::ConfigureAll => "configure-all".into(),
            StepKind::StartAll => "start-all".into(),
            StepKind::VerifyRestore => "verify-restore".into(),
            StepKind::RollBackAll => "rollback-all".into(),
            StepKind::SnapshotFirst { member } => format!("snapshot:{member}"),
            StepKind::StopOthers => "stop-others".into(),
            StepKind::ForceNewCluster { member } => format!("force-new-cluster:{member}"),
            StepKind::Rejoin { member } => format!("rejoin:{member}"),
            StepKind::VerifyRecovery => "verify-recovery".into(),
        }
    }

    /// Reads a step ID back (from the journal).
    pub fn from_id(id: &str) -> Option<StepKind> {
        let (action, arg) = id.split_once(':').unwrap_or((id, ""));
        let member = || (!arg.is_empty()).then(|| arg.to_string());
        Some(match action {
            "compact" => StepKind::Compact {
                revision: arg.parse().ok().filter(|r| *r > 0)?,
            },
            "defrag" => StepKind::Defrag { member: member()? },
            "restart" => StepKind::Restart { member: member()? },
            "transfer-leadership" => StepKind::TransferLeadership { from: member()? },
            "move-aside" => StepKind::MoveAsideBeforeJoin { member: member()? },
            "add-learner" => StepKind::AddLearner { member: member()? },
            "configure" => StepKind::Configure { member: member()? },
            "start" => StepKind::StartMember { member: member()? },
            "promote" => StepKind::Promote { member: member()? },
            "remove" => StepKind::RemoveMember { member: member()? },
            "retire" => StepKind::Retire { member: member()? },
            "fleet-add" => StepKind::FleetAdd { member: member()? },
            "fleet-remove" => StepKind::FleetRemove { member: member()? },
            "stage-all" if arg.is_empty() => StepKind::StageAll,
            "stop-all" if arg.is_empty() => StepKind::StopAll,
            "swap-all" if arg.is_empty() => StepKind::SwapAll,
            "configure-all" if arg.is_empty() => StepKind::ConfigureAll,
            "start-all" if arg.is_empty() => StepKind::StartAll,
            "verify-restore" if arg.is_empty() => StepKind::VerifyRestore,
            "rollback-all" if arg.is_empty() => StepKind::RollBackAll,
            "snapshot" => StepKind::SnapshotFirst { member: member()? },
            "stop-others" if arg.is_empty() => StepKind::StopOthers,
            "force-new-cluster" => StepKind::ForceNewCluster { member: member()? },
            "rejoin" => StepKind::Rejoin { member: member()? },
            "verify-recovery" if arg.is_empty() => StepKind::VerifyRecovery,
            "disarm-alarms" if arg.is_empty() => StepKind::DisarmAlarms,
            "verify-writes" if arg.is_empty() => StepKind::VerifyWrites,
            _ => return None,
        })
    }

    /// The member the step acts on, if one.
    pub fn member(&self) -> Option<&str> {
        match self {
            StepKind::Defrag { member }
            | StepKind::Restart { member }
            | StepKind::MoveAsideBeforeJoin { member }
            | StepKind::AddLearner { member }
            | StepKind::Configure { member }
            | StepKind::StartMember { member }
            | StepKind::Promote { member }
            | StepKind::RemoveMember { member }
            | StepKind::Retire { member }
            | StepKind::FleetAdd { member }
            | StepKind::FleetRemove { member }
            | StepKind::SnapshotFirst { member }
            | StepKind::ForceNewCluster { member }
            | StepKind::Rejoin { member } => Some(member),
            StepKind::TransferLeadership { from } => Some(from),
            _ => None,
        }
    }

    /// What the step does, for people.
    pub fn describe(&self) -> String {
        match self {
            StepKind::Compact { revision } => format!("compact history up to revision {revision}"),
            StepKind::Defrag { member } => format!("defragment {member}"),
            StepKind::Restart { member } => format!("restart etcd on {member}"),
            StepKind::TransferLeadership { from } => format!("move leadership away from {from}"),
            StepKind::DisarmAlarms => "disarm alarms".into(),
            StepKind::VerifyWrites => "verify the cluster accepts writes".into(),
            StepKind::MoveAsideBeforeJoin { member } => format!("move {member}'s old data dir aside"),
            StepKind::AddLearner { member } => format!("add {member} as a learner"),
            StepKind::Configure { member } => format!("write {member}'s etcd environment (existing cluster)"),
            StepKind::StartMember { member } => format!("start etcd on {member}"),
            StepKind::Promote { member } => format!("promote {member} to voter"),
            StepKind::RemoveMember { member } => format!("remove {member} from the cluster"),
            StepKind::Retire { member } => format!("stop etcd on {member} and move its data dir aside"),
            StepKind::FleetAdd { member } => format!("add {member} to the fleet file"),
            StepKind::FleetRemove { member } => format!("remove {member} from the fleet file"),
            StepKind::StageAll => {
                "stream the snapshot to every member and restore it beside the data dir".into()
            }
            StepKind::StopAll => "stop etcd on every member (the leader last)".into(),
            StepKind::SwapAll => "swap the restored data dirs in (old ones kept)".into(),
            StepKind::ConfigureAll => "write every member's environment for the new cluster".into(),
            StepKind::StartAll => "start etcd on every member".into(),
            StepKind::VerifyRestore => "verify the restored cluster".into(),
            StepKind::RollBackAll => "put every member's pre-restore data dir back".into(),
            StepKind::SnapshotFirst { member } => {
                format!("save a snapshot of {member} first (kept on this host)")
            }
            StepKind::StopOthers => "stop etcd on every other member".into(),
            StepKind::ForceNewCluster { member } => format!("restart {member} once with force-new-cluster"),
            StepKind::Rejoin { member } => format!("rejoin {member} as a fresh learner and promote it"),
            StepKind::VerifyRecovery => "verify the recovered cluster".into(),
        }
    }

    /// The condition the executor waits for after the action.
    pub fn waits_for(&self) -> String {
        match self {
            StepKind::Compact { .. } => "compaction applied".into(),
            StepKind::Defrag { member } | StepKind::Restart { member } => {
                format!("{member} healthy and caught up with the leader")
            }
            StepKind::TransferLeadership { from } => {
                format!("every member agrees on a new leader other than {from}")
            }
            StepKind::DisarmAlarms => "no alarm active".into(),
            StepKind::VerifyWrites => "write, read back and delete succeed".into(),
            StepKind::MoveAsideBeforeJoin { .. } => "renamed (never deleted)".into(),
            StepKind::AddLearner { member } => format!("{member} listed as a learner"),
            StepKind::Configure { .. } => "env file written".into(),
            StepKind::StartMember { member } => format!("{member} healthy and caught up with the leader"),
            StepKind::Promote { member } => format!("{member} a healthy voter"),
            StepKind::RemoveMember { member } => format!("{member} gone from the membership"),
            StepKind::Retire { .. } => "etcd stopped, data dir renamed (skipped when the host is down)".into(),
            StepKind::FleetAdd { .. } | StepKind::FleetRemove { .. } => "fleet file written".into(),
            StepKind::StageAll => "every agent verified the bytes and restored them".into(),
            StepKind::StopAll => "every unit inactive".into(),
            StepKind::SwapAll | StepKind::RollBackAll => "renamed (never deleted)".into(),
            StepKind::ConfigureAll => "env files written".into(),
            StepKind::StartAll => "every unit started".into(),
            StepKind::VerifyRestore => {
                "healthy, one cluster ID and leader, revision at least the snapshot's, the same hashkv everywhere".into()
            }
            StepKind::SnapshotFirst { .. } => "the file written, its trailer verified".into(),
            StepKind::StopOthers => "every other reachable unit inactive".into(),
            StepKind::ForceNewCluster { member } => {
                format!("{member} the healthy leader of a one-member cluster; the flag removed from its env file")
            }
            StepKind::Rejoin { member } => format!("{member} a healthy voter caught up with the leader"),
            StepKind::VerifyRecovery => "every member a healthy voter, one leader, the same hashkv, a write accepted".into(),
        }
    }

    /// The default time the action and its wait get together.
    pub fn default_timeout(&self) -> Duration {
        match self {
            StepKind::Defrag { .. } => Duration::from_secs(600),
            StepKind::Restart { .. } => Duration::from_secs(180),
            StepKind::Compact { .. } => Duration::from_secs(120),
            StepKind::StartMember { .. } => Duration::from_secs(300),
            StepKind::Promote { .. } | StepKind::AddLearner { .. } | StepKind::RemoveMember { .. } => {
                Duration::from_secs(120)
            }
            StepKind::Retire { .. } => Duration::from_secs(90),
            StepKind::StageAll | StepKind::SnapshotFirst { .. } => Duration::from_secs(1800),
            StepKind::Rejoin { .. } => Duration::from_secs(300),
            StepKind::StopOthers | StepKind::ForceNewCluster { .. } | StepKind::VerifyRecovery => {
                Duration::from_secs(180)
            }
            StepKind::StopAll | StepKind::StartAll | StepKind::VerifyRestore => Duration::from_secs(180),
            StepKind::SwapAll | StepKind::ConfigureAll | StepKind::RollBackAll => Duration::from_secs(60),
            StepKind::TransferLeadership { .. }
            | StepKind::DisarmAlarms
            | StepKind::VerifyWrites
            | StepKind::MoveAsideBeforeJoin { .. }
            | StepKind::Configure { .. }
            | StepKind::FleetAdd { .. }
            | StepKind::FleetRemove { .. } => Duration::from_secs(30),
        }
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
        }
    }
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
fn rolling_order<'a>(view: &'a ClusterView, selected: &[&'a MemberView]) -> Vec<&'a MemberView> {
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
fn rolling_steps(
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
                StepKind::TransferLeadership { from: m.name.clone() },
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
        steps.push(Step::new(StepKind::Compact { revision }, None));
    }
    steps.extend(rolling_steps(
        view,
        &selected,
        opts.step_timeout,
        |member| StepKind::Defrag { member },
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

/// `etcdops restart --rolling`: every (or the named) member, in rolling
/// order; refused when a restart would leave fewer healthy voters than
/// quorum, unless forced.
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
        |member| StepKind::Restart { member },
        &mut notes,
    );
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
        steps: vec![Step::new(StepKind::Compact { revision }, None)],
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
    let mut steps = vec![Step::new(StepKind::Compact { revision: current }, None)];
    let all: Vec<&MemberView> = view.members.iter().collect();
    steps.extend(rolling_steps(
        view,
        &all,
        None,
        |member| StepKind::Defrag { member },
        &mut notes,
    ));
    steps.push(Step::new(StepKind::DisarmAlarms, None));
    steps.push(Step::new(StepKind::VerifyWrites, None));
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
            Step::new(StepKind::DisarmAlarms, None),
            Step::new(StepKind::VerifyWrites, None),
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
    use super::super::view::fixtures::healthy;
    use super::*;

    fn ids(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn step_ids_round_trip() {
        for kind in [
            StepKind::Compact { revision: 42 },
            StepKind::Defrag {
                member: "etcd-2".into(),
            },
            StepKind::Restart { member: "a".into() },
            StepKind::TransferLeadership { from: "b".into() },
            StepKind::DisarmAlarms,
            StepKind::VerifyWrites,
            StepKind::MoveAsideBeforeJoin { member: "n".into() },
            StepKind::AddLearner { member: "n".into() },
            StepKind::Configure { member: "n".into() },
            StepKind::StartMember { member: "n".into() },
            StepKind::Promote { member: "n".into() },
            StepKind::RemoveMember { member: "o".into() },
            StepKind::Retire { member: "o".into() },
            StepKind::FleetAdd { member: "n".into() },
            StepKind::FleetRemove { member: "o".into() },
            StepKind::StageAll,
            StepKind::StopAll,
            StepKind::SwapAll,
            StepKind::ConfigureAll,
            StepKind::StartAll,
            StepKind::VerifyRestore,
            StepKind::RollBackAll,
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
                    .filter(|s| matches!(s.kind, StepKind::Restart { .. }))
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
