//! EtcdVersions (read-only) and SetEtcdBinary (fenced): the agent side of
//! `etcdops upgrade`. A binary's version is what `BINARY --version` prints
//! (an argument vector, no shell, under a timeout); the member's server and
//! cluster versions are etcd's own `etcd_server_version` /
//! `etcd_cluster_version` gauges from its /metrics. The switch itself is the
//! unit backend's (`UnitBackend::set_binary`: the process backend's state
//! file, the systemd backend's ExecStart drop-in).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use etcdops_format::etcd_version::{EtcdVersion, parse_version_output};
use etcdops_proto::v1 as pb;
use tonic::Status;

use crate::state::AgentState;

/// How long `etcd --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many binaries per request.
const MAX_BINARIES: usize = 8;

/// `path --version`: the version, or why there is none (for messages).
pub async fn binary_version(path: &Path) -> Result<EtcdVersion, String> {
    if !path.is_absolute() {
        return Err(format!("{}: not an absolute path", path.display()));
    }
    match std::fs::metadata(path) {
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.is_file() => return Err(format!("{}: not a regular file", path.display())),
        Ok(_) => {}
    }
    let child = crate::notify::child_command(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {} --version: {e}", path.display()))?;
    let output = match tokio::time::timeout(VERSION_TIMEOUT, child.wait_with_output()).await {
        Err(_) => {
            return Err(format!(
                "{} --version did not answer within {} s",
                path.display(),
                VERSION_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("cannot run {} --version: {e}", path.display())),
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_version_output(&stdout) {
        Some(v) if output.status.success() => Ok(v),
        _ => Err(format!(
            "{} --version ({}) printed no etcd version: {}",
            path.display(),
            output.status,
            stdout.lines().next().unwrap_or("").trim()
        )),
    }
}

/// The value of `label` on the gauge `name` whose sample is not 0
/// (`etcd_cluster_version{cluster_version="3.5"} 1`): etcd sets the
/// previous cluster version's series to 0 and keeps it.
pub fn labelled(text: &str, name: &str, label: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, sample) = rest.split_once('}')?;
        let value: f64 = sample.trim().parse().ok()?;
        if value == 0.0 {
            return None;
        }
        let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
        let value = &labels[start..];
        Some(value[..value.find('"')?].to_string())
    })
}

pub async fn etcd_versions(
    state: &AgentState,
    request: &pb::EtcdVersionsRequest,
    timeout: Duration,
) -> Result<pb::EtcdVersionsResponse, Status> {
    if request.binaries.len() > MAX_BINARIES {
        return Err(Status::invalid_argument(format!(
            "binaries: {} asked, at most {MAX_BINARIES}",
            request.binaries.len()
        )));
    }
    let mut binaries = Vec::new();
    for path in &request.binaries {
        let (version, problem) = match binary_version(Path::new(path)).await {
            Ok(v) => (v.to_string(), String::new()),
            Err(why) => (String::new(), why),
        };
        binaries.push(pb::BinaryVersion {
            path: path.clone(),
            version,
            problem,
        });
    }
    let (server_version, cluster_version, metrics_error) =
        match crate::disk::metrics::fetch(state.disk.metrics(), timeout).await {
            Ok(text) => (
                labelled(&text, "etcd_server_version", "server_version").unwrap_or_default(),
                labelled(&text, "etcd_cluster_version", "cluster_version").unwrap_or_default(),
                String::new(),
            ),
            Err(e) => (String::new(), String::new(), e.to_string()),
        };
    Ok(pb::EtcdVersionsResponse {
        unit_binary: state
            .unit
            .binary()
            .await
            .map(|b| b.display().to_string())
            .unwrap_or_default(),
        configured_binary: own_binary(state).await.display().to_string(),
        binaries,
        server_version,
        cluster_version,
        metrics_error,
    })
}

/// What SetEtcdBinary "" goes back to: the backend's own binary (systemd:
/// the unit's without the agent's drop-in), else the config's.
async fn own_binary(state: &AgentState) -> PathBuf {
    state
        .unit
        .own_binary()
        .await
        .unwrap_or_else(|| state.configured_binary.clone())
}

/// SetEtcdBinary after the fence: the binary must answer `--version`
/// before the backend switches (process: the state dir's record; systemd:
/// the drop-in and a daemon-reload).
pub async fn set_etcd_binary(
    state: &AgentState,
    request: pb::SetEtcdBinaryRequest,
) -> Result<pb::SetEtcdBinaryResponse, Status> {
    let member = super::unit::member(state);
    let path = (!request.path.is_empty()).then(|| PathBuf::from(&request.path));
    let check = match &path {
        Some(p) => p.clone(),
        None => own_binary(state).await,
    };
    let version = binary_version(&check).await.map_err(|why| {
        Status::failed_precondition(format!(
            "path: etcd on {member} cannot run {why}; install that etcd release on the host first"
        ))
    })?;
    let previous = state
        .unit
        .set_binary(path)
        .await
        .map_err(|e| Status::new(super::unit::code(&e), format!("{member}: {e}")))?;
    Ok(pb::SetEtcdBinaryResponse {
        previous: previous.display().to_string(),
        binary: check.display().to_string(),
        version: version.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gauges_from_etcd_metrics() {
        let text = "# HELP etcd_cluster_version Which version is running.\n\
                    # TYPE etcd_cluster_version gauge\n\
                    etcd_cluster_version{cluster_version=\"3.4\"} 0\n\
                    etcd_cluster_version{cluster_version=\"3.5\"} 1\n\
                    etcd_server_version{server_version=\"3.5.1\"} 1\n";
        assert_eq!(
            labelled(text, "etcd_cluster_version", "cluster_version").as_deref(),
            Some("3.5"),
            "the series at 1, not the old one etcd keeps at 0"
        );
        assert_eq!(
            labelled(text, "etcd_server_version", "server_version").as_deref(),
            Some("3.5.1")
        );
        assert_eq!(labelled(text, "etcd_server_has_leader", "x"), None);
        assert_eq!(
            labelled(
                "etcd_cluster_version{cluster_version=\"3.4} 1",
                "etcd_cluster_version",
                "cluster_version"
            ),
            None
        );
    }

    #[tokio::test]
    async fn binaries_that_cannot_say_their_version() {
        assert!(
            binary_version(Path::new("etcd"))
                .await
                .expect_err("refused")
                .contains("not an absolute path")
        );
        assert!(binary_version(Path::new("/nonexistent/etcd")).await.is_err());
        assert!(
            binary_version(Path::new("/tmp"))
                .await
                .expect_err("refused")
                .contains("not a regular file")
        );
        let err = binary_version(Path::new("/bin/true"))
            .await
            .expect_err("true prints nothing");
        assert!(err.contains("printed no etcd version"), "{err}");
    }
}
