//! The agent as its systemd unit runs it, without systemd: the real binary
//! with a real etcd (process backend), a notify socket this test binds
//! (READY, STATUS, WATCHDOG, STOPPING; nothing of it reaches etcd), and the
//! checks before it starts: missing TLS files and paths that a
//! `ProtectSystem=strict` unit could not write (a read-only bind mount in a
//! private mount namespace, `unshare -m`, as PID 1 here is not systemd).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use etcdops_agent::preflight::{EXIT_INVALID, EXIT_NOT_READY};
use etcdops_certs::{IssueRequest, Pki, Role};

/// A host laid out under a temp dir: PKI, agent config, env file, data dir
/// under `lib/etcd/`, state dir.
struct Host {
    dir: tempfile::TempDir,
    config: PathBuf,
    cert: PathBuf,
    env_dir: PathBuf,
    lib_etcd: PathBuf,
}

fn agent_bin() -> PathBuf {
    etcdops_tests::bins!().agent
}

fn etcd_bin() -> PathBuf {
    let path = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.is_file(),
        "etcd not found at {}: install it (`apt-get install etcd-server etcd-client`) or set ETCD_BIN",
        path.display()
    );
    path
}

/// A one-member host on a free 127.x.y.11 (etcd with plain HTTP: this test
/// is about the agent's process, not etcd's transport).
fn host(autostart: bool) -> Host {
    etcdops_certs::install_crypto_provider();
    let dir = tempfile::Builder::new()
        .prefix("etcdops-agent-checks-")
        .tempdir()
        .expect("tempdir");
    let p = etcdops_tests::free_prefix();
    let ip = format!("{}.{}.{}.11", p[0], p[1], p[2]);
    let (pki, _) = Pki::init(&dir.path().join("pki"), "checks-ca", 1, false).expect("pki");
    let cert = pki
        .issue(&IssueRequest::new(Role::Agent, "etcd1").host(&ip))
        .expect("issue");
    let env_dir = dir.path().join("default");
    let lib_etcd = dir.path().join("lib/etcd");
    std::fs::create_dir_all(&env_dir).expect("mkdir");
    std::fs::create_dir_all(&lib_etcd).expect("mkdir");
    let data_dir = lib_etcd.join("default");
    std::fs::write(
        env_dir.join("etcd"),
        format!(
            "ETCD_NAME=etcd1\nETCD_DATA_DIR={}\nETCD_LISTEN_CLIENT_URLS=http://{ip}:2379\n\
             ETCD_ADVERTISE_CLIENT_URLS=http://{ip}:2379\nETCD_LISTEN_PEER_URLS=http://{ip}:2380\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{ip}:2380\nETCD_INITIAL_CLUSTER=etcd1=http://{ip}:2380\n\
             ETCD_INITIAL_CLUSTER_STATE=new\nETCD_INITIAL_CLUSTER_TOKEN=checks-{}\n",
            data_dir.display(),
            std::process::id()
        ),
    )
    .expect("env file");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{ip}:7443\"\nstate_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
             [etcd]\nendpoint = \"http://{ip}:2379\"\nenv_file = {:?}\n\
             [unit]\nbackend = \"process\"\netcd_binary = {:?}\nautostart = {autostart}\nlog_file = {:?}\n\
             [disk]\nprobe_interval_secs = 0\n",
            dir.path().join("state"),
            pki.ca_cert_path(),
            cert.cert_path,
            cert.key_path,
            env_dir.join("etcd"),
            etcd_bin(),
            dir.path().join("etcd.log"),
        ),
    )
    .expect("agent config");
    Host {
        config,
        cert: cert.cert_path,
        env_dir,
        lib_etcd,
        dir,
    }
}

/// The datagrams sent to `socket` until one satisfies `until`, or panics
/// after `timeout` naming what was received.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    what: &str,
    until: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = until(&message);
            got.push(message);
            if done {
                return got;
            }
        }
    }
    panic!("no {what} within {timeout:?}; received: {got:?}");
}

