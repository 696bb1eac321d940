//! End-to-end: etcd's TLS as the agent meets it. Unusable `[etcd.tls]`
//! files stop `--check-config` and the agent's start naming the file, the
//! member and the fix; an etcd that refuses the agent's handshake (a CA that
//! did not issue etcd's certificate) is a prompt error in GetStatus and
//! Health, not a hang.

use std::process::Command;
use std::time::{Duration, Instant};

use etcdops_agent::config::AgentConfig;
use etcdops_certs::{IssueRequest, Pki, Role};
use etcdops_tests::{Caller, Cluster, bins};

#[test]
fn unusable_etcd_tls_files_are_named_with_the_member_and_the_fix() {
    let cluster = Cluster::builder().members(1).start(bins!());
    let m = cluster.member(0).clone();
    let mut config = AgentConfig::load(&m.agent_config).expect("agent config");
    let tls = config.etcd.tls.clone().expect("[etcd.tls] by default");
    let check = |config: &AgentConfig| {
        let path = m.dir.join("broken-agent.toml");
        std::fs::write(&path, config.to_toml()).expect("write");
        Command::new(&cluster.bins.agent)
            .arg("--check-config")
            .arg(&path)
            .output()
            .expect("run --check-config")
    };
    let ok = check(&config);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    config.etcd.tls.as_mut().expect("tls").key = m.dir.join("missing.key");
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A missing file is the preflight's "not ready" (not restarted by systemd),
    // named with its field and the command that makes it.
    assert_eq!(
        out.status.code(),
        Some(i32::from(etcdops_agent::preflight::EXIT_NOT_READY)),
        "{stderr}"
    );
    assert!(
        stderr.contains("etcd.tls.key")
            && stderr.contains("missing.key")
            && stderr.contains("etcdops certs issue etcd-client"),
        "{stderr}"
    );

    // A certificate where the CA belongs: the key is fine, the CA is not a CA
    // of etcd's certificate, which only a handshake can tell (next test);
    // a key where a certificate belongs is refused here.
    config.etcd.tls = Some(etcdops_agent::config::TlsConfig {
        cert: tls.key.clone(),
        ..tls.clone()
    });
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("etcd.tls.cert") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[test]
fn a_refused_handshake_is_a_prompt_error_not_a_hang() {
    let mut cluster = Cluster::builder().members(3).start(bins!());
    // Member 0's agent trusts a CA that did not issue etcd's certificate.
    let other = cluster.layout.dir.join("other-etcd-pki");
    let (pki, _) = Pki::init(&other, "another-ca", 30, false).expect("other CA");
    let issued = pki
        .issue(&IssueRequest::new(Role::EtcdClient, "agent-etcd1"))
        .expect("issue");
    let m = cluster.member(0).clone();
    let mut config = AgentConfig::load(&m.agent_config).expect("agent config");
    config.etcd.tls = Some(etcdops_agent::config::TlsConfig {
        ca: pki.ca_cert_path(),
        cert: issued.cert_path,
        key: issued.key_path,
    });
    std::fs::write(&m.agent_config, config.to_toml()).expect("write the agent config");
    cluster.restart_agent_no_wait(0);

    let started = Instant::now();
    let status = cluster
        .get_status(0, &Caller::Coordinator, 3000)
        .expect("the agent answers");
    let member = status.member.expect("member status");
    assert!(!member.reachable, "{member:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by the call's timeout: {:?}",
        started.elapsed()
    );
    eprintln!("GetStatus error: {}", member.error);
    assert!(
        member.error.contains("TLS") && member.error.contains("etcd.tls.ca"),
        "says it is the TLS handshake and what to check: {}",
        member.error
    );
    let started = Instant::now();
    let health = cluster.health(0, &Caller::Coordinator, 3000);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let text = match health {
        Ok(h) => {
            assert!(!h.healthy, "{h:?}");
            h.error
        }
        Err(status) => status.message().to_string(),
    };
    eprintln!("Health error: {text}");
    assert!(text.contains("TLS"), "{text}");

    // The CLI reports it per member and exits 1, the other members fine.
    let out = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
}

#[test]
fn plain_http_stays_possible_when_a_test_asks_for_it() {
    let cluster = Cluster::builder().members(1).plain_http().start(bins!());
    assert_eq!(cluster.layout.etcd_client, None);
    assert!(cluster.member(0).client_url.starts_with("http://"));
    let out = cluster.etcdops(&["member", "list", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let urls = &report["members"][0]["peer_urls"];
    assert!(
        urls.as_array().is_some_and(|u| u
            .iter()
            .all(|u| u.as_str().is_some_and(|u| u.starts_with("http://")))),
        "{report:#}"
    );
    assert_eq!(cluster.local_count(&cluster.member(0).client_url, "none/"), 0);
}
