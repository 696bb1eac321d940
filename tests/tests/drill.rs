//! End-to-end: `etcdops backup drill` on a real cluster's backup. A drill
//! passes with its figures (and says so in the journal); a sidecar that
//! does not match the file makes it fail naming the figure; nothing it
//! created is left behind — also after a SIGKILL of the CLI mid-drill (its
//! etcd dies with it; the next drill removes the directory and ends the
//! dead drill's journal record).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcdops_tests::{CliOutput, Cluster, bins};

fn ok_json(out: &CliOutput) -> serde_json::Value {
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    out.json()
}

/// Processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(&needle) && pid != std::process::id() {
            found.push((pid, text));
        }
    }
    found
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn check<'a>(report: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no check {prefix}: {report:#}"))
}

#[test]
fn drills_pass_fail_on_a_mismatch_and_leave_nothing_behind() {
    let cluster = Cluster::builder().members(3).start(bins!());
    cluster.put_bulk("k", 3000, 1000);
    // A tombstone and an overwrite: the live key count is not the entry count.
    let etcdctl = |args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&cluster.member(0).client_url)
            .args(cluster.etcdctl_tls_args())
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    etcdctl(&["del", "k1"]);
    etcdctl(&["put", "k2", "again"]);
    let original = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    let backups = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        cluster.fleet_path(),
        format!(
            "{original}\n[clusters.backup]\ntarget = \"file://{}\"\n",
            backups.path().display()
        ),
    )
    .expect("fleet");
    let op = cluster.coordinator();
    let run = ok_json(&op.run(&["backup", "run", "-w", "json"]));
    let name = run["backup"]["name"].as_str().expect("name").to_string();
    let drills = op.journal.parent().expect("journal dir").join("drills");

    // 1. The drill passes, with its figures.
    let report = ok_json(&op.run(&["backup", "drill", "-w", "json"]));
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["backup"], name.as_str());
    assert_eq!(report["restored"]["keys"], 2999, "{report:#}");
    assert_eq!(
        report["restored"]["revision"],
        report["snapshot"]["kv"]["revision"]
    );
    assert_eq!(report["restored"]["hash_kv"], report["snapshot"]["kv"]["hash_kv"]);
    assert_eq!(
        report["sidecar"]["revision"], run["backup"]["revision"],
        "{report:#}\n{run:#}"
    );
    for c in report["checks"].as_array().expect("checks") {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(report["checks"].as_array().map(Vec::len), Some(6));
    let id = report["operation"].as_str().expect("operation").to_string();
    let ops = op.operations();
    let record = ops.iter().find(|o| o["id"] == id.as_str()).expect("journaled");
    assert_eq!(record["kind"], "drill");
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let show = ok_json(&op.run(&["op", "show", &id, "-w", "json"]));
    assert_eq!(show["operation"]["outcome"]["passed"], true, "{show:#}");
    assert_eq!(show["operation"]["outcome"]["keys"], 2999);
    assert!(entries(&drills).is_empty(), "{:?}", entries(&drills));
    assert!(
        processes_naming(&drills).is_empty(),
        "{:?}",
        processes_naming(&drills)
    );
    let table = op.run(&["backup", "drill"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("PASSED") && table.stdout.contains("hash_kv"),
        "{}",
        table.stdout
    );

    // 2. A sidecar that does not match the file: the drill fails, naming the figure.
    let sidecar = backups.path().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&sidecar).expect("sidecar");
    let mut meta: serde_json::Value = serde_json::from_str(&text).expect("json");
    let revision = meta["revision"].as_i64().expect("revision");
    meta["revision"] = (revision + 1000).into();
    std::fs::write(&sidecar, serde_json::to_vec(&meta).expect("json")).expect("tamper");
    let failed = op.run(&["backup", "drill", "--backup", &name, "-w", "json"]);
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    let report = failed.json();
    assert_eq!(report["passed"], false);
    let bad = check(&report, "revision: sidecar");
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["expected"], format!("at least {}", revision + 1000));
    assert_eq!(bad["actual"], report["snapshot"]["revision"].to_string());
    let id = report["operation"].as_str().expect("operation").to_string();
    let show = ok_json(&op.run(&["op", "show", &id, "-w", "json"]));
    assert_eq!(show["state"], "failed");
    assert!(
        show["error"]
            .as_str()
            .is_some_and(|e| e.contains("revision: sidecar")),
        "{show:#}"
    );
    std::fs::write(&sidecar, &text).expect("restore the sidecar");
    assert!(entries(&drills).is_empty());

    // 3. SIGKILL of the CLI while its throwaway etcd runs.
    let mut caught = None;
    for _attempt in 0..5 {
        let mut child = op.spawn(&["backup", "drill"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut etcd_pid = None;
        while Instant::now() < deadline && etcd_pid.is_none() {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            for dir in entries(&drills) {
                let owner: Option<serde_json::Value> = std::fs::read(dir.join("drill.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(pid) = owner.and_then(|o| o["etcd_pid"].as_u64()) {
                    etcd_pid = Some((pid, dir));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(found) = etcd_pid {
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
            caught = Some(found);
            break;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let (etcd_pid, left) = caught.expect("never caught a drill with its etcd running in 5 attempts");
    // Its etcd dies with it (PR_SET_PDEATHSIG through setpriv).
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{etcd_pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the killed drill's etcd {etcd_pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(left.exists(), "the directory outlives a SIGKILL");
    let dead_id = left.file_name().and_then(|n| n.to_str()).expect("id").to_string();
    // The next drill removes it and ends the dead drill's record.
    let report = ok_json(&op.run(&["backup", "drill", "-w", "json"]));
    assert_eq!(report["passed"], true);
    assert_eq!(
        report["cleaned_leftovers"],
        serde_json::json!([left.display().to_string()]),
        "{report:#}"
    );
    assert!(!left.exists());
    let show = ok_json(&op.run(&["op", "show", &dead_id, "-w", "json"]));
    assert_eq!(show["state"], "failed", "{show:#}");
    assert!(
        show["error"].as_str().is_some_and(|e| e.contains("process died")),
        "{show:#}"
    );
    assert!(entries(&drills).is_empty(), "{:?}", entries(&drills));
    assert!(
        processes_naming(&drills).is_empty(),
        "{:?}",
        processes_naming(&drills)
    );
}
