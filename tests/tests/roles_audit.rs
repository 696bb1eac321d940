//! End-to-end (real agents, real mutual TLS): roles by RPC and the audit
//! trail. An observer certificate reads status, health and hashkv, is
//! refused a defragmentation (by the CLI before dialling, and by an agent
//! with PermissionDenied naming `operator`), and the agent's refusal is
//! audited with the observer's verified identity. An operator's rolling
//! defrag is audited on every member with the certificate's subject,
//! serial and fingerprint, the operation ID and the fence epoch, and the
//! journal keeps the same certificate. `etcdops audit show` gathers the
//! records. The CLI refuses an agent that serves another member's
//! certificate, or a certificate without the agent role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcdops_certs::{CertDetails, Role};
use etcdops_proto::v1::DefragmentRequest;
use etcdops_proto::v1::agent_client::AgentClient;
use etcdops_tests::{CliOutput, Cluster, bins};
use serde_json::Value;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Runs `etcdops ARGS` with another fleet file.
fn etcdops(cluster: &Cluster, fleet: &Path, journal: &Path, args: &[&str]) -> CliOutput {
    let out = std::process::Command::new(&cluster.bins.cli)
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

/// The cluster's fleet file with its `[tls]` cert and key replaced.
fn fleet_with_cert(cluster: &Cluster, dir: &Path, name: &str, cert: &Path, key: &Path) -> PathBuf {
    let pki = &cluster.layout.pki_dir;
    let (own_cert, own_key) = etcdops_certs::Pki::open(pki)
        .expect("pki")
        .paths(Role::Coordinator, "sandbox-operator");
    let text = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    assert!(text.contains(own_cert.to_str().expect("utf-8")), "{text}");
    let text = text
        .replace(own_cert.to_str().expect("utf-8"), cert.to_str().expect("utf-8"))
        .replace(own_key.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fleet");
    path
}

/// A gRPC client to member i's agent with this certificate.
fn client(cluster: &Cluster, i: usize, cert: &Path, key: &Path) -> AgentClient<tonic::transport::Channel> {
    let m = cluster.member(i);
    let ca = etcdops_certs::Pki::open(&cluster.layout.pki_dir)
        .expect("pki")
        .ca_cert_path();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
        .identity(Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        ))
        .domain_name(m.ip.to_string());
    let endpoint = Endpoint::from_shared(m.agent_url.clone())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(10));
    cluster.block_on(async { AgentClient::new(endpoint.connect_lazy()) })
}

fn records(out: &CliOutput) -> Vec<Value> {
    assert_eq!(out.code, 0, "audit show: {}\n{}", out.stdout, out.stderr);
    out.json()["records"].as_array().cloned().expect("records")
}

