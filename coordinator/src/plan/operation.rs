//! What an operation is and what it carries, as one typed value: the journal
//! keeps it (schema v2), and the executor is built from it, on start and on
//! resume alike (`exec::Executor::for_record`). Nothing is looked up by a
//! string key; a record whose operation cannot be read is an error naming the
//! operation (see `journal::migrate` for records of schema v1).
//!
//! A disruptive operation (restart, member remove and replace) carries its
//! [`PreSnapshot`]: where its first step saves a verified snapshot (`None`
//! with `--no-snapshot`), and, once that step ran, what it saved.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::membership::MembershipArgs;
use super::planner::OpKind;
use super::recover::RecoverArgs;
use super::restore::RestoreArgs;
use super::safety::Tolerate;
use super::step::SnapshotTo;
use super::upgrade::UpgradeArgs;

/// The verified snapshot a disruptive operation starts with. Records
/// journaled before this existed lack it: they read as no snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreSnapshot {
    /// Where the first step saves it; `None`: `--no-snapshot` (no step).
    pub to: Option<SnapshotTo>,
    /// What the step saved, once it ran.
    pub saved: Option<SavedSnapshot>,
}

/// A snapshot saved and verified by an operation's first step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSnapshot {
    /// Where to find it: a file path, or the object's URL in the backup target.
    pub location: String,
    /// Its `.json` sidecar (path or URL).
    pub sidecar: String,
    /// The member it was taken from.
    pub member: String,
    /// The store revision it holds.
    pub revision: i64,
    /// Bytes, etcd's sha256 trailer included.
    pub size: u64,
    /// Hex sha256 of the database bytes (equal to the file's trailer).
    pub sha256: String,
}

impl PreSnapshot {
    /// A snapshot into `to`, or none.
    pub fn to(to: Option<SnapshotTo>) -> PreSnapshot {
        PreSnapshot { to, saved: None }
    }
}

