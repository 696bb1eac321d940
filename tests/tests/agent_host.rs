//! Host facts and the periodic disk probe in GetStatus and `etcdops status`,
//! and the agent's own `/metrics`, against a real agent and etcd.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcdops_tests::{Caller, Cluster, bins};

const METRICS_PORT: u16 = 9443;

/// `GET /metrics` over plain HTTP: (status line, body).
fn scrape(cluster: &Cluster) -> (String, String) {
    let ip = cluster.member(0).ip;
    let mut stream = TcpStream::connect((ip, METRICS_PORT)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn host_facts_disk_health_and_metrics() {
    let cluster = Cluster::builder()
        .members(1)
        .metrics_port(METRICS_PORT)
        .disk_probe_interval_secs(1)
        .start(bins!());

    let status = cluster.get_status(0, &Caller::Coordinator, 0).expect("GetStatus");
    let host = status.host.expect("host facts");
    assert!(!host.hostname.is_empty(), "{host:?}");
    assert!(host.cpus >= 1, "{host:?}");
    assert!(
        host.memory_total_bytes > 0 && host.memory_available_bytes <= host.memory_total_bytes,
        "{host:?}"
    );
    assert!(
        host.load1 >= 0.0 && host.load5 >= 0.0 && host.load15 >= 0.0,
        "{host:?}"
    );
    assert!(host.uptime_secs > 0, "{host:?}");

    cluster.wait_until("a periodic disk probe result", Duration::from_secs(30), |c| {
        c.get_status(0, &Caller::Coordinator, 0)
            .is_ok_and(|s| s.disk.is_some())
    });
    let disk = cluster
        .get_status(0, &Caller::Coordinator, 0)
        .expect("GetStatus")
        .disk
        .expect("disk health");
    assert_eq!(disk.error, "", "{disk:?}");
    assert_eq!(disk.writes, 100, "{disk:?}");
    assert!(disk.p99_us > 0 && disk.p99_us <= disk.max_us, "{disk:?}");
    assert_eq!(disk.threshold_p99_us, 10_000, "{disk:?}");
    assert_eq!(
        disk.within_threshold,
        disk.p99_us <= disk.threshold_p99_us,
        "{disk:?}"
    );
    assert!((now_unix() - disk.probed_at_unix).abs() < 60, "{disk:?}");

    let out = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let member = &out.json()["members"][0];
    assert!(
        member["host"]["cpus"].as_u64().is_some_and(|n| n >= 1),
        "{member}"
    );
    assert!(
        member["host"]["hostname"].as_str().is_some_and(|h| !h.is_empty()),
        "{member}"
    );
    assert!(member["host"]["load1"].is_number(), "{member}");
    assert_eq!(member["disk_health"]["writes"], 100, "{member}");
    assert!(member["disk_health"]["error"].is_null(), "{member}");

    let (status_line, body) = scrape(&cluster);
    assert!(status_line.contains("200"), "{status_line}\n{body}");
    assert_eq!(
        sample(&body, r#"etcdops_agent_unit_active{backend="process"}"#),
        Some(1.0),
        "{body}"
    );
    let p99 = sample(&body, "etcdops_agent_disk_probe_p99_seconds").expect("probe p99");
    let max = sample(&body, "etcdops_agent_disk_probe_max_seconds").expect("probe max");
    assert!(p99 > 0.0 && p99 <= max && max < 30.0, "{body}");
    assert!(
        sample(&body, "etcdops_agent_datadir_size_bytes").is_some_and(|v| v > 0.0),
        "{body}"
    );
    assert!(
        sample(&body, "etcdops_agent_fs_free_bytes").is_some_and(|v| v > 0.0),
        "{body}"
    );
    let expiry = sample(
        &body,
        r#"etcdops_agent_cert_expiry_timestamp_seconds{cert="agent-served",path=""}"#,
    )
    .expect("cert expiry");
    assert!(expiry > now_unix() as f64, "{body}");
    let get_status = r#"etcdops_agent_rpc_requests_total{method="GetStatus",code="OK"}"#;
    let before = sample(&body, get_status).expect("GetStatus counted");
    assert!(before >= 3.0, "{body}");
    assert!(
        body.contains("etcdops_agent_rpc_duration_seconds_bucket{"),
        "{body}"
    );
    assert!(
        body.contains(r#"etcdops_agent_rpc_duration_seconds_count{method="GetStatus"}"#),
        "{body}"
    );

    cluster.get_status(0, &Caller::Coordinator, 0).expect("GetStatus");
    let (_, body) = scrape(&cluster);
    assert_eq!(sample(&body, get_status), Some(before + 1.0), "{body}");

    // A refused request is counted with its code.
    let err = cluster
        .get_status(0, &Caller::Coordinator, 60_001)
        .expect_err("timeout_ms too big");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let (_, body) = scrape(&cluster);
    assert_eq!(
        sample(
            &body,
            r#"etcdops_agent_rpc_requests_total{method="GetStatus",code="INVALID_ARGUMENT"}"#
        ),
        Some(1.0),
        "{body}"
    );
}
