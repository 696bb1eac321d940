//! Tests of the journal against real redb files in temporary directories.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};

use super::store::{META, OPERATIONS, SCHEMA_KEY};
use super::*;

fn op(id: &str, cluster: &str, created: i64) -> OperationRecord {
    OperationRecord {
        id: id.to_string(),
        kind: crate::plan::planner::OpKind::Restart,
        cluster: cluster.to_string(),
        fleet: PathBuf::from("/etc/etcdops/fleet.toml"),
        operation: crate::plan::operation::Operation::Restart {
            members: vec!["etcd1".into(), "etcd2".into()],
            force: false,
            snapshot: Default::default(),
        },
        options: Default::default(),
        holder: "alice@ops1 (pid 42)".to_string(),
        operator: None,
        epoch: 7,
        state: OpState::Running,
        created_at_unix: created,
        updated_at_unix: created,
        error: None,
        steps: vec![
            StepRecord::pending("defrag:etcd1", "defragment etcd1"),
            StepRecord::pending("defrag:etcd2", "defragment etcd2"),
        ],
    }
}

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path().join("state/etcdops/journal.redb")).expect("open");
    (dir, journal)
}

#[test]
fn creates_gets_and_refuses_an_existing_id() {
    let (_dir, j) = journal();
    let a = op("defrag-20261125T183000Z-3f9a", "prod-a", 100);
    j.create(&a).expect("create");
    assert_eq!(j.get(&a.id).expect("get"), Some(a.clone()));
    assert_eq!(j.get("defrag-nope").expect("get"), None);
    let err = j.create(&a).expect_err("duplicate");
    assert!(
        matches!(err, JournalError::Exists { ref id, .. } if *id == a.id),
        "{err}"
    );
    assert!(err.to_string().contains("journal.redb"), "{err}");
}

#[test]
fn lists_newest_first_and_finds_running_ops_of_a_cluster() {
    let (_dir, j) = journal();
    assert!(j.list().expect("list").is_empty());
    for (id, cluster, created) in [
        ("restart-1", "prod-a", 200),
        ("defrag-2", "prod-a", 300),
        ("compact-3", "prod-b", 100),
        ("alarm-4", "prod-a", 300),
    ] {
        j.create(&op(id, cluster, created)).expect("create");
    }
    let ids: Vec<_> = j.list().expect("list").into_iter().map(|o| o.id).collect();
    assert_eq!(ids, ["defrag-2", "alarm-4", "restart-1", "compact-3"]);

    j.finish("defrag-2", OpState::Succeeded, None).expect("finish");
    let running: Vec<_> = j
        .running_for_cluster("prod-a")
        .expect("running")
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(running, ["alarm-4", "restart-1"]);
    assert!(j.running_for_cluster("prod-c").expect("running").is_empty());
}

#[test]
fn updates_in_place_and_keeps_the_id() {
    let (_dir, j) = journal();
    j.create(&op("defrag-1", "prod-a", 100)).expect("create");
    let updated = j
        .update("defrag-1", |o| {
            o.epoch = 8;
            o.id = "something-else".to_string();
        })
        .expect("update");
    assert_eq!(updated.id, "defrag-1");
    assert_eq!(updated.epoch, 8);
    assert!(updated.updated_at_unix > 100);
    assert_eq!(j.get("defrag-1").expect("get"), Some(updated));
    assert_eq!(j.get("something-else").expect("get"), None);
    let err = j.update("restart-9", |_| {}).expect_err("missing");
    assert!(matches!(err, JournalError::NotFound { .. }), "{err}");
}

#[test]
fn steps_go_through_their_states() {
    let (_dir, j) = journal();
    j.create(&op("defrag-1", "prod-a", 100)).expect("create");

    let o = j.step_started("defrag-1", "defrag:etcd1").expect("start");
    let s = o.step("defrag:etcd1").expect("step");
    assert_eq!((s.state, s.attempts), (StepState::Running, 1));
    assert!(s.started_at_unix.is_some() && s.finished_at_unix.is_none());

    let o = j
        .step_finished(
            "defrag-1",
            "defrag:etcd1",
            StepState::Failed,
            Some("agent unreachable".into()),
        )
        .expect("fail");
    let s = o.step("defrag:etcd1").expect("step");
    assert_eq!(s.state, StepState::Failed);
    assert!(s.finished_at_unix.is_some());

    // A retry counts a second attempt and clears the finish time.
    let o = j.step_started("defrag-1", "defrag:etcd1").expect("restart");
    let s = o.step("defrag:etcd1").expect("step");
    assert_eq!(
        (s.state, s.attempts, s.finished_at_unix),
        (StepState::Running, 2, None)
    );
    let o = j
        .step_finished(
            "defrag-1",
            "defrag:etcd1",
            StepState::Done,
            Some("db 251 MB -> 12 MB in 3.1 s".into()),
        )
        .expect("done");
    assert_eq!(o.next_step().map(|s| s.id.as_str()), Some("defrag:etcd2"));
    j.step_finished(
        "defrag-1",
        "defrag:etcd2",
        StepState::Skipped,
        Some("already compact".into()),
    )
    .expect("skip");

    // Not final states and unknown steps are refused, and nothing is written.
    let before = j.get("defrag-1").expect("get");
    let err = j
        .step_finished("defrag-1", "defrag:etcd2", StepState::Pending, None)
        .expect_err("pending");
    assert!(matches!(err, JournalError::StepNotFinal { .. }), "{err}");
    let err = j.step_started("defrag-1", "defrag:etcd9").expect_err("no step");
    assert!(
        matches!(err, JournalError::NoStep { ref step, .. } if step == "defrag:etcd9"),
        "{err}"
    );
    let err = j.finish("defrag-1", OpState::Running, None).expect_err("running");
    assert!(matches!(err, JournalError::OpNotFinal { .. }), "{err}");
    assert_eq!(j.get("defrag-1").expect("get"), before);

    let o = j.finish("defrag-1", OpState::Succeeded, None).expect("finish");
    assert_eq!((o.state, o.steps_complete()), (OpState::Succeeded, 2));
}

