//! End-to-end: `etcdops op resume|abort|prune` on the home journal of
//! `etcdops serve` (a real home etcd, a real 3-member cluster with its
//! agents, a real serve replica). The serve leader alone writes that journal,
//! so the CLI puts a request and the leader carries it out under its term: a
//! failed operation resumed and finished by the leader, a paused one aborted
//! (fence freed, record aborted), old ended ones pruned, an ended one refused
//! before anything is asked; with no leader running, the request is
//! withdrawn after `--wait` and nothing changes. The leader also keeps its
//! record of job runs beside the journal, for the next leader.

use std::path::PathBuf;
use std::time::Duration;

use etcdops_coordinator::fleet::home::HomeEtcd;
use etcdops_coordinator::journal::{EtcdStore, Journal, OpState, OperationRecord, StepRecord, StepState};
use etcdops_coordinator::plan::operation::{Operation, RunOptions};
use etcdops_coordinator::plan::planner::OpKind;
use etcdops_coordinator::serve::ha::{Ha, HaConfig};
use etcdops_tests::home::{fleet_with_home, home_of, wait_for};
use etcdops_tests::{Caller, CliOutput, Cluster, bins};

/// An alarm disarm an earlier serve leader left in `state`, nothing done yet
/// (last updated at 1970-01-01: old enough for any prune).
fn left_behind(id: &str, cluster: &str, state: OpState) -> OperationRecord {
    OperationRecord {
        id: id.into(),
        kind: OpKind::AlarmDisarm,
        cluster: cluster.into(),
        fleet: PathBuf::from("/etc/etcdops/fleet.toml"),
        operation: Operation::AlarmDisarm,
        options: RunOptions::default(),
        holder: "etcdops serve earlier-replica".into(),
        operator: None,
        epoch: 0,
        state,
        created_at_unix: 1,
        updated_at_unix: 1,
        error: (state == OpState::Failed).then(|| "stopped at an unsafe state".to_string()),
        steps: vec![
            StepRecord::pending("disarm-alarms", "disarm alarms"),
            StepRecord::pending("verify-writes", "verify writes"),
        ],
    }
}

/// Writes `records` as a leader of the home election would, then resigns.
fn as_earlier_leader(cluster: &Cluster, home: &HomeEtcd, records: &[OperationRecord]) {
    let ha = cluster
        .block_on(Ha::connect(
            home,
            HaConfig {
                lease_ttl_secs: 3,
                replica: Some("earlier-replica".into()),
                ..HaConfig::default()
            },
        ))
        .expect("home etcd");
    let term = cluster
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), ha.campaign()).await })
        .expect("elected within 20 s")
        .expect("campaign");
    let journal = ha.journal(&term).expect("journal");
    for r in records {
        journal.create(r).expect("the leader journals");
    }
    cluster.block_on(ha.resign(term));
}

