//! The checks the agent runs before it binds anything, and all that
//! `--check-config` runs: the config loads and validates, the TLS files it
//! names exist and load, and the paths the agent writes are writable here.
//!
//! A refusal is one line naming the file and what to do, and an exit code
//! the unit does not restart on (`RestartPreventExitStatus=2 78`):
//! - [`EXIT_NOT_READY`] (78, EX_CONFIG): the host is not provisioned for the
//!   agent yet: the config, a certificate, key or CA is missing or
//!   unreadable, or a path the agent writes is read-only for it (under the
//!   unit's `ProtectSystem=strict`, a path outside `ReadWritePaths=`).
//! - [`EXIT_INVALID`] (2): the config or a TLS file is invalid.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use etcdops_certs::Identity;
use nix::errno::Errno;
use nix::unistd::AccessFlags;
use tonic::transport::ServerTlsConfig;

use crate::config::{AgentConfig, ConfigError, TlsConfig};

/// Exit status for a config that is invalid (and for usage errors, clap's).
pub const EXIT_INVALID: u8 = 2;
/// Exit status for a host not provisioned for the agent (sysexits' EX_CONFIG,
/// shown by systemd as `status=78/CONFIG`).
pub const EXIT_NOT_READY: u8 = 78;

/// What the agent serves with once the checks pass.
#[derive(Debug)]
pub struct Checked {
    pub config: AgentConfig,
    pub tls: ServerTlsConfig,
    pub identity: Identity,
}

/// Why the agent would not start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing agent config {path}: copy the commented example (deploy/config/agent.toml; the \
         etcdops-agent package installs it as /etc/etcdops/agent.toml) there and set listen, [tls] and [etcd]"
    )]
    ConfigMissing { path: PathBuf },
    #[error("{0}")]
    Config(#[source] ConfigError),
    #[error("missing {path} ({field} in {config}): {fix}")]
    FileMissing {
        path: PathBuf,
        field: &'static str,
        config: PathBuf,
        fix: String,
    },
    #[error(
        "cannot read {path} ({field} in {config}): {source}; the agent runs as root: check the file and its directory"
    )]
    FileUnreadable {
        path: PathBuf,
        field: &'static str,
        config: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{config}: {source} (see [tls] in the agent config)")]
    Tls {
        config: PathBuf,
        #[source]
        source: etcdops_certs::TlsError,
    },
    #[error(
        "{what} {path} cannot be written here: {dir} is {reason}; under the etcdops-agent unit \
         (ProtectSystem=strict) only its ReadWritePaths= are writable: add {dir} in a drop-in \
         (`systemctl edit etcdops-agent`: [Service] ReadWritePaths={dir}), then restart the agent"
    )]
    NotWritable {
        what: &'static str,
        path: PathBuf,
        dir: PathBuf,
        reason: &'static str,
    },
}

impl PreflightError {
    /// The exit status this refusal stops the agent with.
    pub fn exit_code(&self) -> u8 {
        match self {
            PreflightError::Config(_) | PreflightError::Tls { .. } => EXIT_INVALID,
            PreflightError::ConfigMissing { .. }
            | PreflightError::FileMissing { .. }
            | PreflightError::FileUnreadable { .. }
            | PreflightError::NotWritable { .. } => EXIT_NOT_READY,
        }
    }

