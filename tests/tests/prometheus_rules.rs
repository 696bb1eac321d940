//! `deploy/prometheus/`: the alert rules pass promtool's checks and unit tests,
//! and every agent metric they use is one a real agent exports.
//!
//! `promtool check metrics` on our exporters: the agent serves OpenMetrics
//! text (prometheus-client), which Prometheus scrapes natively; promtool's
//! linter reads it as the classic text format and so reports every counter
//! (family `x` with samples `x_total`) as lacking help text, a false
//! positive (deploy-facts: exit 3 on a correct exposition). The decision,
//! tested below on a real scrape: promtool must find nothing else — no
//! naming, unit or help-text problem on any other family.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use etcdops_tests::{Cluster, bins};

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): deploy/dev/setup.sh installs it into /usr/local/bin")
        })
}

fn rule_files() -> Vec<String> {
    vec!["etcd-alerts.yml".into(), "etcdops-alerts.yml".into()]
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = prometheus_dir();
    let files = rule_files();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = promtool(&args, &dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules:\n{text}");
    // etcd's 15 recommended alerts and ours.
    assert!(text.contains("SUCCESS: 15 rules found"), "{text}");
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");

    let out = promtool(
        &[
            "test",
            "rules",
            "tests/etcd-alerts.test.yml",
            "tests/etcdops-alerts.test.yml",
        ],
        &dir,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules:\n{text}");
    assert_eq!(text.matches("SUCCESS").count(), 2, "{text}");
}

/// Every alert of ours has a firing case and a non-firing case in its test file.
#[test]
fn every_alert_of_ours_has_a_firing_and_a_quiet_case() {
    let dir = prometheus_dir();
    let rules = std::fs::read_to_string(dir.join("etcdops-alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("tests/etcdops-alerts.test.yml")).expect("tests");
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    // Each `alertname:` case is followed by either `exp_alerts: []` (quiet)
    // or a list of expected alerts (firing).
    let lines: Vec<&str> = tests.lines().collect();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.trim().strip_prefix("alertname: ") {
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
            if next == "exp_alerts: []" {
                quiet.insert(name);
            } else if next == "exp_alerts:" {
                firing.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "{alert} has no firing case in the tests");
    }
    // Alerts over absent series (no serve replica at all) have no quiet case
    // without a leader series; every other alert has one.
    for alert in alerts.iter().filter(|a| **a != "EtcdopsCertificateExpiringSoon") {
        assert!(
            quiet.contains(alert),
            "{alert} has no non-firing case in the tests"
        );
    }
}

/// `GET /metrics` over plain HTTP from an agent's `metrics_listen`: the body.
fn scrape(ip: std::net::Ipv4Addr, port: u16) -> String {
    let mut stream = TcpStream::connect((ip, port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    body.to_string()
}

/// The `etcdops_agent_*` metric names an expression text refers to.
fn agent_metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("etcdops_agent_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn a_real_agent_exports_what_the_rules_use_and_promtool_lints_it_clean() {
    const METRICS_PORT: u16 = 9444;
    let cluster = Cluster::builder()
        .members(1)
        .metrics_port(METRICS_PORT)
        .disk_probe_interval_secs(1)
        .start(bins!());
    let ip = cluster.member(0).ip;
    let rules = std::fs::read_to_string(prometheus_dir().join("etcdops-alerts.yml")).expect("rules");
    let used = agent_metric_names(&rules);
    assert!(used.len() >= 3, "{used:?}");

    // The disk gauges appear once the first periodic probe finished.
    let mut body = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        body = scrape(ip, METRICS_PORT);
        if used
            .iter()
            .all(|name| body.lines().any(|l| l.starts_with(name.as_str())))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in &used {
        assert!(
            body.lines().any(|l| l.starts_with(name.as_str())),
            "the rules use {name}, which the agent does not export:\n{body}"
        );
    }

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (deploy/dev/setup.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write the scrape to promtool");
    let out = child.wait_with_output().expect("promtool check metrics");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let counters: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .map(|family| format!("{family}_total"))
        .collect();
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let known_false_positive = line
            .split_once(' ')
            .is_some_and(|(name, rest)| counters.contains(name) && rest.contains("no help text"));
        assert!(
            known_false_positive,
            "promtool check metrics found a problem in the agent's exposition: {line}\n\
             full report:\n{report}\nscrape:\n{body}"
        );
    }
}

/// Every `etcdops_serve_*` metric the rules use is one `etcdops serve`
/// registers (its registry in `coordinator/src/serve/metrics.rs`; the
/// families only render once they have series, so the names are read from
/// the registration, and the serve e2e tests scrape them for real).
#[test]
fn serve_registers_what_the_rules_use() {
    let rules = std::fs::read_to_string(prometheus_dir().join("etcdops-alerts.yml")).expect("rules");
    let names = |text: &str| -> BTreeSet<String> {
        text.match_indices("etcdops_serve_")
            .map(|(i, _)| {
                text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    };
    let used = names(&rules);
    assert!(used.len() >= 5, "{used:?}");
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/src/serve/metrics.rs"),
    )
    .expect("serve's metrics source");
    let registered: BTreeSet<String> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix("\","))
        .filter(|n| n.starts_with("etcdops_serve_"))
        .map(String::from)
        .collect();
    for name in &used {
        assert!(
            registered.contains(name),
            "the rules use {name}, which serve does not register: {registered:?}"
        );
    }
}
