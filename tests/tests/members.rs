//! End-to-end: member lifecycle through `etcdops member add|remove|replace`
//! on a real 3-member cluster with a spare host (an agent with no member):
//! 3 → 4 → 3 members with the data checked after each change; a dead member
//! (its host's agent and etcd killed: a power cut) replaced by the spare;
//! bad input and quorum-breaking removals refused with nothing changed.

use std::time::Duration;

use etcdops_tests::{Caller, Cluster, Coordinator, EtcdRelease, bins};

/// The members as `member list -w json` reports them: (name, is_learner).
fn member_names(ops: &Coordinator) -> Vec<(String, bool)> {
    let out = ops.run(&["member", "list", "-w", "json"]);
    let mut names: Vec<(String, bool)> = out.json()["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["is_learner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    names.sort();
    names
}

fn fleet_text(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.fleet_path()).expect("fleet file")
}

#[test]
fn add_then_remove_a_member_three_to_four_to_three() {
    add_then_remove(EtcdRelease::Debian34);
}

/// The same on etcd 3.5 (the matrix's representative subset).
#[test]
fn add_then_remove_a_member_three_to_four_to_three_on_etcd_3_5() {
    add_then_remove(EtcdRelease::V3_5);
}

fn add_then_remove(release: EtcdRelease) {
    let cluster = Cluster::builder()
        .etcd(release)
        .members(3)
        .spares(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("data/", 300, 200);
    let spare = cluster.spare(0).clone();

    let dry = ops.run(&[
        "member",
        "add",
        &spare.name,
        "--agent",
        &spare.agent_url,
        "--dry-run",
        "-w",
        "json",
    ]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let steps: Vec<String> = dry.json()["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(steps[0], format!("add-learner:{}", spare.name), "{steps:?}");

    let out = ops.run(&[
        "member",
        "add",
        &spare.name,
        "--agent",
        &spare.agent_url,
        "--yes",
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["state"], "succeeded");
    let names = member_names(&ops);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names.iter().all(|(_, learner)| !learner),
        "every member a voter: {names:?}"
    );
    assert!(
        fleet_text(&cluster).contains(&spare.agent_url),
        "the fleet file lists the new member"
    );
    cluster.wait_until("the new member has every key", Duration::from_secs(30), |c| {
        c.local_count(&spare.client_url, "data/") == 300
    });
    let status = ops.run(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);

    // Adding it again is refused before anything changes.
    let again = ops.run(&["member", "add", &spare.name, "--agent", &spare.agent_url, "--yes"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("already a member"), "{}", again.stderr);

    let out = ops.run(&["member", "remove", &spare.name, "--yes", "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    // A verified snapshot first, beside the journal, named in the record.
    let record = out.json();
    assert_eq!(record["steps"][0]["id"], "snapshot", "{record}");
    let saved = &record["operation"]["snapshot"]["saved"];
    let file = std::path::Path::new(saved["location"].as_str().unwrap_or_else(|| panic!("{record}")));
    assert!(
        file.starts_with(ops.journal.parent().expect("dir").join("snapshots")) && file.exists(),
        "{}",
        file.display()
    );
    assert!(
        std::path::Path::new(&format!("{}.json", file.display())).exists(),
        "its sidecar"
    );
    assert_eq!(member_names(&ops).len(), 3);
    assert!(
        !fleet_text(&cluster).contains(&spare.agent_url),
        "the fleet file no longer lists it"
    );
    let parent = spare.data_dir.parent().expect("parent");
    let kept: Vec<String> = std::fs::read_dir(parent)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains(".removed-"))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the removed member's data dir is kept aside: {kept:?}"
    );
    for m in &cluster.layout.members {
        assert_eq!(cluster.local_count(&m.client_url, "data/"), 300, "{}", m.name);
    }
    assert!(cluster.is_healthy());
    // The removed host's agent holds no fence of the operation that removed
    // it, so the same host can join again.
    let fences = cluster
        .spare_status(0)
        .expect("the removed host's agent answers")
        .fences;
    assert!(fences.iter().all(|f| !f.held), "{fences:?}");
    let again = ops.run(&[
        "member",
        "add",
        &spare.name,
        "--agent",
        &spare.agent_url,
        "--dry-run",
    ]);
    assert_eq!(
        again.code, 0,
        "the removed host can be added again:\n{}\n{}",
        again.stdout, again.stderr
    );
}

#[test]
fn a_dead_member_is_replaced_by_a_spare() {
    let cluster = Cluster::builder()
        .members(3)
        .spares(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("data/", 200, 200);
    let leader = cluster.leader();
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    let old = cluster.layout.members[victim].name.clone();
    let spare = cluster.spare(0).clone();
    cluster.power_cut(victim);

    let out = ops.run(&[
        "member",
        "replace",
        &old,
        "--with",
        &spare.name,
        "--agent",
        &spare.agent_url,
        "--yes",
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "succeeded");
    let ids: Vec<&str> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids[0], "snapshot", "a verified snapshot first: {ids:?}");
    assert_eq!(
        ids[1],
        format!("remove:{old}"),
        "a dead member goes first: {ids:?}"
    );
    let names: Vec<String> = member_names(&ops).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&spare.name) && !names.contains(&old), "{names:?}");
    let fleet = fleet_text(&cluster);
    assert!(
        fleet.contains(&spare.agent_url) && !fleet.contains(&format!("name = \"{old}\"")),
        "{fleet}"
    );
    for url in cluster
        .layout
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, m)| m.client_url.clone())
        .chain([spare.client_url.clone()])
    {
        cluster.wait_until("every voter holds the data", Duration::from_secs(30), |c| {
            c.local_count(&url, "data/") == 200
        });
    }
    let health = ops.run(&["health"]);
    assert_eq!(health.code, 0, "{}", health.stdout);
}

#[test]
fn bad_input_and_quorum_breaking_removals_change_nothing() {
    let cluster = Cluster::builder()
        .members(3)
        .spares(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let spare = cluster.spare(0).clone();
    for (args, code, expected) in [
        (
            vec!["member", "remove", "etcd9", "--yes"],
            2,
            "no member \"etcd9\"",
        ),
        (vec!["member", "remove", "ffffffffffff", "--yes"], 2, "no member"),
        (
            vec![
                "member",
                "add",
                "etcd2",
                "--agent",
                spare.agent_url.as_str(),
                "--yes",
            ],
            2,
            "already a member",
        ),
        (
            vec!["member", "add", "x", "--agent", "not a url", "--yes"],
            2,
            "--agent",
        ),
        (
            vec!["member", "add", "x", "--agent", "https://127.0.0.1:1", "--yes"],
            1,
            "cannot be asked",
        ),
        (
            vec![
                "member",
                "add",
                "x",
                "--agent",
                spare.agent_url.as_str(),
                "--peer-url",
                "ftp://x",
                "--yes",
            ],
            2,
            "--peer-url",
        ),
        (vec!["member", "promote", "etcd2", "--yes"], 2, "already a voter"),
    ] {
        let out = ops.run(&args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    // One member down: removing a healthy one would leave 1 healthy voter of 2.
    let leader = cluster.leader();
    let down = (0..3).find(|&i| i != leader).expect("follower");
    let other = (0..3)
        .find(|&i| i != leader && i != down)
        .expect("other follower");
    cluster.kill_etcd(down);
    let name = cluster.layout.members[other].name.clone();
    let out = ops.run(&["member", "remove", &name, "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("quorum needs 2") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(member_names(&ops).len(), 3, "nothing changed");
    assert!(fleet_text(&cluster).contains(&format!("name = \"{name}\"")));
}

#[test]
fn a_join_that_fails_before_promotion_is_rolled_back() {
    let cluster = Cluster::builder()
        .members(3)
        .spares(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let spare = cluster.spare(0).clone();
    // The spare's etcd will not start: a setting etcd cannot parse.
    let env = std::fs::read_to_string(&spare.env_file).expect("env");
    std::fs::write(&spare.env_file, format!("{env}ETCD_QUOTA_BACKEND_BYTES=lots\n")).expect("break env");

    let out = ops.run(&[
        "member",
        "add",
        &spare.name,
        "--agent",
        &spare.agent_url,
        "--yes",
        "--step-timeout",
        "20s",
    ]);
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("rolled back") && out.stderr.contains("learner"),
        "{}",
        out.stderr
    );
    let names = member_names(&ops);
    assert_eq!(names.len(), 3, "no learner left behind: {names:?}");
    assert!(!fleet_text(&cluster).contains(&spare.agent_url));
    let list = ops.run(&["op", "list", "-w", "json"]);
    assert_eq!(list.json()["operations"][0]["state"], "aborted");
    assert!(cluster.is_healthy());
    // Fixed, the same command succeeds.
    std::fs::write(&spare.env_file, env).expect("fix env");
    let out = ops.run(&["member", "add", &spare.name, "--agent", &spare.agent_url, "--yes"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(member_names(&ops).len(), 4);
}

#[test]
fn aborting_a_paused_join_frees_the_joining_hosts_fence() {
    let cluster = Cluster::builder()
        .members(3)
        .spares(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let spare = cluster.spare(0).clone();
    let pause_at = format!("start:{}", spare.name);
    let out = ops.run(&[
        "member",
        "add",
        &spare.name,
        "--agent",
        &spare.agent_url,
        "--pause-after",
        &pause_at,
        "--yes",
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "paused", "{record}");
    let id = record["id"].as_str().expect("id").to_string();
    let held = |status: etcdops_proto::v1::GetStatusResponse| status.fences.iter().any(|f| f.held);
    assert!(
        held(cluster.spare_status(0).expect("spare")),
        "the joining host holds the fence while paused"
    );

    let abort = ops.run(&["op", "abort", &id, "-w", "json"]);
    assert_eq!(
        abort.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        abort.stdout, abort.stderr
    );
    assert_eq!(abort.json()["state"], "aborted");
    assert!(
        !held(cluster.spare_status(0).expect("spare")),
        "op abort freed the joining host's fence too"
    );
    for i in 0..3 {
        let status = cluster.get_status(i, &Caller::Coordinator, 2000).expect("status");
        assert!(!held(status), "member {i}'s fence is free");
    }
}
