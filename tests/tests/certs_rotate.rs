//! End-to-end (process backend, TLS etcd, loopback): `etcdops certs
//! rotate-ca` (issue 17). Under the load generator's writes (a retrying
//! client trusting both CAs; restarted with a client certificate of the new
//! CA between phases 2 and 3, as a real client must switch), a 3-member
//! cluster's etcd CA is replaced: 0 failed writes, at most one leader
//! change per rolling restart; the coordinator is killed (SIGKILL) in the
//! middle of each phase and `op resume` carries on, the last one finishing; at the end a client with an
//! old-CA certificate is refused by etcd and one with a new-CA certificate
//! accepted, the agents still answer the coordinator (the fleet CA is not
//! touched) and serve etcd through the bundle. Bad input (a missing dir, not
//! a CA, the old CA again, the old CA's subject, a key that does not match,
//! new leaves without a member's address, an --old-ca that did not sign the
//! members' certificates) is refused with exit 2 before any host changes
//! (file contents and served serials compared). An expired or not yet valid
//! new CA is refused by the same check (`new_ca_problems`, unit-tested: the
//! PKI cannot make one here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcdops_certs::{IssueRequest, Pki, Role, TlsFiles};
use etcdops_proto::v1::GetCertificatesRequest;
use etcdops_tests::loadgen::{LoadConfig, LoadGen, LoadReport};
use etcdops_tests::{Caller, Cluster, Coordinator, bins, step_ids};

