//! Reading a record of schema v1 into today's typed record.
//!
//! v1 kept what an operation carries in an untyped `args` object next to its
//! `kind` string: the run options (`step_timeout_secs`, `ignore_slow_disk`),
//! `membership` (written for every kind), and per kind `rule`/`compact`/
//! `members` (defrag), `members`/`force` (restart), `revision` (compact),
//! `force` (member add/remove/replace/promote), `restore` (restore),
//! `rollback_of` (restore rollback), `recover` (recover-quorum). Each kind's
//! fields are read with a struct of their own: a field today's v1 writer
//! always wrote and that is missing is an error naming it, never a default.
//! `tests/fixtures/journal-v1` holds records written by the v1 code.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::record::{OpState, OperationRecord, StepRecord};
use crate::plan::membership::MembershipArgs;
use crate::plan::operation::{Operation, RunOptions};
use crate::plan::planner::OpKind;
use crate::plan::recover::RecoverArgs;
use crate::plan::restore::RestoreArgs;

/// A v1 record: today's record with `kind` and `args` in place of `operation` and `options`.
#[derive(Deserialize)]
struct V1Record {
    id: String,
    kind: String,
    cluster: String,
    fleet: std::path::PathBuf,
    args: serde_json::Value,
    holder: String,
    epoch: u64,
    state: OpState,
    created_at_unix: i64,
    updated_at_unix: i64,
    error: Option<String>,
    steps: Vec<StepRecord>,
}

/// The options every v1 operation kept.
#[derive(Deserialize)]
struct V1Common {
    step_timeout_secs: Option<f64>,
    ignore_slow_disk: bool,
    membership: MembershipArgs,
}

#[derive(Deserialize)]
struct V1Defrag {
    rule: Option<String>,
    compact: bool,
    members: Vec<String>,
}

#[derive(Deserialize)]
struct V1Restart {
    members: Vec<String>,
    force: bool,
}

#[derive(Deserialize)]
struct V1Compact {
    revision: i64,
}

#[derive(Deserialize)]
struct V1Force {
    force: bool,
}

#[derive(Deserialize)]
struct V1Restore {
    restore: RestoreArgs,
}

#[derive(Deserialize)]
struct V1Rollback {
    rollback_of: String,
}

#[derive(Deserialize)]
struct V1Recover {
    recover: RecoverArgs,
}

/// Reads a v1 record (its `schema` field already removed). The error says what is wrong.
pub(super) fn from_v1(value: serde_json::Value) -> Result<OperationRecord, String> {
    let v1: V1Record =
        serde_json::from_value(value).map_err(|e| format!("the record does not parse: {e}"))?;
    let kind = OpKind::parse(&v1.kind).ok_or_else(|| format!("unknown kind {:?}", v1.kind))?;
    let common: V1Common = args(&v1.args, "the run options")?;
    let operation = match kind {
        OpKind::Defrag => {
            let a: V1Defrag = args(&v1.args, "the defrag options")?;
            Operation::Defrag {
                rule: a.rule,
                compact: a.compact,
                members: a.members,
            }
        }
        OpKind::Restart => {
            let a: V1Restart = args(&v1.args, "the restart options")?;
            Operation::Restart {
                members: a.members,
                force: a.force,
                // v1 had no snapshot step.
                snapshot: Default::default(),
            }
        }
        OpKind::Compact => {
            let a: V1Compact = args(&v1.args, "the compaction's revision")?;
            Operation::Compact { revision: a.revision }
        }
        OpKind::RecoverNospace => Operation::RecoverNospace,
        OpKind::AlarmDisarm => Operation::AlarmDisarm,
        OpKind::MemberAdd | OpKind::MemberRemove | OpKind::MemberReplace | OpKind::MemberPromote => {
            let a: V1Force = args(&v1.args, "the membership options")?;
            Operation::membership_op(kind, common.membership, a.force)
                .ok_or_else(|| format!("{kind} is not a membership operation"))?
        }
        OpKind::Restore => {
            let a: V1Restore = args(&v1.args, "the restore's snapshot and spec")?;
            Operation::Restore { restore: a.restore }
        }
        OpKind::RestoreRollback => {
            let a: V1Rollback = args(&v1.args, "the restore it rolls back")?;
            Operation::RestoreRollback {
                rollback_of: a.rollback_of,
            }
        }
        OpKind::Drill | OpKind::Housekeeping | OpKind::CertsRenew | OpKind::CertsRotateCa => {
            return Err(format!("{kind} did not exist in schema v1"));
        }
        OpKind::RecoverQuorum => {
            let a: V1Recover = args(&v1.args, "the recovery's survivor and rejoins")?;
            Operation::RecoverQuorum {
                recover: a.recover,
                membership: common.membership,
            }
        }
        OpKind::Backup => return Err(format!("{kind} did not exist in schema v1")),
        OpKind::Upgrade | OpKind::UpgradeRollback => {
            return Err(format!(
                "{kind}: schema v1 had no etcd upgrade; the record is not one v1 wrote"
            ));
        }
    };
    Ok(OperationRecord {
        id: v1.id,
        kind,
        cluster: v1.cluster,
        fleet: v1.fleet,
        operation,
        options: RunOptions {
            step_timeout_secs: common.step_timeout_secs,
            ignore_slow_disk: common.ignore_slow_disk,
            // v1 had no such option: it never compared HashKV between steps.
            skip_hashkv_check: false,
        },
        holder: v1.holder,
        operator: None,
        epoch: v1.epoch,
        state: v1.state,
        created_at_unix: v1.created_at_unix,
        updated_at_unix: v1.updated_at_unix,
        error: v1.error,
        steps: v1.steps,
    })
}

