//! Issue 17 on real systemd hosts: `etcdops certs rotate-ca` on three
//! systemd-nspawn hosts running Debian's etcd.service with client and peer
//! TLS (etcd as user `etcd`, its files in `/etc/etcd/pki`) and the agent from
//! its package (the hardened unit, `backend = "systemd"`), under the load
//! generator's writes (retrying client, TLS). One cluster boot:
//! - the load trusts both CAs from the start and writes with an old-CA
//!   client certificate through phases 1-2; it is restarted with a new-CA
//!   client certificate before phase 3 (as a real client must switch);
//! - the coordinator is SIGKILLed in the middle of phase 2 (its first member
//!   done, the second one's step under way), then `etcdops op resume`
//!   finishes the plan: every step of the three phases done;
//! - 0 failed writes, at most one leader change per rolling restart (3);
//! - at the end, on every host: a client with an old-CA client certificate
//!   is refused by etcd and a new-CA one accepted; etcd's env file names the
//!   bundle beside its old CA file, which holds the new CA only; the bundle,
//!   certificates and keys are owned and moded so Debian's etcd (user
//!   `etcd`) reads them (read as `etcd` in the host); the agents answer
//!   (`etcdops status` and `etcdops health` exit 0).
//!
//! Prints `SKIPPED: <reason>` where the machine cannot run nspawn hosts
//! (`ETCDOPS_REQUIRE_NSPAWN=1` makes that a failure); the hosts install the
//! dev .debs (`bash deploy/dev/package.sh --profile dev`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_certs::{IssueRequest, Pki, Role, TlsFiles};
use etcdops_proto::v1::GetCertificatesRequest;
use etcdops_tests::loadgen::{LoadConfig, LoadGen, LoadReport};
use etcdops_tests::nspawn::NspawnCluster;
use etcdops_tests::{CliOutput, bins, step_ids};

/// The load: about 100 writes/s, 64 in flight at most (see
/// `tests/tests/systemd_operations.rs` for why the default 8 is too few on
/// a busy 2-core machine), retried on the next member; a write may wait out
/// a member's restart and a leadership transfer (as in
/// `tests/tests/systemd_upgrade.rs`, the other rolling restart under load
/// on these hosts).
const RATE: u32 = 100;
const CONCURRENCY: usize = 64;
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long after the first phase-2 step finished its coordinator is
/// SIGKILLed: the second phase-2 step (install, restart etcd.service, wait
/// for it healthy) takes seconds on these hosts.
const KILL_INTO_STEP: Duration = Duration::from_millis(500);
/// etcd's PKI dir in a host (as `tests/src/nspawn.rs` installs it).
const ETCD_PKI: &str = "/etc/etcd/pki";
/// The new CA's subject.
const NEW_SUBJECT: &str = "etcdops-etcd-ca-2";

fn start_load(rt: &tokio::runtime::Runtime, cluster: &NspawnCluster, tls: TlsFiles) -> LoadGen {
    let cfg = LoadConfig {
        rate: RATE,
        concurrency: CONCURRENCY,
        write_deadline: WRITE_DEADLINE,
        ..LoadConfig::new(cluster.client_urls(), Some(tls))
    };
    rt.block_on(LoadGen::start(cfg)).expect("starting the load")
}

/// `--cluster nspawn ARGS` through the CLI.
fn etcdops(cluster: &NspawnCluster, cli: &Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["--cluster", "nspawn"];
    all.extend_from_slice(args);
    cluster.etcdops(cli, &all)
}

