//! End-to-end: `etcdops restore` of a real 3-member cluster from a snapshot
//! file, its rollback, and bad snapshots refused before any member stops.

use std::path::{Path, PathBuf};

use etcdops_format::etcd_version::EtcdVersion;
use etcdops_tests::{Caller, Cluster, EtcdRelease, bins, step_ids};

fn counts(cluster: &Cluster, prefix: &str) -> Vec<i64> {
    cluster
        .layout
        .members
        .iter()
        .map(|m| cluster.local_count(&m.client_url, prefix))
        .collect()
}

fn cluster_id(cluster: &Cluster) -> u64 {
    cluster
        .get_status(0, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member")
        .cluster_id
}

fn kept(data_dir: &Path, reason: &str) -> Vec<PathBuf> {
    let parent = data_dir.parent().expect("parent");
    let prefix = format!(
        "{}.{reason}-",
        data_dir.file_name().expect("name").to_string_lossy()
    );
    std::fs::read_dir(parent)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

fn save_snapshot(cluster: &Cluster, dir: &Path) -> PathBuf {
    let out = cluster.etcdops(&[
        "snapshot",
        "save",
        "--out",
        dir.to_str().expect("utf-8"),
        "-w",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    PathBuf::from(out.json()["path"].as_str().expect("path"))
}

/// The revision-bump note a restore plan without `--bump-revision` must
/// carry for the etcd the members run (the agents report its version): a
/// release whose restore tool cannot bump (3.4.23, 3.5.1; etcdutl 3.5.10+ and
/// etcdctl 3.4.27+ can) says so; one that can bumps by default.
fn expected_bump_note(cluster: &Cluster) -> String {
    let version = cluster
        .get_status(0, &Caller::Coordinator, 2000)
        .expect("status")
        .member
        .expect("member")
        .etcd_version;
    match version.parse::<EtcdVersion>() {
        Ok(v) if v.restore_can_bump() => "the revision is raised by 1000000000".to_string(),
        Ok(_) => format!("etcd {version} cannot bump the revision on restore"),
        Err(_) => "no revision bump".to_string(),
    }
}

#[test]
fn a_cluster_restored_from_a_snapshot_holds_its_data_and_rolls_back() {
    restored_and_rolled_back(EtcdRelease::Debian34);
}

/// The same on etcd 3.5 (the matrix's representative subset).
#[test]
fn a_cluster_restored_from_a_snapshot_holds_its_data_and_rolls_back_on_etcd_3_5() {
    restored_and_rolled_back(EtcdRelease::V3_5);
}

fn restored_and_rolled_back(release: EtcdRelease) {
    let cluster = Cluster::builder()
        .etcd(release)
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("before/", 120, 300);
    cluster.block_on({
        let (url, tls) = (
            cluster.layout.members[0].client_url.clone(),
            cluster.etcd_options(),
        );
        async move {
            let mut client = etcd_client::Client::connect([url.as_str()], tls)
                .await
                .expect("client");
            for i in 0..20 {
                client
                    .put(
                        format!("distinct/{i}"),
                        format!("value {i} {}", "z".repeat(i)),
                        None,
                    )
                    .await
                    .expect("put");
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = save_snapshot(&cluster, dir.path());
    let everything = cluster.local_dump(&cluster.layout.members[0].client_url, "");
    cluster.put_bulk("after/", 40, 300);
    let old_id = cluster_id(&cluster);
    let snapshot = snapshot.to_str().expect("utf-8");

    let dry = ops.run(&["restore", "--snapshot", snapshot, "--dry-run", "-w", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let plan = dry.json();
    let notes = plan["plan"]["notes"].to_string();
    assert!(notes.contains(&expected_bump_note(&cluster)), "{plan}");
    assert_eq!(
        counts(&cluster, "after/"),
        vec![40; 3],
        "a dry run changes nothing"
    );

    let out = ops.run(&["restore", "--snapshot", snapshot, "--yes", "-w", "json"]);
    let record = out.succeeded();
    assert_eq!(
        step_ids(&record),
        [
            "stage-all",
            "stop-all",
            "swap-all",
            "configure-all",
            "start-all",
            "verify-restore"
        ]
    );
    cluster.wait_until(
        "healthy after the restore",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    assert_eq!(
        counts(&cluster, "before/"),
        vec![120; 3],
        "the snapshot's data on every member"
    );
    for m in &cluster.layout.members {
        assert!(
            cluster.local_dump(&m.client_url, "") == everything,
            "{}: every key and value equal to the snapshot's",
            m.name
        );
    }
    assert_eq!(
        counts(&cluster, "after/"),
        vec![0; 3],
        "nothing written after the snapshot"
    );
    assert_ne!(cluster_id(&cluster), old_id, "a new cluster (fresh token)");
    for m in &cluster.layout.members {
        assert_eq!(
            kept(&m.data_dir, "pre-restore").len(),
            1,
            "{}: the old data dir is kept",
            m.name
        );
        let env = std::fs::read_to_string(&m.env_file).expect("env");
        assert!(
            env.contains("ETCD_INITIAL_CLUSTER_STATE=\"new\"")
                || env.contains("ETCD_INITIAL_CLUSTER_STATE=new"),
            "{env}"
        );
    }

    let id = record["id"].as_str().expect("id");
    let out = ops.run(&["restore", "--rollback", id, "--yes", "-w", "json"]);
    out.succeeded();
    cluster.wait_until(
        "healthy after the rollback",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    assert_eq!(
        counts(&cluster, "after/"),
        vec![40; 3],
        "the pre-restore data is back"
    );
    assert_eq!(cluster_id(&cluster), old_id);
    for m in &cluster.layout.members {
        assert_eq!(
            kept(&m.data_dir, "rolled-back").len(),
            1,
            "{}: the restored dir is kept aside",
            m.name
        );
    }
}

#[test]
fn bad_snapshots_are_refused_before_any_member_stops() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("k/", 50, 300);
    let dir = tempfile::tempdir().expect("tempdir");
    let good = save_snapshot(&cluster, dir.path());
    let pids: Vec<u32> = (0..3).map(|i| cluster.etcd_pid(i)).collect();

    let mut bytes = std::fs::read(&good).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let flipped = dir.path().join("flipped.db");
    std::fs::write(&flipped, &bytes).expect("write");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a snapshot\n").expect("write");
    let missing = dir.path().join("missing.db");

    for (file, expected) in [(&flipped, "damaged"), (&text, ""), (&missing, "")] {
        let out = ops.run(&["restore", "--snapshot", file.to_str().expect("utf-8"), "--yes"]);
        assert_ne!(out.code, 0, "{}", out.stderr);
        assert!(out.stderr.starts_with("error:"), "{}", out.stderr);
        assert!(out.stderr.contains(expected), "{}", out.stderr);
        assert!(ops.operations().is_empty(), "nothing journaled");
    }
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(cluster.etcd_pid(i), *pid, "member {i} kept running");
    }
    for m in &cluster.layout.members {
        let parent = m.data_dir.parent().expect("parent");
        let leftovers: Vec<String> = std::fs::read_dir(parent)
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.contains("restore"))
            .collect();
        assert!(leftovers.is_empty(), "{}: {leftovers:?}", m.name);
    }
    assert_eq!(counts(&cluster, "k/"), vec![50; 3]);
}

#[test]
fn a_coordinator_killed_while_every_member_is_down_resumes_the_restore() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("before/", 60, 300);
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = save_snapshot(&cluster, dir.path());
    cluster.put_bulk("after/", 30, 300);

    let mut child = ops.spawn(&[
        "restore",
        "--snapshot",
        snapshot.to_str().expect("utf-8"),
        "--yes",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        let op = ops.operations().into_iter().next();
        if let Some(op) = op
            && op["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["id"] == "stop-all" && s["state"] == "done"))
        {
            break op["id"].as_str().expect("id").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never stopped the members"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().expect("kill the coordinator");
    let _ = child.wait();

    let out = ops.run(&["op", "resume", &id, "-w", "json"]);
    let record = out.succeeded();
    for step in record["steps"].as_array().expect("steps") {
        if step["id"] == "stage-all" || step["id"] == "stop-all" {
            assert_eq!(step["attempts"], 1, "finished steps are not redone: {step}");
        }
    }
    cluster.wait_until(
        "healthy after the resumed restore",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    assert_eq!(counts(&cluster, "before/"), vec![60; 3]);
    assert_eq!(counts(&cluster, "after/"), vec![0; 3]);
    for m in &cluster.layout.members {
        assert_eq!(
            kept(&m.data_dir, "pre-restore").len(),
            1,
            "{}: swapped exactly once",
            m.name
        );
    }
}

/// `--pause-after STEP` ends the run with the operation `paused`: exit 0,
/// the record printed, the cluster still held by it.
fn paused(out: &etcdops_tests::CliOutput, after: &str) -> serde_json::Value {
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let record = out.json();
    assert_eq!(record["state"], "paused", "{record}");
    let last_done = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .rev()
        .find(|s| s["state"] == "done")
        .expect("a step done");
    assert_eq!(last_done["id"], after, "{record}");
    assert!(
        out.stderr.contains("op resume"),
        "says how to go on: {}",
        out.stderr
    );
    record
}

#[test]
fn a_host_that_crashes_after_staging_is_picked_up_by_the_resume() {
    let mut cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    // The journal outside `Coordinator` (which borrows the cluster): the host crash below needs it mutably.
    let journal_dir = tempfile::tempdir().expect("journal dir");
    let journal = journal_dir.path().join("journal.redb");
    let journal = journal.to_str().expect("utf-8");
    let run =
        |cluster: &Cluster, args: &[&str]| cluster.etcdops_with_env(args, &[("ETCDOPS_JOURNAL", journal)]);
    cluster.put_bulk("before/", 50, 300);
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = save_snapshot(&cluster, dir.path());
    cluster.put_bulk("after/", 20, 300);

    // A step the plan does not have: usage, naming the steps it has.
    let out = run(
        &cluster,
        &[
            "restore",
            "--snapshot",
            snapshot.to_str().expect("utf-8"),
            "--yes",
            "--pause-after",
            "stage",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no such step") && out.stderr.contains("stage-all, stop-all"),
        "{}",
        out.stderr
    );

    // Staged everywhere while the cluster serves, then paused: a cutover later.
    let out = run(
        &cluster,
        &[
            "restore",
            "--snapshot",
            snapshot.to_str().expect("utf-8"),
            "--yes",
            "--pause-after",
            "stage-all",
            "-w",
            "json",
        ],
    );
    let record = paused(&out, "stage-all");
    let id = record["id"].as_str().expect("id").to_string();
    assert!(cluster.is_healthy(), "staging stops nothing");
    assert_eq!(counts(&cluster, "after/"), vec![20; 3]);
    let other = run(&cluster, &["restart", "--rolling", "--yes"]);
    assert_eq!(
        other.code, 3,
        "the paused restore keeps the cluster: {}",
        other.stderr
    );
    assert!(
        other.stderr.contains(&id),
        "the refusal names the holder's operation: {}",
        other.stderr
    );

    // Host 1 loses power (agent and etcd SIGKILLed) and comes back.
    cluster.power_cut(1);
    cluster.restart_agent(1);

    let out = run(&cluster, &["op", "resume", &id, "-w", "json"]);
    let record = out.succeeded();
    let stage = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "stage-all")
        .expect("stage-all")
        .clone();
    assert_eq!(
        stage["attempts"], 1,
        "the staged restore survived the crash, not staged again: {stage}"
    );
    cluster.wait_until(
        "healthy after the resumed restore",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    assert_eq!(counts(&cluster, "before/"), vec![50; 3]);
    assert_eq!(counts(&cluster, "after/"), vec![0; 3]);
}

#[test]
fn a_coordinator_lost_after_one_host_swapped_resumes_the_restore() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("before/", 40, 300);
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = save_snapshot(&cluster, dir.path());
    cluster.put_bulk("after/", 25, 300);

    let out = ops.run(&[
        "restore",
        "--snapshot",
        snapshot.to_str().expect("utf-8"),
        "--yes",
        "--pause-after",
        "stop-all",
        "-w",
        "json",
    ]);
    let record = paused(&out, "stop-all");
    let id = record["id"].as_str().expect("id").to_string();
    // What a coordinator that died during swap-all leaves: its SwapInRestore
    // reached host 0 only (same fence, the step's first attempt).
    let staged = record["operation"]["restore"]["staged"][&cluster.layout.members[0].name]
        .as_str()
        .expect("staged dir")
        .to_string();
    let fence = etcdops_proto::v1::Fence {
        step: "swap-all#1".into(),
        ..cluster.fence(&id, record["epoch"].as_u64().expect("epoch"))
    };
    let swapped = cluster
        .block_on(cluster.client(0, &Caller::Coordinator).swap_in_restore(
            etcdops_proto::v1::SwapInRestoreRequest {
                fence: Some(fence),
                staged_dir: staged,
            },
        ))
        .expect("host 0 swapped");
    assert!(!swapped.into_inner().previous_kept_as.is_empty());

    let out = ops.run(&["op", "resume", &id, "-w", "json"]);
    out.succeeded();
    cluster.wait_until(
        "healthy after the resumed restore",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    assert_eq!(counts(&cluster, "before/"), vec![40; 3]);
    assert_eq!(counts(&cluster, "after/"), vec![0; 3]);
    for m in &cluster.layout.members {
        assert_eq!(
            kept(&m.data_dir, "pre-restore").len(),
            1,
            "{}: swapped exactly once",
            m.name
        );
    }
}

#[test]
fn the_latest_verified_backup_is_restored() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    let backups = tempfile::tempdir().expect("tempdir");
    let target = format!("file://{}", backups.path().display());

    // An empty target: refused, saying what to do; nothing stopped.
    let out = ops.run(&[
        "restore",
        "--snapshot",
        "latest",
        "--backup-target",
        &target,
        "--yes",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no verified backup") && out.stderr.contains("backup list"),
        "{}",
        out.stderr
    );
    let out = ops.run(&[
        "restore",
        "--snapshot",
        "some.db",
        "--backup-target",
        &target,
        "--yes",
    ]);
    assert_eq!(out.code, 2, "--backup-target only with latest: {}", out.stderr);
    assert!(cluster.is_healthy());

    cluster.put_bulk("first/", 30, 200);
    let out = cluster.etcdops(&["backup", "run", "--target", &target, "--no-prune"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Backup names have one-second resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    cluster.put_bulk("second/", 20, 200);
    let out = cluster.etcdops(&["backup", "run", "--target", &target, "--no-prune"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    cluster.put_bulk("third/", 10, 200);

    let out = ops.run(&[
        "restore",
        "--snapshot",
        "latest",
        "--backup-target",
        &target,
        "--yes",
        "-w",
        "json",
    ]);
    assert!(out.stderr.contains("latest verified backup in"), "{}", out.stderr);
    out.succeeded();
    cluster.wait_until(
        "healthy after the restore",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    assert_eq!(counts(&cluster, "first/"), vec![30; 3]);
    assert_eq!(
        counts(&cluster, "second/"),
        vec![20; 3],
        "the newer backup was taken"
    );
    assert_eq!(counts(&cluster, "third/"), vec![0; 3]);
}

/// A small tmpfs holding one member's data dir (unmounted on drop, lazily,
/// so a failing test leaves no mount behind).
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Moves `data_dir` (its etcd stopped) onto a tmpfs of `size` mounted in its place.
    fn mount(data_dir: &Path, size: &str) -> Result<SmallDisk, String> {
        let copy = data_dir.with_extension("copy");
        let run = |cmd: &mut std::process::Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(std::process::Command::new("cp")
            .arg("-a")
            .arg(data_dir)
            .arg(&copy))?;
        run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(data_dir))?;
        let disk = SmallDisk(data_dir.to_path_buf());
        run(std::process::Command::new("sh").arg("-c").arg(format!(
            "cp -a '{}'/. '{}'/",
            copy.display(),
            data_dir.display()
        )))?;
        let _ = std::fs::remove_dir_all(&copy);
        Ok(disk)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_host_without_room_for_the_restore_is_refused_before_anything_stops() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let ops = cluster.coordinator();
    cluster.put_bulk("k/", 200, 100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = save_snapshot(&cluster, dir.path());
    let size = std::fs::metadata(&snapshot).expect("snapshot").len();

    // Member 2's data dir on a filesystem with less than twice the snapshot free
    // (etcd's 64 MB WAL segment and the database fill most of it).
    let m = &cluster.layout.members[2];
    let fence = cluster.acquire_fence("e2e-small-disk");
    let unit = |start: bool| {
        let request = etcdops_proto::v1::UnitRequest {
            boot: false,
            fence: Some(fence.clone()),
            operation_id: "e2e-small-disk".into(),
            timeout_ms: 0,
        };
        let mut client = cluster.client(2, &Caller::Coordinator);
        let answer = if start {
            cluster.block_on(client.start_etcd(request))
        } else {
            cluster.block_on(client.stop_etcd(request))
        };
        answer.expect("unit call");
    };
    unit(false);
    let mb = 64 + 2 * size / 1_000_000 + 8;
    let disk = match SmallDisk::mount(&m.data_dir, &format!("{mb}m")) {
        Ok(d) => d,
        Err(e) => {
            unit(true);
            cluster.release_fence(&fence);
            eprintln!("SKIPPED: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    unit(true);
    cluster.release_fence(&fence);
    cluster.wait_until(
        "healthy on the small disk",
        std::time::Duration::from_secs(30),
        Cluster::is_healthy,
    );
    let pids: Vec<u32> = (0..3).map(|i| cluster.etcd_pid(i)).collect();

    let out = ops.run(&[
        "restore",
        "--snapshot",
        snapshot.to_str().expect("utf-8"),
        "--yes",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&m.name)
            && out.stderr.contains("bytes free beside its data dir")
            && out.stderr.contains("free space there"),
        "names the host, what it saw and what to do: {}",
        out.stderr
    );
    assert!(ops.operations().is_empty(), "nothing journaled");
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(cluster.etcd_pid(i), *pid, "member {i} kept running");
    }
    assert_eq!(counts(&cluster, "k/"), vec![200; 3], "the cluster keeps serving");
    drop(disk);
}
