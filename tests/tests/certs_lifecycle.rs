//! End-to-end (process backend, TLS etcd): the certificate lifecycle of
//! issue 17. `certs check-expiration` reads every member's files and what
//! etcd and the agent serve, with its exit codes; `status` shows the nearest
//! expiry; `certs renew` replaces every leaf on a live cluster — the new
//! serials served on the client and peer ports and by the agents, with no
//! etcd or agent restart; bad input is refused before any host changes (at
//! the agent: another member's address, a key that does not match, a foreign
//! CA; at the CLI: leaves from a CA the members do not trust); and a CLI
//! whose own certificate expired says so once, with the command to reissue it.

use std::collections::HashMap;
use std::path::Path;

use etcdops_certs::{IssueRequest, Pki, Role};
use etcdops_proto::v1::{GetCertificatesRequest, InstallCertificatesRequest, NewCertificate};
use etcdops_tests::{Caller, Cluster, bins, step_ids};

/// (member, cert, source) → serial, from `certs check-expiration -w json`.
fn serials(report: &serde_json::Value) -> HashMap<(String, String, String), String> {
    report["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            ((s("member"), s("cert"), s("source")), s("serial"))
        })
        .collect()
}

fn check(cluster: &Cluster, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["certs", "check-expiration", "-w", "json"];
    args.extend_from_slice(extra);
    let out = cluster.etcdops(&args);
    (out.code, out.json(), out.stderr)
}