    /// The message on one line (toml's errors quote the file over several):
    /// for stderr and systemd's `STATUS=`.
    pub fn one_line(&self) -> String {
        self.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// All checks, in the order an operator fixes them: the config, the agent's
/// TLS files, etcd's client TLS files, the paths the agent writes.
pub fn check(path: &Path) -> Result<Checked, PreflightError> {
    let config = match AgentConfig::load(path) {
        Ok(config) => config,
        Err(ConfigError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Err(PreflightError::ConfigMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(PreflightError::Config(e)),
    };
    tls_files_present(&config, path)?;
    let (tls, identity) = config
        .tls
        .files()
        .server_config()
        .map_err(|source| PreflightError::Tls {
            config: path.to_path_buf(),
            source,
        })?;
    writable_paths(&config)?;
    Ok(Checked {
        config,
        tls,
        identity,
    })
}

/// The agent's `[tls]` files and, when set, `[etcd.tls]`'s: each present and
/// readable, else which command makes it.
fn tls_files_present(config: &AgentConfig, path: &Path) -> Result<(), PreflightError> {
    let host = config.listen.ip();
    let issue_agent = format!(
        "issue it on the coordinator with `etcdops certs issue agent --name NAME --host {host}` \
         (NAME: this member's name) and copy the .crt and .key here"
    );
    let fleet_ca = "copy the fleet CA certificate here (ca.crt in the coordinator's PKI dir, \
                    made by `etcdops certs init`)"
        .to_string();
    let mut files = tls_files(
        &config.tls,
        ["tls.ca", "tls.cert", "tls.key"],
        &fleet_ca,
        &issue_agent,
    );
    if let Some(etcd) = &config.etcd.tls {
        let issue_client =
            "issue it on the coordinator with `etcdops certs issue etcd-client --name etcdops` \
                            and copy the .crt and .key here"
                .to_string();
        let etcd_ca = "copy the CA that signed etcd's server certificate here (the fleet CA's ca.crt \
                       when `etcdops certs issue etcd-server` made it)"
            .to_string();
        files.extend(tls_files(
            etcd,
            ["etcd.tls.ca", "etcd.tls.cert", "etcd.tls.key"],
            &etcd_ca,
            &issue_client,
        ));
    }
    for (field, file, fix) in files {
        match std::fs::File::open(&file) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(PreflightError::FileMissing {
                    path: file,
                    field,
                    config: path.to_path_buf(),
                    fix,
                });
            }
            Err(source) => {
                return Err(PreflightError::FileUnreadable {
                    path: file,
                    field,
                    config: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn tls_files(
    tls: &TlsConfig,
    fields: [&'static str; 3],
    ca_fix: &str,
    leaf_fix: &str,
) -> Vec<(&'static str, PathBuf, String)> {
    vec![
        (fields[0], tls.ca.clone(), ca_fix.to_string()),
        (fields[1], tls.cert.clone(), leaf_fix.to_string()),
        (fields[2], tls.key.clone(), leaf_fix.to_string()),
    ]
}

/// The directories the agent writes, each writable here: the env file's
/// directory (a temp file renamed over it), the data dir and its parent
/// (restores are staged and swapped beside it, the disk probe writes
/// there), the state dir, and the process backend's log file's directory.
/// A path not created yet is judged by its nearest existing ancestor.
fn writable_paths(config: &AgentConfig) -> Result<(), PreflightError> {
    let data_dir = crate::state::data_dir(config);
    let mut targets: Vec<(&'static str, PathBuf, PathBuf)> = Vec::new();
    if let Some(dir) = config.etcd.env_file.parent() {
        targets.push(("etcd's env file", config.etcd.env_file.clone(), dir.to_path_buf()));
    }
    if let Some(parent) = data_dir.parent() {
        targets.push(("etcd's data dir", data_dir.clone(), parent.to_path_buf()));
    }
    targets.push(("etcd's data dir", data_dir.clone(), data_dir.clone()));
    targets.push((
        "the agent's state dir",
        config.state_dir.clone(),
        config.state_dir.clone(),
    ));
    if let Some(log) = &config.unit.log_file
        && let Some(dir) = log.parent()
    {
        targets.push(("etcd's log file", log.clone(), dir.to_path_buf()));
    }
    if let Some(audit) = &config.audit.path
        && let Some(dir) = audit.parent()
    {
        targets.push(("the audit trail ([audit] path)", audit.clone(), dir.to_path_buf()));
    }
    for (what, path, dir) in targets {
        let Some(existing) = nearest_existing(&dir) else {
            continue;
        };
        if let Err(errno) = nix::unistd::access(&existing, AccessFlags::W_OK) {
            let reason = match errno {
                Errno::EROFS => "read-only",
                Errno::EACCES | Errno::EPERM => "not writable for the agent",
                _ => "not writable",
            };
            return Err(PreflightError::NotWritable {
                what,
                path,
                dir: existing,
                reason,
            });
        }
    }
    Ok(())
}

/// `path` or its nearest ancestor that exists (`None` for a relative path
/// with no existing ancestor).
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_ok())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use etcdops_certs::{IssueRequest, Pki, Role};

    use super::*;

    struct Host {
        dir: tempfile::TempDir,
        config: PathBuf,
        text: String,
    }

    fn host() -> Host {
        etcdops_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pki, _) = Pki::init(&dir.path().join("pki"), "test-ca", 1, false).expect("pki");
        let cert = pki
            .issue(&IssueRequest::new(Role::Agent, "etcd1").host("127.0.0.1"))
            .expect("issue");
        let env_dir = dir.path().join("default");
        std::fs::create_dir(&env_dir).expect("mkdir");
        let text = format!(
            "listen = \"127.0.0.1:7443\"\nstate_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
             [etcd]\nendpoint = \"http://127.0.0.1:2379\"\nenv_file = {:?}\ndata_dir = {:?}\n",
            dir.path().join("state"),
            pki.ca_cert_path(),
            cert.cert_path,
            cert.key_path,
            env_dir.join("etcd"),
            dir.path().join("lib/etcd/default"),
        );
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, &text).expect("write");
        Host { dir, config, text }
    }

    #[test]
    fn a_provisioned_host_passes() {
        let h = host();
        let checked = check(&h.config).expect("ok");
        assert_eq!(checked.identity.name, "etcd1");
    }

    #[test]
    fn a_missing_config_says_where_the_example_is() {
        let h = host();
        let missing = h.dir.path().join("nope.toml");
        let err = check(&missing).expect_err("missing");
        assert_eq!(err.exit_code(), EXIT_NOT_READY);
        let line = err.one_line();
        assert!(
            line.starts_with(&format!("missing agent config {}", missing.display())),
            "{line}"
        );
    }

    #[test]
    fn an_invalid_config_is_exit_2_on_one_line() {
        let h = host();
        std::fs::write(
            &h.config,
            format!("{}\nbogus = 1\n", h.text.replacen("\n", "\nbogus = 1\n", 1)),
        )
        .expect("write");
        let err = check(&h.config).expect_err("invalid");
        assert_eq!(err.exit_code(), EXIT_INVALID);
        assert!(
            !err.one_line().contains('\n') && err.one_line().contains("bogus"),
            "{err}"
        );
    }

    #[test]
    fn each_missing_tls_file_is_named_with_the_command_that_makes_it() {
        let h = host();
        let config = AgentConfig::load(&h.config).expect("load");
        for (field, file, says) in [
            ("tls.ca", &config.tls.ca, "etcdops certs init"),
            (
                "tls.cert",
                &config.tls.cert,
                "etcdops certs issue agent --name NAME --host 127.0.0.1",
            ),
            ("tls.key", &config.tls.key, "etcdops certs issue agent"),
        ] {
            let kept = std::fs::read(file).expect("read");
            std::fs::remove_file(file).expect("rm");
            let err = check(&h.config).expect_err("missing file");
            std::fs::write(file, kept).expect("restore");
            assert_eq!(err.exit_code(), EXIT_NOT_READY, "{err}");
            let line = err.one_line();
            assert!(
                line.starts_with(&format!(
                    "missing {} ({field} in {}",
                    file.display(),
                    h.config.display()
                )) && line.contains(says),
                "{line}"
            );
        }
        let text = format!(
            "{}[etcd.tls]\nca = {:?}\ncert = \"/nonexistent/etcd-client.crt\"\nkey = {:?}\n",
            h.text, config.tls.ca, config.tls.key
        );
        std::fs::write(&h.config, text).expect("write");
        let line = check(&h.config).expect_err("missing etcd client cert").one_line();
        assert!(
            line.starts_with("missing /nonexistent/etcd-client.crt (etcd.tls.cert in")
                && line.contains("etcdops certs issue etcd-client"),
            "{line}"
        );
    }

    #[test]
    fn paths_not_created_yet_are_judged_by_their_nearest_ancestor() {
        let h = host();
        assert_eq!(
            nearest_existing(&h.dir.path().join("lib/etcd/default")),
            Some(h.dir.path().to_path_buf())
        );
        assert_eq!(nearest_existing(Path::new("/")), Some(PathBuf::from("/")));
    }
}
