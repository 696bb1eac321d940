//! End-to-end: high availability of `etcdops serve` (issue 15) on a real
//! home etcd and a real 3-member cluster with its agents: the election
//! (`serve::ha`), the journal in the home etcd guarded by the leader's term
//! (`journal::etcd`), and fences at the epochs of the election's term, so
//! that a deposed leader can neither journal nor act, and the new leader
//! carries the operation on.

use std::path::PathBuf;
use std::time::Duration;

use etcdops_coordinator::agents::Agents;
use etcdops_coordinator::exec::fence::term_epoch;
use etcdops_coordinator::fleet::Fleet;
use etcdops_coordinator::fleet::home::HomeEtcd;
use etcdops_coordinator::journal::{
    EtcdStore, Journal, JournalError, OpState, OperationRecord, StepRecord, StepState,
};
use etcdops_coordinator::plan::operation::{Operation, RunOptions};
use etcdops_coordinator::plan::planner::OpKind;
use etcdops_coordinator::serve::ha::{Ha, HaConfig, HaError, unfinished};
use etcdops_proto::v1::{AcquireFenceRequest, DisarmAlarmsRequest, Fence};
use etcdops_tests::home::wait_for;
use etcdops_tests::{Caller, Cluster, bins};
use tonic::Code;

fn home_of(cluster: &Cluster, member: usize) -> HomeEtcd {
    etcdops_tests::home::home_of(cluster, member, "/etcdops-e2e/")
}

fn replica(name: &str) -> HaConfig {
    HaConfig {
        lease_ttl_secs: 3,
        replica: Some(name.to_string()),
        ..HaConfig::default()
    }
}

fn record(id: &str, cluster: &str, holder: &str, epoch: u64) -> OperationRecord {
    OperationRecord {
        id: id.into(),
        kind: OpKind::AlarmDisarm,
        cluster: cluster.into(),
        fleet: PathBuf::from("/etc/etcdops/fleet.toml"),
        operation: Operation::AlarmDisarm,
        options: RunOptions::default(),
        holder: holder.into(),
        operator: None,
        epoch,
        state: OpState::Running,
        created_at_unix: 1,
        updated_at_unix: 1,
        error: None,
        steps: vec![
            StepRecord::pending("disarm-alarms", "disarm alarms"),
            StepRecord::pending("verify-writes", "verify writes"),
        ],
    }
}

fn acquire(cluster: &Cluster, fence: &Fence, holder: &str) -> Vec<Result<u64, tonic::Status>> {
    (0..cluster.layout.members.len())
        .map(|i| {
            let mut client = cluster.client(i, &Caller::Coordinator);
            cluster
                .block_on(client.acquire_fence(AcquireFenceRequest {
                    fence: Some(fence.clone()),
                    holder: holder.to_string(),
                    operation_kind: "alarm-disarm".into(),
                    takeover: false,
                }))
                .map(|r| r.into_inner().epoch)
        })
        .collect()
}

