//! The agent's Debian package on systemd hosts (nspawn hosts with Debian's
//! etcd-server running, see `etcdops_tests::nspawn`), one host per test:
//!
//! - README's "Install on a host" run as written (its `scp` block carried
//!   out by copying, its host block run with `sh -e` in the host; the only
//!   change is the example address 198.18.0.11 becoming the host's), the unit
//!   as installed scored by `systemd-analyze security` (≤ 3.0), then
//!   reinstall, upgrade to revision 2 with a locally edited config, remove
//!   and purge, with every file of `/var/lib/etcd` and `/etc/default/etcd`
//!   (contents, mode, owner) the same just after every step as just before
//!   it, and etcd.service's process the same throughout;
//! - without config or certificates the enabled agent does not start, says
//!   what is missing in one line, is not restarted in a loop, and starts once
//!   they exist;
//! - a SIGSTOPped agent is killed and restarted by systemd's watchdog; then,
//!   on the same host, the killed agent: SIGKILLed while it holds the
//!   cluster's fence, it is restarted (Restart=on-failure), etcd.service runs
//!   on untouched, and the new agent still holds the fence (its state dir).
//!
//! The packages come from `bash deploy/dev/package.sh --profile dev`
//! (missing = a failure naming it); revision 2 is built once by the upgrade
//! test with `--no-build --revision 2`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcdops_proto::v1::{AcquireFenceRequest, Fence, ReleaseFenceRequest};
use etcdops_tests::bins;
use etcdops_tests::nspawn::{self, AgentSetup, Debs, NspawnCluster, STAGED_ETC_IN_HOST};
use tonic::Code;

/// The address README's example host has.
const README_IP: &str = "198.18.0.11";
/// The packaged unit.
const UNIT: &str = "etcdops-agent.service";

/// The two fenced blocks after README's marker comment: the `scp` on the
/// coordinator and the host's steps.
fn readme_blocks() -> (String, String) {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let marker = "<!-- tests/tests/systemd_package.rs runs the next two blocks";
    let start = text
        .find(marker)
        .expect("README's \"Install on a host\" keeps the marker comment before its two blocks");
    let mut blocks = Vec::new();
    let mut rest = &text[start..];
    while blocks.len() < 2 {
        let open = rest.find("```sh\n").expect("a ```sh block after the marker") + "```sh\n".len();
        let close = rest[open..].find("\n```").expect("the block's end") + open;
        blocks.push(rest[open..close].to_string() + "\n");
        rest = &rest[close + 4..];
    }
    let host = blocks.pop().unwrap_or_default();
    let scp = blocks.pop().unwrap_or_default();
    (scp, host)
}

/// Every file and directory of etcd's data dir and its env file: path, type,
/// mode, owner, and each file's sha256. The agent's disk probe directory
/// (`.etcdops-probe-*`, beside the data dir for a moment each minute, the
/// agent's own) is left out.
fn etcd_files(cluster: &NspawnCluster) -> String {
    let listing = cluster.script_ok(
        0,
        "paths='/var/lib/etcd /etc/default/etcd'\n\
         find $paths -name '.etcdops-probe-*' -prune -o -printf '%p %y %#m %u:%g\\n' | sort\n\
         find $paths -name '.etcdops-probe-*' -prune -o -type f -print0 | sort -z | xargs -0 sha256sum\n",
    );
    assert!(
        listing.contains("/var/lib/etcd/default/member/snap/db"),
        "etcd's data dir has its database:\n{listing}"
    );
    listing
}

/// [`etcd_files`] once etcd has settled: the same listing twice, 2 s
/// apart. A fresh member writes its cluster version a moment after it
/// reports ready, and the agent's own reads write too (etcd puts even an
/// alarm list through raft: a WAL entry), so each package step is compared
/// from a settled listing taken just before it to one taken just after it,
/// before anything asks the agent.
fn settled_etcd_files(cluster: &NspawnCluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = etcd_files(cluster);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = etcd_files(cluster);
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "etcd's files keep changing with nothing asking it:\n{now}"
        );
        last = now;
    }
}

