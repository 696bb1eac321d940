//! The throwaway etcd of a drill: the snapshot restored with etcdutl (3.5+)
//! or etcdctl 3.4 into the drill's directory, one member started on free
//! 127.0.0.1 ports (plain HTTP on loopback only; the directory is 0700),
//! its own process group, killed if this process dies (`setpriv
//! --pdeathsig KILL` when setpriv is there), and read with etcdctl:
//! revision, live key count, HashKV. Every tool runs as an argument vector
//! under a timeout, with an environment of PATH only (no `ETCD_*` from ours).

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::{Child, Command};

/// How long one etcdctl/etcdutl call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a tool's output an error carries.
const TAIL: usize = 2000;

/// Errors of the throwaway etcd, each naming the tool and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "{tool} was not found on PATH nor in /usr/bin: install etcd-client (etcdctl) and etcd-server (etcd) on the coordinator host"
    )]
    Missing { tool: &'static str },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("`{command}` did not finish within {secs} s")]
    Timeout { command: String, secs: u64 },
    #[error("{what}: cannot read etcdctl's answer {text:?}: {reason}")]
    Answer {
        what: &'static str,
        text: String,
        reason: String,
    },
    #[error("no free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    #[error(
        "the throwaway etcd did not become healthy within {secs} s{}; its log ends:\n{log}",
        if *exited { " (it exited)" } else { "" }
    )]
    NotHealthy { secs: u64, exited: bool, log: String },
}

fn find(tool: &'static str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn path_env() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into())
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].trim().to_string()
}

/// Runs a tool to its end under [`CALL_TIMEOUT`]; its stdout on success.
async fn call(program: &Path, args: &[OsString], env: &[(&str, &str)]) -> Result<Vec<u8>, EtcdError> {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", path_env())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| EtcdError::Spawn {
        tool: program.display().to_string(),
        source,
    })?;
    let out = match tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.map_err(|source| EtcdError::Spawn {
            tool: program.display().to_string(),
            source,
        })?,
        Err(_) => {
            return Err(EtcdError::Timeout {
                command,
                secs: CALL_TIMEOUT.as_secs(),
            });
        }
    };
    if !out.status.success() {
        let mut output = tail(&out.stderr);
        if output.is_empty() {
            output = tail(&out.stdout);
        }
        return Err(EtcdError::Failed {
            command,
            status: out.status.to_string(),
            output,
        });
    }
    Ok(out.stdout)
}

fn free_port() -> Result<u16, EtcdError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(EtcdError::Port)
}

/// The member's name and the restore's initial cluster.
const NAME: &str = "drill";

/// Restores `snapshot` into `data_dir` (which must not exist) with the
/// restore tool found: `etcdutl` (3.5+) else `etcdctl` (3.4, `ETCDCTL_API=3`).
/// Both check the snapshot's sha256 trailer. Returns the tool used.
pub async fn restore(
    snapshot: &Path,
    data_dir: &Path,
    peer_port: u16,
    token: &str,
) -> Result<String, EtcdError> {
    let (tool, env): (PathBuf, &[(&str, &str)]) = match find("etcdutl") {
        Some(p) => (p, &[]),
        None => (
            find("etcdctl").ok_or(EtcdError::Missing { tool: "etcdctl" })?,
            &[("ETCDCTL_API", "3")],
        ),
    };
    let peer = format!("http://127.0.0.1:{peer_port}");
    let args: Vec<OsString> = vec![
        "snapshot".into(),
        "restore".into(),
        snapshot.into(),
        "--name".into(),
        NAME.into(),
        "--data-dir".into(),
        data_dir.into(),
        "--initial-cluster".into(),
        format!("{NAME}={peer}").into(),
        "--initial-advertise-peer-urls".into(),
        peer.into(),
        "--initial-cluster-token".into(),
        token.into(),
    ];
    call(&tool, &args, env).await?;
    Ok(tool.display().to_string())
}

/// A running throwaway etcd.
#[derive(Debug)]
pub struct Throwaway {
    child: Child,
    pub client_url: String,
    pub peer_port: u16,
    log: PathBuf,
    etcdctl: PathBuf,
}

/// Free ports for the member: (client, peer).
pub fn ports() -> Result<(u16, u16), EtcdError> {
    let client = free_port()?;
    let mut peer = free_port()?;
    while peer == client {
        peer = free_port()?;
    }
    Ok((client, peer))
}