#[test]
fn rotate_ca_on_systemd_hosts_under_load_resumes_after_a_kill_then_old_ca_clients_refused() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip(3, bins.clone()) else {
        return;
    };
    let cli = bins.cli.as_path();
    let rt = etcdops_tests::loadgen::runtime();
    let names: Vec<String> = cluster.layout.members.iter().map(|m| m.name.clone()).collect();
    let hosts = 0..names.len();

    // The new CA, made with the project's PKI code; clients trust both CAs
    // before phase 2 (the rotation's contract).
    let new_dir = cluster.layout.dir.join("etcd-ca-2");
    let (new_pki, _) = Pki::init(&new_dir, NEW_SUBJECT, 30, false).expect("new CA");
    let new_ca_pem = std::fs::read_to_string(new_pki.ca_cert_path()).expect("new CA");
    let old_client = cluster.layout.etcd_client.clone().expect("TLS layout");
    let both = cluster.layout.dir.join("both-cas.crt");
    let mut bundle = std::fs::read(&old_client.ca).expect("old CA");
    bundle.extend(new_ca_pem.as_bytes());
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
    let new_ca = new_dir.to_str().expect("utf-8");
    let env_modes: Vec<String> = hosts
        .clone()
        .map(|i| cluster.owner_mode(i, "/etc/default/etcd"))
        .collect();

    // --- phases 1-2 under load (old-CA client certificate), the
    // coordinator SIGKILLed in the middle of phase 2.
    let load = start_load(&rt, &cluster, old_tls.clone());
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let mut child = Command::new(cli)
        .arg("--fleet")
        .arg(cluster.fleet_path())
        .args([
            "--cluster",
            "nspawn",
            "certs",
            "rotate-ca",
            "--new-ca",
            new_ca,
            "--yes",
        ])
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
    let mut killed = false;
    // Steps 1-3 are phase 1, 4-6 phase 2: killed once step 4 is done.
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("reading the coordinator's stderr");
        eprintln!("rotate-ca: {line}");
        if id.is_none()
            && let Some(rest) = line.strip_prefix("operation ")
        {
            id = rest.split_whitespace().next().map(str::to_string);
        }
        let fourth_done = line.starts_with("[4/") && line.contains(": done");
        lines.push(line);
        if fourth_done {
            std::thread::sleep(KILL_INTO_STEP);
            child.kill().expect("SIGKILL the coordinator");
            killed = true;
            break;
        }
    }
    let status = child.wait().expect("waiting for the coordinator");
    assert!(
        killed,
        "rotate-ca never finished its fourth step ({status}):\n{}\n{}",
        lines.join("\n"),
        cluster.logs()
    );
    let id = id.unwrap_or_else(|| panic!("no operation id in:\n{}", lines.join("\n")));
    let record = etcdops(&cluster, cli, &["op", "show", &id, "-w", "json"]).json();
    eprintln!("killed after {:.1?}: {record}", started.elapsed());
    assert_eq!(record["state"], "running", "{record}");
    let done_before: Vec<String> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["state"] == "done")
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    let leaves_done = done_before.iter().filter(|s| s.starts_with("ca-leaves:")).count();
    assert!(
        done_before.iter().filter(|s| s.starts_with("ca-trust:")).count() == names.len()
            && leaves_done >= 1
            && leaves_done < names.len(),
        "killed in the middle of phase 2: {record}"
    );
    let first = rt.block_on(load.stop());
    eprintln!("load, phases 1-2 (old-CA client certificate): {first}");

    // --- before phase 3 the clients switch to a new-CA client certificate;
    // `op resume` finishes phase 2 and runs phase 3.
    let load = start_load(&rt, &cluster, new_tls.clone());
    cluster.wait_until("healthy before resuming", Duration::from_secs(60), |c| {
        c.is_healthy()
    });
    let out = etcdops(&cluster, cli, &["op", "resume", &id, "-w", "json"]);
    std::thread::sleep(Duration::from_secs(2));
    let second = rt.block_on(load.stop());
    eprintln!(
        "op resume: exit {} after {:.1?} in all\nload, phases 2-3 (new-CA client certificate): {second}\n--- etcdops stderr\n{}",
        out.code,
        started.elapsed(),
        out.stderr
    );
    let record = out.succeeded();
    let mut ids = step_ids(&record);
    ids.sort();
    let mut want: Vec<String> = ["ca-trust", "ca-leaves", "ca-drop-old"]
        .iter()
        .flat_map(|p| names.iter().map(move |n| format!("{p}:{n}")))
        .collect();
    want.sort();
    assert_eq!(ids, want, "{record}");
    for step in record["steps"].as_array().expect("steps") {
        if done_before.contains(&step["id"].as_str().expect("id").to_string()) {
            assert_eq!(step["attempts"], 1, "a finished step redone: {step}");
        }
    }

    let total = |r: &LoadReport| (r.ok, r.failed, r.leader_changes);
    let (ok1, failed1, changes1) = total(&first);
    let (ok2, failed2, changes2) = total(&second);
    assert!(ok1 > 0 && ok2 > 0, "{first}\n{second}");
    assert_eq!(failed1 + failed2, 0, "failed writes:\n{first}\n{second}");
    assert!(
        changes1 + changes2 <= 3,
        "at most one leader change per rolling restart (3): {first}\n{second}"
    );

    // --- etcd trusts the new CA only: on every member an old-CA client
    // certificate is refused and a new-CA one accepted.
    for (url, name) in cluster.client_urls().iter().zip(&names) {
        let refused = etcdops_tests::etcd_get_as(&rt, url, &old_tls);
        assert!(
            refused.is_err(),
            "{name}: an old-CA client certificate is still accepted"
        );
        eprintln!("{name}: old-CA client: {refused:?}");
        etcdops_tests::etcd_get_as(&rt, url, &new_tls)
            .unwrap_or_else(|e| panic!("{name}: a new-CA client certificate is refused: {e}"));
    }

    // --- the files in each host: etcd's env file names the bundle (beside
    // the old CA file, which stays), the bundle holds the new CA only, and
    // Debian's etcd (user etcd) reads every file it names.
    for (i, name) in names.iter().enumerate() {
        let bundle = format!("{ETCD_PKI}/{name}.etcd-ca-bundle.crt");
        let env = cluster.read_in_host(i, "/etc/default/etcd");
        for var in ["ETCD_TRUSTED_CA_FILE", "ETCD_PEER_TRUSTED_CA_FILE"] {
            let line = env
                .lines()
                .find(|l| l.starts_with(&format!("{var}=")))
                .unwrap_or_else(|| panic!("{name}: no {var} in /etc/default/etcd:\n{env}"));
            assert_eq!(
                line.split_once('=').map(|(_, v)| v.trim_matches('"')),
                Some(bundle.as_str()),
                "{name}: {var}"
            );
        }
        assert_eq!(
            cluster.owner_mode(i, "/etc/default/etcd"),
            env_modes[i],
            "{name}: /etc/default/etcd's owner and mode kept"
        );
        assert_eq!(
            cluster.read_in_host(i, &bundle).trim(),
            new_ca_pem.trim(),
            "{name} trusts the new CA only"
        );
        assert!(
            cluster
                .read_in_host(i, &format!("{ETCD_PKI}/ca.crt"))
                .contains("BEGIN CERTIFICATE"),
            "{name}: the old CA file is kept"
        );
        for (file, want) in [
            (bundle.clone(), None),
            (format!("{ETCD_PKI}/server.crt"), None),
            (format!("{ETCD_PKI}/peer.crt"), None),
            (format!("{ETCD_PKI}/server.key"), Some("etcd:etcd 600")),
            (format!("{ETCD_PKI}/peer.key"), Some("etcd:etcd 600")),
        ] {
            let mode = cluster.owner_mode(i, &file);
            match want {
                Some(want) => assert_eq!(mode, want, "{name}: {file}"),
                None => assert!(mode.ends_with(" 644"), "{name}: {file} is {mode}"),
            }
            // The proof: etcd's user reads it.
            cluster.script_ok(i, &format!("runuser -u etcd -- head -c 1 {file} >/dev/null"));
        }
        // What the member serves and holds, issued by the new CA (its agent's
        // TLS handshakes with etcd's ports).
        let mut client = cluster.client(i);
        let certs = cluster
            .block_on(client.get_certificates(GetCertificatesRequest { timeout_ms: 3000 }))
            .expect("GetCertificates")
            .into_inner()
            .certificates;
        for (cert, source) in [
            ("etcd-server", "served"),
            ("etcd-peer", "served"),
            ("etcd-server", "file"),
            ("etcd-peer", "file"),
            ("etcd-client", "file"),
        ] {
            let c = certs
                .iter()
                .find(|c| c.cert == cert && c.source == source)
                .unwrap_or_else(|| panic!("{name}: no {cert} {source} in {certs:?}"));
            assert_eq!(c.issuer, NEW_SUBJECT, "{name}: {cert} {source}: {c:?}");
        }
    }

    // --- the agents answer: through them the coordinator reads status and
    // health (their etcd client trusts the bundle, with a new-CA certificate).
    for args in [&["status"][..], &["health"][..]] {
        let out = etcdops(&cluster, cli, args);
        assert_eq!(out.code, 0, "{args:?}: {}\n{}", out.stdout, out.stderr);
    }
    assert!(cluster.is_healthy(), "healthy at the end\n{}", cluster.logs());
    assert!(
        !std::fs::read_dir(&new_dir)
            .expect("dir")
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("rotate-ca-"))),
        "the staged keys of a finished rotation are removed"
    );
}
