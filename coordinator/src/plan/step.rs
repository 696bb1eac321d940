//! Steps, one enum per family: [`RollingStep`] (defrag, restart, compact,
//! alarms, leadership), [`MemberStep`] (join, leave, fleet file),
//! [`RestoreStep`] (a whole-cluster restore and its rollback),
//! [`RecoverStep`] (majority-loss recovery) and [`SafeguardStep`] (the
//! verified snapshot a disruptive operation starts with, into a
//! [`SnapshotTo`]). [`StepKind`] is one of them; the executor runs each
//! family in a module of its own (`exec/`).
//!
//! A step's ID (`defrag:etcd2`, `stage-all`) encodes its action, so a
//! journaled plan is read back without re-planning ([`StepKind::from_id`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One step's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StepKind {
    Rolling(RollingStep),
    Member(MemberStep),
    Restore(RestoreStep),
    Recover(RecoverStep),
    Safeguard(SafeguardStep),
    Certs(super::certs::CertStep),
}

/// Safeguards before a disruptive operation changes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum SafeguardStep {
    /// Save a verified snapshot (trailer checked, `.json` sidecar) of a
    /// healthy, caught-up member; where it goes is the operation's
    /// [`SnapshotTo`], and what was saved is journaled with the operation.
    Snapshot,
}

/// Where the verified snapshot a disruptive operation starts with goes,
/// decided when the operation is planned and kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SnapshotTo {
    /// The cluster's backup target (the fleet file's `[clusters.backup]`),
    /// stored and read back as a backup (`etcdops backup list` shows it).
    Backup { url: String },
    /// A local directory (by default `snapshots/` beside the journal).
    Dir { path: PathBuf },
}

impl fmt::Display for SnapshotTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotTo::Backup { url } => write!(f, "the backup target {url}"),
            SnapshotTo::Dir { path } => write!(f, "{}", path.display()),
        }
    }
}

/// Rolling and maintenance steps: one member at a time, or the cluster through its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RollingStep {
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
    /// An etcd upgrade or its rollback: switch the binary the member's unit
    /// runs (through its agent), restart it, wait until it is healthy, caught
    /// up and reports the operation's version (`exec/upgrade.rs`).
    SwitchBinary { member: String },
    /// An etcd upgrade's end: wait until every member reports the new minor
    /// as the cluster version.
    ClusterVersion,
}

/// Membership steps: a member joins (learner first) or leaves, and the fleet file follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum MemberStep {
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
}

/// A whole-cluster restore: every member at once, each step on every agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RestoreStep {
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
}

/// A majority-loss recovery: one survivor, forced into a one-member cluster, the others rejoined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RecoverStep {
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

impl From<RollingStep> for StepKind {
    fn from(s: RollingStep) -> StepKind {
        StepKind::Rolling(s)
    }
}

impl From<MemberStep> for StepKind {
    fn from(s: MemberStep) -> StepKind {
        StepKind::Member(s)
    }
}

impl From<RestoreStep> for StepKind {
    fn from(s: RestoreStep) -> StepKind {
        StepKind::Restore(s)
    }
}

impl From<RecoverStep> for StepKind {
    fn from(s: RecoverStep) -> StepKind {
        StepKind::Recover(s)
    }
}

impl From<SafeguardStep> for StepKind {
    fn from(s: SafeguardStep) -> StepKind {
        StepKind::Safeguard(s)
    }
}

impl StepKind {
    /// The stable ID within an operation, e.g. `defrag:etcd2`.
    pub fn id(&self) -> String {
        match self {
            StepKind::Rolling(s) => s.id(),
            StepKind::Member(s) => s.id(),
            StepKind::Restore(s) => s.id().into(),
            StepKind::Recover(s) => s.id(),
            StepKind::Safeguard(s) => s.id().into(),
            StepKind::Certs(s) => s.id(),
        }
    }

    /// Reads a step ID back (from the journal).
    pub fn from_id(id: &str) -> Option<StepKind> {
        let (action, arg) = id.split_once(':').unwrap_or((id, ""));
        let member = (!arg.is_empty()).then(|| arg.to_string());
        SafeguardStep::from_parts(action, arg)
            .map(StepKind::Safeguard)
            .or_else(|| RollingStep::from_parts(action, arg, member.clone()).map(StepKind::Rolling))
            .or_else(|| MemberStep::from_parts(action, member.clone()).map(StepKind::Member))
            .or_else(|| RestoreStep::from_parts(action, arg).map(StepKind::Restore))
            .or_else(|| RecoverStep::from_parts(action, member.clone()).map(StepKind::Recover))
            .or_else(|| super::certs::CertStep::from_parts(action, member).map(StepKind::Certs))
    }

