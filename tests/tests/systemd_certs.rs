//! Issue 17 on real systemd hosts: `etcdops certs renew` on three
//! systemd-nspawn hosts running Debian's etcd.service with client and peer
//! TLS (etcd as user `etcd`, its files in `/etc/etcd/pki`) and the agent from
//! its package (the hardened unit, `backend = "systemd"`, its files in
//! `/etc/etcdops/pki`), under the load generator's writes (retrying client,
//! TLS). One cluster boot:
//! - bad input is refused before any host changes (at the agent: a
//!   certificate without the member's address, a key that does not match; at
//!   the CLI: leaves from a CA the members do not trust): every file in both
//!   PKI dirs of every host hashes the same before and after;
//! - a renewal under load: 0 failed writes, 0 leader changes (the load's
//!   watcher and etcd's `etcd_server_leader_changes_seen_total`), every
//!   member serves the new serials on its client and peer ports and every
//!   agent its new certificate, neither etcd.service nor the agent's unit
//!   restarted (MainPID, ActiveEnterTimestamp, NRestarts), the old files kept
//!   as `<file>.prev`, the keys still 0600 and owned by `etcd` (etcd reads
//!   them: it serves the new ones);
//! - a coordinator SIGKILLed in the middle of a second renewal under load,
//!   then `etcdops op resume`: the plan finishes, the steps done before the
//!   kill are not redone, every member ends on the serials staged for that
//!   run (renewed exactly once: its `.prev` is the first renewal's), still 0
//!   failed writes and no restart;
//! - a unit whose `ReadWritePaths=` lack etcd's PKI dir: the renewal is
//!   refused before any host changes, naming the directory and the drop-in.
//!
//! Prints `SKIPPED: <reason>` where the machine cannot run nspawn hosts
//! (`ETCDOPS_REQUIRE_NSPAWN=1` makes that a failure); the hosts install the
//! dev .debs (`bash deploy/dev/package.sh --profile dev`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_certs::{IssueRequest, Pki, Role};
use etcdops_proto::v1::{InstallCertificatesRequest, NewCertificate, ReleaseFenceRequest};
use etcdops_tests::loadgen::{LoadConfig, LoadGen, LoadReport};
use etcdops_tests::nspawn::{AGENT_UNIT, NspawnCluster};
use etcdops_tests::{CliOutput, bins, step_ids};

/// The load: about 100 writes/s, 64 in flight at most (see
/// `tests/tests/systemd_operations.rs` for why the default 8 is too few on
/// a busy 2-core machine), retried on the next member.
const RATE: u32 = 100;
const CONCURRENCY: usize = 64;
/// Load before the operation starts and after it ended.
const WARMUP: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(2);
/// How long after the second step of a renewal started its coordinator is
/// SIGKILLed (a step takes 100-200 ms on these hosts: the install RPC, then
/// the wait for the new serials served).
const KILL_INTO_STEP: Duration = Duration::from_millis(60);
/// The certificate kinds a member serves, and those it holds as files.
const SERVED: [&str; 3] = ["etcd-server", "etcd-peer", "agent"];
const RENEWED: [&str; 4] = ["etcd-server", "etcd-peer", "agent", "etcd-client"];
/// The PKI dirs of a host (as `tests/src/nspawn.rs` installs them).
const ETCD_PKI: &str = "/etc/etcd/pki";
const AGENT_PKI: &str = "/etc/etcdops/pki";

fn start_load(rt: &tokio::runtime::Runtime, cluster: &NspawnCluster) -> LoadGen {
    let cfg = LoadConfig {
        rate: RATE,
        concurrency: CONCURRENCY,
        ..LoadConfig::new(cluster.client_urls(), cluster.layout.etcd_client.clone())
    };
    let load = rt.block_on(LoadGen::start(cfg)).expect("starting the load");
    std::thread::sleep(WARMUP);
    load
}

fn stop_load(rt: &tokio::runtime::Runtime, load: LoadGen) -> LoadReport {
    std::thread::sleep(AFTER);
    rt.block_on(load.stop())
}

