//! End-to-end: `etcdops serve` on a real 3-member cluster with a seconds-level
//! schedule: a backup job runs, stores a verified backup, and shows in
//! `/metrics` and in `etcdops op list` as a journaled `backup` operation; while
//! a person's operation holds the cluster's fence the job is refused and
//! journaled as refused naming the holder (no backup is made meanwhile);
//! after the release it runs again. Bad configurations exit 2 with the reason.
//!
//! The agents' periodic disk probe is off (as in operations.rs): on a loaded
//! test machine its fsync p99 can pass the threshold and rightly stop every
//! operation.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcdops_tests::{Bins, Cluster, bins};

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `etcdops serve` in its own process group, SIGTERMed (then killed) on drop.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(bins: &Bins, config: &Path, log: PathBuf) -> Serve {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&bins.cli)
            .args(["-v", "serve", "--config"])
            .arg(config)
            .env_remove("ETCDOPS_FLEET")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("spawning etcdops serve");
        Serve { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `GET /metrics`, the body ("" when nothing listens yet).
fn scrape(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the sample `series` (name with labels, exactly), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn runs(text: &str, result: &str) -> f64 {
    sample(
        text,
        &format!("etcdops_serve_job_runs_total{{cluster=\"e2e\",serve_job=\"backup\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

fn backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("backup dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    names.sort();
    names
}

/// `promtool check metrics` (Prometheus 2.42, as the alert rules are checked
/// with) accepts the exposition: classic text, HELP for every family.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): `apt-get download prometheus && dpkg -x prometheus_*.deb D`, \
                 then put D/usr/bin/promtool on PATH"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for(what: &str, timeout: Duration, serve: &mut Serve, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            serve.alive(),
            "serve exited while waiting for {what}:\n{}",
            serve.log()
        );
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; serve log:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn scheduled_backups_are_journaled_fenced_and_in_metrics() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    let dir = tempfile::tempdir().expect("tempdir");
    let backup_dir = dir.path().join("backups");
    std::fs::create_dir(&backup_dir).expect("backup dir");
    let fleet = std::fs::read_to_string(cluster.fleet_path()).expect("fleet");
    std::fs::write(
        cluster.fleet_path(),
        format!(
            "{fleet}\n[clusters.backup]\ntarget = \"file://{}\"\nkeep_last = 50\n",
            backup_dir.display()
        ),
    )
    .expect("fleet with a backup target");
    assert_eq!(cluster.cluster_name, "e2e", "the harness's cluster name");
    let port = free_port();
    let journal = dir.path().join("journal.redb");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "fleet = \"{}\"\nstate_dir = \"{}\"\njournal = \"{}\"\nmetrics_listen = \"127.0.0.1:{port}\"\nfence_wait = \"2s\"\nagent_timeout = \"5s\"\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"backup\"\nschedule = \"*/4 * * * * *\"\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"health\"\nschedule = \"*/3 * * * * *\"\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"cert-expiry\"\nschedule = \"*/3 * * * * *\"\nparams = {{ warn_within = \"1d\" }}\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"restore-drill\"\nschedule = \"*/5 * * * * *\"\nparams = {{ deadline = \"60s\" }}\n",
            cluster.fleet_path().display(),
            dir.path().join("state").display(),
            journal.display(),
        ),
    )
    .expect("serve.toml");
    let check = cluster.etcdops(&["serve", "--config", config.to_str().expect("utf-8"), "--check"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("e2e/backup"), "{}", check.stdout);

    let mut serve = Serve::start(&cluster.bins, &config, dir.path().join("serve.log"));
    wait_for(
        "a successful backup run in /metrics",
        Duration::from_secs(90),
        &mut serve,
        || runs(&scrape(port), "ok") >= 1.0,
    );
    let text = scrape(port);
    for series in [
        "etcdops_serve_job_last_success_timestamp_seconds{cluster=\"e2e\",serve_job=\"backup\"}",
        "etcdops_serve_job_last_duration_seconds{cluster=\"e2e\",serve_job=\"backup\"}",
        "etcdops_serve_job_last_result{cluster=\"e2e\",serve_job=\"backup\"}",
        "etcdops_serve_job_next_run_timestamp_seconds{cluster=\"e2e\",serve_job=\"backup\"}",
        "etcdops_serve_leader",
    ] {
        assert!(sample(&text, series).is_some(), "{series} missing:\n{text}");
    }
    assert!(text.contains("# HELP etcdops_serve_job_runs_total "), "{text}");
    promtool_accepts(&text);
    assert!(!backups(&backup_dir).is_empty(), "no backup stored");
    // The watches ran too: health ok, the agents' certificates exported.
    wait_for(
        "health and cert-expiry runs",
        Duration::from_secs(30),
        &mut serve,
        || {
            let t = scrape(port);
            sample(&t, "etcdops_serve_job_runs_total{cluster=\"e2e\",serve_job=\"health\",result=\"ok\"}").unwrap_or(0.0) >= 1.0
            && t.contains("etcdops_serve_cert_expiry_timestamp_seconds{cluster=\"e2e\",member=\"etcd1\",cert=\"agent\"}")
            // etcd's certificates as the agents see them: files and what the member serves.
            && t.contains("etcdops_serve_cert_expiry_timestamp_seconds{cluster=\"e2e\",member=\"etcd1\",cert=\"etcd-server\"}")
            && t.contains("etcdops_serve_cert_expiry_timestamp_seconds{cluster=\"e2e\",member=\"etcd1\",cert=\"etcd-server-served\"}")
        },
    );

    // The restore drill: the newest backup restored into a throwaway etcd,
    // its figures exported, and nothing of it left behind.
    wait_for(
        "a passing restore drill",
        Duration::from_secs(120),
        &mut serve,
        || {
            sample(
                &scrape(port),
                "etcdops_serve_job_runs_total{cluster=\"e2e\",serve_job=\"restore-drill\",result=\"ok\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
        },
    );
    let text = scrape(port);
    assert!(
        sample(
            &text,
            "etcdops_serve_drill_last_success_timestamp_seconds{cluster=\"e2e\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "etcdops_serve_drill_figure{cluster=\"e2e\",figure=\"revision\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );

    // Journaled: `op list` on serve's journal shows succeeded backup operations.
    let list = |cluster: &Cluster| {
        let out = cluster.etcdops(&[
            "op",
            "list",
            "--all",
            "-w",
            "json",
            "--journal",
            journal.to_str().expect("utf-8"),
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()["operations"].as_array().cloned().unwrap_or_default()
    };
    let ops = list(&cluster);
    assert!(
        ops.iter()
            .any(|o| o["kind"] == "backup" && o["state"] == "succeeded"),
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .any(|o| o["kind"] == "drill" && o["state"] == "succeeded"),
        "{ops:#?}"
    );

    // A person's operation holds the cluster: the job is refused, journaled, and makes no backup.
    let fence = cluster.acquire_fence("human-restart");
    let before = runs(&scrape(port), "refused");
    wait_for(
        "a refused backup run",
        Duration::from_secs(60),
        &mut serve,
        || runs(&scrape(port), "refused") > before,
    );
    let held_backups = backups(&backup_dir);
    wait_for(
        "a second refused run",
        Duration::from_secs(60),
        &mut serve,
        || runs(&scrape(port), "refused") > before + 1.0,
    );
    assert_eq!(
        backups(&backup_dir),
        held_backups,
        "a backup ran while the fence was held"
    );
    let ops = list(&cluster);
    let refused = ops
        .iter()
        .find(|o| o["kind"] == "backup" && o["state"] == "failed")
        .unwrap_or_else(|| panic!("no refused backup in the journal: {ops:#?}"));
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("refused:") && error.contains("human-restart"),
        "{error}"
    );
    assert_eq!(
        sample(
            &scrape(port),
            "etcdops_serve_job_last_result{cluster=\"e2e\",serve_job=\"backup\"}"
        ),
        Some(0.0)
    );

    // Released: the next run goes through again.
    cluster.release_fence(&fence);
    let ok = runs(&scrape(port), "ok");
    wait_for(
        "a backup after the release",
        Duration::from_secs(60),
        &mut serve,
        || runs(&scrape(port), "ok") > ok,
    );
    assert!(backups(&backup_dir).len() > held_backups.len());
    assert!(serve.alive(), "{}", serve.log());

    // SIGTERM (systemd's stop): serve ends cleanly, exit 0.
    let pid = nix::unistd::Pid::from_raw(serve.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(70);
    let status = loop {
        if let Some(status) = serve.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

#[test]
fn bad_configurations_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n\
         [[clusters]]\nname = \"prod-a\"\n[[clusters.members]]\nname = \"etcd1\"\nagent = \"https://127.0.0.1:1\"\n",
    )
    .expect("fleet");
    let bins = bins!();
    let run = |body: &str| {
        let config = dir.path().join("serve.toml");
        std::fs::write(
            &config,
            format!("fleet = \"fleet.toml\"\nstate_dir = \"state\"\n{body}"),
        )
        .expect("config");
        let out = Command::new(&bins.cli)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("ETCDOPS_FLEET")
            .stdin(Stdio::null())
            .output()
            .expect("etcdops serve");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let job = |kind: &str, schedule: &str, extra: &str| {
        format!("[[jobs]]\ncluster = \"prod-a\"\nkind = \"{kind}\"\nschedule = \"{schedule}\"\n{extra}")
    };
    for (body, want) in [
        (
            job("health", "61 * * * *", ""),
            "invalid cron expression \"61 * * * *\"",
        ),
        (
            "[[jobs]]\ncluster = \"prod-b\"\nkind = \"health\"\nschedule = \"0 * * * *\"\n".to_string(),
            "cluster \"prod-b\" is not in the fleet file",
        ),
        (job("reboot", "0 * * * *", ""), "unknown job kind \"reboot\""),
        (
            format!(
                "[windows.never]\ncron = \"0 0 30 2 *\"\nduration = \"1h\"\n{}",
                job("defrag", "0 * * * *", "windows = [\"never\"]")
            ),
            "window never: the window never opens",
        ),
        (job("health", "0 * * * *", "surprise = 1"), "unknown field"),
    ] {
        let (code, stderr) = run(&body);
        assert_eq!(code, Some(2), "{body}\n{stderr}");
        assert!(stderr.contains(want), "{want:?} not in:\n{stderr}");
    }
    let out = Command::new(&bins.cli)
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("etcdops serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read the serve configuration"), "{stderr}");
}

/// Compact and defrag jobs run as journaled operations only inside their
/// windows: one window opens every minute for a minute (always open), the
/// other only on January 1st (its job never runs; its next run is the opening).
#[test]
fn maintenance_jobs_run_inside_their_windows_only() {
    let cluster = Cluster::builder()
        .members(3)
        .disk_probe_interval_secs(0)
        .start(bins!());
    cluster.put_bulk("serve/", 50, 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let journal = dir.path().join("journal.redb");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "fleet = \"{}\"\nstate_dir = \"{}\"\njournal = \"{}\"\nmetrics_listen = \"127.0.0.1:{port}\"\nfence_wait = \"1m\"\n\
             [windows.always]\ncron = \"* * * * *\"\nduration = \"1m\"\n\
             [windows.new-year]\ncron = \"0 0 1 1 *\"\nduration = \"1m\"\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"compact\"\nschedule = \"*/5 * * * * *\"\nwindows = [\"always\"]\nparams = {{ keep_revisions = 10 }}\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"defrag\"\nschedule = \"*/5 * * * * *\"\nwindows = [\"always\"]\nparams = {{ rule = \"dbSize > 0\" }}\n\
             [[jobs]]\ncluster = \"e2e\"\nkind = \"compact\"\nname = \"compact-new-year\"\nschedule = \"* * * * * *\"\nwindows = [\"new-year\"]\nparams = {{ keep_revisions = 10 }}\n",
            cluster.fleet_path().display(),
            dir.path().join("state").display(),
            journal.display(),
        ),
    )
    .expect("serve.toml");
    let mut serve = Serve::start(&cluster.bins, &config, dir.path().join("serve.log"));
    let ok = |text: &str, job: &str| {
        sample(
            text,
            &format!("etcdops_serve_job_runs_total{{cluster=\"e2e\",serve_job=\"{job}\",result=\"ok\"}}"),
        )
        .unwrap_or(0.0)
    };
    wait_for(
        "a compaction and a defragmentation",
        Duration::from_secs(180),
        &mut serve,
        || {
            let t = scrape(port);
            ok(&t, "compact") >= 1.0 && ok(&t, "defrag") >= 1.0
        },
    );
    let text = scrape(port);
    for result in ["ok", "failed", "refused"] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "etcdops_serve_job_runs_total{{cluster=\"e2e\",serve_job=\"compact-new-year\",result=\"{result}\"}}"
                )
            ),
            Some(0.0),
            "the job outside its window ran:\n{text}"
        );
    }
    let next = sample(
        &text,
        "etcdops_serve_job_next_run_timestamp_seconds{cluster=\"e2e\",serve_job=\"compact-new-year\"}",
    )
    .expect("next run of the waiting job");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        next > now + 60.0,
        "the waiting job's next run {next} is its window's opening, not now ({now})"
    );
    let out = cluster.etcdops(&[
        "op",
        "list",
        "--all",
        "-w",
        "json",
        "--journal",
        journal.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ops = out.json()["operations"].as_array().cloned().unwrap_or_default();
    for kind in ["compact", "defrag"] {
        assert!(
            ops.iter().any(|o| o["kind"] == kind && o["state"] == "succeeded"),
            "no succeeded {kind} operation: {ops:#?}\n{}",
            serve.log()
        );
    }
}
