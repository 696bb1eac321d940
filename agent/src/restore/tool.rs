//! The restore tool: which one (etcdutl 3.5+ preferred, else etcdctl 3.4),
//! its argument vector (a pure function, the revision bump gated by the
//! tool's real version), its version, and running it as a
//! child process under a timeout (no shell; killed when the call is dropped).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use etcdops_format::etcd_version::EtcdVersion;

use super::{RestoreError, RestoreSpec};
use crate::config::RestoreConfig;

/// Where etcdctl is looked for when neither the config nor PATH names one.
pub const FALLBACK_ETCDCTL: &str = "/usr/bin/etcdctl";
/// How long `<tool> version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the tool's output an error carries.
const TAIL_LINES: usize = 20;

/// The two tools that can restore a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// etcd 3.5+ `etcdutl snapshot restore` (can bump the revision).
    Etcdutl,
    /// etcd 3.4 `etcdctl snapshot restore`, run with `ETCDCTL_API=3`.
    Etcdctl,
}

impl ToolKind {
    pub fn name(self) -> &'static str {
        match self {
            ToolKind::Etcdutl => "etcdutl",
            ToolKind::Etcdctl => "etcdctl",
        }
    }
}

/// A restore tool found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub kind: ToolKind,
    pub path: PathBuf,
}

/// An executable regular file named `name` in one of `path_var`'s directories.
fn on_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Picks the tool: the configured etcdutl (must exist), else `etcdutl` on
/// PATH, else the configured etcdctl (must exist), else `etcdctl` on PATH,
/// else `/usr/bin/etcdctl`. `path_var` is the agent's `PATH`.
pub fn resolve(config: &RestoreConfig, path_var: Option<&OsStr>) -> Result<Tool, RestoreError> {
    let exists = |p: &Path| p.is_file();
    if let Some(path) = &config.etcdutl {
        if !exists(path) {
            return Err(RestoreError::ToolMissing {
                setting: "restore.etcdutl",
                path: path.clone(),
            });
        }
        return Ok(Tool {
            kind: ToolKind::Etcdutl,
            path: path.clone(),
        });
    }
    if let Some(path) = on_path("etcdutl", path_var) {
        return Ok(Tool {
            kind: ToolKind::Etcdutl,
            path,
        });
    }
    let path = match &config.etcdctl {
        Some(path) => path.clone(),
        None => on_path("etcdctl", path_var).unwrap_or_else(|| PathBuf::from(FALLBACK_ETCDCTL)),
    };
    if !exists(&path) {
        return Err(RestoreError::ToolMissing {
            setting: "restore.etcdctl",
            path,
        });
    }
    Ok(Tool {
        kind: ToolKind::Etcdctl,
        path,
    })
}

/// The argument vector of `<tool> snapshot restore` (flags as `--flag=value`,
/// so no value is ever read as a flag). `version` is the tool's (`<tool>
/// version`, e.g. "etcdutl 3.5.1"): only etcdutl 3.5.10+ and etcdctl 3.4.27+
/// can bump the revision (`EtcdVersion::restore_can_bump`), so a spec asking
/// for a bump is `BumpUnsupported` on any other, or an unreadable version.
pub fn restore_args(
    version: &str,
    spec: &RestoreSpec,
    snapshot: &Path,
    data_dir: &Path,
) -> Result<Vec<OsString>, RestoreError> {
    let can_bump = version
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse::<EtcdVersion>().ok())
        .is_some_and(|v| v.restore_can_bump());
    if spec.bump_revision > 0 && !can_bump {
        return Err(RestoreError::BumpUnsupported {
            bump: spec.bump_revision,
            tool: version.to_string(),
        });
    }
    let flag = |name: &str, value: &OsStr| {
        let mut f = OsString::from(format!("--{name}="));
        f.push(value);
        f
    };
    let mut args: Vec<OsString> = vec![
        "snapshot".into(),
        "restore".into(),
        dash_safe(snapshot).into_os_string(),
    ];
    args.push(flag("name", OsStr::new(&spec.name)));
    args.push(flag("initial-cluster", OsStr::new(&spec.initial_cluster)));
    args.push(flag(
        "initial-cluster-token",
        OsStr::new(&spec.initial_cluster_token),
    ));
    args.push(flag(
        "initial-advertise-peer-urls",
        OsStr::new(&spec.initial_advertise_peer_urls),
    ));
    args.push(flag("data-dir", dash_safe(data_dir).as_os_str()));
    // The agent checked the trailer against every byte as they arrived
    // (`restore::verify`); the tool's own pass over the file would repeat it.
    args.push("--skip-hash-check".into());
    if spec.bump_revision > 0 {
        args.push(flag("bump-revision", OsStr::new(&spec.bump_revision.to_string())));
        args.push("--mark-compacted".into());
    }
    Ok(args)
}