/// etcd.service's process and how often it started: the same = not touched.
fn etcd_process(cluster: &NspawnCluster) -> String {
    let text = cluster.exec_stdout(
        0,
        &[
            "systemctl",
            "show",
            "etcd",
            "-p",
            "ActiveState",
            "-p",
            "MainPID",
            "-p",
            "ExecMainStartTimestampMonotonic",
            "-p",
            "NRestarts",
        ],
    );
    assert!(text.contains("ActiveState=active"), "etcd runs: {text}");
    text
}

/// The agent unit's properties `props` (`KEY=VALUE` lines).
fn agent_show(cluster: &NspawnCluster, props: &[&str]) -> String {
    let mut args = vec!["systemctl", "show", UNIT];
    for p in props {
        args.extend(["-p", p]);
    }
    cluster.exec_stdout(0, &args)
}

fn prop(show: &str, key: &str) -> String {
    show.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

/// The unit systemd runs is the package's (`/usr/lib/systemd/system`,
/// which bookworm's systemd names through the `/lib` symlink), no override.
fn assert_packaged_unit(show: &str) {
    let path = prop(show, "FragmentPath");
    assert!(
        [
            "/usr/lib/systemd/system/etcdops-agent.service",
            "/lib/systemd/system/etcdops-agent.service"
        ]
        .contains(&path.as_str()),
        "{show}"
    );
}

/// etcd's files and process are what they were before `step`.
fn assert_etcd_untouched(cluster: &NspawnCluster, step: &str, files: &str, process: &str) {
    let now = etcd_files(cluster);
    assert!(
        now == files,
        "{step} changed etcd's files:\nbefore:\n{files}\nafter:\n{now}"
    );
    assert_eq!(etcd_process(cluster), process, "{step} touched etcd.service");
}

/// `dpkg-query`'s version of etcdops-agent, or its error.
fn installed_version(cluster: &NspawnCluster) -> String {
    cluster.exec_stdout(
        0,
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Version} ${db:Status-Abbrev}",
            "etcdops-agent",
        ],
    )
}

/// The agent answers GetStatus within `timeout`.
fn wait_for_agent(cluster: &NspawnCluster, what: &str, timeout: Duration) {
    cluster.wait_until(what, timeout, |c| c.get_status(0).is_ok());
}

