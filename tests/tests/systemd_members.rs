//! Issue 7, "done when", on real systemd hosts (systemd-nspawn hosts with
//! Debian's etcd.service and the agent with `backend = "systemd"`, see
//! `tests/src/nspawn.rs`): `etcdops member add|remove` takes a cluster from
//! 3 to 4 to 3 members, and `etcdops member replace` replaces a power-cut
//! member by a fresh spare host under a steady write load with no failed
//! write; the data is checked on every member after each change. Prints
//! `SKIPPED: <reason>` where the machine cannot run such hosts.

use std::time::{Duration, Instant};

use etcdops_tests::loadgen::{self, LoadConfig, LoadGen};
use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{bins, step_ids};

/// Keys written before the changes and counted on every member after them.
const KEEP_PREFIX: &str = "/e2e/keep/";
const KEEP_COUNT: i64 = 200;
/// The load during the replacement, as in `systemd_operations.rs`: about
/// 100 writes/s, 64 in flight at most, 1 s per attempt (then the next
/// member), 2 s per write.
const RATE: u32 = 100;
const CONCURRENCY: usize = 64;
const WARMUP: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(2);
/// How long a new member may take to hold every key.
const CONVERGE: Duration = Duration::from_secs(30);

fn put_keys(rt: &tokio::runtime::Runtime, endpoints: &[String], tls: Option<etcd_client::ConnectOptions>) {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, tls)
            .await
            .expect("etcd client");
        for i in 0..KEEP_COUNT {
            client
                .put(format!("{KEEP_PREFIX}{i}"), format!("value-{i}"), None)
                .await
                .expect("put");
        }
    });
}

/// Keys under `prefix` as the member at `url` holds them (a serializable
/// read: its own data, not the leader's); None if it does not answer.
fn local_count(
    rt: &tokio::runtime::Runtime,
    url: &str,
    prefix: &str,
    tls: Option<etcd_client::ConnectOptions>,
) -> Option<i64> {
    rt.block_on(async {
        let read = async {
            let mut client = etcd_client::Client::connect([url], tls).await.ok()?;
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            client.get(prefix, Some(opts)).await.ok().map(|r| r.count())
        };
        tokio::time::timeout(Duration::from_secs(3), read)
            .await
            .ok()
            .flatten()
    })
}