#[test]
fn check_expiration_then_renew_without_a_restart() {
    let cluster = Cluster::builder().members(3).start(bins!());
    let names: Vec<String> = cluster.layout.members.iter().map(|m| m.name.clone()).collect();

    // Every member: files and served certificates agree. The sandbox's CA
    // is valid for 30 days (so its trusted-CA files are below the default
    // 30-day threshold): exit 0 at 7 days, 1 at 60.
    let (code, report, stderr) = check(&cluster, &["--warn", "7d"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let before = serials(&report);
    for name in &names {
        for cert in ["etcd-server", "etcd-peer", "agent"] {
            let file = &before[&(name.clone(), cert.to_string(), "file".to_string())];
            let served = &before[&(name.clone(), cert.to_string(), "served".to_string())];
            assert!(!file.is_empty() && file == served, "{name} {cert}: {report}");
        }
        assert!(before.contains_key(&(name.clone(), "etcd-trusted-ca".into(), "file".into())));
    }
    assert!(before.contains_key(&("-".into(), "coordinator".into(), "file".into())));
    let (code, report, _) = check(&cluster, &["--warn", "60d"]);
    assert_eq!(code, 1, "{report}");
    let problems = report["problems"].to_string();
    assert!(problems.contains("below --warn 60d"), "{problems}");

    // status: the nearest expiry per member.
    let out = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for m in out.json()["members"].as_array().expect("members") {
        assert!(
            m["agent_info"]["nearest_cert"]["not_after_unix"]
                .as_i64()
                .unwrap_or(0)
                > 0,
            "{m}"
        );
    }
    let table = cluster.etcdops(&["status"]);
    assert!(table.stdout.contains("CERT EXPIRES"), "{}", table.stdout);

    // renew: a dry run changes nothing.
    let op = cluster.coordinator();
    let dry = op.run(&["certs", "renew", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("install etcd1's new certificates (no restart)"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        serials(&check(&cluster, &["--warn", "7d"]).1),
        before,
        "a dry run changed something"
    );

    let etcd_pids: Vec<u32> = (0..names.len()).map(|i| cluster.etcd_pid(i)).collect();
    let agent_pids: Vec<u32> = (0..names.len()).map(|i| cluster.agent_pid(i)).collect();
    let out = op.run(&["certs", "renew", "--yes", "--days", "90", "-w", "json"]);
    let record = out.succeeded();
    let ids = step_ids(&record);
    assert_eq!(
        ids,
        names
            .iter()
            .map(|n| format!("renew-certs:{n}"))
            .collect::<Vec<_>>(),
        "{record}"
    );

    let (code, report, stderr) = check(&cluster, &["--warn", "7d"]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let after = serials(&report);
    for name in &names {
        for cert in ["etcd-server", "etcd-peer", "agent", "etcd-client"] {
            let key = |source: &str| (name.clone(), cert.to_string(), source.to_string());
            if cert != "etcd-client" {
                assert_eq!(
                    after[&key("served")],
                    after[&key("file")],
                    "{name} {cert}: {report}"
                );
            }
            assert_ne!(
                after[&key("file")],
                before[&key("file")],
                "{name} {cert} not renewed"
            );
        }
        let m = cluster
            .layout
            .members
            .iter()
            .find(|m| &m.name == name)
            .expect("member");
        let tls = m.etcd_tls.as_ref().expect("tls");
        for file in [&tls.server_cert, &tls.server_key, &tls.peer_cert, &tls.peer_key] {
            let mut prev = file.clone().into_os_string();
            prev.push(".prev");
            assert!(Path::new(&prev).exists(), "{} kept", Path::new(&prev).display());
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&tls.server_key).expect("key").permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600, "{}", tls.server_key.display());
    }
    for i in 0..names.len() {
        assert_eq!(
            cluster.etcd_pid(i),
            etcd_pids[i],
            "etcd on {} restarted",
            names[i]
        );
        assert_eq!(
            cluster.agent_pid(i),
            agent_pids[i],
            "agent on {} restarted",
            names[i]
        );
    }
    assert!(cluster.is_healthy(), "{}", cluster.logs());
    // The agents still accept the coordinator, and answer with their new certificate.
    assert_eq!(cluster.etcdops(&["health"]).code, 0);
    let staged = |cluster: &Cluster| {
        std::fs::read_dir(&cluster.layout.pki_dir)
            .expect("pki dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("renew-"))
            .count()
    };
    assert_eq!(
        staged(&cluster),
        0,
        "the staged keys of a finished renewal are removed"
    );

    // Paused after the first member (as a killed coordinator would leave it),
    // resumed from the journal: the rest is renewed, the first not twice.
    let out = op.run(&[
        "certs",
        "renew",
        "--yes",
        "--pause-after",
        &format!("renew-certs:{}", names[0]),
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let paused = out.json();
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(staged(&cluster), 1, "kept for the resume");
    let mid = serials(&check(&cluster, &["--warn", "7d"]).1);
    let served = |s: &HashMap<(String, String, String), String>, name: &str| {
        s[&(name.to_string(), "etcd-peer".to_string(), "served".to_string())].clone()
    };
    assert_ne!(served(&mid, &names[0]), served(&after, &names[0]));
    assert_eq!(served(&mid, &names[1]), served(&after, &names[1]));
    let id = paused["id"].as_str().expect("id");
    op.run(&["op", "resume", id, "-w", "json"]).succeeded();
    let end = serials(&check(&cluster, &["--warn", "7d"]).1);
    assert_eq!(served(&end, &names[0]), served(&mid, &names[0]));
    assert_ne!(served(&end, &names[1]), served(&mid, &names[1]));
    assert_eq!(staged(&cluster), 0);
    for i in 0..names.len() {
        assert_eq!(
            cluster.etcd_pid(i),
            etcd_pids[i],
            "etcd on {} restarted",
            names[i]
        );
    }
}

#[test]
fn bad_certificates_are_refused_before_any_file_changes() {
    let cluster = Cluster::builder().members(1).start(bins!());
    let m = cluster.member(0).clone();
    let tls = m.etcd_tls.clone().expect("tls");
    let pki = Pki::open(&cluster.layout.pki_dir).expect("pki");
    let files = [&tls.server_cert, &tls.server_key];
    let original: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("read")).collect();
    let served = |cluster: &Cluster| {
        let mut client = cluster.client(0, &Caller::Coordinator);
        let r = cluster
            .block_on(client.get_certificates(GetCertificatesRequest { timeout_ms: 3000 }))
            .expect("GetCertificates")
            .into_inner();
        r.certificates
            .into_iter()
            .find(|c| c.cert == "etcd-server" && c.source == "served")
            .expect("served")
            .serial
    };
    let serial = served(&cluster);
    let staging = cluster.layout.dir.join("bad-certs");
    std::fs::create_dir_all(&staging).expect("dir");
    let issue = |pki: &Pki, tag: &str, host: &str| {
        let (c, k) = (
            staging.join(format!("{tag}.crt")),
            staging.join(format!("{tag}.key")),
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
        let mut client = cluster.client(0, &Caller::Coordinator);
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
    // Another host's address.
    let (cert, key) = issue(&pki, "wrong-ip", "198.51.100.7");
    let err = install(cert, key).expect_err("another address");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not valid for"), "{}", err.message());
    // A key that does not match.
    let (cert, _) = issue(&pki, "good", &m.ip.to_string());
    let (_, other_key) = issue(&pki, "other", &m.ip.to_string());
    let err = install(cert.clone(), other_key).expect_err("key mismatch");
    assert!(err.message().contains("does not match"), "{}", err.message());
    // Another CA.
    let (foreign, _) =
        Pki::init(&cluster.layout.dir.join("foreign-pki"), "foreign-ca", 30, false).expect("ca");
    let (fcert, fkey) = issue(&foreign, "foreign", &m.ip.to_string());
    let err = install(fcert, fkey).expect_err("foreign CA");
    assert!(err.message().contains("does not chain"), "{}", err.message());
    cluster.release_fence(&fence);
    // Unfenced: refused too.
    let mut client = cluster.client(0, &Caller::Coordinator);
    let (good_cert, good_key) = issue(&pki, "good2", &m.ip.to_string());
    let err = cluster
        .block_on(client.install_certificates(InstallCertificatesRequest {
            fence: None,
            certificates: vec![NewCertificate {
                cert: "etcd-server".into(),
                cert_pem: good_cert,
                key_pem: good_key,
            }],
            check_only: false,
        }))
        .expect_err("no fence");
    assert!(err.message().contains("fence"), "{err:?}");
    for (f, before) in files.iter().zip(&original) {
        assert_eq!(
            &std::fs::read(f).expect("read"),
            before,
            "{} changed",
            f.display()
        );
    }
    assert_eq!(served(&cluster), serial);

    // The CLI with leaves from a CA the members do not trust: refused by the
    // agents' check before any host changes (exit 2).
    let foreign_dir = cluster.layout.dir.join("foreign-pki");
    let out = cluster.coordinator().run(&[
        "certs",
        "renew",
        "--yes",
        "--pki",
        foreign_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("nothing was changed") && out.stderr.contains("does not chain"),
        "{}",
        out.stderr
    );
    assert_eq!(served(&cluster), serial);
    for (f, before) in files.iter().zip(&original) {
        assert_eq!(
            &std::fs::read(f).expect("read"),
            before,
            "{} changed",
            f.display()
        );
    }
    assert!(
        !std::fs::read_dir(&foreign_dir)
            .expect("dir")
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("renew-"))),
        "the staging dir of a refused renewal is removed"
    );
}

#[test]
fn an_expired_cli_certificate_is_one_clear_error() {
    let cluster = Cluster::builder().members(2).start(bins!());
    let pki = Pki::open(&cluster.layout.pki_dir).expect("pki");
    let dir = cluster.layout.dir.join("expired-cli");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("coordinator-old.crt"), dir.join("coordinator-old.key"));
    let now = time::OffsetDateTime::now_utc();
    pki.issue_to(
        &IssueRequest::new(Role::Coordinator, "old-operator"),
        &cert,
        &key,
        Some((now - time::Duration::days(40), now - time::Duration::days(2))),
    )
    .expect("issue an expired certificate");
    let fleet_text = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    let mut fleet: toml::Table = fleet_text.parse().expect("toml");
    let tls = fleet
        .get_mut("tls")
        .and_then(|t| t.as_table_mut())
        .expect("[tls]");
    tls.insert("cert".into(), cert.display().to_string().into());
    tls.insert("key".into(), key.display().to_string().into());
    let expired_fleet = dir.join("fleet.toml");
    std::fs::write(&expired_fleet, toml::to_string(&fleet).expect("toml")).expect("write");
    let out = std::process::Command::new(&cluster.bins.cli)
        .arg("--fleet")
        .arg(&expired_fleet)
        .arg("status")
        .env_remove("ETCDOPS_FLEET")
        .output()
        .expect("etcdops");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("own certificate")
            && stderr.contains("expired on")
            && stderr.contains("etcdops certs issue coordinator --name old-operator"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one error, not one per agent: {stderr}"
    );
    assert!(!stderr.contains("closed the connection"), "{stderr}");
}
