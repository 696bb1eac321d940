//! End-to-end: `etcdops sandbox up` brings up a healthy cluster the CLI can
//! see through the agents, with a spare host (an agent without a member),
//! and `sandbox down` leaves nothing running.

use std::process::Command;

use etcdops_tests::{bins, free_prefix};

fn etcdops(args: &[&str]) -> std::process::Output {
    Command::new(bins!().cli)
        .args(args)
        .env_remove("ETCDOPS_FLEET")
        .output()
        .expect("etcdops")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
    })
}

#[test]
fn sandbox_up_status_down() {
    etcdops_certs::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let [a, b, c] = free_prefix();
    let prefix = format!("{a}.{b}.{c}");
    let agent = bins!().agent;
    let up = etcdops(&[
        "sandbox",
        "up",
        "--dir",
        d,
        "--ip-prefix",
        &prefix,
        "--spares",
        "1",
        "--agent-bin",
        agent.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&up.stdout);
    // Whatever happens next, stop what was started.
    let guard = scopeguard(d);
    assert!(
        up.status.success(),
        "sandbox up: {}\n{stdout}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        stdout.contains("etcdops status") && stdout.contains("sandbox down"),
        "next steps printed: {stdout}"
    );
    // etcd speaks TLS with client-certificate auth: the printed etcdctl
    // line carries the flags, and works as printed.
    let etcdctl = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("etcdctl "))
        .unwrap_or_else(|| panic!("an etcdctl example printed: {stdout}"));
    assert!(
        etcdctl.contains("https://") && etcdctl.contains("--cacert") && etcdctl.contains("--cert"),
        "{etcdctl}"
    );
    let put = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(etcdctl.split_whitespace().skip(1))
        .output()
        .expect("running etcdctl");
    assert!(
        put.status.success(),
        "{etcdctl}: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let spare_agent = format!("https://{prefix}.14:7443");
    assert!(
        stdout
            .contains("spare hosts (agents without a member; add one with `etcdops member add etcd4 --agent")
            && stdout.contains(&spare_agent),
        "spare host printed: {stdout}"
    );
    let spare_env = std::fs::read_to_string(dir.path().join("etcd4/etcd.env")).expect("spare env file");
    assert!(
        spare_env.contains("ETCD_NAME=\"etcd4\"") && !spare_env.contains("ETCD_INITIAL_CLUSTER"),
        "{spare_env}"
    );

    let fleet = dir.path().join("fleet.toml");
    let status = etcdops(&["--fleet", fleet.to_str().expect("utf-8"), "status", "-w", "json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        report["members"].as_array().map(Vec::len),
        Some(3),
        "the spare is not a member"
    );

    // A second `up` on a running sandbox is refused.
    let again = etcdops(&[
        "sandbox",
        "up",
        "--dir",
        d,
        "--agent-bin",
        agent.to_str().expect("utf-8"),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let pids: Vec<u32> = (1..=4)
        .map(|i| {
            std::fs::read_to_string(dir.path().join(format!("etcd{i}/agent.pid")))
                .expect("pid file")
                .trim()
                .parse()
                .expect("pid")
        })
        .collect();
    drop(guard);
    for pid in pids {
        assert!(!alive(pid), "agent {pid} still running after sandbox down");
    }
    let leftovers = std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            alive(*pid)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| String::from_utf8_lossy(&env).contains(d))
        })
        .count();
    assert_eq!(leftovers, 0, "no etcd of the sandbox left running");
    assert!(dir.path().join("etcd1/data").is_dir(), "data is kept");
}

/// Runs `sandbox down` when dropped, also when the test panics.
struct Down(String);

fn scopeguard(dir: &str) -> Down {
    Down(dir.to_string())
}

impl Drop for Down {
    fn drop(&mut self) {
        let out = etcdops(&["sandbox", "down", "--dir", &self.0]);
        assert!(
            out.status.success() || std::thread::panicking(),
            "sandbox down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
