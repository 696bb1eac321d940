//! End-to-end: cluster operations as journaled, fenced plans on a real
//! 3-member cluster: rolling defrag with leadership transfer, rolling
//! restart (a verified snapshot first: beside the journal, or into the
//! fleet's backup target; none with --no-snapshot), compaction, alarms and
//! NOSPACE recovery; a killed coordinator
//! resumed from the journal; a second coordinator fenced off; unsafe
//! clusters and bad input refused with nothing changed.
//!
//! The agents' periodic disk probe is off here: on a loaded test machine its
//! fsync p99 can pass etcd's 10 ms guidance and (rightly) stop every
//! operation; that check is unit-tested in `plan::safety`.

use std::path::Path;
use std::time::{Duration, Instant};

use etcdops_tests::{Caller, Cluster, Coordinator, bins, step_ids};

fn leader_id(cluster: &Cluster) -> u64 {
    let i = cluster.leader();
    cluster
        .get_status(i, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member")
        .member_id
}

fn db_sizes(cluster: &Cluster) -> Vec<i64> {
    (0..3)
        .map(|i| {
            cluster
                .get_status(i, &Caller::Coordinator, 2000)
                .expect("status")
                .member
                .expect("member")
                .db_size
        })
        .collect()
}

/// Writes ~`mb` MB and deletes it again, then compacts: every member's
/// database keeps its size with most of it free.
fn fragment(cluster: &Cluster, mb: usize) {
    cluster.put_bulk("frag/", mb * 10, 100_000);
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    cluster.block_on(async {
        let mut client = etcd_client::Client::connect(&endpoints, cluster.etcd_options())
            .await
            .expect("etcd client");
        let deleted = client
            .delete("frag/", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("delete");
        let revision = deleted.header().expect("header").revision();
        client
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compact");
    });
}

fn key_count(cluster: &Cluster, prefix: &str) -> i64 {
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    cluster.block_on(async {
        let mut client = etcd_client::Client::connect(&endpoints, cluster.etcd_options())
            .await
            .expect("etcd client");
        let resp = client
            .get(
                prefix,
                Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count");
        resp.count()
    })
}

fn wait_for_step_done(ops: &Coordinator, op_kind: &str, steps: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for op in ops.operations() {
            if op["kind"] == op_kind {
                let done = op["steps"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter(|s| s["state"] == "done").count());
                if done >= steps {
                    return op["id"].as_str().expect("id").to_string();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {op_kind} operation reached {steps} done step(s) within {timeout:?}");
}

#[test]
fn rolling_defrag_frees_space_on_every_member_and_moves_leadership_once() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    fragment(&cluster, 30);
    cluster.put_bulk("keep/", 100, 100);
    let before = db_sizes(&cluster);
    assert!(before.iter().all(|s| *s > 20_000_000), "fragmented: {before:?}");
    let old_leader = leader_id(&cluster);

    let dry = ops.run(&["defrag", "--rolling", "--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let plan = dry.json();
    let steps: Vec<&str> = plan["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(
        steps[2].starts_with("transfer-leadership:") && steps[3].starts_with("defrag:"),
        "{steps:?}"
    );
    assert!(ops.operations().is_empty(), "a dry run journals nothing");
    assert_eq!(leader_id(&cluster), old_leader, "a dry run changes nothing");

    let out = ops.run(&["defrag", "--rolling", "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "succeeded");
    assert!(
        record["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .all(|s| s["state"] == "done"),
        "{record}"
    );
    // After every defrag, etcd's HashKV was compared across the members.
    for step in record["steps"].as_array().expect("steps") {
        if step["id"].as_str().is_some_and(|id| id.starts_with("defrag:")) {
            let detail = step["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("hashkv") && detail.contains("equal on 3 members at revision"),
                "{detail}"
            );
        }
    }
    let after = db_sizes(&cluster);
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a * 2 < *b,
            "every member shrank: before {before:?}, after {after:?}"
        );
    }
    assert_ne!(
        leader_id(&cluster),
        old_leader,
        "leadership moved off the old leader before its defrag"
    );
    assert_eq!(key_count(&cluster, "keep/"), 100);
    assert!(cluster.is_healthy());

    // A rule that selects nobody: nothing to do, exit 0, no operation.
    let out = ops.run(&["defrag", "--rule", "dbSize - dbSizeInUse > 1 * GB", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing to do") && out.stderr.contains("dbSize - dbSizeInUse"),
        "{}",
        out.stderr
    );
    assert_eq!(ops.operations().len(), 1);
}

/// The snapshot file is whole: `snapshot status` finds etcd's sha256
/// trailer matching its bytes, and it and the sidecar agree with `saved`
/// (the operation's record of it).
fn assert_verified_snapshot(cluster: &Cluster, file: &Path, saved: &serde_json::Value) {
    let status = cluster.etcdops(&["snapshot", "status", file.to_str().expect("utf-8"), "-w", "json"]);
    assert_eq!(
        status.code, 0,
        "{}
{}",
        status.stdout, status.stderr
    );
    let status = status.json();
    assert_eq!(status["integrity"], "ok", "{status}");
    assert_eq!(status["sha256"], saved["sha256"], "{status} vs {saved}");
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{}.json", file.display())).expect("the sidecar beside it"),
    )
    .expect("sidecar json");
    assert_eq!(sidecar["sha256"], saved["sha256"], "{sidecar}");
    assert_eq!(sidecar["revision"], saved["revision"], "{sidecar}");
    assert_eq!(sidecar["member_name"], saved["member"], "{sidecar}");
    assert_eq!(
        std::fs::metadata(file).expect("snapshot").len(),
        saved["size"].as_u64().expect("size")
    );
}

#[test]
fn rolling_restart_restarts_each_member_once_leader_last() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("keep/", 200, 100);
    let pids: Vec<u32> = (0..3).map(|i| cluster.etcd_pid(i)).collect();
    let leader = cluster.leader();
    let snapshots = ops.journal.parent().expect("journal dir").join("snapshots");

    // The plan names where the snapshot goes: no backup target, so beside the journal.
    let dry = ops.run(&["restart", "--rolling", "--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let first = &dry.json()["plan"]["steps"][0];
    assert_eq!(first["id"], "snapshot", "{first}");
    assert_eq!(first["snapshot_to"]["kind"], "dir", "{first}");
    assert_eq!(
        first["snapshot_to"]["path"],
        snapshots.to_str().expect("utf-8"),
        "{first}"
    );
    let text = ops.run(&["restart", "--rolling", "--dry-run"]);
    assert!(
        text.stdout
            .contains(&format!("save a verified snapshot into {}", snapshots.display())),
        "{}",
        text.stdout
    );

    let out = ops.run(&["restart", "--rolling", "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    let steps = step_ids(&record);
    let leader_name = &cluster.layout.members[leader].name;
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert_eq!(steps[0], "snapshot", "the snapshot comes first: {steps:?}");
    assert_eq!(
        steps.last().map(String::as_str),
        Some(format!("restart:{leader_name}").as_str()),
        "{steps:?}"
    );
    for (i, pid) in pids.iter().enumerate() {
        assert_ne!(cluster.etcd_pid(i), *pid, "member {i} restarted");
    }
    assert!(cluster.is_healthy());
    assert_eq!(key_count(&cluster, "keep/"), 200);
    // The stderr progress names each step.
    assert!(out.stderr.contains("[5/5] restart etcd on"), "{}", out.stderr);

    // `op show` names the snapshot: a verified file with its sidecar, taken
    // from a follower before the first restart (it holds every key).
    let id = record["id"].as_str().expect("id");
    let shown = ops.run(&["op", "show", id, "-w", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let saved = shown.json()["operation"]["snapshot"]["saved"].clone();
    let file = Path::new(
        saved["location"]
            .as_str()
            .unwrap_or_else(|| panic!("saved: {saved}")),
    );
    assert!(file.starts_with(&snapshots), "{}", file.display());
    assert_ne!(
        saved["member"],
        leader_name.as_str(),
        "a follower spares the leader: {saved}"
    );
    assert!(saved["revision"].as_i64().is_some_and(|r| r > 200), "{saved}");
    assert_verified_snapshot(&cluster, file, &saved);
    let shown = ops.run(&["op", "show", id]);
    assert!(
        shown.stdout.contains(&format!("snapshot:  {}", file.display())),
        "{}",
        shown.stdout
    );

    // With a backup target in the fleet file, the snapshot is a backup there.
    let backups = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", backups.path().display());
    let fleet = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    std::fs::write(
        cluster.fleet_path(),
        format!("{fleet}\n[clusters.backup]\ntarget = \"{url}\"\n"),
    )
    .expect("add a backup target");
    let follower = &cluster.layout.members[(0..3).find(|&i| i != cluster.leader()).expect("follower")].name;
    let dry = ops.run(&["restart", "--member", follower, "--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(
        dry.json()["plan"]["steps"][0]["snapshot_to"],
        serde_json::json!({"kind": "backup", "url": url})
    );
    let out = ops.run(&["restart", "--member", follower, "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(
        step_ids(&record),
        ["snapshot".to_string(), format!("restart:{follower}")]
    );
    let saved = record["operation"]["snapshot"]["saved"].clone();
    let location = saved["location"]
        .as_str()
        .unwrap_or_else(|| panic!("saved: {saved}"));
    let file = Path::new(
        location
            .strip_prefix("file://")
            .unwrap_or_else(|| panic!("{location}")),
    );
    assert!(file.starts_with(backups.path()), "{location}");
    assert_verified_snapshot(&cluster, file, &saved);
    let list = ops.run(&["backup", "list", "-w", "json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let listed = list.json();
    assert_eq!(listed["backups"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["backups"][0]["state"], "verified", "{listed}");

    // --no-snapshot: no snapshot step, and the record says none was asked for.
    let out = ops.run(&[
        "restart",
        "--member",
        follower,
        "--no-snapshot",
        "--yes",
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(step_ids(&record), [format!("restart:{follower}")]);
    assert_eq!(
        record["operation"]["snapshot"],
        serde_json::json!({"to": null, "saved": null})
    );
    let list = ops.run(&["backup", "list", "-w", "json"]).json();
    assert_eq!(
        list["backups"].as_array().map(Vec::len),
        Some(1),
        "no new backup: {list}"
    );
}

#[test]
fn a_killed_coordinator_resumes_without_redoing_steps_and_fences_others_off_meanwhile() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let mut child = ops.spawn(&["restart", "--rolling", "--yes"]);
    // The snapshot and a first restart done.
    let id = wait_for_step_done(&ops, "restart", 2, Duration::from_secs(60));
    child.kill().expect("kill the coordinator");
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let record = ops.run(&["op", "show", &id, "-w", "json"]).json();
    assert_eq!(record["state"], "running", "{record}");
    let done: Vec<String> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["state"] == "done")
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert!(!done.is_empty());

    // A second coordinator (its own journal) is refused by the agents while the fence is held.
    let other = cluster.coordinator();
    let refused = other.run(&["defrag", "--yes"]);
    assert_eq!(refused.code, 3, "busy exit code: {}", refused.stderr);
    assert!(
        refused.stderr.contains(&id) && refused.stderr.contains("op abort"),
        "{}",
        refused.stderr
    );
    assert!(other.operations().is_empty());

    // Members already restarted keep their etcd process through the resume.
    let restarted: Vec<usize> = done
        .iter()
        .filter_map(|s| s.strip_prefix("restart:"))
        .map(|name| {
            cluster
                .layout
                .members
                .iter()
                .position(|m| m.name == name)
                .expect("member")
        })
        .collect();
    let kept: Vec<u32> = restarted.iter().map(|&i| cluster.etcd_pid(i)).collect();
    cluster.wait_until("healthy before resuming", Duration::from_secs(30), |c| {
        c.is_healthy()
    });
    let out = ops.run(&["op", "resume", &id[..20], "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "succeeded");
    for step in record["steps"].as_array().expect("steps") {
        assert_eq!(step["state"], "done", "{step}");
        if done.contains(&step["id"].as_str().expect("id").to_string()) {
            assert_eq!(step["attempts"], 1, "finished steps are not redone: {step}");
        }
    }
    for (&i, &pid) in restarted.iter().zip(&kept) {
        assert_eq!(cluster.etcd_pid(i), pid, "member {i} was not restarted again");
    }
    // The fence is free again: the other coordinator may act.
    let out = other.run(&["defrag", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn abort_frees_the_fence_of_a_dead_coordinator() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let mut child = ops.spawn(&["restart", "--rolling", "--yes"]);
    let id = wait_for_step_done(&ops, "restart", 2, Duration::from_secs(60));
    child.kill().expect("kill");
    let _ = child.wait();
    // Abort from another machine (no journal entry there): found in the agents' fences.
    let other = cluster.coordinator();
    let out = other.run(&["op", "abort", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("fence is free"), "{}", out.stdout);
    let out = ops.run(&["op", "abort", &id, "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["state"], "aborted");
    cluster.wait_until("healthy", Duration::from_secs(30), |c| c.is_healthy());
    // The fence is free and the cluster healthy: with revisions to compact
    // (a fresh cluster has none), the compaction runs and exits 0.
    cluster.put_bulk("abort/", 5, 10);
    let out = other.run(&["compact", "--keep-revisions", "1", "--yes"]);
    assert_eq!(out.code, 0, "no longer busy, and done: {}", out.stderr);
}

#[test]
fn an_unhealthy_cluster_is_refused_and_bad_input_gets_usage_errors() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let follower = (0..3).find(|&i| i != cluster.leader()).expect("follower");
    let pids: Vec<u32> = (0..3).map(|i| cluster.etcd_pid(i)).collect();

    for (args, expected) in [
        (&["defrag", "--rule", "dbSize >", "--yes"][..], "rule"),
        (
            &["defrag", "--rule", "dbsize > 1 * MB", "--yes"][..],
            "did you mean dbSize",
        ),
        (
            &["defrag", "--rule", "dbSize > 100MB", "--yes"][..],
            "write `100 * MB`",
        ),
        (
            &["defrag", "--member", "etcd9", "--yes"][..],
            "unknown member \"etcd9\"",
        ),
        (&["restart", "--member", "nope", "--yes"][..], "unknown member"),
        (&["compact", "--yes"][..], "--keep-revisions"),
        (&["op", "show", "no-such-op"][..], "no-such-op"),
    ] {
        let out = ops.run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    // Without a terminal and without --yes: refused, nothing changed.
    let out = ops.run(&["restart", "--rolling"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);

    cluster.freeze_etcd(follower, true);
    let out = ops.run(&["restart", "--rolling", "--yes"]);
    // A dry run on the same unhealthy cluster shows the plan and says it is
    // not safe: exit 1 (the cluster is unhealthy), nothing journaled.
    let dry = ops.run(&["defrag", "--dry-run"]);
    cluster.freeze_etcd(follower, false);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not safe") && out.stderr.contains("nothing was changed"),
        "{}",
        out.stderr
    );
    assert_eq!(dry.code, 1, "stdout:\n{}\nstderr:\n{}", dry.stdout, dry.stderr);
    assert!(dry.stdout.contains("Pre-check: NOT safe now"), "{}", dry.stdout);
    assert!(ops.operations().is_empty(), "nothing journaled");
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(cluster.etcd_pid(i), *pid, "member {i} untouched");
    }
    // Healthy again, the same dry run says the plan is safe: exit 0.
    cluster.wait_until("healthy after the thaw", Duration::from_secs(30), |c| {
        c.is_healthy()
    });
    let dry = ops.run(&["defrag", "--dry-run"]);
    assert_eq!(dry.code, 0, "stdout:\n{}\nstderr:\n{}", dry.stdout, dry.stderr);
    assert!(dry.stdout.contains("safe to operate on now"), "{}", dry.stdout);
    assert!(ops.operations().is_empty(), "a dry run journals nothing");
}

#[test]
fn a_member_failing_mid_operation_stops_it_cleanly() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let leader = cluster.leader();
    let victim = (0..3).rev().find(|&i| i != leader).expect("a follower");
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    // The victim's etcd keeps running, but will not start again: a broken config.
    let env_file = cluster.layout.members[victim].env_file.clone();
    let good = std::fs::read_to_string(&env_file).expect("env file");
    std::fs::write(&env_file, format!("{good}ETCD_QUOTA_BACKEND_BYTES=lots\n")).expect("break env");
    let pids: Vec<u32> = (0..3).map(|i| cluster.etcd_pid(i)).collect();
    let name = cluster.layout.members[victim].name.clone();

    let out = ops.run(&[
        "restart",
        "--rolling",
        "--yes",
        "--step-timeout",
        "20s",
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("stopped at step") && out.stderr.contains(&format!("restart etcd on {name}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("op resume"), "{}", out.stderr);
    let record = ops.operations().into_iter().next().expect("journaled");
    assert_eq!(record["state"], "failed", "{record}");
    let failed: Vec<&serde_json::Value> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{record}");
    assert_eq!(failed[0]["id"], format!("restart:{name}"));
    // Nothing after the failed step ran: the leader was not touched, and quorum held.
    assert_eq!(
        cluster.etcd_pid(leader),
        pids[leader],
        "the leader was not restarted"
    );
    for &i in &others {
        assert!(
            cluster
                .health(i, &Caller::Coordinator, 2000)
                .expect("health")
                .healthy,
            "member {i} serves"
        );
    }

    // Fixed, the operation resumes at the failed step and completes.
    std::fs::write(&env_file, good).expect("fix env");
    let id = record["id"].as_str().expect("id").to_string();
    let out = ops.run(&["op", "resume", &id, "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "succeeded");
    assert_ne!(cluster.etcd_pid(leader), pids[leader], "the rest of the plan ran");
    assert!(cluster.is_healthy());
}

#[test]
fn compact_alarms_and_nospace_recovery() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("k/", 50, 100);
    let out = ops.run(&["compact", "--keep-revisions", "10", "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["state"], "succeeded");
    let out = ops.run(&["compact", "--keep-duration", "30d", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot tell the revision"), "{}", out.stderr);

    let out = ops.run(&["alarm", "list", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["alarms"].as_array().map(Vec::len), Some(0));

    // Fill the cluster past a small quota on one member: NOSPACE.
    let fence = cluster.acquire_fence("e2e-quota");
    let victim = 0;
    let mut client = cluster.client(victim, &Caller::Coordinator);
    cluster
        .block_on(client.set_etcd_env(etcdops_proto::v1::SetEtcdEnvRequest {
            operation_id: "e2e-quota".into(),
            set: vec![etcdops_proto::v1::EnvVar {
                key: "ETCD_QUOTA_BACKEND_BYTES".into(),
                value: "16777216".into(),
            }],
            unset: Vec::new(),
            fence: Some(fence.clone()),
        }))
        .expect("set quota");
    cluster
        .block_on(client.restart_etcd(etcdops_proto::v1::UnitRequest {
            boot: false,
            operation_id: "e2e-quota".into(),
            timeout_ms: 0,
            fence: Some(fence.clone()),
        }))
        .expect("restart");
    cluster.release_fence(&fence);
    cluster.wait_until("healthy after the quota change", Duration::from_secs(30), |c| {
        c.is_healthy()
    });
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    cluster.block_on(async {
        let mut c = etcd_client::Client::connect(&endpoints, cluster.etcd_options())
            .await
            .expect("client");
        let value = vec![b'x'; 500_000];
        for i in 0..100 {
            if c.put(format!("big/{}", i % 20), value.clone(), None)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    cluster.wait_until("the NOSPACE alarm", Duration::from_secs(30), |c| {
        c.get_status(0, &Caller::Coordinator, 2000)
            .ok()
            .and_then(|s| s.member)
            .is_some_and(|m| m.alarms.iter().any(|a| a.kind == "NOSPACE"))
    });
    let out = ops.run(&["alarm", "list"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("NOSPACE"), "{}", out.stdout);
    // A defrag refuses: the alarm makes the cluster unsafe, and says what to run.
    let out = ops.run(&["defrag", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("recover nospace"), "{}", out.stderr);

    // Free the space the keys hold, then recover.
    cluster.block_on(async {
        let mut c = etcd_client::Client::connect(&endpoints, cluster.etcd_options())
            .await
            .expect("client");
        c.delete("big/", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("deletes work under NOSPACE");
    });
    let out = ops.run(&["recover", "nospace", "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "succeeded");
    let ids: Vec<&str> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.last().copied(), Some("verify-writes"), "{ids:?}");
    let out = ops.run(&["alarm", "list"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    cluster.put_bulk("after/", 5, 100);
}
