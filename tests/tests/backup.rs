//! End-to-end: `etcdops backup run|list|prune` against a local directory and
//! against a real S3-compatible server (moto, started by the test), and the
//! faults users meet: an unreachable endpoint, a missing bucket, a missing
//! or unusable directory, no credentials, no retention policy.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_coordinator::snapshot::save::now_compact;
use etcdops_tests::{CliOutput, Cluster, bins};

/// Dummy credentials: moto accepts any.
const CREDS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "etcdops-test"),
    ("AWS_SECRET_ACCESS_KEY", "etcdops-test-secret"),
];

/// A moto S3 server on a free 127.0.0.1 port, killed (with its process group) on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        // `python3 -m moto.server` rather than the `moto_server` script: it
        // works whether or not pip's script directory is on PATH.
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): install it with `pip install 'moto[server]'` (deploy/dev/setup.sh does)")
            });
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a few lines of boto3 against the server (`s3` is the client).
    fn boto3(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='x', aws_secret_access_key='y', region_name='us-east-1')\n{code}",
            self.endpoint()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Object keys under `prefix` in `bucket`, sorted.
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto3(&format!(
            "for o in s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}').get('Contents', []): print(o['Key'])"
        ));
        let mut keys: Vec<String> = out.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Replaces the cluster's `[clusters.backup]` table (the fleet has one cluster, last in the file).
fn set_backup(cluster: &Cluster, original: &str, body: &str) {
    std::fs::write(
        cluster.fleet_path(),
        format!("{original}\n[clusters.backup]\n{body}"),
    )
    .expect("write the fleet file");
}