#[test]
fn finds_by_unique_prefix_and_lists_candidates_when_ambiguous() {
    let (_dir, j) = journal();
    for id in [
        "defrag-20261125T183000Z-3f9a",
        "defrag-20261125T190000Z-0b12",
        "restart-20261125T183000Z-77aa",
    ] {
        j.create(&op(id, "prod-a", 100)).expect("create");
    }
    assert_eq!(
        j.find("restart").expect("prefix").id,
        "restart-20261125T183000Z-77aa"
    );
    assert_eq!(
        j.find("defrag-20261125T19").expect("prefix").id,
        "defrag-20261125T190000Z-0b12"
    );
    assert_eq!(
        j.find("defrag-20261125T183000Z-3f9a").expect("exact").id,
        "defrag-20261125T183000Z-3f9a"
    );
    let err = j.find("defrag-").expect_err("ambiguous");
    match &err {
        JournalError::Ambiguous { candidates, .. } => assert_eq!(
            candidates,
            &["defrag-20261125T183000Z-3f9a", "defrag-20261125T190000Z-0b12"]
        ),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("defrag-20261125T190000Z-0b12"), "{err}");
    for missing in ["compact", ""] {
        let err = j.find(missing).expect_err("missing");
        assert!(matches!(err, JournalError::NotFound { .. }), "{err}");
    }
}

#[test]
fn reopening_finds_what_was_written_with_private_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state/etcdops/journal.redb");
    let j = Journal::open(&path).expect("open");
    j.create(&op("defrag-1", "prod-a", 100)).expect("create");
    j.step_started("defrag-1", "defrag:etcd1").expect("start");
    drop(j);

    let j = Journal::open(&path).expect("reopen");
    let o = j.get("defrag-1").expect("get").expect("present");
    assert_eq!(o.step("defrag:etcd1").map(|s| s.attempts), Some(1));
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(dir.path().join("state/etcdops").as_path()), 0o700);
}

#[test]
fn other_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database\n".repeat(1000)).expect("write");
    let short = dir.path().join("short");
    std::fs::write(&short, "x").expect("write");
    for path in [&text, &short] {
        let err = Journal::open(path).expect_err("not a journal");
        assert!(matches!(err, JournalError::NotAJournal { .. }), "{path:?}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("move it aside"),
            "{message}"
        );
    }

    // A redb database of another program.
    let other = dir.path().join("other.redb");
    {
        let db = Database::create(&other).expect("create");
        let txn = db.begin_write().expect("txn");
        txn.open_table(TableDefinition::<&str, &str>::new("things"))
            .expect("table");
        txn.commit().expect("commit");
    }
    let err = Journal::open(&other).expect_err("other redb");
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
    assert!(err.to_string().contains("things"), "{err}");
}

#[test]
fn newer_schemas_are_refused() {
    let (dir, j) = journal();
    j.create(&op("defrag-1", "prod-a", 100)).expect("create");
    {
        let db = Database::open(j.path()).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut table = txn.open_table(OPERATIONS).expect("table");
            let mut record = serde_json::to_value(op("defrag-2", "prod-a", 100)).expect("json");
            record["schema"] = serde_json::json!(3);
            let text = record.to_string();
            table.insert("defrag-2", text.as_str()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = j.get("defrag-2").expect_err("newer record");
    assert!(matches!(err, JournalError::NewerSchema { found: 3, .. }), "{err}");
    assert!(j.get("defrag-1").expect("older record is fine").is_some());
    {
        let db = Database::open(j.path()).expect("open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert(SCHEMA_KEY, 9)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = Journal::open(j.path()).expect_err("newer journal");
    assert!(matches!(err, JournalError::NewerSchema { found: 9, .. }), "{err}");
    drop(dir);
}

#[test]
fn two_threads_share_the_journal_by_retrying() {
    let (_dir, j) = journal();
    j.create(&op("defrag-1", "prod-a", 100)).expect("create");
    let j = Arc::new(j);
    let threads: Vec<_> = ["defrag:etcd1", "defrag:etcd2"]
        .into_iter()
        .map(|step| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    j.step_started("defrag-1", step).expect("start");
                    j.get("defrag-1").expect("get");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let o = j.get("defrag-1").expect("get").expect("present");
    assert_eq!(o.steps.iter().map(|s| s.attempts).collect::<Vec<_>>(), [10, 10]);
}

#[test]
fn a_journal_kept_open_elsewhere_is_waited_for_then_busy() {
    let (_dir, j) = journal();
    let j = j.with_busy_timeout(Duration::from_millis(300));
    let held = Database::open(j.path()).expect("hold");
    let start = Instant::now();
    let err = j.list().expect_err("busy");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(matches!(err, JournalError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("another etcdops process"), "{err}");

    // Released within the wait: the call succeeds.
    let j = j.with_busy_timeout(BUSY_TIMEOUT);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(held);
    });
    j.create(&op("defrag-1", "prod-a", 100))
        .expect("create after release");
    releaser.join().expect("thread");
}