/// Waits until every member at `urls` holds the [`KEEP_COUNT`] kept keys.
fn wait_for_kept_keys(rt: &tokio::runtime::Runtime, urls: &[String], cluster: &NspawnCluster) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let counts: Vec<Option<i64>> = urls
            .iter()
            .map(|u| {
                local_count(
                    rt,
                    u,
                    KEEP_PREFIX,
                    etcdops_tests::etcd_connect_options(&cluster.layout),
                )
            })
            .collect();
        if counts.iter().all(|c| *c == Some(KEEP_COUNT)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {CONVERGE:?}, members {urls:?} hold {counts:?} of the {KEEP_COUNT} kept keys\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The same data on every member at `urls`: once no write is in flight and
/// every member reports the same revision, HashKV at that revision (etcd's
/// hash of every key and value up to it) is the same on each, and so are
/// the key counts. Returns (revision, hash).
fn same_data(rt: &tokio::runtime::Runtime, urls: &[String], cluster: &NspawnCluster) -> (i64, u32) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let seen: Vec<Option<(i64, u32)>> = urls
            .iter()
            .map(|url| {
                rt.block_on(async {
                    let read = async {
                        let mut client = etcd_client::Client::connect(
                            [url.as_str()],
                            etcdops_tests::etcd_connect_options(&cluster.layout),
                        )
                        .await
                        .ok()?;
                        let status = client.status().await.ok()?;
                        let rev = status.header()?.revision();
                        let hash = client.hash_kv(rev).await.ok()?;
                        Some((rev, hash.hash()))
                    };
                    tokio::time::timeout(Duration::from_secs(3), read)
                        .await
                        .ok()
                        .flatten()
                })
            })
            .collect();
        if let Some(Some(first)) = seen.first()
            && seen.iter().all(|s| s.as_ref() == Some(first))
        {
            return *first;
        }
        assert!(
            Instant::now() < deadline,
            "after {CONVERGE:?} the members {urls:?} still differ: (revision, hash) {seen:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The members as `etcdops member list -w json` reports them: (name, is_learner), sorted.
fn member_names(cluster: &NspawnCluster, cli: &std::path::Path) -> Vec<(String, bool)> {
    let out = cluster.etcdops(cli, &["member", "list", "-w", "json"]);
    assert_eq!(out.code, 0, "member list:\n{}\n{}", out.stdout, out.stderr);
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

fn fleet_text(cluster: &NspawnCluster) -> String {
    std::fs::read_to_string(cluster.fleet_path()).expect("fleet file")
}

/// `systemctl is-active|is-enabled etcd` inside host i.
fn etcd_unit(cluster: &NspawnCluster, i: usize, query: &str) -> String {
    cluster.exec_stdout(i, &["systemctl", query, "etcd"])
}

/// `etcdops health` with the fleet file as the coordinator left it: exit 0.
fn assert_fleet_healthy(cluster: &NspawnCluster, cli: &std::path::Path) {
    let health = cluster.etcdops(cli, &["health"]);
    assert_eq!(
        health.code,
        0,
        "etcdops health:\n{}\n{}\n{}",
        health.stdout,
        health.stderr,
        cluster.logs()
    );
}

fn leader(cluster: &NspawnCluster) -> usize {
    (0..3)
        .find(|&i| {
            cluster
                .get_status(i)
                .ok()
                .and_then(|s| s.member)
                .is_some_and(|m| m.is_leader)
        })
        .expect("a leader among the members")
}

#[test]
fn add_then_remove_a_member_three_to_four_to_three_on_systemd_hosts() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip_with_spares(3, 1, bins.clone()) else {
        return;
    };
    let rt = etcdops_tests::loadgen::runtime();
    let members = cluster.client_urls();
    put_keys(
        &rt,
        &members,
        etcdops_tests::etcd_connect_options(&cluster.layout),
    );
    let spare = cluster.spare(0).clone();
    let host = cluster.spare_host(0);
    assert_eq!(
        etcd_unit(&cluster, host, "is-active"),
        "inactive",
        "the spare's etcd is not running"
    );
    assert_eq!(
        etcd_unit(&cluster, host, "is-enabled"),
        "disabled",
        "the spare's etcd.service is not enabled"
    );

    // --- 3 -> 4
    let started = Instant::now();
    let out = cluster.etcdops(
        &bins.cli,
        &[
            "member",
            "add",
            &spare.name,
            "--agent",
            &spare.agent_url,
            "--yes",
            "-w",
            "json",
        ],
    );
    let add_took = started.elapsed();
    eprintln!("member add: exit {} in {add_took:.1?}\n{}", out.code, out.stderr);
    let record = out.succeeded();
    let steps = step_ids(&record);
    assert_eq!(steps[0], format!("add-learner:{}", spare.name), "{steps:?}");
    let names = member_names(&cluster, &bins.cli);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names.iter().all(|(_, learner)| !learner),
        "every member a voter: {names:?}"
    );
    assert!(names.iter().any(|(n, _)| *n == spare.name), "{names:?}");
    assert!(
        fleet_text(&cluster).contains(&spare.agent_url),
        "the fleet file lists the new member"
    );
    for i in 0..3 {
        assert_eq!(etcd_unit(&cluster, i, "is-active"), "active", "host {i}");
    }
    assert_eq!(
        etcd_unit(&cluster, host, "is-active"),
        "active",
        "the new member's etcd.service"
    );
    let env = cluster.read_in_host(host, "/etc/default/etcd");
    assert!(
        env.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
            || env.contains("ETCD_INITIAL_CLUSTER_STATE=existing"),
        "the joining host's env file:\n{env}"
    );
    assert_eq!(
        etcd_unit(&cluster, host, "is-enabled"),
        "enabled",
        "the new member's etcd starts at boot"
    );
    let four: Vec<String> = members
        .iter()
        .cloned()
        .chain([spare.client_url.clone()])
        .collect();
    wait_for_kept_keys(&rt, &four, &cluster);
    let (rev4, hash4) = same_data(&rt, &four, &cluster);
    assert_fleet_healthy(&cluster, &bins.cli);

    // --- 4 -> 3
    let started = Instant::now();
    let out = cluster.etcdops(
        &bins.cli,
        &["member", "remove", &spare.name, "--yes", "-w", "json"],
    );
    let remove_took = started.elapsed();
    eprintln!(
        "member remove: exit {} in {remove_took:.1?}\n{}",
        out.code, out.stderr
    );
    out.succeeded();
    let names = member_names(&cluster, &bins.cli);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.iter().any(|(n, _)| *n == spare.name), "{names:?}");
    assert!(
        !fleet_text(&cluster).contains(&spare.agent_url),
        "the fleet file no longer lists it"
    );
    assert_eq!(
        etcd_unit(&cluster, host, "is-active"),
        "inactive",
        "the removed member's etcd is stopped"
    );
    let kept = cluster.exec_stdout(host, &["ls", "/var/lib/etcd"]);
    assert!(
        kept.lines().any(|l| l.starts_with("default.removed-")),
        "the removed member's data dir is kept aside: {kept:?}"
    );
    for i in 0..3 {
        assert_eq!(etcd_unit(&cluster, i, "is-active"), "active", "host {i}");
    }
    wait_for_kept_keys(&rt, &members, &cluster);
    let (rev3, hash3) = same_data(&rt, &members, &cluster);
    assert!(
        cluster.is_healthy(),
        "healthy after the removal\n{}",
        cluster.logs()
    );
    assert_fleet_healthy(&cluster, &bins.cli);
    assert_eq!(
        etcd_unit(&cluster, host, "is-enabled"),
        "disabled",
        "a removed member's etcd does not start at boot"
    );
    eprintln!(
        "summary: add {add_took:.1?} (4 members at revision {rev4}, hash {hash4:08x}); \
         remove {remove_took:.1?} (3 members at revision {rev3}, hash {hash3:08x}); \
         removed host's etcd.service is-enabled = {}",
        etcd_unit(&cluster, host, "is-enabled")
    );
}