fn args<T: DeserializeOwned>(args: &serde_json::Value, what: &str) -> Result<T, String> {
    T::deserialize(args).map_err(|e| format!("{what} in `args`: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn v1(kind: &str, args: serde_json::Value) -> serde_json::Value {
        json!({
            "id": format!("{kind}-20261130T120000Z-0001"), "kind": kind, "cluster": "c", "fleet": "/f.toml",
            "args": args, "holder": "u@h (pid 1)", "epoch": 3, "state": "failed",
            "created_at_unix": 1, "updated_at_unix": 2, "error": "stopped",
            "steps": [{"id": "restart:etcd1", "description": "restart etcd1", "state": "done",
                       "started_at_unix": 1, "finished_at_unix": 2, "attempts": 1, "detail": "ok"}]
        })
    }

    fn common() -> serde_json::Value {
        json!({"step_timeout_secs": 90.0, "ignore_slow_disk": true,
               "membership": {"joining": null, "leaving": null, "rejoining": []}})
    }

    fn with(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
        if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
            a.extend(b.clone());
        }
        a
    }

    #[test]
    fn a_v1_restart_reads_typed_with_its_options() {
        let r = from_v1(v1(
            "restart",
            with(common(), json!({"members": ["etcd2"], "force": true})),
        ))
        .expect("v1");
        assert_eq!(
            r.operation,
            Operation::Restart {
                members: vec!["etcd2".into()],
                force: true,
                snapshot: Default::default(),
            }
        );
        assert_eq!(r.kind, OpKind::Restart);
        assert_eq!(r.options.step_timeout_secs, Some(90.0));
        assert!(r.options.ignore_slow_disk);
        assert_eq!((r.epoch, r.state, r.steps.len()), (3, OpState::Failed, 1));
    }

    #[test]
    fn a_missing_key_is_an_error_naming_it() {
        let err = from_v1(v1("restart", with(common(), json!({"members": []})))).expect_err("no force");
        assert!(err.contains("restart options") && err.contains("force"), "{err}");
        let err = from_v1(v1("compact", json!({"revision": 5}))).expect_err("no run options");
        assert!(err.contains("ignore_slow_disk"), "{err}");
        let err = from_v1(v1("restore", common())).expect_err("no restore");
        assert!(err.contains("restore"), "{err}");
        let err = from_v1(v1("reboot", common())).expect_err("kind");
        assert!(err.contains("reboot"), "{err}");
    }

    #[test]
    fn every_kind_has_a_reading() {
        let cases = [
            ("defrag", json!({"rule": null, "compact": false, "members": []})),
            ("compact", json!({"revision": 9})),
            ("recover-nospace", json!({})),
            ("alarm-disarm", json!({})),
            ("member-add", json!({"force": false})),
            ("member-remove", json!({"force": true})),
            ("member-replace", json!({"force": false})),
            ("member-promote", json!({"force": false})),
            ("restore-rollback", json!({"rollback_of": "restore-1"})),
        ];
        for (kind, extra) in cases {
            let r = from_v1(v1(kind, with(common(), extra))).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(r.operation.kind().as_str(), kind);
        }
    }
}
