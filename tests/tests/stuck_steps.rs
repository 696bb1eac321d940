//! End-to-end: a step whose agent stops answering ends within about the
//! agent timeout (`--timeout`), not the step's timeout: named, journaled,
//! resumable. The reported case: the leader's agent killed a moment into a
//! rolling defrag left step 1 waiting, silent, for its 10-minute timeout
//! ("caught up with the leader" needed the leader's agent). Here a rolling
//! restart (whose step 1 waits about a second for the restarted member) has
//! the leader's agent killed as step 1 starts: the step completes, judged
//! from the members that answer, and the next step's check stops the
//! operation naming the silent agent.

use std::time::{Duration, Instant};

use etcdops_tests::{Cluster, bins};

#[test]
fn a_killed_leader_agent_ends_a_rolling_restart_within_the_agent_timeout_and_it_resumes() {
    let mut cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal.redb");
    let journal = journal.to_str().expect("utf-8");
    cluster.put_bulk("stuck/", 2_000, 1_000);
    let leader = cluster.leader();
    let leader_name = cluster.member(leader).name.clone();

    let started = Instant::now();
    let mut run = cluster.etcdops_spawn(&[
        "--timeout",
        "2s",
        "restart",
        "--rolling",
        // Step 1 is a member's restart, not the snapshot before it.
        "--no-snapshot",
        "--yes",
        "-w",
        "json",
        "--journal",
        journal,
    ]);
    // As reported: the leader's agent killed a moment into the operation,
    // once step 1 runs (its etcd keeps running and leading).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cluster.etcdops(&["op", "list", "--all", "-w", "json", "--journal", journal]);
        let running = list.code == 0
            && list.json()["operations"].as_array().is_some_and(|ops| {
                ops.iter()
                    .any(|op| op["steps"][0]["state"] == "running" || op["steps"][0]["state"] == "done")
            });
        if running {
            break;
        }
        assert!(Instant::now() < until, "step 1 never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill_agent(leader);

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the operation still runs {:?} after the leader's agent died: a wait is not bounded",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = run.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "stopped, not done: {stderr}");
    assert!(
        took < Duration::from_secs(90),
        "ended in {took:?}, bounded by the agent timeout and not the step's 10 minutes"
    );
    assert!(
        stderr.contains(&leader_name) && stderr.contains("etcdops op resume"),
        "the stop names the silent member and the way on:\n{stderr}"
    );

    let list = cluster.etcdops(&["op", "list", "--all", "-w", "json", "--journal", journal]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let record = list.json()["operations"]
        .as_array()
        .and_then(|ops| ops.iter().find(|op| op["kind"] == "restart").cloned())
        .unwrap_or_else(|| panic!("the restart is journaled: {}\n{stderr}", list.stdout));
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(
        record["steps"][0]["state"], "done",
        "step 1 completed without the leader's agent: {record}"
    );
    let id = record["id"].as_str().expect("id").to_string();

    // The agent back, the same operation resumes and completes.
    cluster.restart_agent(leader);
    let resumed = cluster.etcdops(&["op", "resume", &id, "-w", "json", "--journal", journal]);
    let done = resumed.succeeded();
    assert_eq!(done["id"], id.as_str());
    assert_eq!(
        cluster.local_count(&cluster.member(0).client_url, "stuck/"),
        2_000
    );
}
