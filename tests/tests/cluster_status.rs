//! End-to-end: the coordinator sees a real 3-member cluster through real
//! agents over mutual TLS, and says so when a member is down.

use etcdops_tests::{Cluster, bins};
use serde_json::Value;

fn members(report: &Value) -> &Vec<Value> {
    report["members"].as_array().expect("members array")
}

#[test]
fn status_of_a_healthy_three_member_cluster() {
    let cluster = Cluster::builder().members(3).start(bins!());

    let out = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(
        out.code, 0,
        "status must succeed on a healthy cluster: {}",
        out.stderr
    );
    let report = out.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["cluster"], "e2e");
    let list = members(&report);
    assert_eq!(list.len(), 3);
    let leaders = list.iter().filter(|m| m["etcd"]["is_leader"] == true).count();
    assert_eq!(leaders, 1, "exactly one leader: {report:#}");
    assert_eq!(
        report["cluster_ids"].as_array().map(Vec::len),
        Some(1),
        "one cluster ID: {report:#}"
    );
    for (i, m) in list.iter().enumerate() {
        assert!(m["error"].is_null(), "member {i}: {m:#}");
        let id = m["etcd"]["member_id"].as_str().expect("hex member id");
        assert_eq!(id.len(), 16, "IDs are 16 hex digits: {id}");
        assert!(u64::from_str_radix(id, 16).is_ok());
        assert_eq!(m["unit"]["state"], "active");
        assert_eq!(m["unit"]["backend"], "process");
        assert!(
            m["data_dir"]["size_bytes"].as_u64().is_some_and(|s| s > 0),
            "data dir measured: {m:#}"
        );
        assert_eq!(m["data_dir"]["has_wal"], true, "{m:#}");
        assert!(
            m["data_dir"]["fs_inodes_free"].as_u64().is_some_and(|n| n > 0),
            "{m:#}"
        );
        assert_eq!(m["data_dir"]["owner_uid"], 0, "tests run as root: {m:#}");
        assert!(
            m["etcd"]["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("https://")),
            "etcd serves clients over TLS by default, and the agent talks TLS to it: {m:#}"
        );
        assert!(
            m["agent_info"]["cert_not_after_unix"]
                .as_i64()
                .is_some_and(|t| t > 0)
        );
    }

    let table = cluster.etcdops(&["status"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    for name in ["etcd1", "etcd2", "etcd3"] {
        assert!(
            table.stdout.contains(name),
            "table lists {name}:\n{}",
            table.stdout
        );
    }

    let health = cluster.etcdops(&["health", "-w", "json"]);
    assert_eq!(health.code, 0, "{}", health.stderr);
    assert_eq!(health.json()["ok"], true);

    let list = cluster.etcdops(&["member", "list", "-w", "json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let report = list.json();
    let names: Vec<&str> = members(&report)
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{report:#}");
    for name in ["etcd1", "etcd2", "etcd3"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // Client and peer TLS by default: etcd's own membership says https.
    for m in members(&report) {
        for key in ["peer_urls", "client_urls"] {
            let urls = m[key].as_array().expect("urls");
            assert!(
                !urls.is_empty()
                    && urls
                        .iter()
                        .all(|u| u.as_str().is_some_and(|u| u.starts_with("https://"))),
                "{key} of {}: {urls:?}",
                m["name"]
            );
        }
    }
    let table = cluster.etcdops(&["member", "list"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("https://") && !table.stdout.contains("http://"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_killed_leader_shows_unhealthy_and_the_exit_code_says_so() {
    let cluster = Cluster::builder().members(3).start(bins!());
    // The harshest case: the leader dies, and the others are asked at once,
    // while they have no leader yet.
    let leader = cluster.leader();
    let name = cluster.member(leader).name.clone();
    cluster.kill_etcd(leader);

    let out = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(
        out.code, 1,
        "status must fail when a member is down: {}",
        out.stdout
    );
    let report = out.json();
    assert_eq!(report["ok"], false);
    let dead = members(&report)
        .iter()
        .find(|m| m["name"] == name.as_str())
        .expect("dead member listed");
    assert!(dead["error"].is_string(), "{name} reports its error: {dead:#}");
    assert_eq!(
        dead["unit"]["state"], "failed",
        "the agent saw etcd die: {dead:#}"
    );
    assert!(
        dead["unit"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("SIGKILL")),
        "{dead:#}"
    );
    for live in members(&report).iter().filter(|m| m["name"] != name.as_str()) {
        assert!(live["error"].is_null(), "the live members still answer: {live:#}");
        assert!(live["etcd"]["member_id"].is_string(), "{live:#}");
    }

    let health = cluster.etcdops(&["health"]);
    assert_eq!(health.code, 1, "health must fail: {}", health.stdout);
    assert!(health.stdout.contains(&name), "{}", health.stdout);
}

#[test]
fn an_unreachable_agent_is_reported_without_hanging() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let started = std::time::Instant::now();
    // An agent URL in the fleet that nothing listens on: point etcd3's entry elsewhere.
    let fleet = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    let moved = fleet.replace(&cluster.member(2).agent_url, "https://127.0.0.1:9");
    std::fs::write(cluster.fleet_path(), moved).expect("rewrite fleet");

    let out = cluster.etcdops(&["status", "-w", "json", "--timeout", "3s"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let report = out.json();
    let etcd3 = members(&report)
        .iter()
        .find(|m| m["name"] == "etcd3")
        .expect("etcd3 listed");
    let error = etcd3["error"].as_str().expect("etcd3 has an error");
    assert!(
        error.contains("127.0.0.1:9"),
        "the error names the agent: {error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "no hang");
}

#[test]
fn a_hung_agent_times_out_instead_of_hanging_the_cli() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let agent = cluster.agent_pid(0);
    let stop = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent as i32), sig).expect("signal");
    stop(nix::sys::signal::Signal::SIGSTOP);
    let started = std::time::Instant::now();
    let out = cluster.etcdops(&["health", "-w", "json", "--timeout", "2s"]);
    let took = started.elapsed();
    stop(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let report = out.json();
    let etcd1 = members(&report)
        .iter()
        .find(|m| m["name"] == "etcd1")
        .expect("etcd1 listed");
    assert!(
        etcd1["error"].as_str().is_some_and(|e| e.contains("etcd1")),
        "the error names the member: {etcd1:#}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "bounded by the timeout, took {took:?}"
    );
}

#[test]
fn check_hashkv_compares_every_member_at_one_revision() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    cluster.put_bulk("hk/", 40, 200);
    let out = cluster.etcdops(&["check", "hashkv", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["consistent"], true, "{report}");
    assert!(report["revision"].as_i64().is_some_and(|r| r > 40), "{report}");
    let hashes: Vec<&str> = members(&report)
        .iter()
        .map(|m| m["hash"].as_str().expect("hash"))
        .collect();
    assert_eq!(hashes.len(), 3);
    assert!(
        hashes.iter().all(|h| *h == hashes[0] && h.len() == 8),
        "{hashes:?}"
    );

    // The table says it in words; an agent that cannot be asked makes it exit 1.
    let text = cluster.etcdops(&["check", "hashkv", "--revision", "10"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("the same key-value store up to revision 10"),
        "{}",
        text.stdout
    );
    let fleet = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    std::fs::write(
        cluster.fleet_path(),
        fleet.replace(&cluster.member(2).agent_url, "https://127.0.0.1:9"),
    )
    .expect("fleet");
    let out = cluster.etcdops(&["check", "hashkv", "--timeout", "3s"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("not every member could be hashed") && out.stdout.contains("127.0.0.1:9"),
        "{}",
        out.stdout
    );
    let bad = cluster.etcdops(&["check", "hashkv", "--revision", "0"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}