impl Throwaway {
    /// Starts etcd on the restored `data_dir`, logging to `log`.
    pub fn start(
        data_dir: &Path,
        client_port: u16,
        peer_port: u16,
        log: &Path,
    ) -> Result<Throwaway, EtcdError> {
        let etcd = find("etcd").ok_or(EtcdError::Missing { tool: "etcd" })?;
        let etcdctl = find("etcdctl").ok_or(EtcdError::Missing { tool: "etcdctl" })?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<OsString> = vec![
            "--name".into(),
            NAME.into(),
            "--data-dir".into(),
            data_dir.into(),
            "--listen-client-urls".into(),
            client_url.clone().into(),
            "--advertise-client-urls".into(),
            client_url.clone().into(),
            "--listen-peer-urls".into(),
            peer_url.clone().into(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone().into(),
            "--initial-cluster".into(),
            format!("{NAME}={peer_url}").into(),
        ];
        let (program, args) = match find("setpriv") {
            Some(setpriv) => {
                let mut args: Vec<OsString> =
                    vec!["--pdeathsig".into(), "KILL".into(), "--".into(), etcd.into()];
                args.extend(etcd_args);
                (setpriv, args)
            }
            None => (etcd, etcd_args),
        };
        let log_file = std::fs::File::create(log).map_err(|source| EtcdError::Spawn {
            tool: format!("etcd (its log {})", log.display()),
            source,
        })?;
        let log_err = log_file.try_clone().map_err(|source| EtcdError::Spawn {
            tool: "etcd".into(),
            source,
        })?;
        let child = Command::new(&program)
            .args(&args)
            .env_clear()
            .env("PATH", path_env())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| EtcdError::Spawn {
                tool: program.display().to_string(),
                source,
            })?;
        Ok(Throwaway {
            child,
            client_url,
            peer_port,
            log: log.to_path_buf(),
            etcdctl,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn etcdctl(&self, args: &[&str]) -> Result<serde_json::Value, EtcdError> {
        let mut full: Vec<OsString> = vec![
            "--endpoints".into(),
            self.client_url.clone().into(),
            "--command-timeout".into(),
            "10s".into(),
            "-w".into(),
            "json".into(),
        ];
        full.extend(args.iter().map(OsString::from));
        let out = call(&self.etcdctl, &full, &[("ETCDCTL_API", "3")]).await?;
        serde_json::from_slice(&out).map_err(|e| EtcdError::Answer {
            what: "etcdctl",
            text: tail(&out),
            reason: e.to_string(),
        })
    }

    /// Waits until the member answers a read, at most `limit`.
    pub async fn wait_healthy(&mut self, limit: Duration) -> Result<(), EtcdError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.not_healthy(started, true));
            }
            if self.etcdctl(&["endpoint", "health"]).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(self.not_healthy(started, false));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn not_healthy(&self, started: Instant, exited: bool) -> EtcdError {
        let log = std::fs::read(&self.log).map(|b| tail(&b)).unwrap_or_default();
        EtcdError::NotHealthy {
            secs: started.elapsed().as_secs(),
            exited,
            log,
        }
    }

    /// The member's figures: revision, live keys, HashKV at its revision.
    pub async fn figures(&self) -> Result<Restored, EtcdError> {
        // A range's `count` is every key in it, whatever the limit
        // (etcdctl 3.4 has no --count-only).
        let count = self
            .etcdctl(&["get", "", "--from-key", "--keys-only", "--limit", "1"])
            .await?;
        let int = |v: &serde_json::Value, what: &'static str| -> Result<i64, EtcdError> {
            v.as_i64()
                .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| EtcdError::Answer {
                    what,
                    text: v.to_string(),
                    reason: "not a number".into(),
                })
        };
        let keys = match count.get("count") {
            None => 0,
            Some(c) => int(c, "the key count")?,
        };
        let revision = int(&count["header"]["revision"], "the revision")?;
        let hash = self.etcdctl(&["endpoint", "hashkv"]).await?;
        let first = &hash[0]["HashKV"];
        let hash_kv = int(&first["hash"], "HashKV")?;
        let compact_revision = first
            .get("compact_revision")
            .map_or(Ok(0), |c| int(c, "the compact revision"))?;
        Ok(Restored {
            revision,
            keys: u64::try_from(keys).unwrap_or_default(),
            hash_kv: u32::try_from(hash_kv).unwrap_or_default(),
            compact_revision,
        })
    }

    /// Kills the member (its process group) and reaps it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// What the restored member answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub revision: i64,
    pub keys: u64,
    pub hash_kv: u32,
    pub compact_revision: i64,
}
