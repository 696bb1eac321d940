//! The example configs shipped in deploy/ parse with the real parsers.

use std::path::Path;

#[test]
fn shipped_example_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let agent = root.join("deploy/config/agent.toml");
    let config = etcdops_agent::config::AgentConfig::load(&agent).expect("deploy/config/agent.toml parses");
    assert_eq!(config.etcd.env_file, Path::new("/etc/default/etcd"));
    // The production default is etcd over TLS, with README's "Install on a host" paths.
    assert!(
        config.etcd.endpoint.starts_with("https://"),
        "{}",
        config.etcd.endpoint
    );
    let etcd_tls = config.etcd.tls.as_ref().expect("[etcd.tls] is set");
    assert_eq!(etcd_tls.ca, Path::new("/etc/etcdops/pki/ca.crt"));
    assert_eq!(
        etcd_tls.cert,
        Path::new("/etc/etcdops/pki/etcd-client-etcdops.crt")
    );
    assert_eq!(
        etcd_tls.key,
        Path::new("/etc/etcdops/pki/etcd-client-etcdops.key")
    );
    let fleet = root.join("deploy/config/fleet.toml");
    let fleet = etcdops_coordinator::fleet::Fleet::load(&fleet).expect("deploy/config/fleet.toml parses");
    assert_eq!(fleet.clusters[0].members.len(), 3);
    // serve.toml: parses; checked against the fleet example (with a backup
    // target, as its backup job needs) by serve::config's own unit test.
    let serve = root.join("deploy/config/serve.toml");
    let serve = etcdops_coordinator::serve::config::ServeConfig::load(&serve)
        .expect("deploy/config/serve.toml parses");
    assert!(!serve.jobs.is_empty());
}

/// The packaged agent unit, `deploy/systemd/etcdops-agent.service`.
fn agent_unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/etcdops-agent.service")
}

/// The packaged serve unit, `deploy/systemd/etcdops-serve.service`.
fn serve_unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/etcdops-serve.service")
}

/// `systemd-analyze security --offline=yes --threshold=30`: the agent unit's
/// exposure stays at 3.0 or less (a real run; systemd-analyze must be here).
#[test]
fn the_agent_unit_is_hardened_to_an_exposure_of_3_or_less() {
    exposure_at_most_3(&agent_unit());
}

/// The same gate for `etcdops-serve.service`.
#[test]
fn the_serve_unit_is_hardened_to_an_exposure_of_3_or_less() {
    exposure_at_most_3(&serve_unit());
}

/// serve's unit waits for READY=1, has the watchdog serve pings, and does not
/// restart on serve's start-up error (exit 2: the configuration).
#[test]
fn the_serve_unit_matches_serve() {
    let text = std::fs::read_to_string(serve_unit()).expect("read the unit");
    let directives: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("NotifyAccess"), ["main"]);
    assert_eq!(value("WatchdogSec"), ["30s"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    assert_eq!(value("RestartPreventExitStatus"), ["2"]);
    assert_eq!(
        value("ExecStart"),
        [format!(
            "/usr/bin/etcdops serve --config {}",
            etcdops_coordinator::serve::config::DEFAULT_PATH
        )
        .as_str()]
    );
    assert_eq!(value("StateDirectory"), ["etcdops"]);
    assert_eq!(
        Path::new(etcdops_coordinator::serve::config::DEFAULT_STATE_DIR),
        Path::new("/var/lib/etcdops")
    );
}

fn exposure_at_most_3(unit: &Path) {
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install systemd (`apt-get install systemd`, \
                 version 252 or later for --offline)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in systemd-analyze's output:\n{stdout}\n{stderr}"));
    assert!(
        out.status.success(),
        "{} is above the exposure threshold 3.0: {overall}\n{stdout}\n{stderr}",
        unit.display()
    );
}

/// The unit does not restart on the agent's "not ready" and "invalid config"
/// exits, waits for READY=1 and has the watchdog the agent pings.
#[test]
fn the_agent_unit_matches_the_agent() {
    use etcdops_agent::preflight::{EXIT_INVALID, EXIT_NOT_READY};
    let text = std::fs::read_to_string(agent_unit()).expect("read the unit");
    let directives: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("NotifyAccess"), ["main"]);
    assert_eq!(value("WatchdogSec"), ["30s"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    let prevent = value("RestartPreventExitStatus").join(" ");
    for code in [EXIT_INVALID, EXIT_NOT_READY] {
        assert!(
            prevent.split_whitespace().any(|c| c == code.to_string()),
            "RestartPreventExitStatus={prevent} lacks {code}"
        );
    }
    // RestartPreventExitStatus= applies to the main process only: a check in
    // ExecStartPre= would be restarted until the start limit.
    assert!(value("ExecStartPre").is_empty(), "{:?}", value("ExecStartPre"));
    assert_eq!(value("ProtectSystem"), ["strict"]);
    assert_eq!(
        value("ReadWritePaths"),
        ["-/var/lib/etcd /etc/default", "-/etc/etcd/pki -/etc/etcdops/pki"]
    );
}