    /// The member the step acts on, if one.
    pub fn member(&self) -> Option<&str> {
        match self {
            StepKind::Rolling(s) => s.member(),
            StepKind::Member(s) => Some(s.member()),
            StepKind::Restore(_) => None,
            StepKind::Recover(s) => s.member(),
            StepKind::Safeguard(_) => None,
            StepKind::Certs(s) => Some(s.member()),
        }
    }

    /// What the step does, for people.
    pub fn describe(&self) -> String {
        match self {
            StepKind::Rolling(s) => s.describe(),
            StepKind::Member(s) => s.describe(),
            StepKind::Restore(s) => s.describe().into(),
            StepKind::Recover(s) => s.describe(),
            StepKind::Safeguard(s) => s.describe().into(),
            StepKind::Certs(s) => s.describe(),
        }
    }

    /// The condition the executor waits for after the action.
    pub fn waits_for(&self) -> String {
        match self {
            StepKind::Rolling(s) => s.waits_for(),
            StepKind::Member(s) => s.waits_for(),
            StepKind::Restore(s) => s.waits_for().into(),
            StepKind::Recover(s) => s.waits_for(),
            StepKind::Safeguard(s) => s.waits_for().into(),
            StepKind::Certs(s) => s.waits_for(),
        }
    }

    /// The step changes a member's data or process (a restart, a defrag, a
    /// join): etcd's HashKV is compared across members after it.
    pub fn changes_a_member(&self) -> bool {
        matches!(
            self,
            StepKind::Rolling(
                RollingStep::Defrag { .. } | RollingStep::Restart { .. } | RollingStep::SwitchBinary { .. }
            ) | StepKind::Member(MemberStep::StartMember { .. } | MemberStep::Promote { .. })
                | StepKind::Recover(RecoverStep::Rejoin { .. })
        ) || self.restarted_member().is_some()
    }

    /// The member a step restarts (the quorum margin is checked without it
    /// before the step): a rolling restart, a binary switch, a CA rotation's step.
    pub fn restarted_member(&self) -> Option<&str> {
        match self {
            StepKind::Rolling(RollingStep::Restart { member } | RollingStep::SwitchBinary { member }) => {
                Some(member)
            }
            StepKind::Certs(c) => c.restarts(),
            _ => None,
        }
    }

    /// The default time the action and its wait get together.
    pub fn default_timeout(&self) -> Duration {
        match self {
            StepKind::Rolling(s) => s.default_timeout(),
            StepKind::Member(s) => s.default_timeout(),
            StepKind::Restore(s) => s.default_timeout(),
            StepKind::Recover(s) => s.default_timeout(),
            StepKind::Safeguard(s) => s.default_timeout(),
            StepKind::Certs(s) => s.default_timeout(),
        }
    }
}

impl SafeguardStep {
    fn id(&self) -> &'static str {
        match self {
            SafeguardStep::Snapshot => "snapshot",
        }
    }

    /// `snapshot` alone; `snapshot:NAME` is a recovery's survivor snapshot.
    fn from_parts(action: &str, arg: &str) -> Option<SafeguardStep> {
        match (action, arg) {
            ("snapshot", "") => Some(SafeguardStep::Snapshot),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            SafeguardStep::Snapshot => "save a verified snapshot before anything changes",
        }
    }

    fn waits_for(&self) -> &'static str {
        match self {
            SafeguardStep::Snapshot => "the snapshot and its sidecar written, the trailer verified",
        }
    }

    fn default_timeout(&self) -> Duration {
        match self {
            SafeguardStep::Snapshot => Duration::from_secs(1800),
        }
    }
}

impl RollingStep {
    fn id(&self) -> String {
        match self {
            RollingStep::Compact { revision } => format!("compact:{revision}"),
            RollingStep::Defrag { member } => format!("defrag:{member}"),
            RollingStep::Restart { member } => format!("restart:{member}"),
            RollingStep::TransferLeadership { from } => format!("transfer-leadership:{from}"),
            RollingStep::DisarmAlarms => "disarm-alarms".into(),
            RollingStep::VerifyWrites => "verify-writes".into(),
            RollingStep::SwitchBinary { member } => format!("switch-binary:{member}"),
            RollingStep::ClusterVersion => "cluster-version".into(),
        }
    }