/// One cluster-wide operation and its data. Serialized with its kind as the
/// `kind` tag, e.g. `{"kind":"restart","members":[],"force":false}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Operation {
    /// `etcdops defrag`: defragment members one at a time, the leader last.
    Defrag {
        /// `--rule` as the user wrote it (parsed again on resume), if any.
        rule: Option<String>,
        /// `--compact`: compact history to the current revision first.
        compact: bool,
        /// `--member`: only these members (empty: every member).
        members: Vec<String>,
    },
    /// `etcdops restart`: restart members one at a time, the leader last.
    Restart {
        /// `--member`: only these members (empty: every member).
        members: Vec<String>,
        /// `--force`: a restart may take the cluster below quorum.
        force: bool,
        /// The verified snapshot taken first.
        #[serde(default)]
        snapshot: PreSnapshot,
    },
    /// `etcdops compact`: compact the history up to `revision`.
    Compact { revision: i64 },
    /// `etcdops recover nospace`: compact, defragment, disarm, verify a write.
    RecoverNospace,
    /// `etcdops alarm disarm`.
    AlarmDisarm,
    /// `etcdops member add`.
    MemberAdd { membership: MembershipArgs, force: bool },
    /// `etcdops member remove`.
    MemberRemove {
        membership: MembershipArgs,
        force: bool,
        /// The verified snapshot taken first.
        #[serde(default)]
        snapshot: PreSnapshot,
    },
    /// `etcdops member replace`.
    MemberReplace {
        membership: MembershipArgs,
        force: bool,
        /// The verified snapshot taken first.
        #[serde(default)]
        snapshot: PreSnapshot,
    },
    /// `etcdops member promote`.
    MemberPromote { membership: MembershipArgs, force: bool },
    /// `etcdops restore --snapshot`: the snapshot, the new cluster's spec, and
    /// what each agent staged and swapped in so far (the step progress a
    /// resume or a rollback needs).
    Restore { restore: RestoreArgs },
    /// `etcdops restore --rollback OP`: put back the data dirs restore OP kept.
    RestoreRollback {
        /// The restore operation whose kept data dirs are put back.
        rollback_of: String,
    },
    /// `etcdops recover --force-new-cluster`: the survivor, who rejoins, and
    /// (once its first step ran) the survivor's snapshot.
    RecoverQuorum {
        recover: RecoverArgs,
        membership: MembershipArgs,
    },
    /// A scheduled backup (`etcdops serve`): one verified snapshot into the
    /// cluster's backup target, under the cluster's fence.
    Backup {
        /// Where it goes, and once saved, what was stored.
        snapshot: PreSnapshot,
    },
    /// `etcdops backup drill`: a backup restored into a throwaway etcd and
    /// checked (a read of the backup: no fence). The outcome once it ran.
    Drill {
        /// The backup's name in its target, e.g. `prod-20261201T000000Z.db`.
        backup: String,
        /// The target's URL.
        target: String,
        /// The figures compared, once the drill ran.
        #[serde(default)]
        outcome: Option<DrillOutcome>,
    },
    /// `etcdops housekeeping`: kept data dir copies pruned on every member
    /// by a count and an age, stale downloaded backups removed (fenced).
    Housekeeping {
        /// `--keep`: keep the newest this many copies.
        keep: Option<u32>,
        /// `--max-age` in seconds: keep copies younger than this.
        max_age_secs: Option<u64>,
        /// `--dry-run`: say what would be removed, remove nothing.
        dry_run: bool,
    },
    /// `etcdops certs renew`: new leaf certificates, staged, installed member by member.
    CertsRenew { renew: super::certs::RenewArgs },
    /// `etcdops certs rotate-ca`: etcd's CA replaced in three phases of rolling restarts.
    CertsRotateCa { rotate: super::rotate_ca::RotateCaArgs },
    /// `etcdops upgrade`: the target binary and version, each member's
    /// binary and version before, and the verified snapshot taken first.
    Upgrade {
        upgrade: UpgradeArgs,
        #[serde(default)]
        snapshot: PreSnapshot,
    },
    /// `etcdops upgrade --rollback OP`: every member back to the binary it
    /// ran before upgrade OP.
    UpgradeRollback {
        rollback_of: String,
        upgrade: UpgradeArgs,
    },
}

/// What a restore drill found: pass or fail, and the figures it compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillOutcome {
    pub passed: bool,
    /// The restored etcd's revision, live key count and HashKV.
    pub revision: i64,
    pub keys: u64,
    pub hash_kv: u32,
    /// Each comparison that failed, naming both figures.
    pub mismatches: Vec<String>,
}

