//! End-to-end: one set of cluster checks. A fleet file whose two agents are
//! swapped is reported by `status` and refused, in the same words, by every
//! mutating command, at `--dry-run` and without it, with nothing changed.
//! The disk gate refuses a slow disk (the agents' periodic probe on, with a
//! threshold the real disk is over), fails closed when no periodic result
//! exists (its own short probe is over it too), and `--ignore-slow-disk`
//! goes ahead; `op resume` runs the same gate before its next step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etcdops_tests::{Caller, CliOutput, Cluster, Coordinator, bins};

/// `etcdops --fleet FLEET ARGS` with the operator's journal.
fn run_with_fleet(cluster: &Cluster, ops: &Coordinator, fleet: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(&cluster.bins.cli)
        .arg("--fleet")
        .arg(fleet)
        .args(args)
        .env_remove("ETCDOPS_FLEET")
        .env("ETCDOPS_JOURNAL", &ops.journal)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running etcdops");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A copy of the harness's fleet file with the agents of etcd1 and etcd2 swapped.
fn swapped_fleet(cluster: &Cluster, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cluster.fleet_path()).expect("fleet file");
    let (a, b) = (&cluster.member(0).agent_url, &cluster.member(1).agent_url);
    assert_eq!(text.matches(a.as_str()).count(), 1, "{text}");
    assert_eq!(text.matches(b.as_str()).count(), 1, "{text}");
    let swapped = text
        .replace(a.as_str(), "@A@")
        .replace(b.as_str(), a.as_str())
        .replace("@A@", b.as_str());
    let path = dir.join("swapped-fleet.toml");
    std::fs::write(&path, swapped).expect("write the swapped fleet file");
    path
}

/// No agent records a held fence: no operation started.
fn no_fence_held(cluster: &Cluster) -> bool {
    (0..3).all(|i| {
        cluster
            .get_status(i, &Caller::Coordinator, 2000)
            .expect("status")
            .fences
            .iter()
            .all(|f| !f.held)
    })
}

