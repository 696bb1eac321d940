//! The agent config the sandbox writes for each host, as TOML of its own
//! making (the coordinator does not link the agent crate), and [`check`]:
//! the agent binary's own verdict on a written file
//! (`etcdops-agent --check-config PATH`), so a field the agent no longer
//! accepts stops `sandbox up` before any agent starts.
//!
//! Only the keys the sandbox sets are here; the agent's defaults fill the
//! rest. Keep it a subset of what `agent/src/config.rs` accepts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Restart policy of the agent's process backend (`[unit] restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Restart etcd when it exits abnormally.
    #[default]
    OnFailure,
    /// Leave it stopped and report the unit as failed.
    Never,
}

/// One host's `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentToml {
    /// The agent API's address (mutual TLS).
    pub listen: SocketAddr,
    /// The agent's own `/metrics`, when served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Fences, revision samples, restore swaps.
    pub state_dir: PathBuf,
    pub tls: TlsToml,
    pub etcd: EtcdToml,
    pub unit: UnitToml,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskToml>,
}

/// `[tls]`: the agent's certificate and key, and the fleet CA (also
/// `[etcd.tls]`: the agent's etcd client certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsToml {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[etcd]`: the local member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdToml {
    /// The member's client URL.
    pub endpoint: String,
    /// etcd's environment file.
    pub env_file: PathBuf,
    /// `[etcd.tls]`: the agent's etcd client certificate and the CA of
    /// etcd's server certificate, when etcd serves clients over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsToml>,
}

/// `[unit]`: the process backend running etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitToml {
    /// Always `process` in a sandbox.
    pub backend: String,
    pub etcd_binary: PathBuf,
    pub log_file: PathBuf,
    pub autostart: bool,
    pub restart: Restart,
}

/// `[disk]`: only the periodic probe's interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskToml {
    pub probe_interval_secs: u64,
}

impl AgentToml {
    /// The file's text.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

/// The agent refused a config the sandbox wrote.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot run {} --check-config {}: {source}", agent.display(), path.display())]
    Run {
        agent: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} refuses the config the sandbox wrote ({}): {message}. The sandbox and this agent binary \
         disagree on the config format: use an etcdops-agent built with this etcdops (--agent-bin)",
        agent.display(),
        path.display()
    )]
    Refused {
        agent: PathBuf,
        path: PathBuf,
        message: String,
    },
}

/// Runs `agent --check-config path`: `Ok` when it exits 0 saying `ok: `.
pub fn check(agent: &Path, path: &Path) -> Result<(), CheckError> {
    let out = Command::new(agent)
        .arg("--check-config")
        .arg(path)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|source| CheckError::Run {
            agent: agent.to_path_buf(),
            path: path.to_path_buf(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.starts_with("ok: ") {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = [stderr.trim(), stdout.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(CheckError::Refused {
        agent: agent.to_path_buf(),
        path: path.to_path_buf(),
        message: format!(
            "{} ({})",
            if said.is_empty() { "no output" } else { &said },
            out.status
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_is_written_as_the_agent_reads_it() {
        #[derive(Serialize)]
        struct Doc {
            restart: Restart,
        }
        let text = toml::to_string(&Doc {
            restart: Restart::OnFailure,
        })
        .expect("serialize");
        assert_eq!(text.trim(), "restart = \"on-failure\"");
    }

    #[test]
    fn check_names_the_file_when_the_agent_refuses_or_is_missing() {
        let path = Path::new("/sandbox/etcd1/agent.toml");
        let err = check(Path::new("/bin/false"), path).expect_err("refused");
        assert!(matches!(err, CheckError::Refused { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("/sandbox/etcd1/agent.toml") && text.contains("--agent-bin"),
            "{text}"
        );
        let err = check(Path::new("/nonexistent/etcdops-agent"), path).expect_err("missing");
        assert!(matches!(err, CheckError::Run { .. }), "{err}");
    }
}