/// A relative path starting with `-` would read as a flag: `./` before it.
fn dash_safe(path: &Path) -> PathBuf {
    if path.as_os_str().as_encoded_bytes().first() == Some(&b'-') {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// "etcdctl 3.4.23" from `<tool> version`'s first line
/// (`etcdctl version: 3.4.23`); `None` when it says something else.
pub fn parse_version(kind: ToolKind, stdout: &str) -> Option<String> {
    let line = stdout.lines().next()?.trim();
    let version = line
        .strip_prefix(kind.name())?
        .trim_start()
        .strip_prefix("version:")?
        .trim();
    (!version.is_empty() && !version.contains(char::is_whitespace))
        .then(|| format!("{} {version}", kind.name()))
}

/// The command for `tool`: an argument vector, its own stdin, and for
/// etcdctl `ETCDCTL_API=3` with no other `ETCDCTL_*` variable inherited.
fn command(tool: &Tool, args: &[OsString]) -> tokio::process::Command {
    let mut cmd = crate::notify::child_command(&tool.path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if tool.kind == ToolKind::Etcdctl {
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"ETCDCTL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("ETCDCTL_API", "3");
    }
    cmd
}

/// The last lines of the tool's stderr (else stdout), for errors.
fn tail(output: &std::process::Output) -> String {
    let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        &output.stderr
    } else {
        &output.stdout
    };
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Runs `tool args` to the end, at most `timeout` (then it is killed).
async fn run(
    tool: &Tool,
    args: &[OsString],
    timeout: Duration,
) -> Result<std::process::Output, RestoreError> {
    let child = command(tool, args)
        .spawn()
        .map_err(|source| RestoreError::ToolStart {
            tool: tool.path.clone(),
            source,
        })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        // Dropping the child on timeout kills it (kill_on_drop).
        Err(_) => Err(RestoreError::ToolTimeout {
            tool: tool.path.clone(),
            timeout,
        }),
        Ok(Err(source)) => Err(RestoreError::ToolStart {
            tool: tool.path.clone(),
            source,
        }),
        Ok(Ok(output)) => Ok(output),
    }
}

/// "etcdctl 3.4.23": the tool's `version`.
pub async fn version(tool: &Tool) -> Result<String, RestoreError> {
    let output = run(tool, &["version".into()], VERSION_TIMEOUT).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_version(tool.kind, &stdout) {
        Some(v) if output.status.success() => Ok(v),
        _ => Err(RestoreError::ToolFailed {
            tool: tool.path.clone(),
            args: "version".to_string(),
            status: output.status.to_string(),
            tail: tail(&output),
        }),
    }
}

/// Runs `snapshot restore` with `args`; its output's tail in the error.
#[tracing::instrument(name = "restore.tool", skip_all, fields(tool = %tool.path.display()))]
pub async fn restore(tool: &Tool, args: &[OsString], timeout: Duration) -> Result<(), RestoreError> {
    let output = run(tool, args, timeout).await?;
    if output.status.success() {
        return Ok(());
    }
    Err(RestoreError::ToolFailed {
        tool: tool.path.clone(),
        args: args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        status: output.status.to_string(),
        tail: tail(&output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bump: u64) -> RestoreSpec {
        RestoreSpec {
            operation_id: "restore-1".to_string(),
            size: 1024 + 32,
            sha256: "0".repeat(64),
            name: "etcd1".to_string(),
            initial_cluster: "etcd1=http://10.0.0.1:2380".to_string(),
            initial_cluster_token: "tok-2".to_string(),
            initial_advertise_peer_urls: "http://10.0.0.1:2380".to_string(),
            bump_revision: bump,
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn argument_vectors_per_tool() {
        let snap = Path::new("/var/lib/etcd/.default.restore-1.snapshot.part");
        let dir = Path::new("/var/lib/etcd/default.restore-1");
        let expected = [
            "snapshot",
            "restore",
            "/var/lib/etcd/.default.restore-1.snapshot.part",
            "--name=etcd1",
            "--initial-cluster=etcd1=http://10.0.0.1:2380",
            "--initial-cluster-token=tok-2",
            "--initial-advertise-peer-urls=http://10.0.0.1:2380",
            "--data-dir=/var/lib/etcd/default.restore-1",
            "--skip-hash-check",
        ];
        for tool in ["etcdctl 3.4.23", "etcdutl 3.5.1", "etcdutl 3.5.17"] {
            assert_eq!(
                strings(&restore_args(tool, &spec(0), snap, dir).expect(tool)),
                expected,
                "{tool}"
            );
        }
        // The bump only where the real version has the flags: etcdutl 3.5.10+, etcdctl 3.4.27+.
        for tool in [
            "etcdutl 3.5.10",
            "etcdutl 3.5.17",
            "etcdctl 3.4.27",
            "etcdutl 3.6.0",
        ] {
            let bumped = strings(&restore_args(tool, &spec(1_000_000_000), snap, dir).expect(tool));
            assert_eq!(bumped[..expected.len()], expected, "{tool}");
            assert_eq!(
                bumped[expected.len()..],
                ["--bump-revision=1000000000", "--mark-compacted"],
                "{tool}"
            );
        }
        for tool in [
            "etcdctl 3.4.23",
            "etcdutl 3.5.1",
            "etcdutl 3.5.9",
            "etcdctl 3.4.26",
            "etcdutl what",
        ] {
            let err = restore_args(tool, &spec(5), snap, dir).expect_err(tool);
            assert!(
                err.to_string().starts_with(&format!(
                    "{tool} cannot bump the revision on restore (etcdutl 3.5.10+ or etcdctl 3.4.27+ can)"
                )),
                "{err}"
            );
        }
        // A relative path that starts with '-' is never read as a flag.
        let args = strings(
            &restore_args("etcdctl 3.4.23", &spec(0), Path::new("-x.part"), Path::new("-d")).expect("rel"),
        );
        assert_eq!(args[2], "./-x.part");
        assert_eq!(args[7], "--data-dir=./-d");
    }

    #[test]
    fn tools_do_not_inherit_the_service_manager_variables() {
        for kind in [ToolKind::Etcdctl, ToolKind::Etcdutl] {
            let tool = Tool {
                kind,
                path: PathBuf::from("/usr/bin/true"),
            };
            let cmd = command(&tool, &[]);
            let removed: Vec<&OsStr> = cmd
                .as_std()
                .get_envs()
                .filter(|(_, value)| value.is_none())
                .map(|(key, _)| key)
                .collect();
            for key in crate::notify::SERVICE_MANAGER_ENV {
                assert!(removed.contains(&OsStr::new(key)), "{kind:?}: {key} not removed");
            }
        }
    }

    #[test]
    fn versions_are_read_from_the_first_line() {
        assert_eq!(
            parse_version(ToolKind::Etcdctl, "etcdctl version: 3.4.23\nAPI version: 3.4\n").as_deref(),
            Some("etcdctl 3.4.23")
        );
        assert_eq!(
            parse_version(ToolKind::Etcdutl, "etcdutl version: 3.5.17\nAPI version: 3.5\n").as_deref(),
            Some("etcdutl 3.5.17")
        );
        assert_eq!(parse_version(ToolKind::Etcdutl, "etcdctl version: 3.4.23"), None);
        assert_eq!(parse_version(ToolKind::Etcdctl, ""), None);
        assert_eq!(parse_version(ToolKind::Etcdctl, "etcdctl version: "), None);
    }

    #[test]
    fn tools_are_resolved_config_first_then_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let make = |name: &str| {
            let p = bin.join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            p
        };
        let etcdctl = make("etcdctl");
        let path_var = std::env::join_paths([&bin]).expect("PATH");
        let config = RestoreConfig::default();
        let tool = resolve(&config, Some(&path_var)).expect("etcdctl on PATH");
        assert_eq!(
            tool,
            Tool {
                kind: ToolKind::Etcdctl,
                path: etcdctl.clone()
            }
        );
        let etcdutl = make("etcdutl");
        let tool = resolve(&config, Some(&path_var)).expect("etcdutl on PATH");
        assert_eq!(
            tool,
            Tool {
                kind: ToolKind::Etcdutl,
                path: etcdutl
            }
        );
        let missing = RestoreConfig {
            etcdutl: Some(dir.path().join("nope")),
            ..RestoreConfig::default()
        };
        let err = resolve(&missing, Some(&path_var)).expect_err("configured etcdutl missing");
        assert!(err.to_string().contains("restore.etcdutl"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let no_path = std::env::join_paths([&empty]).expect("PATH");
        let configured = RestoreConfig {
            etcdctl: Some(etcdctl.clone()),
            ..RestoreConfig::default()
        };
        assert_eq!(
            resolve(&configured, Some(&no_path)).expect("configured").path,
            etcdctl
        );
        let bad = RestoreConfig {
            etcdctl: Some(dir.path().join("nope")),
            ..RestoreConfig::default()
        };
        assert!(matches!(
            resolve(&bad, Some(&no_path)),
            Err(RestoreError::ToolMissing {
                setting: "restore.etcdctl",
                ..
            })
        ));
    }
}
