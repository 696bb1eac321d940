//! End-to-end: two real clusters in one fleet file, read at once with
//! `--all-clusters` and `--cluster GLOB` (status, health, check hashkv,
//! check disk, backup list, op list): output grouped by cluster in tables and
//! JSON, exit 1 naming the cluster whose agent is down while the other still
//! answers, one TCP connection per agent for a command's several calls, and
//! the commands that work on one cluster refusing the flags (exit 2).
//!
//! The harness gives each cluster its own CA; the fleet has one. Cluster
//! beta's agents are made to trust alpha's CA too (a CA bundle, then a
//! restart), and the fleet trusts both CAs, so alpha's coordinator
//! certificate reaches every agent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use etcdops_tests::{CliOutput, Cluster, bins};
use serde_json::Value;

/// `etcdops --fleet FLEET ARGS` with a journal of its own.
fn etcdops(fleet: &Path, journal: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(bins!().cli)
        .arg("--fleet")
        .arg(fleet)
        .args(args)
        .env_remove("ETCDOPS_FLEET")
        .env("ETCDOPS_JOURNAL", journal)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running etcdops");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TCP forwarder on `ip:0` to `target` that counts the connections it accepts.
fn counting_proxy(ip: std::net::Ipv4Addr, target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).expect("proxy listener");
    let addr = listener.local_addr().expect("proxy addr");
    let count = Arc::new(AtomicUsize::new(0));
    let accepted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            accepted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (addr, count)
}

fn members_toml(cluster: &Cluster, name: &str, override_first: Option<&str>) -> String {
    let mut text = format!("[[clusters]]\nname = \"{name}\"\n");
    for (i, m) in cluster.layout.members.iter().enumerate() {
        let agent = match (i, override_first) {
            (0, Some(url)) => url.to_string(),
            _ => m.agent_url.clone(),
        };
        text.push_str(&format!(
            "[[clusters.members]]\nname = \"{}\"\nagent = \"{agent}\"\n",
            m.name
        ));
    }
    text
}

fn reports(v: &Value) -> &Vec<Value> {
    v["clusters"].as_array().expect("clusters array")
}

#[test]
fn two_clusters_at_once_grouped_with_one_agent_down() {
    let alpha = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let mut beta = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());

    // One fleet CA for the coordinator: beta's agents trust alpha's CA too.
    let alpha_ca = std::fs::read_to_string(alpha.layout.pki_dir.join("ca.crt")).expect("alpha CA");
    let beta_ca_path = beta.layout.pki_dir.join("ca.crt");
    let beta_ca = std::fs::read_to_string(&beta_ca_path).expect("beta CA");
    std::fs::write(&beta_ca_path, format!("{beta_ca}{alpha_ca}")).expect("beta CA bundle");
    for i in 0..3 {
        beta.restart_agent(i);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("ca-bundle.crt");
    std::fs::write(&bundle, format!("{alpha_ca}{beta_ca}")).expect("bundle");
    let pki = &alpha.layout.pki_dir;
    // alpha's first agent behind a proxy that counts connections.
    let first = &alpha.layout.members[0];
    let target: SocketAddr = first
        .agent_url
        .trim_start_matches("https://")
        .parse()
        .expect("agent address");
    let (proxy, connections) = counting_proxy(first.ip, target);
    let fleet = dir.path().join("fleet.toml");
    let text = format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n{}\n{}",
        bundle.display(),
        pki.join("coordinator-sandbox-operator.crt").display(),
        pki.join("coordinator-sandbox-operator.key").display(),
        members_toml(&alpha, "alpha", Some(&format!("https://{proxy}"))),
        members_toml(&beta, "beta", None),
    );
    std::fs::write(&fleet, text).expect("fleet");
    let journal = dir.path().join("journal.redb");
    let run = |args: &[&str]| etcdops(&fleet, &journal, args);

    // Everything healthy: grouped JSON, exit 0.
    let out = run(&["status", "--all-clusters", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(
        (v["ok"].clone(), v["total"].clone()),
        (Value::Bool(true), Value::from(2)),
        "{v}"
    );
    assert_eq!(v["failed"], serde_json::json!([]));
    let names: Vec<&str> = reports(&v)
        .iter()
        .map(|r| r["cluster"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    for r in reports(&v) {
        assert_eq!(
            (r["ok"].clone(), r["healthy"].clone()),
            (Value::Bool(true), Value::from(3)),
            "{r}"
        );
    }

    // health makes two calls per agent (status and the read): one connection.
    let before = connections.load(Ordering::SeqCst);
    let out = run(&["health", "--all-clusters", "--parallel", "1"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("=== cluster alpha ===") && out.stdout.contains("=== cluster beta ==="),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("2 clusters: all ok\n"), "{}", out.stdout);
    assert_eq!(
        connections.load(Ordering::SeqCst) - before,
        1,
        "one channel per agent, reused"
    );

    let out = run(&["check", "hashkv", "--cluster", "*a", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["total"], 2, "alpha and beta both end in a: {v}");
    assert!(reports(&v).iter().all(|r| r["consistent"] == true), "{v}");

    let out = run(&["check", "disk", "--cluster", "b*", "--size", "256k", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(reports(&v)[0]["cluster"], "beta");

    // No journal yet: no operations, nothing wrong.
    let out = run(&["op", "list", "--all-clusters", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["total"], 0);

    // Neither cluster has a backup target: each is a problem of its own.
    let out = run(&["backup", "list", "--all-clusters", "-w", "json"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["failed"], serde_json::json!(["alpha", "beta"]), "{v}");
    assert!(
        reports(&v)[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("alpha")),
        "{v}"
    );

    // One of beta's agents down: beta has a problem, alpha still answers; exit 1.
    beta.kill_agent(1);
    let out = run(&["status", "--all-clusters", "-w", "json"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["failed"], serde_json::json!(["beta"]), "{v}");
    assert_eq!(reports(&v)[0]["ok"], true, "{v}");
    let b = &reports(&v)[1];
    assert_eq!(
        (b["ok"].clone(), b["healthy"].clone()),
        (Value::Bool(false), Value::from(2)),
        "{b}"
    );
    assert!(
        b["members"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{b}"
    );

    let out = run(&["health", "--all-clusters"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.ends_with("2 clusters: 1 ok, 1 with problems: beta\n"),
        "{}",
        out.stdout
    );
    let out = run(&["status", "--cluster", "al*"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.ends_with("1 cluster: all ok\n"), "{}", out.stdout);

    // Usage errors: exit 2, nothing on stdout.
    for (args, expect) in [
        (
            &["defrag", "--all-clusters", "--dry-run"][..],
            "works with status",
        ),
        (&["member", "list", "--cluster", "*"][..], "works with status"),
        (
            &["status", "--cluster", "gamma-*"][..],
            "no cluster in the fleet matches \"gamma-*\"",
        ),
        (
            &["status", "--cluster", "alpha", "--all-clusters"][..],
            "contradict",
        ),
        (
            &["check", "hashkv", "--all-clusters", "--revision", "5"][..],
            "--revision",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.code, 2, "{args:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(expect), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}