    fn from_parts(action: &str, arg: &str, member: Option<String>) -> Option<RollingStep> {
        Some(match action {
            "compact" => RollingStep::Compact {
                revision: arg.parse().ok().filter(|r| *r > 0)?,
            },
            "defrag" => RollingStep::Defrag { member: member? },
            "restart" => RollingStep::Restart { member: member? },
            "transfer-leadership" => RollingStep::TransferLeadership { from: member? },
            "disarm-alarms" if arg.is_empty() => RollingStep::DisarmAlarms,
            "verify-writes" if arg.is_empty() => RollingStep::VerifyWrites,
            "switch-binary" => RollingStep::SwitchBinary { member: member? },
            "cluster-version" if arg.is_empty() => RollingStep::ClusterVersion,
            _ => return None,
        })
    }

    fn member(&self) -> Option<&str> {
        match self {
            RollingStep::Defrag { member }
            | RollingStep::Restart { member }
            | RollingStep::SwitchBinary { member } => Some(member),
            RollingStep::TransferLeadership { from } => Some(from),
            RollingStep::Compact { .. }
            | RollingStep::DisarmAlarms
            | RollingStep::VerifyWrites
            | RollingStep::ClusterVersion => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            RollingStep::Compact { revision } => format!("compact history up to revision {revision}"),
            RollingStep::Defrag { member } => format!("defragment {member}"),
            RollingStep::Restart { member } => format!("restart etcd on {member}"),
            RollingStep::TransferLeadership { from } => format!("move leadership away from {from}"),
            RollingStep::DisarmAlarms => "disarm alarms".into(),
            RollingStep::VerifyWrites => "verify the cluster accepts writes".into(),
            RollingStep::SwitchBinary { member } => {
                format!("switch the etcd binary {member} runs and restart it")
            }
            RollingStep::ClusterVersion => "wait for the cluster version to move to the new minor".into(),
        }
    }

    fn waits_for(&self) -> String {
        match self {
            RollingStep::Compact { .. } => "compaction applied".into(),
            RollingStep::Defrag { member } | RollingStep::Restart { member } => {
                format!("{member} healthy and caught up with the leader")
            }
            RollingStep::TransferLeadership { from } => {
                format!("every member agrees on a new leader other than {from}")
            }
            RollingStep::DisarmAlarms => "no alarm active".into(),
            RollingStep::VerifyWrites => "write, read back and delete succeed".into(),
            RollingStep::SwitchBinary { member } => {
                format!(
                    "{member} healthy, caught up with the leader and reporting the operation's etcd version"
                )
            }
            RollingStep::ClusterVersion => "every member reports the new cluster version".into(),
        }
    }

    fn default_timeout(&self) -> Duration {
        match self {
            RollingStep::Defrag { .. } => Duration::from_secs(600),
            RollingStep::Restart { .. } | RollingStep::SwitchBinary { .. } => Duration::from_secs(180),
            RollingStep::ClusterVersion => Duration::from_secs(120),
            RollingStep::Compact { .. } => Duration::from_secs(120),
            RollingStep::TransferLeadership { .. }
            | RollingStep::DisarmAlarms
            | RollingStep::VerifyWrites => Duration::from_secs(30),
        }
    }
}

impl MemberStep {
    fn id(&self) -> String {
        let (action, member) = match self {
            MemberStep::MoveAsideBeforeJoin { member } => ("move-aside", member),
            MemberStep::AddLearner { member } => ("add-learner", member),
            MemberStep::Configure { member } => ("configure", member),
            MemberStep::StartMember { member } => ("start", member),
            MemberStep::Promote { member } => ("promote", member),
            MemberStep::RemoveMember { member } => ("remove", member),
            MemberStep::Retire { member } => ("retire", member),
            MemberStep::FleetAdd { member } => ("fleet-add", member),
            MemberStep::FleetRemove { member } => ("fleet-remove", member),
        };
        format!("{action}:{member}")
    }