/// Revision 2 of the agent's package beside revision 1, built once (a
/// newer revision 1 makes it again).
fn revision_2(debs: &Debs) -> PathBuf {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = |p: &PathBuf| modified(p) >= modified(&debs.agent);
    if let Some(deb) = nspawn::find_deb(&debs.dir, "etcdops-agent", 2).filter(fresh) {
        return deb;
    }
    let target = debs.dir.parent().expect("the target dir");
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/package.sh"))
        .args(["--profile", "dev", "--no-build", "--revision", "2"])
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("running deploy/dev/package.sh");
    assert!(
        out.status.success(),
        "package.sh --profile dev --no-build --revision 2 failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nspawn::find_deb(&debs.dir, "etcdops-agent", 2).expect("revision 2 where package.sh said")
}

#[test]
fn readme_install_then_reinstall_upgrade_remove_and_purge_leave_etcd_untouched() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip_with(1, 0, AgentSetup::NotInstalled, bins.clone())
    else {
        return;
    };
    let debs = nspawn::debs(&bins);
    let ip = cluster.layout.members[0].ip.to_string();
    let files = settled_etcd_files(&cluster);
    let process = etcd_process(&cluster);

    // The coordinator: the fleet's CA, and the host's certificates issued
    // as "Setting up a real fleet" says (here into a copy of the layout's
    // CA, which signed etcd's certificates in the host).
    let coordinator = tempfile::tempdir().expect("tempdir");
    let pki = coordinator.path().join("pki");
    std::fs::create_dir(&pki).expect("pki dir");
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(cluster.layout.pki_dir.join(f), pki.join(f)).expect("copying the CA");
    }
    let pki_arg = pki.to_string_lossy().into_owned();
    for args in [
        vec![
            "certs", "issue", "agent", "--name", "etcd1", "--host", &ip, "--dir", &pki_arg,
        ],
        vec![
            "certs",
            "issue",
            "etcd-client",
            "--name",
            "etcdops",
            "--dir",
            &pki_arg,
        ],
    ] {
        let out = Command::new(&bins.cli)
            .args(&args)
            .output()
            .expect("etcdops certs issue");
        assert!(out.status.success(), "etcdops {args:?}: {out:?}");
    }

    // README's scp: every source lands in root's home on the host.
    let (scp, host) = readme_blocks();
    let joined = scp.replace("\\\n", " ");
    let words: Vec<&str> = joined.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"scp"), "README's coordinator block: {scp}");
    assert_eq!(
        words.last(),
        Some(&"root@198.18.0.11:"),
        "README's coordinator block: {scp}"
    );
    let deb_name = debs
        .agent
        .file_name()
        .expect("deb name")
        .to_string_lossy()
        .into_owned();
    for source in &words[1..words.len() - 1] {
        let from = match source.strip_prefix("/etc/etcdops/pki/") {
            Some(file) => pki.join(file),
            None => {
                assert_eq!(
                    *source, deb_name,
                    "README's scp names the package {source}, package.sh made {deb_name}: update README"
                );
                debs.agent.clone()
            }
        };
        let name = Path::new(source)
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        cluster.copy_into_host(0, &from, &format!("/root/{name}"));
    }

    // README's host block, as written but for the address.
    let script = host.replace(README_IP, &ip);
    let out = cluster.script_ok(0, &script);
    eprintln!("README's host block in the host:\n{out}");
    assert!(out.contains("active (running)"), "systemctl status: {out}");
    assert_etcd_untouched(&cluster, "installing the package (README)", &files, &process);
    wait_for_agent(
        &cluster,
        "the README-installed agent answering",
        Duration::from_secs(30),
    );
    let status = cluster.etcdops(&bins.cli, &["status"]);
    assert_eq!(status.code, 0, "etcdops status: {status:?}");
    assert!(status.stdout.contains("etcd1"), "{}", status.stdout);
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-enabled", UNIT]),
        "enabled"
    );

    // The unit as installed: the packaged, hardened one, exposure <= 3.0.
    let show = agent_show(
        &cluster,
        &["FragmentPath", "ProtectSystem", "NoNewPrivileges", "Type"],
    );
    assert_packaged_unit(&show);
    assert_eq!(prop(&show, "ProtectSystem"), "strict", "{show}");
    assert_eq!(prop(&show, "Type"), "notify", "{show}");
    let security = cluster
        .exec(0, &["systemd-analyze", "security", "--no-pager", UNIT])
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&security.stdout).into_owned();
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for etcdops-agent.service: "))
        .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in systemd-analyze security's output:\n{text}"));
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0:\n{text}");

    // Reinstall the same package: nothing changes.
    let config = cluster.read_in_host(0, "/etc/etcdops/agent.toml");
    let version = installed_version(&cluster);
    let files = settled_etcd_files(&cluster);
    cluster.script_ok(0, &format!("dpkg -i {}", debs.in_host(&debs.agent)));
    assert_etcd_untouched(&cluster, "reinstalling", &files, &process);
    assert_eq!(installed_version(&cluster), version);
    assert_eq!(cluster.read_in_host(0, "/etc/etcdops/agent.toml"), config);
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-enabled", UNIT]),
        "enabled"
    );
    wait_for_agent(&cluster, "the agent after a reinstall", Duration::from_secs(30));

    // Upgrade to revision 2 with a locally edited config: the edit is kept
    // (no prompt: stdin is /dev/null), the running agent restarted.
    let rev2 = revision_2(&debs);
    let edited = format!("{config}\n# edited on this host\n[disk]\nprobe_interval_secs = 0\n");
    cluster.write_in_host(0, "/etc/etcdops/agent.toml", &edited);
    cluster.script_ok(0, &format!("systemctl restart {UNIT}"));
    let before = prop(&agent_show(&cluster, &["MainPID"]), "MainPID");
    let files = settled_etcd_files(&cluster);
    let out = cluster.script_ok(0, &format!("dpkg -i {} 2>&1", debs.in_host(&rev2)));
    assert_etcd_untouched(&cluster, "upgrading", &files, &process);
    assert!(!out.contains("Configuration file"), "no conffile prompt: {out}");
    assert!(
        installed_version(&cluster).starts_with("0.1.0-2 ii"),
        "{}",
        installed_version(&cluster)
    );
    assert_eq!(
        cluster.read_in_host(0, "/etc/etcdops/agent.toml"),
        edited,
        "the local edit is kept"
    );
    let show = agent_show(&cluster, &["MainPID", "ActiveState"]);
    assert_eq!(prop(&show, "ActiveState"), "active", "{show}");
    assert_ne!(
        prop(&show, "MainPID"),
        before,
        "the upgrade restarted the agent: {show}"
    );
    wait_for_agent(&cluster, "the upgraded agent", Duration::from_secs(30));

    // Remove: the agent stopped and gone, its config kept.
    let files = settled_etcd_files(&cluster);
    cluster.script_ok(0, "dpkg -r etcdops-agent");
    assert_etcd_untouched(&cluster, "removing", &files, &process);
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-active", UNIT]),
        "inactive"
    );
    assert!(cluster.get_status(0).is_err(), "a removed agent does not answer");
    assert!(cluster.exec_stdout(0, &["sh", "-c", "command -v etcdops-agent || echo gone"]) == "gone");
    assert_eq!(
        cluster.read_in_host(0, "/etc/etcdops/agent.toml"),
        edited,
        "remove keeps the config"
    );

    // Purge: the config and the agent's state gone, the certificates kept.
    let files = settled_etcd_files(&cluster);
    cluster.script_ok(0, "dpkg -P etcdops-agent");
    assert_etcd_untouched(&cluster, "purging", &files, &process);
    let left = cluster.script_ok(
        0,
        "for p in /etc/etcdops/agent.toml /var/lib/etcdops-agent /etc/etcdops/pki/agent-etcd1.key; do\n\
           [ -e $p ] && echo \"$p present\" || echo \"$p absent\"\n\
         done\n",
    );
    assert_eq!(
        left.trim(),
        "/etc/etcdops/agent.toml absent\n/var/lib/etcdops-agent absent\n/etc/etcdops/pki/agent-etcd1.key present"
    );
}