/// No write failed and no member took the lead from another: a renewal
/// touches files only, never a process or a raft message.
fn assert_quiet_load(op: &str, report: &LoadReport) {
    assert!(report.ok > 0, "{op}: the load wrote nothing: {report}");
    assert_eq!(report.failed, 0, "{op}: writes failed: {report}");
    assert_eq!(report.leader_changes, 0, "{op}: leader changes: {report}");
}

/// `--cluster nspawn ARGS` through the CLI.
fn etcdops(cluster: &NspawnCluster, cli: &std::path::Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["--cluster", "nspawn"];
    all.extend_from_slice(args);
    cluster.etcdops(cli, &all)
}

/// (member, cert, source) → serial, from `certs check-expiration -w json`.
fn serials(cluster: &NspawnCluster, cli: &std::path::Path) -> HashMap<(String, String, String), String> {
    let out = etcdops(
        cluster,
        cli,
        &["certs", "check-expiration", "--warn", "7d", "-w", "json"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    out.json()["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            ((s("member"), s("cert"), s("source")), s("serial"))
        })
        .collect()
}

fn key(member: &str, cert: &str, source: &str) -> (String, String, String) {
    (member.to_string(), cert.to_string(), source.to_string())
}

/// Per member, the serials the renewal in `record` staged: cert → serial.
fn staged(record: &serde_json::Value) -> HashMap<String, HashMap<String, String>> {
    record["operation"]["renew"]["certs"]
        .as_array()
        .unwrap_or_else(|| panic!("no staged certificates in {record}"))
        .iter()
        .map(|m| {
            let serials = m["serials"]
                .as_array()
                .expect("serials")
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().expect("kind").to_string(),
                        p[1].as_str().expect("serial").to_string(),
                    )
                })
                .collect();
            (m["member"].as_str().expect("member").to_string(), serials)
        })
        .collect()
}

/// Every file of both PKI dirs of host i (hidden ones named too): its
/// listing and the SHA-256 of each regular file.
fn pki_fingerprint(cluster: &NspawnCluster, i: usize) -> String {
    cluster.script_ok(
        i,
        &format!(
            "for d in {ETCD_PKI} {AGENT_PKI}; do ls -A \"$d\"; find \"$d\" -maxdepth 1 -type f | sort | xargs sha256sum; done"
        ),
    )
}

/// Path → SHA-256 of the files in a [`pki_fingerprint`].
fn hashes(fingerprint: &str) -> HashMap<String, String> {
    fingerprint
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(hash, path)| (path.to_string(), hash.to_string()))
        .collect()
}

/// What would change if a unit restarted: its main PID, when it became
/// active, how often systemd restarted it.
fn unit_identity(cluster: &NspawnCluster, i: usize, unit: &str) -> String {
    let text = cluster.exec_stdout(
        i,
        &[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "-p",
            "ActiveEnterTimestampMonotonic",
            "-p",
            "NRestarts",
            unit,
        ],
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("MainPID=") && l != "MainPID=0"),
        "{unit} runs in host {i}: {text}"
    );
    text
}

fn identities(cluster: &NspawnCluster) -> Vec<(String, String)> {
    (0..cluster.layout.members.len())
        .map(|i| {
            (
                unit_identity(cluster, i, "etcd.service"),
                unit_identity(cluster, i, AGENT_UNIT),
            )
        })
        .collect()
}

/// Each member's `etcd_server_leader_changes_seen_total`.
fn leader_changes_seen(cluster: &NspawnCluster) -> Vec<String> {
    cluster
        .client_urls()
        .iter()
        .map(|url| {
            etcdops_tests::etcd_metrics(url, cluster.layout.etcd_client.as_ref())
                .lines()
                .find(|l| l.starts_with("etcd_server_leader_changes_seen_total "))
                .map(|l| l.rsplit(' ').next().unwrap_or("?").to_string())
                .unwrap_or_else(|| panic!("no etcd_server_leader_changes_seen_total at {url}"))
        })
        .collect()
}

