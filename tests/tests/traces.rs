//! End-to-end: distributed traces (issue 16). An in-process OTLP receiver
//! (the collector's gRPC trace service, no external collector); a real
//! 3-member cluster whose agents export to it (`[telemetry] otlp_endpoint`);
//! the CLI run with `OTEL_EXPORTER_OTLP_ENDPOINT`. One `etcdops defrag
//! --rolling` is one trace: spans from the coordinator and from all three
//! agents (told apart by `service.name` and `service.instance.id`), every
//! span's parent in the trace, every agent RPC's server span a child of a
//! coordinator span. The trace ID is in every step of `op show -w json` and
//! in every agent's log. Without OTEL variables the CLI exports nothing,
//! and a dead receiver fails nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcdops_tests::otlp::{OtlpReceiver, Received, SpanKind};
use etcdops_tests::{Cluster, bins};

#[test]
fn a_rolling_defrag_is_one_trace_across_the_coordinator_and_every_agent() {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint().to_string();

    let mut cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    // The agents export through their config (`[telemetry] otlp_endpoint`).
    for i in 0..3 {
        let path = cluster.member(i).agent_config.clone();
        let mut config = etcdops_agent::config::AgentConfig::load(&path).expect("agent config");
        config.telemetry.otlp_endpoint = Some(endpoint.clone());
        std::fs::write(&path, config.to_toml()).expect("write the agent config");
        cluster.restart_agent(i);
    }
    let names: BTreeSet<String> = (0..3).map(|i| cluster.member(i).name.clone()).collect();
    for i in 0..3 {
        let log = agent_log(&cluster, i);
        assert!(
            log.contains(&format!("exporting trace spans (OTLP) endpoint={endpoint}")),
            "{log}"
        );
    }

    let ops = cluster.coordinator();
    let journal = ops.journal.to_str().expect("utf-8 path").to_string();
    let traced = [
        ("ETCDOPS_JOURNAL", journal.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ];
    let out = cluster.etcdops_with_env(&["defrag", "--rolling", "--yes", "-w", "json"], &traced);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, cluster.logs());

    // The journal: every step of the operation names the trace.
    let op_id = ops.operations()[0]["id"].as_str().expect("id").to_string();
    let shown = ops.run(&["op", "show", &op_id, "-w", "json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let record = shown.json();
    let steps = record["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "{record}");
    let trace_ids: BTreeSet<&str> = steps
        .iter()
        .map(|s| s["trace_id"].as_str().expect("every step has a trace_id"))
        .collect();
    assert_eq!(
        trace_ids.len(),
        1,
        "one trace for the whole operation: {trace_ids:?}"
    );
    let trace = trace_ids.into_iter().next().expect("trace").to_string();
    assert_eq!(trace.len(), 32, "{trace}");
    assert!(trace.chars().all(|c| c.is_ascii_hexdigit()), "{trace}");
    let table = ops.run(&["op", "show", &op_id]);
    assert!(
        table.stdout.contains(&format!("\ntrace:     {trace}\n")),
        "{}",
        table.stdout
    );

    // The receiver: the coordinator's spans (flushed before the CLI exited)
    // and the agents' (exported in batches a few seconds apart).
    let spans = receiver.wait_for(
        "spans of the trace from the coordinator and all three agents",
        Duration::from_secs(60),
        |spans| {
            let of_trace: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == trace && s.service == "etcdops-agent")
                .map(|s| s.instance.as_str())
                .collect();
            spans
                .iter()
                .any(|s| s.service == "etcdops" && s.trace_id == trace)
                && of_trace.len() == 3
        },
    );
    // Let the last agent batches in (a defragment's span ends after its answer).
    std::thread::sleep(Duration::from_secs(6));
    let spans = {
        let later = receiver.snapshot();
        if later.len() >= spans.len() { later } else { spans }
    };
    let coordinator: Vec<&Received> = spans.iter().filter(|s| s.service == "etcdops").collect();
    assert!(
        coordinator.iter().all(|s| s.trace_id == trace),
        "every span of the one CLI run is in the one trace: {coordinator:#?}"
    );
    let in_trace: Vec<&Received> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let by_id: BTreeMap<&str, &Received> = in_trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let instances: BTreeSet<String> = in_trace
        .iter()
        .filter(|s| s.service == "etcdops-agent")
        .map(|s| s.instance.clone())
        .collect();
    assert_eq!(instances, names, "spans from every agent");
    for name in ["etcdops defrag", "operation defrag"] {
        assert!(
            coordinator.iter().any(|s| s.name == name),
            "a {name:?} span: {coordinator:#?}"
        );
    }
    for step in steps {
        let name = format!("step {}", step["id"].as_str().expect("step id"));
        assert!(
            coordinator.iter().any(|s| s.name == name),
            "a {name:?} span: {coordinator:#?}"
        );
    }
    // One root (the command); every other span's parent is in the trace.
    let roots: Vec<&&Received> = in_trace.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(roots[0].name, "etcdops defrag");
    for span in &in_trace {
        if span.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id
            .get(span.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the parent of {span:?} is not in the trace"));
        // Every agent RPC's server span is the child of a coordinator span.
        if span.service == "etcdops-agent" && span.kind == SpanKind::Server {
            assert_eq!(parent.service, "etcdops", "{span:?} under {parent:?}");
        }
    }
    let rpcs: BTreeSet<(&str, &str)> = in_trace
        .iter()
        .filter(|s| s.service == "etcdops-agent" && s.kind == SpanKind::Server)
        .map(|s| (s.instance.as_str(), s.name.as_str()))
        .collect();
    for name in &names {
        for rpc in ["AcquireFence", "Defragment", "ReleaseFence"] {
            assert!(rpcs.contains(&(name.as_str(), rpc)), "{name} {rpc}: {rpcs:?}");
        }
    }
    assert!(
        in_trace
            .iter()
            .any(|s| s.service == "etcdops-agent" && s.name == "etcd.defragment"),
        "the agents' own work under their RPC spans"
    );

    // Every agent's log names the trace (its RPC span's field).
    for i in 0..3 {
        let log = agent_log(&cluster, i);
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("trace_id={trace}")) && l.contains("fence acquired")),
            "agent {i}'s log has no line with trace_id={trace}:\n{log}"
        );
    }

    // Without OTEL variables: nothing exported by the CLI, nothing fails.
    let before = receiver
        .snapshot()
        .iter()
        .filter(|s| s.service == "etcdops")
        .count();
    let out = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::thread::sleep(Duration::from_secs(1));
    let after = receiver
        .snapshot()
        .iter()
        .filter(|s| s.service == "etcdops")
        .count();
    assert_eq!(
        before, after,
        "the CLI exported spans without OTEL_EXPORTER_OTLP_ENDPOINT"
    );

    // A receiver that is gone fails nothing either (the flush gives up in bounded time).
    let started = Instant::now();
    let out = cluster.etcdops_with_env(
        &["status", "-w", "json"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a dead receiver held the CLI up for {:?}",
        started.elapsed()
    );
}

/// Member i's agent log, without the terminal colours of its fields.
fn agent_log(cluster: &Cluster, i: usize) -> String {
    let text = std::fs::read_to_string(&cluster.member(i).agent_log).expect("agent log");
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