/// Every process whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .map(|kv| String::from_utf8_lossy(kv).to_string())
                .collect()
        })
        .unwrap_or_default()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_notifies_systemd_pings_the_watchdog_and_keeps_the_socket_from_etcd() {
    let h = host(true);
    let socket_path = h.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let agent = Command::new(agent_bin())
        .arg("--config")
        .arg(&h.config)
        .env("NOTIFY_SOCKET", &socket_path)
        // 1 s: the agent pings every 0.5 s. No WATCHDOG_PID: meant for this process.
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the agent");
    let mut agent = Running(agent);
    let pid = agent.0.id();

    let got = receive_until(&socket, Duration::from_secs(30), "READY=1", |m| {
        m.lines().any(|l| l == "READY=1")
    });
    let ready = got.last().expect("ready");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving on ")
            && l.contains(":7443 as agent etcd1")
            && l.contains("etcd member at http://")),
        "READY=1 without the serving STATUS= line: {ready:?}"
    );
    receive_until(&socket, Duration::from_secs(5), "WATCHDOG=1", |m| {
        m == "WATCHDOG=1\n"
    });
    receive_until(&socket, Duration::from_secs(5), "a second WATCHDOG=1", |m| {
        m == "WATCHDOG=1\n"
    });

    // etcd, started by the agent, has none of the service manager's variables.
    let deadline = Instant::now() + Duration::from_secs(30);
    let etcd = loop {
        if let Some(child) = children_of(pid).into_iter().find(|c| {
            std::fs::read_link(format!("/proc/{c}/exe"))
                .is_ok_and(|exe| exe.file_name() == etcd_bin().file_name())
        }) {
            break child;
        }
        assert!(Instant::now() < deadline, "the agent started no etcd");
        std::thread::sleep(Duration::from_millis(100));
    };
    let env = environ(etcd);
    assert!(env.iter().any(|kv| kv.starts_with("ETCD_NAME=")), "{env:?}");
    for key in etcdops_agent::notify::SERVICE_MANAGER_ENV {
        assert!(
            !env.iter().any(|kv| kv.starts_with(&format!("{key}="))),
            "etcd inherited {key}: {env:?}"
        );
    }
    // The agent itself still has them (only children lose them).
    assert!(environ(pid).iter().any(|kv| kv.starts_with("NOTIFY_SOCKET=")));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let got = receive_until(&socket, Duration::from_secs(10), "STOPPING=1", |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    assert!(
        got.last()
            .is_some_and(|m| m.lines().any(|l| l.starts_with("STATUS=stopping"))),
        "{got:?}"
    );
    let status = agent.0.wait().expect("wait");
    assert!(status.success(), "clean shutdown: {status}");
}

#[test]
fn a_missing_certificate_is_one_status_line_and_exit_78() {
    let h = host(false);
    std::fs::remove_file(&h.cert).expect("rm cert");
    let socket_path = h.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&h.config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the agent");
    assert_eq!(out.status.code(), Some(i32::from(EXIT_NOT_READY)), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    let expected = format!(
        "error: missing {} (tls.cert in {}",
        h.cert.display(),
        h.config.display()
    );
    assert!(
        stderr.starts_with(&expected) && stderr.contains("etcdops certs issue agent"),
        "{stderr}"
    );
    let got = receive_until(&socket, Duration::from_secs(1), "STATUS=", |m| {
        m.starts_with("STATUS=")
    });
    assert!(
        got.last()
            .is_some_and(|m| m.starts_with("STATUS=not started: missing ")),
        "{got:?}"
    );

    // --check-config says the same, with the same status.
    let out = check_config(&h.config);
    assert_eq!(out.status.code(), Some(i32::from(EXIT_NOT_READY)), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(&expected));
    // An invalid config is exit 2.
    std::fs::write(&h.config, "listen = 1\n").expect("write");
    assert_eq!(
        check_config(&h.config).status.code(),
        Some(i32::from(EXIT_INVALID))
    );
}

fn check_config(config: &Path) -> Output {
    Command::new(agent_bin())
        .arg("--check-config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run --check-config")
}

/// `--check-config` inside a private mount namespace where `read_only` is a
/// read-only bind mount, as ProtectSystem=strict makes every path outside
/// ReadWritePaths=.
fn check_config_with_read_only(config: &Path, read_only: &Path) -> Output {
    let unshare = Path::new("/usr/bin/unshare");
    assert!(
        unshare.is_file(),
        "{} not found: install util-linux (`apt-get install util-linux`)",
        unshare.display()
    );
    let script = r#"set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; shift; exec "$@""#;
    let out = Command::new(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(read_only)
        .arg(agent_bin())
        .arg("--check-config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.starts_with("unshare:") && !stderr.starts_with("mount:"),
        "cannot make a read-only bind mount in a mount namespace (this test needs root): {stderr}"
    );
    out
}

#[test]
fn check_config_refuses_paths_the_unit_could_not_write_naming_read_write_paths() {
    let h = host(false);
    let ok = check_config(&h.config);
    assert!(ok.status.success(), "{ok:?}");

    for (read_only, what) in [(&h.lib_etcd, "etcd's data dir"), (&h.env_dir, "etcd's env file")] {
        let out = check_config_with_read_only(&h.config, read_only);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(EXIT_NOT_READY)),
            "{what}: {out:?}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {what} "))
                && stderr.contains(&format!("{} is read-only", read_only.display()))
                && stderr.contains(&format!("ReadWritePaths={}", read_only.display()))
                && stderr.contains("systemctl edit etcdops-agent"),
            "{stderr}"
        );
    }
    // Outside the namespace nothing changed.
    assert!(check_config(&h.config).status.success());
}