/// The files of a member renewed in place, and for keys the user that
/// must be able to read them (etcd runs as `etcd`, the agent as root).
fn renewed_files(name: &str) -> Vec<(String, Option<&'static str>)> {
    vec![
        (format!("{ETCD_PKI}/server.crt"), None),
        (format!("{ETCD_PKI}/server.key"), Some("etcd")),
        (format!("{ETCD_PKI}/peer.crt"), None),
        (format!("{ETCD_PKI}/peer.key"), Some("etcd")),
        (format!("{AGENT_PKI}/agent-{name}.crt"), None),
        (format!("{AGENT_PKI}/agent-{name}.key"), Some("root")),
        (format!("{AGENT_PKI}/etcd-client-etcdops.crt"), None),
        (format!("{AGENT_PKI}/etcd-client-etcdops.key"), Some("root")),
    ]
}

#[test]
fn certs_renew_on_systemd_hosts_under_load_resumes_after_a_kill_and_refuses_bad_input() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins.clone()) else {
        return;
    };
    let cli = bins.cli.as_path();
    let rt = etcdops_tests::loadgen::runtime();
    let names: Vec<String> = cluster.layout.members.iter().map(|m| m.name.clone()).collect();
    let hosts = 0..names.len();

    // Served and file certificates agree before anything.
    let before = serials(&cluster, cli);
    for name in &names {
        for cert in SERVED {
            let file = &before[&key(name, cert, "file")];
            assert!(
                !file.is_empty() && file == &before[&key(name, cert, "served")],
                "{name} {cert}: {before:?}"
            );
        }
    }
    let units = identities(&cluster);
    let leaders_seen = leader_changes_seen(&cluster);
    let fingerprints: Vec<String> = hosts.clone().map(|i| pki_fingerprint(&cluster, i)).collect();
    let modes: Vec<HashMap<String, String>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            renewed_files(name)
                .into_iter()
                .map(|(path, _)| {
                    let mode = cluster.owner_mode(i, &path);
                    (path, mode)
                })
                .collect()
        })
        .collect();

    // --- bad input, refused before any host changes.
    let m = cluster.layout.members[0].clone();
    let pki = Pki::open(&cluster.layout.pki_dir).expect("pki");
    let scratch = cluster.layout.dir.join("bad-certs");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let issue = |tag: &str, host: &str| {
        let (c, k) = (
            scratch.join(format!("{tag}.crt")),
            scratch.join(format!("{tag}.key")),
        );
        pki.issue_to(
            &IssueRequest::new(Role::EtcdServer, m.name.clone()).host(host),
            &c,
            &k,
            None,
        )
        .expect("issue");
        (
            std::fs::read_to_string(c).expect("cert"),
            std::fs::read_to_string(k).expect("key"),
        )
    };
    let fence = cluster.acquire_fence("bad-certs");
    let install = |cert_pem: String, key_pem: String| {
        let mut client = cluster.client(0);
        cluster.block_on(client.install_certificates(InstallCertificatesRequest {
            fence: Some(fence.clone()),
            certificates: vec![NewCertificate {
                cert: "etcd-server".into(),
                cert_pem,
                key_pem,
            }],
            check_only: false,
        }))
    };
    // A certificate without the member's address (another host's).
    let (cert, key_pem) = issue("wrong-ip", "198.51.100.7");
    let err = install(cert, key_pem).expect_err("a certificate without the member's IP");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("not valid for") && err.message().contains(&m.ip.to_string()),
        "{}",
        err.message()
    );
    // A key that does not match.
    let (cert, _) = issue("good", &m.ip.to_string());
    let (_, other_key) = issue("other", &m.ip.to_string());
    let err = install(cert, other_key).expect_err("a key that does not match");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("does not match"), "{}", err.message());
    for i in hosts.clone() {
        let mut client = cluster.client(i);
        cluster
            .block_on(client.release_fence(ReleaseFenceRequest {
                fence: Some(fence.clone()),
            }))
            .expect("releasing the harness's fence");
    }
    // The CLI with leaves from a CA the members do not trust: every agent's
    // check refuses them before any host changes (exit 2).
    let foreign = cluster.layout.dir.join("foreign-pki");
    Pki::init(&foreign, "foreign-ca", 30, false).expect("a foreign CA");
    let out = etcdops(
        &cluster,
        cli,
        &[
            "certs",
            "renew",
            "--yes",
            "--pki",
            foreign.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("nothing was changed") && out.stderr.contains("does not chain"),
        "{}",
        out.stderr
    );
    for i in hosts.clone() {
        assert_eq!(
            pki_fingerprint(&cluster, i),
            fingerprints[i],
            "host {i}'s PKI files changed after refused input"
        );
    }
    assert_eq!(
        serials(&cluster, cli),
        before,
        "refused input changed what is served"
    );

    // --- renew under load.
    let load = start_load(&rt, &cluster);
    let started = Instant::now();
    let out = etcdops(&cluster, cli, &["certs", "renew", "--yes", "-w", "json"]);
    let took = started.elapsed();
    let report = stop_load(&rt, load);
    eprintln!(
        "certs renew: exit {} in {took:.1?}\nload: {report}\n--- etcdops stderr\n{}",
        out.code, out.stderr
    );
    let record = out.succeeded();
    assert_eq!(
        step_ids(&record),
        names
            .iter()
            .map(|n| format!("renew-certs:{n}"))
            .collect::<Vec<_>>(),
        "{record}"
    );
    assert_quiet_load("certs renew", &report);
    let first = staged(&record);
    let after = serials(&cluster, cli);
    for name in &names {
        for cert in RENEWED {
            let new = &first[name][cert];
            assert_eq!(
                &after[&key(name, cert, "file")],
                new,
                "{name} {cert} file: {after:?}"
            );
            assert_ne!(
                &before[&key(name, cert, "file")],
                new,
                "{name} {cert} not renewed"
            );
            if SERVED.contains(&cert) {
                assert_eq!(
                    &after[&key(name, cert, "served")],
                    new,
                    "{name} serves its new {cert}: {after:?}"
                );
            }
        }
    }
    assert_eq!(identities(&cluster), units, "etcd or the agent restarted");
    assert_eq!(
        leader_changes_seen(&cluster),
        leaders_seen,
        "etcd saw a leader change"
    );
    // The old files kept beside the new ones, owners and key modes kept.
    let after_first: Vec<String> = hosts.clone().map(|i| pki_fingerprint(&cluster, i)).collect();
    for (i, name) in names.iter().enumerate() {
        let (old, new) = (hashes(&fingerprints[i]), hashes(&after_first[i]));
        for (path, key_reader) in renewed_files(name) {
            assert!(
                old.contains_key(&path),
                "{name}: no {path} before: {}",
                fingerprints[i]
            );
            assert_eq!(
                new.get(&format!("{path}.prev")),
                old.get(&path),
                "{name}: {path}.prev is the file it replaced"
            );
            assert_ne!(new.get(&path), old.get(&path), "{name}: {path} replaced");
            let now = cluster.owner_mode(i, &path);
            assert_eq!(now, modes[i][&path], "{name}: {path}'s owner and mode kept");
            if let Some(user) = key_reader {
                assert_eq!(now, format!("{user}:{user} 600"), "{name}: {path}");
            }
        }
    }
    assert!(
        cluster.is_healthy(),
        "healthy after the renewal\n{}",
        cluster.logs()
    );

    // --- a coordinator SIGKILLed in the middle of a renewal, under load,
    // then `op resume`.
    let load = start_load(&rt, &cluster);
    // Its progress lines on stderr: SIGKILL a moment (KILL_INTO_STEP) after
    // the second step started, the first one done and journaled.
    let mut child = Command::new(cli)
        .arg("--fleet")
        .arg(cluster.fleet_path())
        .args(["--cluster", "nspawn", "certs", "renew", "--yes"])
        .env_remove("ETCDOPS_FLEET")
        .env("ETCDOPS_JOURNAL", cluster.journal_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning etcdops");
    let stderr = child.stderr.take().expect("the coordinator's stderr");
    let mut lines = Vec::new();
    let mut id = None;
    let mut killed_at_step_two = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("reading the coordinator's stderr");
        if id.is_none()
            && let Some(rest) = line.strip_prefix("operation ")
        {
            id = rest.split_whitespace().next().map(str::to_string);
        }
        let second = line.starts_with("[2/");
        lines.push(line);
        if second {
            std::thread::sleep(KILL_INTO_STEP);
            child.kill().expect("SIGKILL the coordinator");
            killed_at_step_two = true;
            break;
        }
    }
    let status = child.wait().expect("waiting for the coordinator");
    assert!(
        killed_at_step_two,
        "the second renewal never reached its second step ({status}):\n{}",
        lines.join("\n")
    );
    let id = id.unwrap_or_else(|| panic!("no operation id in:\n{}", lines.join("\n")));
    let killed = etcdops(&cluster, cli, &["op", "show", &id, "-w", "json"]).json();
    eprintln!("killed mid-renewal: {killed}");
    assert_eq!(killed["state"], "running", "{killed}");
    let done_before: Vec<String> = killed["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["state"] == "done")
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    assert!(
        !done_before.is_empty() && done_before.len() < names.len(),
        "killed in the middle: {killed}"
    );
    let out = etcdops(&cluster, cli, &["op", "resume", &id, "-w", "json"]);
    let report = stop_load(&rt, load);
    eprintln!(
        "op resume: exit {}\nload (kill and resume): {report}\n--- etcdops stderr\n{}",
        out.code, out.stderr
    );
    let resumed = out.succeeded();
    assert_quiet_load("a killed renewal resumed", &report);
    for step in resumed["steps"].as_array().expect("steps") {
        if done_before.contains(&step["id"].as_str().expect("id").to_string()) {
            assert_eq!(step["attempts"], 1, "a finished step redone: {step}");
        }
    }
    let second = staged(&resumed);
    let end = serials(&cluster, cli);
    for (i, name) in names.iter().enumerate() {
        for cert in RENEWED {
            let new = &second[name][cert];
            assert_ne!(new, &first[name][cert], "{name} {cert}: a new serial per run");
            assert_eq!(&end[&key(name, cert, "file")], new, "{name} {cert}: {end:?}");
            if SERVED.contains(&cert) {
                assert_eq!(&end[&key(name, cert, "served")], new, "{name} {cert}: {end:?}");
            }
        }
        // Renewed once in this run: what it replaced is the first renewal's.
        let (first_files, now) = (hashes(&after_first[i]), hashes(&pki_fingerprint(&cluster, i)));
        for (path, _) in renewed_files(name) {
            assert_eq!(
                now.get(&format!("{path}.prev")),
                first_files.get(&path),
                "{name}: {path} replaced once in the resumed run"
            );
            assert_ne!(
                now.get(&path),
                first_files.get(&path),
                "{name}: {path} renewed again"
            );
        }
    }
    assert_eq!(identities(&cluster), units, "etcd or the agent restarted");
    assert_eq!(
        leader_changes_seen(&cluster),
        leaders_seen,
        "etcd saw a leader change"
    );
    assert!(cluster.is_healthy(), "healthy at the end\n{}", cluster.logs());
    let staging_left = std::fs::read_dir(&cluster.layout.pki_dir)
        .expect("pki dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("renew-"))
        .count();
    assert_eq!(
        staging_left, 0,
        "the staged keys of finished renewals are removed"
    );

    // --- etcd's certificates where the agent's unit may not write (a unit
    // whose ReadWritePaths= lack /etc/etcd/pki, as for certificates kept
    // elsewhere without a drop-in): refused before any host changes, the
    // directory and the drop-in named. Last: it restarts host 0's agent.
    cluster.write_in_host(
        0,
        "/etc/systemd/system/etcdops-agent.service.d/no-etcd-pki.conf",
        "[Service]\nReadWritePaths=\nReadWritePaths=-/var/lib/etcd /etc/default -/etc/etcdops/pki\n",
    );
    cluster.script_ok(
        0,
        &format!("systemctl daemon-reload\nsystemctl restart {AGENT_UNIT}"),
    );
    cluster.wait_until(
        "host 0's agent back after its restart",
        Duration::from_secs(60),
        NspawnCluster::is_healthy,
    );
    let fingerprints: Vec<String> = hosts.clone().map(|i| pki_fingerprint(&cluster, i)).collect();
    let out = etcdops(&cluster, cli, &["certs", "renew", "--yes"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("nothing was changed")
            && out.stderr.contains(&format!("{ETCD_PKI} is read-only"))
            && out.stderr.contains(&format!("ReadWritePaths={ETCD_PKI}")),
        "{}",
        out.stderr
    );
    for i in hosts {
        assert_eq!(
            pki_fingerprint(&cluster, i),
            fingerprints[i],
            "host {i}'s PKI files changed after a refused renewal"
        );
    }
}
