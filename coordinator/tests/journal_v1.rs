//! Journals written by the v1 code (schema 1: `kind` + an untyped `args` object) read by today's
//! code: every record migrates to the typed operation, field by field equal to what v1 recorded
//! (`tests/fixtures/journal-v1`, made by its `make.sh` against a real sandbox), and the file is
//! marked schema 2 once opened, so an older etcdops refuses it instead of misreading it.

use std::path::{Path, PathBuf};

use etcdops_coordinator::journal::{Journal, OpState, SCHEMA_VERSION};
use etcdops_coordinator::plan::operation::Operation;
use etcdops_coordinator::plan::planner::OpKind;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1")
}

/// A copy of the v1 journal (the fixture itself is never written).
fn v1_journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.redb");
    std::fs::copy(fixtures().join("journal.redb"), &path).expect("copy the fixture");
    let journal = Journal::open(&path).expect("a v1 journal opens");
    (dir, journal)
}

/// What v1's `op show -w json` printed for each operation, by ID.
fn shown() -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures().join("ops")).expect("ops dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "list.json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        out.push(serde_json::from_str(&text).expect("json"));
    }
    out
}

#[test]
fn every_v1_record_reads_into_the_typed_operation() {
    let (_dir, journal) = v1_journal();
    let records = journal.list().expect("every v1 record migrates");
    let shown = shown();
    assert_eq!(records.len(), shown.len(), "one record per fixture");
    let mut kinds = std::collections::BTreeSet::new();
    for v1 in &shown {
        let id = v1["id"].as_str().expect("id");
        let r = records
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        let args = &v1["args"];
        assert_eq!(r.kind.as_str(), v1["kind"].as_str().expect("kind"), "{id}");
        assert_eq!(r.operation.kind(), r.kind, "{id}");
        assert_eq!(serde_json::to_value(r.state).expect("state"), v1["state"], "{id}");
        assert_eq!(r.epoch, v1["epoch"].as_u64().expect("epoch"), "{id}");
        assert_eq!(
            serde_json::to_value(&r.steps).expect("steps"),
            v1["steps"],
            "{id}"
        );
        assert_eq!(
            r.options.ignore_slow_disk,
            args["ignore_slow_disk"].as_bool().expect("bool"),
            "{id}"
        );
        assert_eq!(
            r.options.step_timeout_secs,
            args["step_timeout_secs"].as_f64(),
            "{id}"
        );
        // Each kind's own data, equal to what v1 kept (64-bit member IDs exact).
        let op = serde_json::to_value(&r.operation).expect("operation");
        match &r.operation {
            Operation::Defrag { .. } => {
                assert_eq!(op["rule"], args["rule"], "{id}");
                assert_eq!(op["compact"], args["compact"], "{id}");
                assert_eq!(op["members"], args["members"], "{id}");
            }
            Operation::Restart { .. } => {
                assert_eq!(op["members"], args["members"], "{id}");
                assert_eq!(op["force"], args["force"], "{id}");
            }
            Operation::Compact { revision } => assert_eq!(Some(*revision), args["revision"].as_i64(), "{id}"),
            Operation::RecoverNospace | Operation::AlarmDisarm => {}
            Operation::MemberAdd { .. }
            | Operation::MemberRemove { .. }
            | Operation::MemberReplace { .. }
            | Operation::MemberPromote { .. } => {
                assert_eq!(op["membership"], args["membership"], "{id}");
                assert_eq!(op["force"], args["force"], "{id}");
            }
            Operation::Restore { .. } => assert_eq!(op["restore"], args["restore"], "{id}"),
            Operation::RestoreRollback { rollback_of } => {
                assert_eq!(Some(rollback_of.as_str()), args["rollback_of"].as_str(), "{id}")
            }
            Operation::RecoverQuorum { .. } => {
                assert_eq!(op["recover"], args["recover"], "{id}");
                assert_eq!(op["membership"], args["membership"], "{id}");
            }
            Operation::Backup { .. }
            | Operation::Drill { .. }
            | Operation::Housekeeping { .. }
            | Operation::CertsRenew { .. }
            | Operation::CertsRotateCa { .. }
            | Operation::Upgrade { .. }
            | Operation::UpgradeRollback { .. } => {
                panic!("{id}: kinds newer than schema v1 cannot come from a v1 record")
            }
        }
        kinds.insert(r.kind.as_str());
    }
    // Every kind schema v1 had (serve's backup, drill, housekeeping, certs-renew, certs-rotate-ca and the etcd upgrade came with v2).
    let every: std::collections::BTreeSet<&str> = OpKind::ALL
        .into_iter()
        .filter(|k| {
            !matches!(
                k,
                OpKind::Backup
                    | OpKind::Drill
                    | OpKind::Housekeeping
                    | OpKind::CertsRenew
                    | OpKind::CertsRotateCa
                    | OpKind::Upgrade
                    | OpKind::UpgradeRollback
            )
        })
        .map(OpKind::as_str)
        .collect();
    assert_eq!(kinds, every, "the fixtures hold every kind");
    for state in [
        OpState::Running,
        OpState::Paused,
        OpState::Failed,
        OpState::Aborted,
        OpState::Succeeded,
    ] {
        assert!(records.iter().any(|r| r.state == state), "a {state} record");
    }
}

#[test]
fn a_migrated_record_is_written_back_as_v2_and_reads_the_same() {
    let (_dir, journal) = v1_journal();
    let before = journal.list().expect("list");
    let paused = before
        .iter()
        .find(|r| r.state == OpState::Paused)
        .expect("a paused op");
    let after = journal
        .update(&paused.id, |r| r.error = Some("looked at".into()))
        .expect("update");
    assert_eq!(after.operation, paused.operation);
    let again = journal.get(&paused.id).expect("get").expect("present");
    assert_eq!(again, after);
    assert_eq!(SCHEMA_VERSION, 2);
}