impl Operation {
    /// The operation's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Operation::Defrag { .. } => OpKind::Defrag,
            Operation::Restart { .. } => OpKind::Restart,
            Operation::Compact { .. } => OpKind::Compact,
            Operation::RecoverNospace => OpKind::RecoverNospace,
            Operation::AlarmDisarm => OpKind::AlarmDisarm,
            Operation::MemberAdd { .. } => OpKind::MemberAdd,
            Operation::MemberRemove { .. } => OpKind::MemberRemove,
            Operation::MemberReplace { .. } => OpKind::MemberReplace,
            Operation::MemberPromote { .. } => OpKind::MemberPromote,
            Operation::Restore { .. } => OpKind::Restore,
            Operation::RestoreRollback { .. } => OpKind::RestoreRollback,
            Operation::RecoverQuorum { .. } => OpKind::RecoverQuorum,
            Operation::Backup { .. } => OpKind::Backup,
            Operation::Drill { .. } => OpKind::Drill,
            Operation::Housekeeping { .. } => OpKind::Housekeeping,
            Operation::CertsRenew { .. } => OpKind::CertsRenew,
            Operation::CertsRotateCa { .. } => OpKind::CertsRotateCa,
            Operation::Upgrade { .. } => OpKind::Upgrade,
            Operation::UpgradeRollback { .. } => OpKind::UpgradeRollback,
        }
    }

    /// A membership operation of `kind` (add, remove, replace, promote),
    /// without a snapshot first (see [`Operation::with_snapshot`]).
    pub fn membership_op(kind: OpKind, membership: MembershipArgs, force: bool) -> Option<Operation> {
        let snapshot = PreSnapshot::default();
        Some(match kind {
            OpKind::MemberAdd => Operation::MemberAdd { membership, force },
            OpKind::MemberRemove => Operation::MemberRemove {
                membership,
                force,
                snapshot,
            },
            OpKind::MemberReplace => Operation::MemberReplace {
                membership,
                force,
                snapshot,
            },
            OpKind::MemberPromote => Operation::MemberPromote { membership, force },
            _ => return None,
        })
    }

    /// The same operation with a verified snapshot into `to` first (kinds
    /// that take one; others are returned unchanged).
    pub fn with_snapshot(mut self, to: Option<SnapshotTo>) -> Operation {
        if let Some(snapshot) = self.pre_snapshot_mut() {
            *snapshot = PreSnapshot::to(to);
        }
        self
    }

    /// The snapshot a disruptive operation starts with.
    pub fn pre_snapshot(&self) -> Option<&PreSnapshot> {
        match self {
            Operation::Restart { snapshot, .. }
            | Operation::MemberRemove { snapshot, .. }
            | Operation::MemberReplace { snapshot, .. }
            | Operation::Backup { snapshot }
            | Operation::Upgrade { snapshot, .. } => Some(snapshot),
            _ => None,
        }
    }

    /// The snapshot a disruptive operation starts with, to fill in.
    pub fn pre_snapshot_mut(&mut self) -> Option<&mut PreSnapshot> {
        match self {
            Operation::Restart { snapshot, .. }
            | Operation::MemberRemove { snapshot, .. }
            | Operation::MemberReplace { snapshot, .. }
            | Operation::Backup { snapshot }
            | Operation::Upgrade { snapshot, .. } => Some(snapshot),
            _ => None,
        }
    }

    /// `--force`: steps may take the cluster below quorum.
    pub fn force(&self) -> bool {
        match self {
            Operation::Restart { force, .. }
            | Operation::MemberAdd { force, .. }
            | Operation::MemberRemove { force, .. }
            | Operation::MemberReplace { force, .. }
            | Operation::MemberPromote { force, .. } => *force,
            _ => false,
        }
    }

    /// Who joins and who leaves (membership operations and a recovery's rejoins).
    pub fn membership(&self) -> MembershipArgs {
        match self {
            Operation::MemberAdd { membership, .. }
            | Operation::MemberRemove { membership, .. }
            | Operation::MemberReplace { membership, .. }
            | Operation::MemberPromote { membership, .. }
            | Operation::RecoverQuorum { membership, .. } => membership.clone(),
            _ => MembershipArgs::default(),
        }
    }

    /// Members are down by design between steps (a restore, its rollback, a
    /// majority-loss recovery): only their agents must answer before a step.
    pub fn members_may_be_down(&self) -> bool {
        matches!(
            self,
            Operation::Restore { .. } | Operation::RestoreRollback { .. } | Operation::RecoverQuorum { .. }
        )
    }

    /// The restore's data, for a restore.
    pub fn restore(&self) -> Option<&RestoreArgs> {
        match self {
            Operation::Restore { restore } => Some(restore),
            _ => None,
        }
    }

    /// The rotation's data, for `certs rotate-ca`.
    pub fn rotate_ca(&self) -> Option<&super::rotate_ca::RotateCaArgs> {
        match self {
            Operation::CertsRotateCa { rotate } => Some(rotate),
            _ => None,
        }
    }

    /// Where new certificates and keys wait for a renewal or a CA
    /// rotation (removed when the operation succeeds).
    pub fn staging_dir(&self) -> Option<&std::path::Path> {
        match self {
            Operation::CertsRenew { renew } => Some(&renew.staging_dir),
            Operation::CertsRotateCa { rotate } => Some(&rotate.staging_dir),
            _ => None,
        }
    }

    /// The renewal's data, for `certs renew`.
    pub fn renew(&self) -> Option<&super::certs::RenewArgs> {
        match self {
            Operation::CertsRenew { renew } => Some(renew),
            _ => None,
        }
    }

    /// Where each member's step switches to and what it must report then:
    /// an upgrade's target, or a rollback's binary and version from before.
    pub fn upgrade_target(&self, member: &str) -> Option<(String, String)> {
        match self {
            Operation::Upgrade { upgrade, .. } => Some((upgrade.binary.clone(), upgrade.version.clone())),
            Operation::UpgradeRollback { upgrade, .. } => upgrade
                .from
                .get(member)
                .map(|b| (b.clone(), upgrade.from_version.clone())),
            _ => None,
        }
    }

    /// The recovery's data, for a majority-loss recovery.
    pub fn recover(&self) -> Option<&RecoverArgs> {
        match self {
            Operation::RecoverQuorum { recover, .. } => Some(recover),
            _ => None,
        }
    }

    /// The members the executor works with, out of the fleet's: a recovery
    /// sees only the survivor and the members it rejoins; others see all.
    pub fn sees_member(&self, name: &str) -> bool {
        match self {
            Operation::RecoverQuorum { recover, .. } => {
                recover.survivor == name || recover.rejoin.iter().any(|r| r.name == name)
            }
            _ => true,
        }
    }
}