/// The files of the top of `dirs` with their contents: what "no file
/// changed on any host" compares (the PKI dir holds every member's
/// certificates, keys and trust bundles; each member's dir its env file).
/// Logs change on their own.
fn contents(dirs: &[&Path]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for d in dirs {
        for e in std::fs::read_dir(d).expect("dir").flatten() {
            let path = e.path();
            if path.is_file()
                && path.extension().is_none_or(|x| x != "log")
                && let Ok(bytes) = std::fs::read(&path)
            {
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// What the agents report: (member, cert, source) → (serial, issuer).
fn reported(cluster: &Cluster) -> BTreeMap<(String, String, String), (String, String)> {
    let mut out = BTreeMap::new();
    for i in 0..cluster.layout.members.len() {
        let mut client = cluster.client(i, &Caller::Coordinator);
        let r = cluster
            .block_on(client.get_certificates(GetCertificatesRequest { timeout_ms: 3000 }))
            .expect("GetCertificates")
            .into_inner();
        for c in r.certificates {
            out.insert(
                (cluster.member(i).name.clone(), c.cert, c.source),
                (c.serial, c.issuer),
            );
        }
    }
    out
}

fn host_files(cluster: &Cluster) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut dirs: Vec<&Path> = vec![&cluster.layout.pki_dir];
    for m in &cluster.layout.members {
        dirs.push(&m.dir);
    }
    contents(&dirs)
}

fn start_load(rt: &tokio::runtime::Runtime, cluster: &Cluster, tls: TlsFiles) -> LoadGen {
    let endpoints: Vec<String> = cluster
        .layout
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let cfg = LoadConfig {
        rate: 100,
        concurrency: 32,
        // A write may wait out a restart and a leadership transfer on a
        // loaded 2-core machine; it still counts as failed past this.
        write_deadline: Duration::from_secs(5),
        ..LoadConfig::new(endpoints, Some(tls))
    };
    rt.block_on(LoadGen::start(cfg)).expect("starting the load")
}

fn wait_for_done(ops: &Coordinator, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for op in ops.operations() {
            if op["kind"] == "certs-rotate-ca"
                && op["steps"].as_array().is_some_and(|s| {
                    s.iter().any(|s| {
                        s["state"] == "done" && s["id"].as_str().is_some_and(|id| id.starts_with(prefix))
                    })
                })
            {
                return op["id"].as_str().expect("id").to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {prefix} step done within {timeout:?}");
}

#[test]
fn rotate_ca_under_load_with_a_killed_coordinator_then_old_ca_clients_refused() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let names: Vec<String> = cluster.layout.members.iter().map(|m| m.name.clone()).collect();
    let new_dir = cluster.layout.dir.join("etcd-ca-2");
    let (new_pki, _) = Pki::init(&new_dir, "etcdops-etcd-ca-2", 30, false).expect("new CA");
    let old_client = cluster.layout.etcd_client.clone().expect("TLS layout");
    // etcd's clients trust both CAs before phase 2 (the rotation's contract).
    let both = cluster.layout.dir.join("both-cas.crt");
    let mut bundle = std::fs::read(&old_client.ca).expect("old CA");
    bundle.extend(std::fs::read(new_pki.ca_cert_path()).expect("new CA"));
    std::fs::write(&both, bundle).expect("bundle");
    let issued = new_pki
        .issue(&IssueRequest::new(Role::EtcdClient, "operator-2"))
        .expect("new client certificate");
    let old_tls = TlsFiles {
        ca: both.clone(),
        ..old_client.clone()
    };
    let new_tls = TlsFiles {
        ca: both.clone(),
        cert: issued.cert_path.clone(),
        key: issued.key_path.clone(),
    };
    let ops = cluster.coordinator();
    let new_ca = new_dir.to_str().expect("utf-8");

    // --dry-run: the whole plan, nothing changed.
    let before = host_files(&cluster);
    let dry = ops.run(&["certs", "rotate-ca", "--new-ca", new_ca, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    for text in [
        "phase 1/3",
        "phase 2/3",
        "phase 3/3",
        "rolling restart",
        "fleet CA",
    ] {
        assert!(dry.stdout.contains(text), "{text}: {}", dry.stdout);
    }
    for name in &names {
        let last = format!("install etcd's trust bundle (new CA only) on {name}, restart {name}");
        assert!(dry.stdout.contains(&last), "{}", dry.stdout);
    }
    assert_eq!(host_files(&cluster), before, "a dry run changed a file");
    assert!(ops.operations().is_empty(), "a dry run journals nothing");

    let rt = etcdops_tests::loadgen::runtime();
    let load = start_load(&rt, &cluster, old_tls.clone());
    std::thread::sleep(Duration::from_secs(2));
    // The coordinator is killed in the middle of every phase (its first
    // member done) and the rotation resumed from the journal each time.
    let kill_after = |child: &mut std::process::Child, step: &str| -> String {
        let id = wait_for_done(&ops, step, Duration::from_secs(240));
        child.kill().expect("kill the coordinator");
        let _ = child.wait();
        let record = ops.run(&["op", "show", &id, "-w", "json"]).json();
        assert_eq!(record["state"], "running", "killed mid-phase: {record}");
        cluster.wait_until("healthy before resuming", Duration::from_secs(60), |c| {
            c.is_healthy()
        });
        id
    };
    let mut child = ops.spawn(&["certs", "rotate-ca", "--new-ca", new_ca, "--yes"]);
    let id = kill_after(&mut child, "ca-trust:");
    let mut child = ops.spawn(&["op", "resume", &id]);
    kill_after(&mut child, "ca-leaves:");
    let first = rt.block_on(load.stop());
    eprintln!("load, phases 1-2 (old-CA client certificate): {first}");
    // Before phase 3 etcd's clients switch to a client certificate of the new CA.
    let load = start_load(&rt, &cluster, new_tls.clone());
    let mut child = ops.spawn(&["op", "resume", &id]);
    kill_after(&mut child, "ca-drop-old:");
    let out = ops.run(&["op", "resume", &id, "-w", "json"]);
    std::thread::sleep(Duration::from_secs(2));
    let second = rt.block_on(load.stop());
    eprintln!("load, phases 2-3 (new-CA client certificate): {second}");
    let record = out.succeeded();
    let expected: Vec<String> = ["ca-trust", "ca-leaves", "ca-drop-old"]
        .iter()
        .flat_map(|p| names.iter().map(move |n| format!("{p}:{n}")))
        .collect();
    let mut ids = step_ids(&record);
    ids.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(ids, want, "{record}");

    let total = |r: &LoadReport| (r.ok, r.failed, r.leader_changes);
    let (ok1, failed1, changes1) = total(&first);
    let (ok2, failed2, changes2) = total(&second);
    assert!(ok1 > 0 && ok2 > 0, "{first}\n{second}");
    assert_eq!(failed1 + failed2, 0, "failed writes:\n{first}\n{second}");
    assert!(
        changes1 + changes2 <= 3,
        "at most one leader change per rolling restart (3): {first}\n{second}"
    );

    // etcd now trusts the new CA only: on every member an old-CA client
    // certificate is refused and a new-CA one accepted.
    for m in &cluster.layout.members {
        let refused = etcdops_tests::etcd_get_as(&rt, &m.client_url, &old_tls);
        assert!(
            refused.is_err(),
            "{}: an old-CA client certificate is still accepted",
            m.name
        );
        eprintln!("{}: old-CA client: {refused:?}", m.name);
        etcdops_tests::etcd_get_as(&rt, &m.client_url, &new_tls)
            .unwrap_or_else(|e| panic!("{}: a new-CA client certificate is refused: {e}", m.name));
    }
    let new_subject = "etcdops-etcd-ca-2";
    let seen = reported(&cluster);
    for name in &names {
        let key = |cert: &str, source: &str| (name.clone(), cert.to_string(), source.to_string());
        for cert in ["etcd-server", "etcd-peer"] {
            let (_, issuer) = &seen[&key(cert, "served")];
            assert_eq!(issuer, new_subject, "{name} {cert} served: {seen:?}");
        }
        assert_eq!(seen[&key("etcd-client", "file")].1, new_subject, "{seen:?}");
        let trusted =
            std::fs::read_to_string(cluster.layout.pki_dir.join(format!("{name}.etcd-ca-bundle.crt")))
                .expect("the member's bundle");
        assert_eq!(
            trusted.trim(),
            std::fs::read_to_string(new_pki.ca_cert_path())
                .expect("new CA")
                .trim(),
            "{name} trusts the new CA only"
        );
    }
    // The fleet CA is untouched: the coordinator still reaches every agent,
    // and the agents reach etcd (health is read through them).
    let health = cluster.etcdops(&["health"]);
    assert_eq!(health.code, 0, "{}\n{}", health.stdout, health.stderr);
    assert!(
        !std::fs::read_dir(&new_dir)
            .expect("dir")
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("rotate-ca-"))),
        "the staged keys of a finished rotation are removed"
    );
}

#[test]
fn bad_input_is_refused_before_any_host_changes() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let dir = cluster.layout.dir.clone();
    let ops = cluster.coordinator();
    let files = host_files(&cluster);
    let served = reported(&cluster);
    let refused = |new_ca: &Path, needle: &str| {
        let out = ops.run(&[
            "certs",
            "rotate-ca",
            "--new-ca",
            new_ca.to_str().expect("utf-8"),
            "--yes",
        ]);
        assert_eq!(out.code, 2, "{needle}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("nothing was changed") && out.stderr.contains(needle),
            "{needle}: {}",
            out.stderr
        );
    };

    // Missing.
    refused(&dir.join("no-such-ca"), "certs init");
    // Not a CA: a leaf certificate and its key as ca.crt / ca.key.
    let (other, _) = Pki::init(&dir.join("other-ca"), "other-ca", 30, false).expect("CA");
    let leaf = other
        .issue(&IssueRequest::new(Role::EtcdClient, "not-a-ca"))
        .expect("leaf");
    let not_ca = dir.join("not-a-ca");
    std::fs::create_dir_all(&not_ca).expect("dir");
    std::fs::copy(&leaf.cert_path, not_ca.join("ca.crt")).expect("copy");
    std::fs::copy(&leaf.key_path, not_ca.join("ca.key")).expect("copy");
    refused(&not_ca, "not a CA certificate");
    // The CA etcd trusts now.
    refused(&cluster.layout.pki_dir, "the CA etcd trusts now");
    // Another CA with the old one's subject.
    let (same_name, _) = Pki::init(&dir.join("same-name"), "etcdops-sandbox-ca", 30, false).expect("CA");
    refused(same_name.dir(), "old CA's subject");
    // A key that does not match its certificate.
    let (a, _) = Pki::init(&dir.join("ca-a"), "ca-a", 30, false).expect("CA");
    let (b, _) = Pki::init(&dir.join("ca-b"), "ca-b", 30, false).expect("CA");
    std::fs::copy(b.ca_key_path(), a.ca_key_path()).expect("swap the key");
    refused(a.dir(), "does not match");
    // New leaves without an address the member advertises: the agent's check.
    let (good, _) = Pki::init(&dir.join("etcd-ca-2"), "etcdops-etcd-ca-2", 30, false).expect("CA");
    let env_file = cluster.member(0).env_file.clone();
    let env = std::fs::read_to_string(&env_file).expect("env");
    let widened: String = env
        .lines()
        .map(|l| match l.strip_prefix("ETCD_ADVERTISE_CLIENT_URLS=") {
            Some(v) => format!(
                "ETCD_ADVERTISE_CLIENT_URLS=\"{},https://198.51.100.7:2379\"",
                v.trim_matches('"')
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&env_file, widened).expect("env");
    refused(good.dir(), "198.51.100.7");
    std::fs::write(&env_file, env).expect("env back");
    // An --old-ca that did not sign the members' certificates: the agents
    // refuse the phase 1 bundle (etcd would lock its peers out).
    let out = ops.run(&[
        "certs",
        "rotate-ca",
        "--new-ca",
        good.dir().to_str().expect("utf-8"),
        "--old-ca",
        other.ca_cert_path().to_str().expect("utf-8"),
        "--yes",
    ]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("nothing was changed")
            && out.stderr.contains("is --old-ca the CA that signed them?")
            && out.stderr.contains("does not verify"),
        "{}",
        out.stderr
    );

    assert_eq!(host_files(&cluster), files, "a refused rotation changed a file");
    assert_eq!(
        reported(&cluster),
        served,
        "a refused rotation changed what is served"
    );
    assert!(ops.operations().is_empty(), "nothing journaled");
    for d in [a.dir(), good.dir(), same_name.dir()] {
        assert!(
            !std::fs::read_dir(d)
                .expect("dir")
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("rotate-ca-"))),
            "the staging dir of a refused rotation is removed: {}",
            d.display()
        );
    }
}