    fn from_parts(action: &str, member: Option<String>) -> Option<MemberStep> {
        let make: fn(String) -> MemberStep = match action {
            "move-aside" => |member| MemberStep::MoveAsideBeforeJoin { member },
            "add-learner" => |member| MemberStep::AddLearner { member },
            "configure" => |member| MemberStep::Configure { member },
            "start" => |member| MemberStep::StartMember { member },
            "promote" => |member| MemberStep::Promote { member },
            "remove" => |member| MemberStep::RemoveMember { member },
            "retire" => |member| MemberStep::Retire { member },
            "fleet-add" => |member| MemberStep::FleetAdd { member },
            "fleet-remove" => |member| MemberStep::FleetRemove { member },
            _ => return None,
        };
        member.map(make)
    }

    /// The member that joins or leaves.
    pub fn member(&self) -> &str {
        match self {
            MemberStep::MoveAsideBeforeJoin { member }
            | MemberStep::AddLearner { member }
            | MemberStep::Configure { member }
            | MemberStep::StartMember { member }
            | MemberStep::Promote { member }
            | MemberStep::RemoveMember { member }
            | MemberStep::Retire { member }
            | MemberStep::FleetAdd { member }
            | MemberStep::FleetRemove { member } => member,
        }
    }

    fn describe(&self) -> String {
        match self {
            MemberStep::MoveAsideBeforeJoin { member } => format!("move {member}'s old data dir aside"),
            MemberStep::AddLearner { member } => format!("add {member} as a learner"),
            MemberStep::Configure { member } => {
                format!("write {member}'s etcd environment (existing cluster)")
            }
            MemberStep::StartMember { member } => format!("start etcd on {member}"),
            MemberStep::Promote { member } => format!("promote {member} to voter"),
            MemberStep::RemoveMember { member } => format!("remove {member} from the cluster"),
            MemberStep::Retire { member } => format!("stop etcd on {member} and move its data dir aside"),
            MemberStep::FleetAdd { member } => format!("add {member} to the fleet file"),
            MemberStep::FleetRemove { member } => format!("remove {member} from the fleet file"),
        }
    }

    fn waits_for(&self) -> String {
        match self {
            MemberStep::MoveAsideBeforeJoin { .. } => "renamed (never deleted)".into(),
            MemberStep::AddLearner { member } => format!("{member} listed as a learner"),
            MemberStep::Configure { .. } => "env file written".into(),
            MemberStep::StartMember { member } => format!("{member} healthy and caught up with the leader"),
            MemberStep::Promote { member } => format!("{member} a healthy voter"),
            MemberStep::RemoveMember { member } => format!("{member} gone from the membership"),
            MemberStep::Retire { .. } => {
                "etcd stopped, data dir renamed (skipped when the host is down)".into()
            }
            MemberStep::FleetAdd { .. } | MemberStep::FleetRemove { .. } => "fleet file written".into(),
        }
    }

    fn default_timeout(&self) -> Duration {
        match self {
            MemberStep::StartMember { .. } => Duration::from_secs(300),
            MemberStep::Promote { .. } | MemberStep::AddLearner { .. } | MemberStep::RemoveMember { .. } => {
                Duration::from_secs(120)
            }
            MemberStep::Retire { .. } => Duration::from_secs(90),
            MemberStep::MoveAsideBeforeJoin { .. }
            | MemberStep::Configure { .. }
            | MemberStep::FleetAdd { .. }
            | MemberStep::FleetRemove { .. } => Duration::from_secs(30),
        }
    }
}

impl RestoreStep {
    const ALL: [RestoreStep; 7] = [
        RestoreStep::StageAll,
        RestoreStep::StopAll,
        RestoreStep::SwapAll,
        RestoreStep::ConfigureAll,
        RestoreStep::StartAll,
        RestoreStep::VerifyRestore,
        RestoreStep::RollBackAll,
    ];