#[test]
fn a_fleet_file_with_two_agents_swapped_is_refused_by_every_mutating_command() {
    let cluster = Cluster::builder()
        .members(3)
        .spares(1)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("keep/", 50, 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = {
        let out = cluster.etcdops(&[
            "snapshot",
            "save",
            "--out",
            dir.path().to_str().expect("utf-8"),
            "-w",
            "json",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()["path"].as_str().expect("path").to_string()
    };
    let fleet = swapped_fleet(&cluster, dir.path());

    // status reports it, and says which agent serves which member.
    let status = run_with_fleet(&cluster, &ops, &fleet, &["status", "-w", "json"]);
    assert_eq!(status.code, 1, "{}", status.stdout);
    let problems: Vec<String> = status.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("text").to_string())
        .collect();
    // The coordinator refuses the agent in the TLS handshake already: the
    // certificate it presents is etcd2's agent's, not etcd1's.
    let expected = format!(
        "etcd1: not reachable: agent etcd1 at {} is not the agent of this member: \
         the agent dialled for member \"etcd1\" presented the agent certificate of \"etcd2\"",
        cluster.member(1).agent_url
    );
    let words = problems
        .iter()
        .find(|p| p.starts_with(&expected))
        .unwrap_or_else(|| panic!("status names the swap: {problems:?}"))
        .clone();
    assert!(
        words.contains("is the fleet file's agent URL for etcd1 right"),
        "status says what to do: {words}"
    );
    let health = run_with_fleet(&cluster, &ops, &fleet, &["health"]);
    assert_eq!(health.code, 1, "{}", health.stdout);
    assert!(health.stdout.contains(&words), "{}", health.stdout);

    let spare = cluster.spare(0).clone();
    let commands: Vec<Vec<&str>> = vec![
        vec!["defrag", "--rolling"],
        vec!["restart", "--rolling"],
        vec!["member", "add", &spare.name, "--agent", &spare.agent_url],
        vec!["member", "remove", "etcd3"],
        vec!["restore", "--snapshot", &snapshot],
        vec!["recover", "--force-new-cluster"],
    ];
    for command in &commands {
        for mode in ["--dry-run", "--yes"] {
            let mut args = command.clone();
            args.push(mode);
            let out = run_with_fleet(&cluster, &ops, &fleet, &args);
            assert_eq!(
                out.code, 1,
                "{args:?} is refused\nstdout:\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            );
            // `member remove` reaches its quorum guard first: with both
            // swapped agents refused in the handshake, no voter counts as
            // healthy, and it refuses on that ground.
            let quorum_guard = command[0] == "member"
                && command[1] == "remove"
                && out.stderr.contains("of which 0 are healthy");
            // Each command words it in its own context; all name the swap.
            let swap = "the agent dialled for member \"etcd1\" presented the agent certificate of \"etcd2\"";
            assert!(
                out.stdout.contains(swap) || out.stderr.contains(swap) || quorum_guard,
                "{args:?} says what status says ({words})\nstdout:\n{}\nstderr:\n{}",
                out.stdout,
                out.stderr
            );
            assert!(
                !out.stdout.contains("safe to operate on now"),
                "{args:?}\n{}",
                out.stdout
            );
        }
    }

    // Nothing was changed: no operation journaled, no fence taken, the same members and data.
    assert!(ops.operations().is_empty(), "{:?}", ops.operations());
    assert!(no_fence_held(&cluster));
    let list = cluster.etcdops(&["member", "list", "-w", "json"]);
    assert_eq!(list.json()["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(cluster.local_count(&cluster.member(0).client_url, "keep/"), 50);
    let status = cluster.etcdops(&["status"]);
    assert_eq!(status.code, 0, "the right fleet file is fine: {}", status.stdout);
}

/// The prefix of a slow-disk finding for some member, as `status` words it.
fn slow_disk_words(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find(|l| l.contains(": its disk is over the fsync threshold ("))
        .map(|l| l.split(" (fsync p99").next().unwrap_or(l).to_string())
}

#[test]
fn a_slow_disk_refuses_plans_and_ignore_slow_disk_goes_ahead() {
    // 1 ms: the real fdatasync p99 of the test machine's disk is over it.
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(1)
        .disk_fsync_threshold_ms(1)
        .start(bins!());
    let ops = cluster.coordinator();
    let mut warnings = Vec::new();
    cluster.wait_until(
        "status warns of a slow disk (the periodic probe ran)",
        Duration::from_secs(30),
        |c| {
            let out = c.etcdops(&["status", "-w", "json"]);
            warnings = out.json()["warnings"]
                .as_array()
                .map(|w| w.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            slow_disk_words(&warnings).is_some()
        },
    );
    let words = slow_disk_words(&warnings).expect("a slow-disk warning");
    // A slow disk is a warning: status still calls the cluster healthy.
    let status = cluster.etcdops(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert!(
        status.stdout.contains(&format!("warning: {words}")),
        "{}",
        status.stdout
    );

    let dry = ops.run(&["defrag", "--rolling", "--dry-run"]);
    assert_eq!(dry.code, 1, "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("NOT safe now")
            && dry
                .stdout
                .contains(": its disk is over the fsync threshold (fsync p99")
            && dry.stdout.contains("pass --ignore-slow-disk"),
        "{}",
        dry.stdout
    );
    let out = ops.run(&["restart", "--rolling", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not safe to operate on; nothing was changed")
            && out.stderr.contains(": its disk is over the fsync threshold"),
        "{}",
        out.stderr
    );
    assert!(ops.operations().is_empty(), "nothing journaled");
    assert!(no_fence_held(&cluster));

    let dry = ops.run(&["defrag", "--rolling", "--dry-run", "--ignore-slow-disk"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    let out = ops.run(&["defrag", "--rolling", "--yes", "--ignore-slow-disk", "-w", "json"]);
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["state"], "succeeded");
}

#[test]
fn without_a_periodic_probe_result_the_gate_probes_and_fails_closed() {
    // The periodic probe off: no verdict in GetStatus. The gate's own short
    // probe runs, and the real disk is over the 1 ms threshold.
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .disk_fsync_threshold_ms(1)
        .start(bins!());
    let ops = cluster.coordinator();
    let status = cluster.etcdops(&["status", "-w", "json"]);
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert_eq!(
        status.json()["warnings"],
        serde_json::json!([]),
        "no periodic verdict"
    );

    let dry = ops.run(&["defrag", "--rolling", "--dry-run"]);
    assert_eq!(dry.code, 1, "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains(": its disk is over the fsync threshold (fsync p99")
            && dry.stdout.contains("by a short probe now"),
        "{}",
        dry.stdout
    );
    let out = ops.run(&["member", "remove", "etcd3", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("by a short probe now"), "{}", out.stderr);
    assert!(ops.operations().is_empty(), "nothing journaled");
    assert!(no_fence_held(&cluster));

    let dry = ops.run(&["restart", "--rolling", "--dry-run", "--ignore-slow-disk"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        !dry.stdout.contains("short probe"),
        "no probe when ignored: {}",
        dry.stdout
    );
}

#[test]
fn a_resume_runs_the_disk_gate_first() {
    let mut cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let journal_dir = tempfile::tempdir().expect("tempdir");
    let journal = journal_dir.path().join("journal.redb");
    let journal = journal.to_str().expect("utf-8").to_string();
    let run =
        |cluster: &Cluster, args: &[&str]| cluster.etcdops_with_env(args, &[("ETCDOPS_JOURNAL", &journal)]);
    let dry = run(&cluster, &["defrag", "--rolling", "--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    let first = dry.json()["plan"]["steps"][0]["id"]
        .as_str()
        .expect("a first step")
        .to_string();
    let out = run(
        &cluster,
        &[
            "defrag",
            "--rolling",
            "--pause-after",
            &first,
            "--yes",
            "-w",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "paused", "{record}");
    let id = record["id"].as_str().expect("id").to_string();

    // The disks turn slow (by the agents' new threshold) while it is paused.
    cluster.set_disk_fsync_threshold_ms(1);
    let out = run(&cluster, &["op", "resume", &id]);
    assert_eq!(out.code, 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("operation {id} was not resumed"))
            && out
                .stderr
                .contains(": its disk is over the fsync threshold (fsync p99")
            && out.stderr.contains("by a short probe now"),
        "{}",
        out.stderr
    );
    let show = run(&cluster, &["op", "show", &id, "-w", "json"]);
    assert_eq!(show.json()["state"], "paused", "{}", show.stdout);
    let done = show.json()["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["state"] == "done")
        .count();
    assert_eq!(done, 1, "no step ran: {}", show.stdout);
    let out = run(&cluster, &["op", "abort", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