#[test]
fn without_config_or_certificates_the_agent_waits_with_one_line_then_starts() {
    let bins = bins!();
    let Some(cluster) = NspawnCluster::start_or_skip_with(1, 0, AgentSetup::NotInstalled, bins.clone())
    else {
        return;
    };
    let debs = nspawn::debs(&bins);
    let process = etcd_process(&cluster);
    cluster.script_ok(0, &format!("dpkg -i {}", debs.in_host(&debs.agent)));
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-enabled", UNIT]),
        "enabled"
    );
    assert_eq!(
        cluster.exec_stdout(0, &["systemctl", "is-active", UNIT]),
        "inactive",
        "installing does not start the agent"
    );

    // Started as at boot: the packaged example config names certificates
    // that do not exist yet.
    let start = cluster
        .exec(0, &["systemctl", "start", UNIT])
        .expect("systemctl start");
    assert!(
        !start.status.success(),
        "the agent cannot start without certificates"
    );
    std::thread::sleep(Duration::from_secs(7)); // RestartSec=2s: a loop would have restarted by now
    let show = agent_show(
        &cluster,
        &["ActiveState", "NRestarts", "ExecMainStatus", "StatusText"],
    );
    let journal = cluster.exec_stdout(0, &["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"]);
    assert_eq!(prop(&show, "ActiveState"), "failed", "{show}\n{journal}");
    assert_eq!(prop(&show, "NRestarts"), "0", "no crash loop: {show}\n{journal}");
    let status = cluster
        .exec(0, &["systemctl", "status", "--no-pager", "-n", "20", UNIT])
        .expect("systemctl status");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let says = journal
        .lines()
        .find(|l| l.contains("missing /etc/etcdops/") && l.contains("`etcdops certs "))
        .unwrap_or_else(|| panic!("one line names the missing file and the fix:\n{journal}\n{status}"));
    assert!(status.contains(says), "systemctl status shows it too:\n{status}");
    assert_eq!(etcd_process(&cluster), process, "etcd untouched");

    // The certificates and the config put in place: it starts.
    cluster.script_ok(
        0,
        &format!(
            "cp -a {STAGED_ETC_IN_HOST}/pki /etc/etcdops/\n\
             cp {STAGED_ETC_IN_HOST}/agent.toml /etc/etcdops/agent.toml\n\
             systemctl restart {UNIT}\n"
        ),
    );
    wait_for_agent(&cluster, "the agent with its config", Duration::from_secs(30));
    assert_eq!(prop(&agent_show(&cluster, &["NRestarts"]), "NRestarts"), "0");
    assert_eq!(etcd_process(&cluster), process, "etcd untouched");
}