#[test]
fn observers_read_operators_change_and_every_change_and_refusal_is_audited() {
    // The periodic disk probe off: on a loaded machine it can (rightly) stop the defrag.
    let mut cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal.redb");
    let pki = cluster.layout.pki_dir.clone();
    let pki_arg = pki.to_str().expect("utf-8").to_string();

    // An observer certificate, issued by the CLI.
    let issued = etcdops(
        &cluster,
        cluster.fleet_path(),
        &journal,
        &[
            "certs", "issue", "observer", "--name", "watcher", "--dir", &pki_arg,
        ],
    );
    assert_eq!(issued.code, 0, "{}\n{}", issued.stdout, issued.stderr);
    let (obs_cert, obs_key) = etcdops_certs::Pki::open(&pki)
        .expect("pki")
        .paths(Role::Observer, "watcher");
    let (_, observer) = CertDetails::from_pem_file(&obs_cert).expect("observer cert");
    assert_eq!(observer.role, "observer");
    let observer_fleet = fleet_with_cert(&cluster, dir.path(), "observer.toml", &obs_cert, &obs_key);

    // It reads everything the read commands read.
    for args in [
        &["status", "-w", "json"][..],
        &["health", "-w", "json"],
        &["check", "hashkv"],
        &["member", "list"],
    ] {
        let out = etcdops(&cluster, &observer_fleet, &journal, args);
        assert_eq!(out.code, 0, "observer {args:?}: {}\n{}", out.stdout, out.stderr);
    }
    // And previews the rolling maintenance: the plan, nothing changed. This
    // cluster's agents probe no disk periodically, and an observer may not
    // probe one: each plan says the disk has no verdict (exit 1), without a
    // refused call (with periodic probes, as agents run by default, it passes).
    for args in [
        &["defrag", "--rolling", "--dry-run"][..],
        &["restart", "--rolling", "--dry-run"],
        &["alarm", "disarm", "--dry-run"],
    ] {
        let out = etcdops(&cluster, &observer_fleet, &journal, args);
        assert_eq!(out.code, 1, "observer {args:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("Plan: "), "observer {args:?}: {}", out.stdout);
        assert!(
            out.stdout
                .contains("an observer certificate may not probe a disk"),
            "observer {args:?}: {}",
            out.stdout
        );
    }

    // A mutating command is refused once, before any agent is dialled.
    let out = etcdops(
        &cluster,
        &observer_fleet,
        &journal,
        &["defrag", "--rolling", "--yes"],
    );
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.matches("needs an operator certificate").count(),
        1,
        "one clear message: {}",
        out.stderr
    );
    assert!(out.stderr.contains("observer \"watcher\""), "{}", out.stderr);

    // Straight to an agent: PermissionDenied naming the role needed and the caller's.
    let mut observer_client = client(&cluster, 0, &obs_cert, &obs_key);
    let denied = cluster
        .block_on(observer_client.defragment(DefragmentRequest {
            fence: Some(cluster.fence("observer-try", 1)),
            timeout_ms: 10_000,
        }))
        .expect_err("an observer may not defragment");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("needs the operator role") && denied.message().contains("role observer"),
        "{}",
        denied.message()
    );
    // An agent's certificate used as a client: refused, and audited with its identity.
    let (agent_cert, agent_key) = etcdops_certs::Pki::open(&pki)
        .expect("pki")
        .paths(Role::Agent, &cluster.member(1).name);
    let mut agent_client = client(&cluster, 0, &agent_cert, &agent_key);
    let denied = cluster
        .block_on(agent_client.get_status(etcdops_proto::v1::GetStatusRequest { timeout_ms: 1000 }))
        .expect_err("an agent certificate may not call an agent");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("needs the observer role"),
        "{}",
        denied.message()
    );

    // An observer may not read the audit trail either.
    let out = etcdops(&cluster, &observer_fleet, &journal, &["audit", "show"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);

    // An operator's rolling defrag (the fleet's coordinator certificate: an operator).
    let out = etcdops(
        &cluster,
        cluster.fleet_path(),
        &journal,
        &["defrag", "--rolling", "--yes", "-w", "json"],
    );
    let record = out.succeeded();
    let op_id = record["id"].as_str().expect("id").to_string();
    let epoch = record["epoch"].as_u64().expect("epoch");
    let (own_cert, _) = etcdops_certs::Pki::open(&pki)
        .expect("pki")
        .paths(Role::Coordinator, "sandbox-operator");
    let (_, operator) = CertDetails::from_pem_file(&own_cert).expect("operator cert");
    assert_eq!(
        record["operator"]["fingerprint_sha256"], operator.fingerprint_sha256,
        "the journal keeps the operator's certificate: {record:#}"
    );

    // The trail through the agents: the refusal and the defrag, with verified identities.
    let all = records(&etcdops(
        &cluster,
        cluster.fleet_path(),
        &journal,
        &["audit", "show", "-w", "json"],
    ));
    let refusal = all
        .iter()
        .find(|r| r["rpc"] == "Defragment" && r["outcome"] == "refused")
        .unwrap_or_else(|| panic!("the refusal is audited: {all:#?}"));
    assert_eq!(refusal["member"], cluster.member(0).name.as_str());
    assert_eq!(refusal["code"], "PermissionDenied");
    assert_eq!(refusal["caller"]["role"], "observer");
    assert_eq!(refusal["caller"]["serial"], observer.serial.as_str());
    assert_eq!(
        refusal["caller"]["fingerprint_sha256"],
        observer.fingerprint_sha256.as_str()
    );
    assert!(
        refusal["caller"]["subject"]
            .as_str()
            .is_some_and(|s| s.contains("watcher")),
        "{refusal:#}"
    );
    let (_, agent_details) = CertDetails::from_pem_file(&agent_cert).expect("agent cert");
    assert!(
        all.iter().any(|r| r["rpc"] == "GetStatus"
            && r["outcome"] == "refused"
            && r["caller"]["role"] == "agent"
            && r["caller"]["fingerprint_sha256"] == agent_details.fingerprint_sha256.as_str()),
        "the agent certificate's refusal is audited: {all:#?}"
    );
    let defrags: Vec<&Value> = all
        .iter()
        .filter(|r| r["rpc"] == "Defragment" && r["outcome"] == "ok")
        .collect();
    assert_eq!(defrags.len(), 3, "one Defragment per member: {all:#?}");
    for r in &defrags {
        assert_eq!(r["operation_id"], op_id.as_str(), "{r:#}");
        assert_eq!(r["fence_epoch"].as_u64(), Some(epoch), "{r:#}");
        assert_eq!(
            r["caller"]["fingerprint_sha256"],
            operator.fingerprint_sha256.as_str()
        );
        assert_eq!(r["caller"]["serial"], operator.serial.as_str());
        assert_eq!(r["caller"]["subject"], operator.subject.as_str());
        assert_eq!(r["caller"]["role"], "coordinator");
    }
    // Fencing is audited too; reads are not.
    assert!(
        all.iter()
            .any(|r| r["rpc"] == "AcquireFence" && r["operation_id"] == op_id.as_str())
    );
    assert!(
        !all.iter()
            .any(|r| r["rpc"] == "GetStatus" && r["outcome"] != "refused"),
        "reads are not audited"
    );
    let times: Vec<i64> = all
        .iter()
        .map(|r| r["time_unix_ms"].as_i64().expect("time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "sorted by time: {times:?}"
    );
    // One member, since a moment.
    let one = records(&etcdops(
        &cluster,
        cluster.fleet_path(),
        &journal,
        &[
            "audit",
            "show",
            "--member",
            &cluster.member(1).name,
            "--since",
            "1h",
            "-w",
            "json",
        ],
    ));
    assert!(!one.is_empty() && one.iter().all(|r| r["member"] == cluster.member(1).name.as_str()));
    let table = etcdops(&cluster, cluster.fleet_path(), &journal, &["audit", "show"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("refused") && table.stdout.contains(&op_id),
        "{}",
        table.stdout
    );
    // The file itself, on the agent's host.
    let file = std::fs::read_to_string(cluster.member(0).state_dir.join("audit.jsonl")).expect("audit file");
    assert!(
        file.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{file}"
    );

    // An agent reached under another member's name: the members' agent URLs swapped.
    let text = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    let (a, b) = (
        cluster.member(0).agent_url.clone(),
        cluster.member(1).agent_url.clone(),
    );
    let swapped = text.replace(&a, "@A@").replace(&b, &a).replace("@A@", &b);
    let swapped_fleet = dir.path().join("swapped.toml");
    std::fs::write(&swapped_fleet, swapped).expect("write");
    let out = etcdops(&cluster, &swapped_fleet, &journal, &["status", "-w", "json"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let first = &report["members"][0];
    let error = first["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("presented the agent certificate of") && error.contains(&cluster.member(1).name),
        "{first:#}"
    );

    // An agent serving a certificate without the agent role (its etcd-server one).
    let m = cluster.member(2).clone();
    let tls = m.etcd_tls.clone().expect("etcd TLS");
    let (agent_cert, agent_key) = etcdops_certs::Pki::open(&pki)
        .expect("pki")
        .paths(Role::Agent, &m.name);
    let config = std::fs::read_to_string(&m.agent_config).expect("agent config");
    assert!(config.contains(agent_cert.to_str().expect("utf-8")), "{config}");
    let wrong = config
        .replace(
            agent_cert.to_str().expect("utf-8"),
            tls.server_cert.to_str().expect("utf-8"),
        )
        .replace(
            agent_key.to_str().expect("utf-8"),
            tls.server_key.to_str().expect("utf-8"),
        );
    std::fs::write(&m.agent_config, wrong).expect("write agent config");
    cluster.restart_agent(2);
    let out = etcdops(
        &cluster,
        cluster.fleet_path(),
        &journal,
        &["status", "-w", "json"],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let error = report["members"][2]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not an agent certificate") && error.contains("etcd-server"),
        "{:#}",
        report["members"][2]
    );
    // A mutating command stops at the refused agent: nothing runs.
    let out = etcdops(
        &cluster,
        cluster.fleet_path(),
        &journal,
        &["defrag", "--rolling", "--yes"],
    );
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}