fn highest_epoch(cluster: &Cluster) -> u64 {
    (0..cluster.layout.members.len())
        .filter_map(|i| cluster.get_status(i, &Caller::Coordinator, 2000).ok())
        .flat_map(|s| s.fences)
        .map(|f| f.epoch)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_deposed_leader_can_neither_journal_nor_act_and_the_new_one_carries_on() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let home_cluster = Cluster::builder().members(1).start(bins!());
    let home = home_of(&home_cluster, 0);
    let fleet = Fleet::load(cluster.fleet_path()).expect("fleet");
    let name = fleet.clusters[0].name.clone();
    let agents = Agents::new(
        fleet.tls.files().client().expect("coordinator TLS"),
        Duration::from_secs(5),
    );

    // Start-up checks: the home etcd answers and is none of the fleet's
    // clusters; an operated cluster's etcd as home is refused.
    let a = cluster
        .block_on(Ha::connect(&home, replica("replica-a")))
        .expect("home etcd");
    cluster
        .block_on(a.verify_home(&agents, &fleet))
        .expect("the home etcd is not operated");
    let operated = cluster
        .block_on(Ha::connect(&home_of(&cluster, 1), replica("x")))
        .expect("connects");
    let err = cluster
        .block_on(operated.verify_home(&agents, &fleet))
        .expect_err("an operated cluster as home");
    assert!(matches!(err, HaError::Operated { .. }), "{err}");
    assert!(err.to_string().contains(&format!("cluster {name}")), "{err}");
    let unreachable = HomeEtcd {
        endpoints: vec!["http://127.0.0.1:1".into()],
        tls: None,
        ..home.clone()
    };
    let err = cluster
        .block_on(Ha::connect(&unreachable, replica("x")))
        .expect_err("nothing listens there");
    assert!(err.to_string().contains("does not answer"), "{err}");

    // A is elected; B waits in its campaign (a standby).
    let mut term_a = cluster.block_on(a.campaign()).expect("A elected");
    let b = cluster
        .block_on(Ha::connect(&home, replica("replica-b")))
        .expect("home etcd");
    let b_campaign = {
        let b = b.clone();
        // The cluster's runtime drives it while the test blocks on others.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let handle = rt.spawn(async move { b.campaign().await });
        (rt, handle)
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(!b_campaign.1.is_finished(), "B must wait while A leads");
    assert_eq!(
        cluster.block_on(b.leader()).as_deref(),
        Some("replica-a"),
        "the standby sees the leader"
    );

    // A journals an operation and takes the fence at its term's epoch.
    let journal_a = a.journal(&term_a).expect("journal");
    let epoch_a = term_epoch(&name, term_a.term, highest_epoch(&cluster)).expect("epoch");
    assert_eq!(epoch_a >> 16, term_a.term, "the term is the epoch's high bits");
    let op = "alarm-disarm-e2e-ha";
    journal_a
        .create(&record(op, &name, "replica-a", epoch_a))
        .expect("leader writes");
    let fence_a = Fence {
        cluster: name.clone(),
        epoch: epoch_a,
        operation_id: op.into(),
        step: String::new(),
    };
    for r in acquire(&cluster, &fence_a, "replica-a") {
        assert_eq!(r.expect("A acquires"), epoch_a);
    }
    journal_a.step_started(op, "disarm-alarms").expect("step started");
    let disarm = |fence: &Fence, step: &str| {
        let mut client = cluster.client(0, &Caller::Coordinator);
        cluster.block_on(client.disarm_alarms(DisarmAlarmsRequest {
            fence: Some(Fence {
                step: step.into(),
                ..fence.clone()
            }),
            alarms: vec![],
        }))
    };
    let first = disarm(&fence_a, "disarm-alarms#1").expect("A acts").into_inner();
    journal_a
        .step_finished(op, "disarm-alarms", StepState::Done, Some("none active".into()))
        .expect("step done");

    // Readers (op list|show) see it and cannot write.
    let reader = Journal::etcd(EtcdStore::connect(&home, None).expect("reader"));
    assert_eq!(reader.find("alarm-disarm-e2e").expect("found").id, op);
    assert!(reader.path().display().to_string().starts_with("etcd:"));
    let err = reader.finish(op, OpState::Aborted, None).expect_err("read only");
    assert!(matches!(err, JournalError::ReadOnly { .. }), "{err}");

    // A loses its lease (as when paused past its TTL: etcd expires it).
    let mut etcd = cluster
        .block_on(etcd_client::Client::connect(
            home.endpoints.clone(),
            etcdops_tests::etcd_connect_options(&home_cluster.layout),
        ))
        .expect("etcd");
    cluster.block_on(etcd.lease_revoke(term_a.lease)).expect("revoke");
    let reason = cluster
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), term_a.ended()).await })
        .expect("A learns within the TTL");
    assert!(!term_a.holds() && reason.contains("lease"), "{reason}");
    let term_b = b_campaign
        .0
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), b_campaign.1).await })
        .expect("B elected within the TTL")
        .expect("task")
        .expect("campaign");
    assert!(term_b.term > term_a.term, "{} vs {}", term_b.term, term_a.term);

    // The deposed leader can no longer journal...
    let err = journal_a.step_started(op, "verify-writes").expect_err("deposed");
    assert!(matches!(err, JournalError::NotLeader { .. }), "{err}");
    assert!(err.to_string().contains("no longer the leader"), "{err}");
    // ...nor take a fence at its term.
    let err = term_epoch(&name, term_a.term, term_epoch(&name, term_b.term, 0).expect("b"))
        .expect_err("older term");
    assert!(err.to_string().contains("a newer leader"), "{err}");

    // B carries the operation on from its first unfinished step.
    let journal_b = b.journal(&term_b).expect("journal");
    let left = unfinished(&journal_b).expect("list");
    assert_eq!(left.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [op]);
    assert_eq!(left[0].next_step().map(|s| s.id.as_str()), Some("verify-writes"));
    let epoch_b = term_epoch(&name, term_b.term, highest_epoch(&cluster)).expect("epoch");
    let fence_b = Fence {
        epoch: epoch_b,
        ..fence_a.clone()
    };
    for r in acquire(&cluster, &fence_b, "replica-b") {
        assert_eq!(r.expect("B takes the operation over"), epoch_b);
    }
    journal_b
        .update(op, |r| {
            r.holder = "replica-b".into();
            r.epoch = epoch_b;
        })
        .expect("B writes");
    // A retry of the finished step by B is answered from the agent's record.
    let retried = disarm(&fence_b, "disarm-alarms#1")
        .expect("answered")
        .into_inner();
    assert_eq!(first, retried);

    // A wakes up: its next agent call is refused, naming the new holder.
    let err = disarm(&fence_a, "verify-writes#1").expect_err("deposed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("replica-b") && err.message().contains(&format!("epoch {epoch_b}")),
        "{}",
        err.message()
    );

    journal_b.step_started(op, "verify-writes").expect("B journals");
    journal_b
        .step_finished(op, "verify-writes", StepState::Done, None)
        .expect("B journals");
    let done = journal_b
        .finish(op, OpState::Succeeded, None)
        .expect("B finishes");
    let steps: Vec<(u32, StepState)> = done.steps.iter().map(|s| (s.attempts, s.state)).collect();
    assert_eq!(
        steps,
        [(1, StepState::Done), (1, StepState::Done)],
        "no step ran twice"
    );
    let log = std::fs::read_to_string(&cluster.member(0).agent_log).expect("agent log");
    assert_eq!(
        log.matches("retried call answered from the record").count(),
        1,
        "{log}"
    );
    cluster.block_on(b.resign(term_b));
}