#[test]
fn a_stopped_or_killed_agent_is_restarted_and_a_killed_one_keeps_its_fence() {
    let Some(cluster) = NspawnCluster::start_or_skip(1, bins!()) else {
        return;
    };
    // The harness installed the package: the hardened unit runs the agent.
    let show = agent_show(&cluster, &["FragmentPath", "WatchdogUSec", "Type"]);
    assert_packaged_unit(&show);
    assert_eq!(prop(&show, "Type"), "notify", "{show}");

    // A shorter watchdog for the test (a drop-in, as a user would).
    cluster.write_in_host(
        0,
        "/etc/systemd/system/etcdops-agent.service.d/watchdog.conf",
        "[Service]\nWatchdogSec=4s\nTimeoutAbortSec=3s\n",
    );
    cluster.script_ok(0, &format!("systemctl daemon-reload\nsystemctl restart {UNIT}"));
    wait_for_agent(
        &cluster,
        "the agent under a 4 s watchdog",
        Duration::from_secs(30),
    );
    let show = agent_show(&cluster, &["MainPID", "NRestarts", "WatchdogUSec"]);
    assert_eq!(prop(&show, "WatchdogUSec"), "4s", "{show}");
    let pid = prop(&show, "MainPID");
    let restarts: u32 = prop(&show, "NRestarts").parse().expect("NRestarts");

    // A running agent pings (every 2 s here): three periods pass without a
    // restart. 4 s rather than less: a starved CI machine must not trip it.
    std::thread::sleep(Duration::from_secs(12));
    let show = agent_show(&cluster, &["MainPID", "NRestarts"]);
    assert_eq!(
        prop(&show, "MainPID"),
        pid,
        "the pinging agent keeps running: {show}"
    );

    // SIGSTOP: no pings; systemd kills it and starts a new one.
    cluster.script_ok(0, &format!("kill -STOP {pid}"));
    let stopped = Instant::now();
    cluster.wait_until(
        "a new agent after the watchdog fired",
        Duration::from_secs(60),
        |c| restarted(c, &pid, restarts),
    );
    eprintln!(
        "the watchdog restarted the agent {:.1?} after SIGSTOP",
        stopped.elapsed()
    );
    let journal = cluster.exec_stdout(0, &["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"]);
    assert!(journal.contains("Watchdog timeout"), "{journal}");

    // The killed agent, on the same host: it holds the cluster's fence when
    // SIGKILL takes it (a crash: no shutdown code runs). Restart=on-failure
    // starts a new one within RestartSec=2s, etcd.service runs on untouched,
    // and the new agent still holds the fence: the hardened unit's state dir
    // (StateDirectory=, writable under ProtectSystem=strict) kept it.
    let fence = cluster.acquire_fence("op-killed");
    let fences = format!("{}/fences.json", etcdops_agent::config::DEFAULT_STATE_DIR);
    assert!(
        cluster.read_in_host(0, &fences).contains("op-killed"),
        "the fence recorded in {fences}"
    );
    let etcd = etcd_process(&cluster);
    let show = agent_show(&cluster, &["MainPID", "NRestarts"]);
    let pid = prop(&show, "MainPID");
    let restarts: u32 = prop(&show, "NRestarts").parse().expect("NRestarts");
    cluster.script_ok(0, &format!("kill -KILL {pid}"));
    let killed = Instant::now();
    cluster.wait_until(
        "a new agent after SIGKILL (Restart=on-failure)",
        Duration::from_secs(10),
        |c| restarted(c, &pid, restarts),
    );
    eprintln!(
        "systemd restarted the agent {:.1?} after SIGKILL",
        killed.elapsed()
    );
    assert_eq!(etcd_process(&cluster), etcd, "etcd.service untouched");
    assert!(cluster.is_healthy(), "etcd healthy after the agent's restart");
    let journal = cluster.exec_stdout(0, &["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"]);
    assert!(journal.contains("status=9/KILL"), "{journal}");

    // The fence as recorded before the kill: held by op-killed; another
    // operation is refused at the next epoch (held), and even with takeover
    // at the same one (not above the recorded epoch); its holder releases it.
    let status = cluster.get_status(0).expect("GetStatus");
    let held = status
        .fences
        .iter()
        .find(|f| f.cluster == fence.cluster)
        .unwrap_or_else(|| panic!("no fence for {} after the restart: {status:?}", fence.cluster));
    assert_eq!(
        (held.epoch, held.held, held.operation_id.as_str()),
        (fence.epoch, true, "op-killed"),
        "{held:?}"
    );
    let mut client = cluster.client(0);
    for (epoch, takeover, code) in [
        (fence.epoch + 1, false, Code::FailedPrecondition),
        (fence.epoch, true, Code::Aborted),
    ] {
        let other = Fence {
            epoch,
            operation_id: "op-other".to_string(),
            ..fence.clone()
        };
        let err = cluster
            .block_on(client.acquire_fence(AcquireFenceRequest {
                fence: Some(other),
                holder: "e2e-harness".to_string(),
                operation_kind: "e2e".to_string(),
                takeover,
            }))
            .expect_err("the restarted agent still holds op-killed's fence");
        assert_eq!(err.code(), code, "epoch {epoch}, takeover {takeover}: {err:?}");
    }
    let released = cluster
        .block_on(client.release_fence(ReleaseFenceRequest {
            fence: Some(fence.clone()),
        }))
        .expect("op-killed releases its fence")
        .into_inner();
    assert!(!released.held, "{released:?}");
}

/// A new agent runs and answers: NRestarts above `restarts`, a MainPID
/// other than `pid`.
fn restarted(cluster: &NspawnCluster, pid: &str, restarts: u32) -> bool {
    let show = agent_show(cluster, &["MainPID", "NRestarts", "ActiveState"]);
    let now: u32 = prop(&show, "NRestarts").parse().unwrap_or(0);
    now > restarts
        && prop(&show, "ActiveState") == "active"
        && !["0", pid].contains(&prop(&show, "MainPID").as_str())
        && cluster.get_status(0).is_ok()
}