#[test]
fn a_power_cut_member_is_replaced_under_load_with_no_failed_write() {
    let bins = bins!();
    let Some(mut cluster) = NspawnCluster::start_or_skip_with_spares(3, 1, bins.clone()) else {
        return;
    };
    let rt = etcdops_tests::loadgen::runtime();
    let members = cluster.client_urls();
    put_keys(
        &rt,
        &members,
        etcdops_tests::etcd_connect_options(&cluster.layout),
    );
    let spare = cluster.spare(0).clone();
    let host = cluster.spare_host(0);
    let victim = (0..3).find(|&i| i != leader(&cluster)).expect("a follower");
    let old = cluster.layout.members[victim].name.clone();
    let old_agent = cluster.layout.members[victim].agent_url.clone();

    let cfg = LoadConfig {
        rate: RATE,
        concurrency: CONCURRENCY,
        ..LoadConfig::new(members.clone(), cluster.layout.etcd_client.clone())
    };
    let load = rt.block_on(LoadGen::start(cfg)).expect("starting the load");
    std::thread::sleep(WARMUP);
    cluster.power_cut(victim);
    let cut_at = Instant::now();
    let cut_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let out = cluster.etcdops(
        &bins.cli,
        &[
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
        ],
    );
    let took = cut_at.elapsed();
    std::thread::sleep(AFTER);
    let report = rt.block_on(load.stop());
    eprintln!(
        "member replace {old} --with {}: exit {} in {took:.1?} after the power cut\nload: {report}\n--- etcdops stderr\n{}",
        spare.name, out.code, out.stderr
    );

    let record = out.succeeded();
    let steps = step_ids(&record);
    assert_eq!(steps[0], "snapshot", "a verified snapshot first: {steps:?}");
    assert_eq!(
        steps[1],
        format!("remove:{old}"),
        "a dead member goes first: {steps:?}"
    );
    for s in record["steps"].as_array().expect("steps") {
        // Whole seconds since the cut: where the replacement's time goes.
        let at = |field: &str| s[field].as_u64().unwrap_or(0).saturating_sub(cut_unix);
        eprintln!(
            "  step {}: +{} s .. +{} s after the cut, {} attempt(s): {}",
            s["id"].as_str().unwrap_or_default(),
            at("started_at_unix"),
            at("finished_at_unix"),
            s["attempts"],
            s["detail"].as_str().unwrap_or_default()
        );
    }
    let names = member_names(&cluster, &bins.cli);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.iter().all(|(_, learner)| !learner),
        "three voters: {names:?}"
    );
    assert!(
        names.iter().any(|(n, _)| *n == spare.name) && !names.iter().any(|(n, _)| *n == old),
        "{names:?}"
    );
    let fleet = fleet_text(&cluster);
    assert!(
        fleet.contains(&spare.agent_url) && !fleet.contains(&old_agent),
        "{fleet}"
    );
    assert_eq!(
        etcd_unit(&cluster, host, "is-active"),
        "active",
        "the new member's etcd.service"
    );
    let voters: Vec<usize> = (0..3).filter(|&i| i != victim).chain([host]).collect();
    for &i in &voters {
        assert_eq!(etcd_unit(&cluster, i, "is-active"), "active", "host {i}");
    }
    let urls: Vec<String> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| members[i].clone())
        .chain([spare.client_url.clone()])
        .collect();
    wait_for_kept_keys(&rt, &urls, &cluster);
    let (rev, hash) = same_data(&rt, &urls, &cluster);
    let load_keys: Vec<Option<i64>> = urls
        .iter()
        .map(|u| {
            local_count(
                &rt,
                u,
                "/bench/load/",
                etcdops_tests::etcd_connect_options(&cluster.layout),
            )
        })
        .collect();
    assert!(
        load_keys
            .iter()
            .all(|c| *c == load_keys[0] && c.is_some_and(|n| n > 0)),
        "the load's keys on each voter: {load_keys:?}"
    );
    assert_fleet_healthy(&cluster, &bins.cli);

    assert!(report.ok > 0, "the load wrote nothing: {report}");
    assert_eq!(
        report.failed, 0,
        "writes failed while a power-cut member was replaced: {report}"
    );
    assert_eq!(
        etcd_unit(&cluster, host, "is-enabled"),
        "enabled",
        "the new member's etcd starts at boot"
    );
    eprintln!(
        "summary: replace {took:.1?} after the cut; load: ok {} failed {} retried {} p50 {} p99 {} max {} \
         leader changes {} term +{}; voters at revision {rev}, hash {hash:08x}, {:?} load keys each; \
         new member's etcd.service is-enabled = {}",
        report.ok,
        report.failed,
        report.retried,
        loadgen::ms(report.latency.p50),
        loadgen::ms(report.latency.p99),
        loadgen::ms(report.latency.max),
        report.leader_changes,
        report.term_advance,
        load_keys[0],
        etcd_unit(&cluster, host, "is-enabled"),
    );
}