/// `etcdops serve` replicas, stopped (SIGCONT, SIGKILL) whatever happens.
struct Replicas(Vec<(String, std::process::Child, PathBuf)>);

impl Replicas {
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.0[i].2).unwrap_or_default()
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0[i].1.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal serve");
    }

    fn logs(&self) -> String {
        (0..self.0.len())
            .map(|i| format!("=== {} ===\n{}", self.0[i].0, self.log(i)))
            .collect()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn two_serve_replicas_hand_a_rolling_defrag_over_without_a_step_twice() {
    use nix::sys::signal::Signal;

    let cluster = Cluster::builder().members(3).start(bins!());
    let home_cluster = Cluster::builder().members(1).start(bins!());
    let home = home_of(&home_cluster, 0);
    let name = cluster.cluster_name.clone();
    // Something to defragment on every member (about 20 MB written, then deleted).
    cluster.put_bulk("/frag/", 200, 100_000);
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    cluster.block_on(async {
        let mut kv = etcd_client::Client::connect(&endpoints, cluster.etcd_options())
            .await
            .expect("etcd")
            .kv_client();
        kv.delete("/frag/", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("delete");
    });

    // The fleet with the home etcd, beside the harness's (its [tls] paths stay valid).
    let fleet_path = etcdops_tests::home::fleet_with_home(&cluster, &home, "fleet-ha.toml");

    // One defrag run, at a second about 15 s from now (hourly: it runs once).
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 15;
    let schedule = format!("{} {} * * * *", at % 60, (at / 60) % 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |replica: &str| {
        let config = dir.path().join(format!("{replica}.toml"));
        std::fs::write(
            &config,
            format!(
                "fleet = {:?}\nstate_dir = {:?}\nagent_timeout = \"5s\"\nfence_wait = \"0s\"\n\
                 [ha]\nlease_ttl_secs = 3\nreplica = {replica:?}\n\
                 [windows.always]\ncron = \"* * * * *\"\nduration = \"2m\"\n\
                 [[jobs]]\ncluster = {name:?}\nkind = \"defrag\"\nschedule = {schedule:?}\nwindows = [\"always\"]\n",
                fleet_path.display().to_string(),
                dir.path().join(replica).display().to_string(),
            ),
        )
        .expect("serve.toml");
        let log = dir.path().join(format!("{replica}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new(&cluster.bins.cli)
            .args(["--fleet"])
            .arg(&fleet_path)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("etcdops serve");
        (replica.to_string(), child, log)
    };
    let mut replicas = Replicas(vec![start("replica-a")]);
    wait_for(
        "replica-a elected",
        Duration::from_secs(20),
        || replicas.log(0).contains("elected: serve leader"),
        || replicas.logs(),
    );
    replicas.0.push(start("replica-b"));
    wait_for(
        "replica-b a standby",
        Duration::from_secs(20),
        || {
            replicas
                .log(1)
                .contains("standby: waiting behind the serve leader")
        },
        || replicas.logs(),
    );

    // The leader starts the defrag; once a step is done, it is paused.
    let reader = Journal::etcd(EtcdStore::connect(&home, None).expect("reader"));
    let mut op = None;
    wait_for(
        "the leader's defrag to finish a step",
        Duration::from_secs(60),
        || {
            op = reader.list().ok().and_then(|ops| {
                ops.into_iter()
                    .find(|o| o.kind == OpKind::Defrag && o.steps_complete() >= 1)
            });
            op.is_some()
        },
        || replicas.logs(),
    );
    replicas.signal(0, Signal::SIGSTOP);
    let op = op.expect("op");
    let paused = reader.get(&op.id).expect("read").expect("op");
    assert_eq!(
        paused.state,
        OpState::Running,
        "paused too late, the operation had ended: {paused:?}"
    );
    assert!(
        paused.holder.contains(&format!("(pid {})", replicas.0[0].1.id())),
        "{paused:?}"
    );

    // The standby takes over within the TTL + a few seconds and finishes it.
    let took = wait_for(
        "replica-b elected",
        Duration::from_secs(3 + 7),
        || replicas.log(1).contains("elected: serve leader"),
        || replicas.logs(),
    );
    eprintln!("replica-b took over {took:?} after replica-a was paused");
    wait_for(
        "the operation to succeed under replica-b",
        Duration::from_secs(90),
        || {
            reader
                .get(&op.id)
                .ok()
                .flatten()
                .is_some_and(|o| o.state == OpState::Succeeded)
        },
        || replicas.logs(),
    );
    let done = reader.get(&op.id).expect("read").expect("op");
    assert!(
        done.holder.contains(&format!("(pid {})", replicas.0[1].1.id())),
        "{done:?}"
    );
    assert!(
        replicas
            .log(1)
            .contains("resuming the previous leader's operation"),
        "{}",
        replicas.logs()
    );

    // The old leader wakes up: it steps down; whatever it still tried was refused.
    replicas.signal(0, Signal::SIGCONT);
    wait_for(
        "replica-a to step down",
        Duration::from_secs(15),
        || replicas.log(0).contains("stepping down"),
        || replicas.logs(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let fences: Vec<_> = (0..3)
        .map(|i| {
            cluster
                .get_status(i, &Caller::Coordinator, 2000)
                .expect("status")
                .fences
        })
        .collect();
    for f in fences.iter().flatten().filter(|f| f.cluster == name) {
        assert_eq!(f.operation_id, op.id, "{f:?}");
        assert!(
            f.epoch > op.epoch && f.epoch >> 16 > op.epoch >> 16,
            "a newer term: {f:?} vs {}",
            op.epoch
        );
        assert!(
            f.holder.contains(&format!("(pid {})", replicas.0[1].1.id())),
            "{f:?}"
        );
    }
    // Whatever the old leader still tried after waking was refused: agent
    // calls naming the new holder, journal writes as a deposed leader.
    let log_a = replicas.log(0);
    let b_pid = format!("(pid {})", replicas.0[1].1.id());
    for line in log_a.lines().filter(|l| l.contains("does not hold the fence")) {
        assert!(line.contains(&b_pid), "the refusal names the new holder: {line}");
    }
    let refused = log_a
        .lines()
        .filter(|l| l.contains("does not hold the fence") || l.contains("no longer the leader"))
        .count();
    eprintln!("replica-a: {refused} call(s) refused after waking");
    // No step ran twice: each member defragmented once, as the journal says.
    let defrag_steps: Vec<_> = done
        .steps
        .iter()
        .filter(|s| s.id.starts_with("defrag:"))
        .collect();
    assert!(done.steps.iter().all(|s| s.state == StepState::Done), "{done:?}");
    let defragmented: usize = (0..3)
        .map(|i| {
            std::fs::read_to_string(&cluster.member(i).agent_log)
                .expect("agent log")
                .matches("defragmented")
                .count()
        })
        .sum();
    assert_eq!(
        defragmented,
        defrag_steps.len(),
        "one defragmentation per step: {done:?}\n{}",
        replicas.logs()
    );
    // Only the new leader's process finished it: the old one is a standby again.
    let standby_again = replicas
        .log(0)
        .matches("standby: waiting behind the serve leader")
        .count();
    assert!(
        standby_again >= 1 || replicas.log(0).contains("stepping down"),
        "{}",
        replicas.logs()
    );

    // `etcdops op list|show` read the journal the fleet names: the home one.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(&cluster.bins.cli)
            .arg("--fleet")
            .arg(&fleet_path)
            .args(args)
            .env_remove("ETCDOPS_JOURNAL")
            .output()
            .expect("etcdops");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let shown = cli(&["op", "show", &op.id]);
    assert!(shown.contains(&op.id) && shown.contains("succeeded"), "{shown}");
    let listed = cli(&["op", "list", "-w", "json"]);
    assert!(
        listed.contains(&op.id) && listed.contains("etcd:https://"),
        "{listed}"
    );
    let _ = std::fs::remove_file(&fleet_path);
}