    fn id(&self) -> &'static str {
        match self {
            RestoreStep::StageAll => "stage-all",
            RestoreStep::StopAll => "stop-all",
            RestoreStep::SwapAll => "swap-all",
            RestoreStep::ConfigureAll => "configure-all",
            RestoreStep::StartAll => "start-all",
            RestoreStep::VerifyRestore => "verify-restore",
            RestoreStep::RollBackAll => "rollback-all",
        }
    }

    fn from_parts(action: &str, arg: &str) -> Option<RestoreStep> {
        if !arg.is_empty() {
            return None;
        }
        RestoreStep::ALL.into_iter().find(|s| s.id() == action)
    }

    fn describe(&self) -> &'static str {
        match self {
            RestoreStep::StageAll => "stream the snapshot to every member and restore it beside the data dir",
            RestoreStep::StopAll => "stop etcd on every member (the leader last)",
            RestoreStep::SwapAll => "swap the restored data dirs in (old ones kept)",
            RestoreStep::ConfigureAll => "write every member's environment for the new cluster",
            RestoreStep::StartAll => "start etcd on every member",
            RestoreStep::VerifyRestore => "verify the restored cluster",
            RestoreStep::RollBackAll => "put every member's pre-restore data dir back",
        }
    }

    fn waits_for(&self) -> &'static str {
        match self {
            RestoreStep::StageAll => "every agent verified the bytes and restored them",
            RestoreStep::StopAll => "every unit inactive",
            RestoreStep::SwapAll | RestoreStep::RollBackAll => "renamed (never deleted)",
            RestoreStep::ConfigureAll => "env files written",
            RestoreStep::StartAll => "every unit started",
            RestoreStep::VerifyRestore => {
                "healthy, one cluster ID and leader, revision at least the snapshot's, the same hashkv everywhere"
            }
        }
    }

    fn default_timeout(&self) -> Duration {
        match self {
            RestoreStep::StageAll => Duration::from_secs(1800),
            RestoreStep::StopAll | RestoreStep::StartAll | RestoreStep::VerifyRestore => {
                Duration::from_secs(180)
            }
            RestoreStep::SwapAll | RestoreStep::ConfigureAll | RestoreStep::RollBackAll => {
                Duration::from_secs(60)
            }
        }
    }
}

impl RecoverStep {
    fn id(&self) -> String {
        match self {
            RecoverStep::SnapshotFirst { member } => format!("snapshot:{member}"),
            RecoverStep::StopOthers => "stop-others".into(),
            RecoverStep::ForceNewCluster { member } => format!("force-new-cluster:{member}"),
            RecoverStep::Rejoin { member } => format!("rejoin:{member}"),
            RecoverStep::VerifyRecovery => "verify-recovery".into(),
        }
    }

    fn from_parts(action: &str, member: Option<String>) -> Option<RecoverStep> {
        Some(match action {
            "snapshot" => RecoverStep::SnapshotFirst { member: member? },
            "stop-others" if member.is_none() => RecoverStep::StopOthers,
            "force-new-cluster" => RecoverStep::ForceNewCluster { member: member? },
            "rejoin" => RecoverStep::Rejoin { member: member? },
            "verify-recovery" if member.is_none() => RecoverStep::VerifyRecovery,
            _ => return None,
        })
    }

    fn member(&self) -> Option<&str> {
        match self {
            RecoverStep::SnapshotFirst { member }
            | RecoverStep::ForceNewCluster { member }
            | RecoverStep::Rejoin { member } => Some(member),
            RecoverStep::StopOthers | RecoverStep::VerifyRecovery => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            RecoverStep::SnapshotFirst { member } => {
                format!("save a snapshot of {member} first (kept on this host)")
            }
            RecoverStep::StopOthers => "stop etcd on every other member".into(),
            RecoverStep::ForceNewCluster { member } => {
                format!("restart {member} once with force-new-cluster")
            }
            RecoverStep::Rejoin { member } => format!("rejoin {member} as a fresh learner and promote it"),
            RecoverStep::VerifyRecovery => "verify the recovered cluster".into(),
        }
    }

    fn waits_for(&self) -> String {
        match self {
            RecoverStep::SnapshotFirst { .. } => "the file written, its trailer verified".into(),
            RecoverStep::StopOthers => "every other reachable unit inactive".into(),
            RecoverStep::ForceNewCluster { member } => {
                format!(
                    "{member} the healthy leader of a one-member cluster; the flag removed from its env file"
                )
            }
            RecoverStep::Rejoin { member } => format!("{member} a healthy voter caught up with the leader"),
            RecoverStep::VerifyRecovery => {
                "every member a healthy voter, one leader, the same hashkv, a write accepted".into()
            }
        }
    }

    fn default_timeout(&self) -> Duration {
        match self {
            RecoverStep::SnapshotFirst { .. } => Duration::from_secs(1800),
            RecoverStep::Rejoin { .. } => Duration::from_secs(300),
            RecoverStep::StopOthers | RecoverStep::ForceNewCluster { .. } | RecoverStep::VerifyRecovery => {
                Duration::from_secs(180)
            }
        }
    }
}
