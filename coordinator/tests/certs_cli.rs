//! `etcdops certs`: the PKI commands through the real CLI entry point.

use std::path::Path;

use etcdops_coordinator::ExitStatus;
use etcdops_coordinator::cli::run_with_io;

fn etcdops(fleet: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let fleet = fleet.to_str().expect("utf-8 path");
    let mut argv = vec!["etcdops", "--fleet", fleet];
    argv.extend_from_slice(args);
    let status = run_with_io(argv, &mut out, &mut err);
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn certs_commands_write_and_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let pki = pki.to_str().expect("utf-8 path");
    let fleet = Path::new("/nonexistent/fleet.toml"); // certs commands never read the fleet
    let (status, out, err) = etcdops(fleet, &["certs", "init", "--dir", pki]);
    assert_eq!(status, ExitStatus::Ok, "{err}");
    assert!(
        out.contains(&format!("wrote {pki}/ca.crt")) && out.contains("(3650 days)"),
        "{out}"
    );

    let (status, out, err) = etcdops(
        fleet,
        &[
            "certs",
            "issue",
            "agent",
            "--name",
            "etcd1",
            "--host",
            "127.0.0.1",
            "--dir",
            pki,
        ],
    );
    assert_eq!(status, ExitStatus::Ok, "{err}");
    assert!(
        out.contains("agent-etcd1.key (mode 0600)") && out.contains("agent \"etcd1\": expires"),
        "{out}"
    );
    assert!(out.contains("(365 days)"), "{out}");

    let (status, _, err) = etcdops(
        fleet,
        &[
            "certs",
            "issue",
            "agent",
            "--name",
            "etcd1",
            "--host",
            "127.0.0.1",
            "--dir",
            pki,
        ],
    );
    assert_eq!(status, ExitStatus::Usage);
    assert!(err.contains("--force"), "{err}");

    let (status, _, err) = etcdops(
        fleet,
        &["certs", "issue", "etcd-peer", "--name", "etcd1", "--dir", pki],
    );
    assert_eq!(status, ExitStatus::Usage);
    assert!(err.contains("--host"), "{err}");

    let (status, out, err) = etcdops(fleet, &["certs", "list", "--dir", pki, "-w", "json"]);
    assert_eq!(status, ExitStatus::Ok, "{err}");
    let report = json(&out);
    assert_eq!(report["certificates"][0]["role"], "ca");
    assert_eq!(report["certificates"][1]["role"], "agent");
    assert_eq!(report["certificates"][1]["days_left"], 365);

    let empty = dir.path().join("empty");
    let (status, _, err) = etcdops(fleet, &["certs", "list", "--dir", empty.to_str().expect("utf-8")]);
    assert_eq!(status, ExitStatus::Usage);
    assert!(err.contains("etcdops certs init"), "{err}");
}