fn ok_json(out: &CliOutput) -> serde_json::Value {
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    out.json()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Backup names carry their start second: wait until the clock has passed
/// the one in `name` so the next run gets a new name.
fn wait_past(name: &str) {
    let stamp = name
        .trim_end_matches(".db")
        .rsplit('-')
        .next()
        .expect("stamp")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while now_compact() <= stamp {
        assert!(Instant::now() < deadline, "the clock did not pass {stamp}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn states(list: &serde_json::Value) -> Vec<(String, String)> {
    list["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().expect("name").to_string(),
                b["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

#[test]
fn local_backups_run_list_and_prune() {
    let cluster = Cluster::builder().members(3).start(bins!());
    cluster.put_bulk("k", 100, 1000);
    let original = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = format!("file://{}", dir.path().display());
    set_backup(&cluster, &original, &format!("target = \"{target}\"\n"));

    // No policy yet: stored and verified, nothing pruned.
    let first = ok_json(&cluster.etcdops(&["backup", "run", "-w", "json"]));
    assert_eq!(first["ok"], true);
    assert_eq!(first["backup"]["state"], "verified");
    assert_eq!(
        first["verified"],
        serde_json::json!(["size", "sidecar", "sha256"])
    );
    assert!(
        first["why"].as_str().is_some_and(|w| w.contains("follower")),
        "{first:#}"
    );
    assert!(
        first["prune_skipped"]
            .as_str()
            .is_some_and(|w| w.contains("no retention policy")),
        "{first:#}"
    );
    let first_name = first["backup"]["name"].as_str().expect("name").to_string();
    assert!(
        first_name.starts_with("e2e-") && first_name.ends_with("Z.db"),
        "{first_name}"
    );
    let stored = dir.path().join(&first_name);
    assert_eq!(
        std::fs::metadata(&stored).expect("stored").len(),
        first["backup"]["size"].as_u64().expect("size")
    );
    assert_eq!(
        files_in(dir.path()),
        [first_name.clone(), format!("{first_name}.json")]
    );

    wait_past(&first_name);
    let second = cluster.etcdops(&["backup", "run"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("Backup stored: file://") && second.stdout.contains("sha256"),
        "{}",
        second.stdout
    );

    let list = ok_json(&cluster.etcdops(&["backup", "list", "-w", "json"]));
    let listed = states(&list);
    assert_eq!(listed.len(), 2, "{list:#}");
    assert!(listed.iter().all(|(_, s)| s == "verified"), "{list:#}");
    assert_eq!(listed[1].0, first_name, "newest first");
    let newest = listed[0].0.clone();
    assert!(
        list["backups"][0]["revision"].as_i64().is_some_and(|r| r > 100),
        "{list:#}"
    );
    let table = cluster.etcdops(&["backup", "list"]);
    assert!(table.stdout.contains("| verified"), "{}", table.stdout);

    // A policy: keep_last 1. The dry run names the older one and deletes nothing.
    set_backup(
        &cluster,
        &original,
        &format!("target = \"{target}\"\nkeep_last = 1\n"),
    );
    let before = files_in(dir.path());
    let plan = ok_json(&cluster.etcdops(&["backup", "prune", "--dry-run", "-w", "json"]));
    assert_eq!(
        (
            plan["dry_run"].as_bool(),
            plan["deleted"].as_u64(),
            plan["kept"].as_u64()
        ),
        (Some(true), Some(1), Some(1))
    );
    let going: Vec<&str> = plan["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter(|b| b["keep"] == false)
        .map(|b| b["name"].as_str().expect("name"))
        .collect();
    assert_eq!(going, [first_name.as_str()]);
    assert_eq!(files_in(dir.path()), before, "a dry run deletes nothing");

    let pruned = ok_json(&cluster.etcdops(&["backup", "prune", "-w", "json"]));
    assert_eq!(
        (pruned["deleted"].as_u64(), pruned["failed"].as_u64()),
        (Some(1), Some(0)),
        "{pruned:#}"
    );
    assert_eq!(files_in(dir.path()), [newest.clone(), format!("{newest}.json")]);
    let list = ok_json(&cluster.etcdops(&["backup", "list", "-w", "json"]));
    assert_eq!(states(&list), [(newest, "verified".to_string())]);
}

#[test]
fn s3_backups_run_list_and_prune_against_a_real_s3_server() {
    let moto = Moto::start();
    moto.boto3("s3.create_bucket(Bucket='etcd-backups')");
    // Not a disk test: the restore plan's disk gate judges a short probe
    // against the lenient threshold, whatever else loads this machine's disk.
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    // About 12 MB: more than one 8 MiB part, so the upload is multipart.
    cluster.put_bulk("big", 120, 100_000);
    let original = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    set_backup(
        &cluster,
        &original,
        &format!(
            "target = \"s3://etcd-backups/prod/e2e\"\ns3_endpoint = \"{}\"\ns3_allow_http = true\nkeep_last = 1\n",
            moto.endpoint()
        ),
    );
    let staging = tempfile::tempdir().expect("tempdir");
    let staging_path = staging.path().to_str().expect("utf-8");
    let env = [CREDS[0], CREDS[1], ("TMPDIR", staging_path)];

    // A leftover from a failed run long ago: a snapshot without its sidecar.
    moto.boto3(
        "s3.put_object(Bucket='etcd-backups', Key='prod/e2e/e2e-20200101T000000Z.db', Body=b'partial')",
    );

    let first = ok_json(&cluster.etcdops_with_env(&["backup", "run", "--no-prune", "-w", "json"], &env));
    let first_name = first["backup"]["name"].as_str().expect("name").to_string();
    assert_eq!(first["verified"], serde_json::json!(["size", "sidecar"]));
    assert!(
        first["backup"]["size"]
            .as_u64()
            .is_some_and(|s| s > 8 * 1024 * 1024),
        "{first:#}"
    );
    assert_eq!(
        first["backup"]["url"],
        format!("s3://etcd-backups/prod/e2e/{first_name}")
    );
    assert_eq!(first["prune_skipped"], "--no-prune");
    assert!(
        files_in(staging.path()).is_empty(),
        "staging is cleaned: {:?}",
        files_in(staging.path())
    );

    wait_past(&first_name);
    let second = ok_json(&cluster.etcdops_with_env(&["backup", "run", "--no-prune", "-w", "json"], &env));
    let second_name = second["backup"]["name"].as_str().expect("name").to_string();

    let list = ok_json(&cluster.etcdops_with_env(&["backup", "list", "-w", "json"], &env));
    assert_eq!(
        states(&list),
        [
            (second_name.clone(), "verified".to_string()),
            (first_name.clone(), "verified".to_string()),
            ("e2e-20200101T000000Z.db".to_string(), "incomplete".to_string()),
        ]
    );
    assert_eq!(list["backups"][0]["size"], second["backup"]["size"]);
    assert_eq!(list["backups"][0]["sha256"], second["backup"]["sha256"]);

    let plan = ok_json(&cluster.etcdops_with_env(&["backup", "prune", "--dry-run", "-w", "json"], &env));
    assert_eq!(plan["deleted"], 2, "{plan:#}");
    let keys_before = moto.keys("etcd-backups", "prod/e2e/");
    assert_eq!(keys_before.len(), 5, "{keys_before:?}");

    let pruned = cluster.etcdops_with_env(&["backup", "prune"], &env);
    assert_eq!(pruned.code, 0, "{}", pruned.stderr);
    assert!(
        pruned.stdout.contains("incomplete (no sidecar)") && pruned.stdout.contains("2 deleted, 1 kept"),
        "{}",
        pruned.stdout
    );
    assert_eq!(
        moto.keys("etcd-backups", "prod/e2e/"),
        [
            format!("prod/e2e/{second_name}"),
            format!("prod/e2e/{second_name}.json")
        ]
    );

    // `backup run` prunes by itself; the newest is the one kept.
    wait_past(&second_name);
    let third = ok_json(&cluster.etcdops_with_env(&["backup", "run", "-w", "json"], &env));
    let third_name = third["backup"]["name"].as_str().expect("name").to_string();
    assert_eq!(third["prune"]["deleted"], 1, "{third:#}");
    assert_eq!(
        moto.keys("etcd-backups", "prod/e2e/"),
        [
            format!("prod/e2e/{third_name}"),
            format!("prod/e2e/{third_name}.json")
        ]
    );

    // `restore --snapshot latest` downloads the newest verified backup and
    // checks it against its sidecar (a dry run: the plan, nothing stopped).
    let journal = tempfile::tempdir().expect("journal dir");
    let journal_path = journal.path().join("journal.redb");
    let env_restore = [
        CREDS[0],
        CREDS[1],
        ("ETCDOPS_JOURNAL", journal_path.to_str().expect("utf-8")),
    ];
    let plan = cluster.etcdops_with_env(
        &["restore", "--snapshot", "latest", "--dry-run", "-w", "json"],
        &env_restore,
    );
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stderr.contains(&format!(
            "latest verified backup in s3://etcd-backups/prod/e2e: {third_name}"
        )),
        "{}",
        plan.stderr
    );
    let downloaded = journal.path().join("downloads").join(&third_name);
    assert_eq!(
        std::fs::metadata(&downloaded).map(|m| m.len()).ok(),
        third["backup"]["size"].as_u64(),
        "downloaded whole to {}",
        downloaded.display()
    );
    assert!(cluster.is_healthy(), "a dry run stops nothing");

    // A bucket that does not exist is named.
    let missing = cluster.etcdops_with_env(&["backup", "list", "--target", "s3://no-such-bucket/x"], &env);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("bucket \"no-such-bucket\" does not exist"),
        "{}",
        missing.stderr
    );
    assert!(files_in(staging.path()).is_empty());
}

#[test]
fn backup_faults_are_clear_and_leave_nothing_behind() {
    let cluster = Cluster::builder().members(1).start(bins!());
    let original = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    let scratch = tempfile::tempdir().expect("tempdir");
    let staging = scratch.path().join("staging");
    std::fs::create_dir(&staging).expect("mkdir");
    let env = [CREDS[0], CREDS[1], ("TMPDIR", staging.to_str().expect("utf-8"))];

    // An S3 endpoint nobody listens on: a clear error naming it, quickly, nothing staged.
    let dead = format!("http://127.0.0.1:{}", free_port());
    set_backup(
        &cluster,
        &original,
        &format!(
            "target = \"s3://etcd-backups/e2e\"\ns3_endpoint = \"{dead}\"\ns3_allow_http = true\nkeep_last = 2\n"
        ),
    );
    let started = Instant::now();
    let out = cluster.etcdops_with_env(&["backup", "run"], &env);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(&dead) && out.stderr.contains("unreachable"),
        "{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(out.stdout.is_empty());
    assert!(
        files_in(&staging).is_empty(),
        "nothing left in staging: {:?}",
        files_in(&staging)
    );

    // No credentials in the environment.
    let out = cluster.etcdops_with_env(
        &["backup", "list"],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("AWS_ACCESS_KEY_ID") && out.stderr.contains("never read from the fleet file"),
        "{}",
        out.stderr
    );

    // A directory that does not exist, and a file where a directory should be.
    let nowhere = scratch.path().join("nowhere");
    let out = cluster.etcdops(&[
        "backup",
        "run",
        "--target",
        &format!("file://{}", nowhere.display()),
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("does not exist") && out.stderr.contains("mkdir -p"),
        "{}",
        out.stderr
    );
    let file = scratch.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = cluster.etcdops(&["backup", "run", "--target", &format!("file://{}", file.display())]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is not a directory"), "{}", out.stderr);

    // A directory we may not write to (root may write anywhere: only checked as another user).
    let locked = scratch.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    if !running_as_root(scratch.path()) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let out = cluster.etcdops(&[
            "backup",
            "run",
            "--target",
            &format!("file://{}", locked.display()),
        ]);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("cannot write into"), "{}", out.stderr);
        assert!(files_in(&locked).is_empty());
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    // Prune without a policy refuses and deletes nothing.
    let kept = scratch.path().join("kept");
    std::fs::create_dir(&kept).expect("mkdir");
    set_backup(
        &cluster,
        &original,
        &format!("target = \"file://{}\"\n", kept.display()),
    );
    let out = cluster.etcdops(&["backup", "run", "-w", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = files_in(&kept);
    assert_eq!(before.len(), 2);
    let out = cluster.etcdops(&["backup", "prune"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("refusing to prune") && out.stderr.contains("keep_last"),
        "{}",
        out.stderr
    );
    assert_eq!(files_in(&kept), before);

    // A bad target in the fleet file is a configuration error (exit 2) naming the field.
    set_backup(&cluster, &original, "target = \"/var/backups\"\n");
    let out = cluster.etcdops(&["backup", "list"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("file:///absolute/dir"), "{}", out.stderr);
}

/// Whether files we create belong to root (who may write anywhere).
fn running_as_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("owner-probe");
    std::fs::write(&probe, b"").expect("write");
    let root = std::fs::metadata(&probe).expect("meta").uid() == 0;
    std::fs::remove_file(&probe).expect("remove");
    root
}