/// How an operation runs, whatever its kind: kept with it, so a resume runs
/// with the options it was started with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// `--step-timeout` in seconds: each step's limit instead of its kind's default.
    pub step_timeout_secs: Option<f64>,
    /// `--ignore-slow-disk`: go ahead although a member's disk is over its fsync threshold.
    pub ignore_slow_disk: bool,
    /// `--skip-hashkv-check`: no HashKV comparison across members after the
    /// steps that change a member.
    #[serde(default)]
    pub skip_hashkv_check: bool,
}

impl RunOptions {
    /// `--step-timeout`, when given and positive.
    pub fn step_timeout(&self) -> Option<Duration> {
        self.step_timeout_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
    }

    /// What the operation's safety checks tolerate.
    pub fn tolerate(&self, kind: OpKind) -> Tolerate<'static> {
        kind.tolerate(self.ignore_slow_disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::membership::Leaving;

    #[test]
    fn every_kind_round_trips_through_json_with_its_tag() {
        let leaving = MembershipArgs {
            leaving: Some(Leaving {
                name: "etcd3".into(),
                id: 3,
                peer_urls: vec!["http://127.0.0.3:2380".into()],
                alive: true,
                is_learner: false,
            }),
            ..Default::default()
        };
        let ops = [
            Operation::Defrag {
                rule: Some("dbSize > 1".into()),
                compact: true,
                members: vec!["etcd1".into()],
            },
            Operation::Restart {
                members: Vec::new(),
                force: true,
                snapshot: PreSnapshot {
                    to: Some(SnapshotTo::Dir {
                        path: "/var/lib/etcdops/snapshots".into(),
                    }),
                    saved: Some(SavedSnapshot {
                        location: "/var/lib/etcdops/snapshots/c-20261201T000000Z.db".into(),
                        sidecar: "/var/lib/etcdops/snapshots/c-20261201T000000Z.db.json".into(),
                        member: "etcd2".into(),
                        revision: 7,
                        size: 20_480,
                        sha256: "0".repeat(64),
                    }),
                },
            },
            Operation::Compact { revision: 42 },
            Operation::RecoverNospace,
            Operation::AlarmDisarm,
            Operation::MemberRemove {
                membership: leaving,
                force: false,
                snapshot: PreSnapshot::to(Some(SnapshotTo::Backup {
                    url: "s3://bucket/prefix".into(),
                })),
            },
            Operation::Restore {
                restore: RestoreArgs::default(),
            },
            Operation::RestoreRollback {
                rollback_of: "restore-1".into(),
            },
            Operation::RecoverQuorum {
                recover: RecoverArgs::default(),
                membership: MembershipArgs::default(),
            },
            Operation::Backup {
                snapshot: PreSnapshot::to(Some(SnapshotTo::Backup {
                    url: "file:///var/backups/etcd".into(),
                })),
            },
            Operation::Drill {
                backup: "c-20261201T000000Z.db".into(),
                target: "file:///b".into(),
                outcome: Some(DrillOutcome {
                    passed: false,
                    revision: 7,
                    keys: 3,
                    hash_kv: 42,
                    mismatches: vec!["revision: sidecar 8, restored 7".into()],
                }),
            },
            Operation::Housekeeping {
                keep: Some(1),
                max_age_secs: None,
                dry_run: true,
            },
        ];
        for op in ops {
            let json = serde_json::to_value(&op).expect("json");
            assert_eq!(json["kind"], op.kind().as_str(), "{json}");
            let back: Operation = serde_json::from_value(json).expect("back");
            assert_eq!(back, op);
        }
    }

    #[test]
    fn a_missing_field_is_an_error_not_a_default() {
        let err = serde_json::from_value::<Operation>(serde_json::json!({"kind": "restart", "members": []}))
            .expect_err("force missing");
        assert!(err.to_string().contains("force"), "{err}");
        let err =
            serde_json::from_value::<Operation>(serde_json::json!({"kind": "reboot"})).expect_err("kind");
        assert!(err.to_string().contains("reboot"), "{err}");
    }

    #[test]
    fn force_membership_and_phase_follow_the_kind() {
        assert!(
            Operation::Restart {
                members: Vec::new(),
                force: true,
                snapshot: PreSnapshot::default(),
            }
            .force()
        );
        assert!(!Operation::Compact { revision: 1 }.force());
        assert!(
            Operation::RestoreRollback {
                rollback_of: "x".into()
            }
            .members_may_be_down()
        );
        assert!(!Operation::AlarmDisarm.members_may_be_down());
        let recover = Operation::RecoverQuorum {
            recover: RecoverArgs {
                survivor: "etcd1".into(),
                ..Default::default()
            },
            membership: MembershipArgs::default(),
        };
        assert!(recover.sees_member("etcd1") && !recover.sees_member("etcd2"));
    }

    #[test]
    fn a_record_from_before_the_snapshot_step_reads_as_no_snapshot() {
        let op: Operation =
            serde_json::from_value(serde_json::json!({"kind": "restart", "members": [], "force": false}))
                .expect("a v2 restart without the field");
        assert_eq!(op.pre_snapshot(), Some(&PreSnapshot::default()));
        let op = Operation::membership_op(OpKind::MemberReplace, MembershipArgs::default(), false)
            .expect("membership")
            .with_snapshot(Some(SnapshotTo::Dir { path: "/s".into() }));
        assert_eq!(
            op.pre_snapshot().and_then(|s| s.to.clone()),
            Some(SnapshotTo::Dir { path: "/s".into() })
        );
        let err = serde_json::from_value::<Operation>(serde_json::json!(
            {"kind": "restart", "members": [], "force": false, "snapshot": {"to": {"kind": "ftp", "path": "/"}}}
        ))
        .expect_err("an unknown destination");
        assert!(err.to_string().contains("ftp"), "{err}");
        assert!(
            Operation::AlarmDisarm
                .with_snapshot(Some(SnapshotTo::Dir { path: "/s".into() }))
                .pre_snapshot()
                .is_none()
        );
    }

    #[test]
    fn step_timeout_ignores_nonsense() {
        let o = |s| RunOptions {
            step_timeout_secs: s,
            ..RunOptions::default()
        };
        assert_eq!(o(Some(2.5)).step_timeout(), Some(Duration::from_millis(2500)));
        assert_eq!(o(Some(0.0)).step_timeout(), None);
        assert_eq!(o(Some(f64::NAN)).step_timeout(), None);
        assert_eq!(o(None).step_timeout(), None);
    }
}