/// A serve replica, killed when dropped.
struct Serve(std::process::Child, PathBuf);

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn people_resume_abort_and_prune_serve_operations_through_the_leader() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let home_cluster = Cluster::builder().members(1).start(bins!());
    let home = home_of(&home_cluster, 0, "/etcdops-requests/");
    let name = cluster.cluster_name.clone();
    as_earlier_leader(
        &cluster,
        &home,
        &[
            left_behind("alarm-disarm-failed", &name, OpState::Failed),
            left_behind("alarm-disarm-paused", &name, OpState::Paused),
            left_behind("alarm-disarm-done", &name, OpState::Succeeded),
        ],
    );
    let reader = Journal::etcd(EtcdStore::connect(&home, None).expect("reader"));
    let state = |id: &str| reader.get(id).expect("read").map(|r| r.state);

    // The fleet with the home journal, and one serve replica.
    let fleet_path = fleet_with_home(&cluster, &home, "fleet-requests.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "fleet = {:?}\nstate_dir = {:?}\nagent_timeout = \"5s\"\nfence_wait = \"0s\"\n\
             [ha]\nlease_ttl_secs = 3\nreplica = \"replica-a\"\n\
             [[jobs]]\ncluster = {name:?}\nkind = \"health\"\nschedule = \"*/2 * * * * *\"\n",
            fleet_path.display().to_string(),
            dir.path().join("state").display().to_string(),
        ),
    )
    .expect("serve.toml");
    let log = dir.path().join("serve.log");
    let out = std::fs::File::create(&log).expect("log");
    let serve = Serve(
        std::process::Command::new(&cluster.bins.cli)
            .arg("--fleet")
            .arg(&fleet_path)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("etcdops serve"),
        log,
    );
    wait_for(
        "the replica elected",
        Duration::from_secs(30),
        || serve.log().contains("elected: serve leader"),
        || serve.log(),
    );
    // The leader keeps its record of job runs beside the journal, for the next leader.
    let store = reader.home().expect("home");
    wait_for(
        "the health job's run recorded in the home etcd",
        Duration::from_secs(30),
        || {
            store
                .serve_state()
                .expect("read")
                .is_some_and(|s| String::from_utf8_lossy(&s).contains(&format!("\"{name}/health\"")))
        },
        || serve.log(),
    );
    let cli = |args: &[&str]| -> CliOutput {
        let out = std::process::Command::new(&cluster.bins.cli)
            .arg("--fleet")
            .arg(&fleet_path)
            .args(args)
            .env_remove("ETCDOPS_JOURNAL")
            .output()
            .expect("etcdops");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };

    // An ended operation: refused before anything is asked.
    let out = cli(&["op", "resume", "alarm-disarm-done"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("is succeeded: nothing to resume"), "{out:?}");
    assert!(
        reader
            .home()
            .expect("home")
            .requests()
            .expect("requests")
            .0
            .is_empty(),
        "nothing asked"
    );

    // A failed one: the leader takes the request and runs it to its end.
    let out = cli(&["op", "resume", "alarm-disarm-failed", "-w", "json"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", serve.log());
    assert!(out.stdout.contains("alarm-disarm-failed"), "{out:?}");
    wait_for(
        "the resumed operation to succeed",
        Duration::from_secs(60),
        || state("alarm-disarm-failed") == Some(OpState::Succeeded),
        || serve.log(),
    );
    let done = reader.get("alarm-disarm-failed").expect("read").expect("op");
    assert!(
        done.steps
            .iter()
            .all(|s| s.state == StepState::Done && s.attempts == 1),
        "{done:?}"
    );
    assert!(
        done.holder.contains(&format!("(pid {})", serve.0.id())),
        "run by the serve leader: {done:?}"
    );
    assert!(done.epoch >> 16 > 0, "an epoch of the leader's term: {done:?}");
    let fleet = etcdops_coordinator::fleet::Fleet::load(&fleet_path).expect("fleet");
    let (_, asker) = fleet.tls.files().details().expect("the CLI's certificate");
    assert_eq!(done.operator.as_ref(), Some(&asker), "who asked");

    // A paused one: aborted by the leader, its fence (none held) looked at.
    let out = cli(&["op", "abort", "alarm-disarm-paused"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", serve.log());
    let aborted = reader.get("alarm-disarm-paused").expect("read").expect("op");
    assert_eq!(aborted.state, OpState::Aborted, "{aborted:?}");
    let why = aborted.error.clone().unwrap_or_default();
    assert!(
        why.contains("through the serve leader") && why.contains("no agent held the cluster's fence"),
        "{why}"
    );

    // Prune: the old ended one goes (not those that ended just now).
    let out = cli(&["op", "prune", "--older-than", "1h", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("would delete alarm-disarm-done"), "{out:?}");
    assert_eq!(state("alarm-disarm-done"), Some(OpState::Succeeded), "a dry run");
    let out = cli(&["op", "prune", "--older-than", "1h"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", serve.log());
    assert!(
        out.stdout
            .contains("deleted alarm-disarm-done\n1 operation(s) deleted"),
        "{out:?}"
    );
    assert_eq!(state("alarm-disarm-done"), None);
    // Ended just now: kept.
    assert_eq!(state("alarm-disarm-paused"), Some(OpState::Aborted));
    assert_eq!(state("alarm-disarm-failed"), Some(OpState::Succeeded));

    // No fence is left held on any agent.
    for i in 0..3 {
        let status = cluster.get_status(i, &Caller::Coordinator, 2000).expect("status");
        assert!(status.fences.iter().all(|f| !f.held), "{:?}", status.fences);
    }

    // No leader: the request is withdrawn after --wait and nothing changes.
    drop(serve);
    as_earlier_leader(
        &cluster,
        &home,
        &[left_behind("alarm-disarm-late", &name, OpState::Failed)],
    );
    let out = cli(&["op", "resume", "alarm-disarm-late", "--wait", "2s"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("no serve leader took the request") && out.stderr.contains("withdrawn"),
        "{out:?}"
    );
    assert_eq!(state("alarm-disarm-late"), Some(OpState::Failed));
    assert!(
        reader
            .home()
            .expect("home")
            .requests()
            .expect("requests")
            .0
            .is_empty(),
        "withdrawn"
    );
    let _ = std::fs::remove_file(&fleet_path);
}
