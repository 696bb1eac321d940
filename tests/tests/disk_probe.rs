//! End-to-end: `etcdops check disk` probes a real member's disk through its
//! agent, reports sane figures beside etcd's own, leaves no probe files
//! behind, and the agent refuses bad and concurrent probe requests.

use etcdops_proto::v1::ProbeDiskRequest;
use etcdops_tests::{Caller, Cluster, bins};
use tonic::Code;

/// Entries beside (and in) member 0's data dir that look like probe directories.
fn probe_leftovers(cluster: &Cluster) -> Vec<String> {
    let data_dir = &cluster.member(0).data_dir;
    let parent = data_dir.parent().expect("data dir parent");
    [parent, data_dir.as_path()]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).expect("read_dir"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".etcdops-probe-"))
        .collect()
}

#[test]
fn check_disk_reports_sane_figures_and_cleans_up() {
    let cluster = Cluster::builder().members(1).start(bins!());
    // Give etcd WAL fsyncs and backend commits to report.
    cluster.put_bulk("disk-probe/", 20, 100);

    let out = cluster.etcdops(&["check", "disk", "-w", "json"]);
    let json = out.json();
    let ok = json["ok"].as_bool().expect("ok");
    assert_eq!(
        out.code,
        if ok { 0 } else { 1 },
        "exit code follows ok\n{}\n{}",
        out.stdout,
        out.stderr
    );

    let m = &json["members"][0];
    assert_eq!(m["name"], "etcd1");
    assert_eq!(m["error"], serde_json::Value::Null, "{}", out.stdout);
    let probe = &m["probe"];
    let figure = |key: &str| {
        probe[key]
            .as_u64()
            .unwrap_or_else(|| panic!("probe.{key} in {}", out.stdout))
    };
    assert_eq!(
        figure("writes"),
        (22u64 << 20).div_ceil(2300),
        "22 MiB in 2300-byte writes, rounded up"
    );
    assert_eq!(figure("bytes"), 22 << 20);
    assert!(
        figure("p50_us") <= figure("p99_us") && figure("p99_us") <= figure("max_us"),
        "{probe}"
    );
    assert!(figure("max_us") > 0, "{probe}");
    assert!(
        probe["throughput_bytes_per_sec"].as_f64().expect("throughput") > 0.0,
        "{probe}"
    );
    assert_eq!(figure("threshold_p99_us"), 10_000, "the default threshold");
    let within = figure("p99_us") <= 10_000;
    assert_eq!(probe["within_threshold"], within);
    assert_eq!(m["verdict"], if within { "ok" } else { "slow" });
    let path = probe["path"].as_str().expect("path");
    let parent = cluster.member(0).data_dir.parent().expect("parent");
    assert!(
        path.starts_with(&parent.display().to_string()),
        "{path} beside the data dir"
    );

    let etcd = &m["etcd"];
    assert_eq!(etcd["error"], serde_json::Value::Null, "{etcd}");
    assert!(
        etcd["wal_fsync_p99_us"].as_u64().is_some_and(|us| us > 0),
        "{etcd}"
    );
    assert!(
        etcd["backend_commit_p99_us"].as_u64().is_some_and(|us| us > 0),
        "{etcd}"
    );

    assert_eq!(
        probe_leftovers(&cluster),
        Vec::<String>::new(),
        "no probe files remain"
    );

    // The table names every column.
    let out = cluster.etcdops(&["check", "disk", "--size", "1m"]);
    assert!(
        out.stdout.contains("ETCD WAL FSYNC P99") && out.stdout.contains("VERDICT"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("| etcd1 "), "{}", out.stdout);
    assert_eq!(probe_leftovers(&cluster), Vec::<String>::new());
}

#[test]
fn bad_and_concurrent_disk_probes_are_refused() {
    let cluster = Cluster::builder().members(1).start(bins!());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut client = cluster.client(0, &Caller::Coordinator);
    let err = runtime
        .block_on(client.probe_disk(ProbeDiskRequest {
            total_bytes: 0,
            block_size: 2 << 20,
        }))
        .expect_err("a 2 MiB block must be refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("block_size:"), "{}", err.message());
    let err = runtime
        .block_on(client.probe_disk(ProbeDiskRequest {
            total_bytes: 2 << 30,
            block_size: 0,
        }))
        .expect_err("2 GiB must be refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("total_bytes:"), "{}", err.message());

    // Two probes at once: one runs, the other is told one is running.
    let request = ProbeDiskRequest {
        total_bytes: 2 << 20,
        block_size: 0,
    };
    let (mut a, mut b) = (
        cluster.client(0, &Caller::Coordinator),
        cluster.client(0, &Caller::Coordinator),
    );
    let (first, second) =
        runtime.block_on(async { tokio::join!(a.probe_disk(request), b.probe_disk(request)) });
    let mut results = [first.map(|r| r.into_inner()), second.map(|r| r.into_inner())];
    results.sort_by_key(|r| r.is_err());
    let done = results[0].as_ref().expect("one probe runs");
    assert_eq!(done.writes, (2u64 << 20).div_ceil(2300));
    let busy = results[1].as_ref().expect_err("the other is refused");
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
    assert!(busy.message().contains("already running"), "{}", busy.message());

    // Free again afterwards, and nothing left behind.
    let again = runtime.block_on(client.probe_disk(ProbeDiskRequest {
        total_bytes: 23_000,
        block_size: 0,
    }));
    assert_eq!(again.expect("a later probe runs").into_inner().writes, 10);
    assert_eq!(probe_leftovers(&cluster), Vec::<String>::new());
}
