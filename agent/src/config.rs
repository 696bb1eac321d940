//! The agent's configuration file (TOML, unknown keys rejected).
//!
//! ```toml
//! # /etc/etcdops/agent.toml
//! listen = "198.18.0.11:7443"          # gRPC over mutual TLS
//! # metrics_listen = "198.18.0.11:9443" # the agent's own Prometheus /metrics (plain HTTP); default: off
//! # state_dir = "/var/lib/etcdops-agent" # fences and revision samples; created 0700 when missing
//!
//! [tls]                                # this agent's identity, from `etcdops certs issue agent`
//! ca = "/etc/etcdops/pki/ca.crt"
//! cert = "/etc/etcdops/pki/agent-etcd1.crt"
//! key = "/etc/etcdops/pki/agent-etcd1.key"
//!
//! [etcd]
//! endpoint = "https://198.18.0.11:2379" # the local member's client URL
//! env_file = "/etc/default/etcd"       # Debian's layout: ETCD_* variables
//! # data_dir = "/var/lib/etcd/default" # default: ETCD_DATA_DIR from env_file
//! [etcd.tls]                           # etcd serves clients over TLS with client-cert auth
//! ca = "/etc/etcdops/pki/ca.crt"       # the CA of etcd's server certificate
//! cert = "/etc/etcdops/pki/etcd-client-agent-etcd1.crt"  # `etcdops certs issue etcd-client agent-etcd1`
//! key = "/etc/etcdops/pki/etcd-client-agent-etcd1.key"
//!
//! [unit]
//! backend = "process"                  # or "systemd" (etcd.service)
//! # etcd_binary = "/usr/bin/etcd"      # process backend
//! # log_file = "/var/log/etcdops/etcd.log"
//! # autostart = true                   # start etcd with the agent
//! # restart = "on-failure"             # or "never"
//! # restart_delay_secs = 5
//! # stop_timeout_secs = 30             # graceful stop of etcd, then SIGKILL (both backends)
//!
//! [disk]                               # optional: the fsync probe (ProbeDisk)
//! # fsync_p99_threshold_ms = 10        # etcd's guidance: WAL fsync p99 under 10 ms
//! # metrics_url = "http://127.0.0.1:2381/metrics"  # default: etcd.endpoint + /metrics (https: with [etcd.tls])
//! # probe_interval_secs = 60         # light periodic probe (100 × 2300 B) for GetStatus; 0: off
//!
//! [restore]                            # optional: the tools StageRestore runs
//! # etcdctl = "/usr/bin/etcdctl"       # etcd 3.4; default: `etcdctl` on PATH, else /usr/bin/etcdctl
//! # etcdutl = "/usr/bin/etcdutl"       # etcd 3.5+, preferred; default: `etcdutl` on PATH when installed
//! # timeout_secs = 600                 # how long one restore may run
//!
//! [audit]                              # optional: the audit trail (one JSON line per mutating or refused call)
//! # path = "/var/lib/etcdops-agent/audit.jsonl"  # default: audit.jsonl in state_dir
//! # max_bytes = 16777216               # rotate past 16 MiB
//! # keep = 10                          # rotated files kept (audit.jsonl.1 .. .10)
//! [telemetry]                          # optional: distributed traces (OTLP over gRPC)
//! # otlp_endpoint = "http://198.18.0.2:4317"  # used when no OTEL_EXPORTER_OTLP_*ENDPOINT is set; default: off
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default port of the agent API.
pub const DEFAULT_AGENT_PORT: u16 = 7443;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address and port the gRPC API listens on (mutual TLS only).
    pub listen: SocketAddr,
    /// Where the agent serves its own Prometheus metrics (`GET /metrics`,
    /// plain HTTP: metrics only, no secrets). Default: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where the agent keeps its own state: the clusters' fences
    /// (`fences.json`) and the member's revision samples (`revisions.json`).
    /// Created (mode 0700) at start-up when missing. Default:
    /// `/var/lib/etcdops-agent` (systemd's `StateDirectory=etcdops-agent`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The agent's TLS identity and the fleet CA.
    pub tls: TlsConfig,
    /// The local etcd member.
    pub etcd: EtcdConfig,
    /// How etcd is run on this host.
    #[serde(default)]
    pub unit: UnitConfig,
    /// The disk probe and etcd's disk metrics.
    #[serde(default)]
    pub disk: DiskConfig,
    /// The tools StageRestore runs to restore a snapshot.
    #[serde(default)]
    pub restore: RestoreConfig,
    /// The audit trail's file and rotation.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Distributed traces (see [`crate::telemetry`]).
    #[serde(default, skip_serializing_if = "TelemetryConfig::is_empty")]
    pub telemetry: TelemetryConfig,
}

/// The audit trail (see `crate::audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit file. Default: `audit.jsonl` in `state_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Rotate the file when it would grow past this many bytes (at least 4096).
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
    /// How many rotated files to keep (`<path>.1` newest .. `<path>.<keep>` oldest).
    #[serde(default = "default_audit_keep")]
    pub keep: u32,
}

/// 16 MiB: tens of thousands of records.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Ten rotated files.
pub const DEFAULT_AUDIT_KEEP: u32 = 10;

fn default_audit_max_bytes() -> u64 {
    DEFAULT_AUDIT_MAX_BYTES
}

fn default_audit_keep() -> u32 {
    DEFAULT_AUDIT_KEEP
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            keep: DEFAULT_AUDIT_KEEP,
        }
    }
}

impl AuditConfig {
    /// Where the audit file is and how it rotates, for this state dir.
    pub fn settings(&self, state_dir: &Path) -> crate::audit::AuditSettings {
        crate::audit::AuditSettings {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| state_dir.join(crate::audit::DEFAULT_FILE)),
            max_bytes: self.max_bytes.max(4096),
            keep: self.keep,
        }
    }
}

/// Where the agent exports its trace spans (OpenTelemetry, OTLP over gRPC).
/// The standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
/// variables win over this file; with neither, no exporter runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC receiver (a collector), e.g. `http://198.18.0.2:4317`
    /// (`https://` verified against the system's roots). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Nothing set (the section is left out when written).
    pub fn is_empty(&self) -> bool {
        self.otlp_endpoint.is_none()
    }
}

/// Paths to PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The fleet CA certificate: the only CA whose clients are accepted.
    pub ca: PathBuf,
    /// This agent's certificate (role `agent`).
    pub cert: PathBuf,
    /// This agent's private key (mode 0600).
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn files(&self) -> etcdops_certs::TlsFiles {
        etcdops_certs::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// The local etcd member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// The local member's client URL, e.g. `http://127.0.0.1:2379`.
    pub endpoint: String,
    /// etcd's environment file: `ETCD_*` variables, read by etcd.service and
    /// by the process backend.
    #[serde(default = "default_env_file")]
    pub env_file: PathBuf,
    /// The member's data dir. Default: `ETCD_DATA_DIR` from `env_file`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// TLS towards etcd's client port, when etcd requires it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// The agent's state dir when the config names none.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/etcdops-agent";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_env_file() -> PathBuf {
    PathBuf::from("/etc/default/etcd")
}

/// How etcd runs on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// `process`: the agent starts and supervises etcd itself (sandbox,
    /// hosts without systemd). `systemd`: the etcd.service unit.
    #[serde(default)]
    pub backend: Backend,
    /// The etcd binary the process backend runs.
    #[serde(default = "default_etcd_binary")]
    pub etcd_binary: PathBuf,
    /// Where the process backend appends etcd's output. Default: the agent's
    /// own stderr.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// The systemd unit the systemd backend manages.
    #[serde(default = "default_unit_name")]
    pub name: String,
    /// Process backend: start etcd when the agent starts. Once etcdops has
    /// enabled or disabled etcd (a member added, removed or rejoined), that
    /// choice, kept in `<state_dir>/etcd-starts-with-agent`, wins.
    #[serde(default = "default_true")]
    pub autostart: bool,
    /// Process backend: what to do when etcd exits on its own.
    #[serde(default)]
    pub restart: Restart,
    /// Process backend: seconds to wait before restarting a failed etcd.
    #[serde(default = "default_restart_delay")]
    pub restart_delay_secs: u64,
    /// Both backends: how long etcd's graceful stop (SIGTERM, systemd's stop
    /// job) may take before etcd is killed (SIGKILL, systemd's KillUnit); a
    /// restart then starts it again. A call's own budget (`timeout_ms`) may
    /// shorten it, never lengthen it. At least 1.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u64,
}

/// The default graceful stop: well under a step's timeout.
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 30;

fn default_stop_timeout() -> u64 {
    DEFAULT_STOP_TIMEOUT_SECS
}

impl UnitConfig {
    /// `stop_timeout_secs` as a duration.
    pub fn stop_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.stop_timeout_secs)
    }
}

/// Restart policy of the process backend (systemd's `Restart=` in spirit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Restart etcd when it exits abnormally.
    #[default]
    OnFailure,
    /// Leave it stopped and report the unit as failed.
    Never,
}

fn default_true() -> bool {
    true
}

fn default_restart_delay() -> u64 {
    5
}

impl Default for UnitConfig {
    fn default() -> Self {
        UnitConfig {
            backend: Backend::default(),
            etcd_binary: default_etcd_binary(),
            log_file: None,
            name: default_unit_name(),
            autostart: true,
            restart: Restart::default(),
            restart_delay_secs: default_restart_delay(),
            stop_timeout_secs: default_stop_timeout(),
        }
    }
}

fn default_etcd_binary() -> PathBuf {
    PathBuf::from("/usr/bin/etcd")
}

fn default_unit_name() -> String {
    "etcd.service".to_string()
}

/// The disk probe (ProbeDisk) and where etcd's own disk metrics are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The fdatasync p99 latency, in milliseconds, above which a probe judges
    /// the disk too slow for etcd. etcd's guidance: WAL fsync p99 under 10 ms.
    /// At least 1.
    #[serde(default = "default_fsync_p99_threshold_ms")]
    pub fsync_p99_threshold_ms: u64,
    /// The URL of the member's Prometheus metrics. Default: `etcd.endpoint`
    /// followed by `/metrics` (etcd serves them on its client port). An
    /// `https://` URL is read with the agent's etcd client certificate
    /// (`[etcd.tls]`), as etcd's client port requires with client-certificate
    /// auth; an `http://` listener of etcd's `--listen-metrics-urls` works too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// Seconds between light periodic probes (100 fdatasync'd writes of 2300
    /// bytes beside the data dir, skipped while a ProbeDisk runs), whose
    /// latest result GetStatus and `/metrics` report. 0 turns them off.
    #[serde(default = "default_probe_interval_secs")]
    pub probe_interval_secs: u64,
}

/// etcd's guidance: WAL fsync p99 under 10 ms.
pub const DEFAULT_FSYNC_P99_THRESHOLD_MS: u64 = 10;

/// One light probe a minute.
pub const DEFAULT_PROBE_INTERVAL_SECS: u64 = 60;

fn default_probe_interval_secs() -> u64 {
    DEFAULT_PROBE_INTERVAL_SECS
}

fn default_fsync_p99_threshold_ms() -> u64 {
    DEFAULT_FSYNC_P99_THRESHOLD_MS
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            fsync_p99_threshold_ms: DEFAULT_FSYNC_P99_THRESHOLD_MS,
            metrics_url: None,
            probe_interval_secs: DEFAULT_PROBE_INTERVAL_SECS,
        }
    }
}

/// The tools StageRestore runs (`snapshot restore`, as a child process with
/// an argument vector). etcdutl is preferred when installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// etcd 3.4's `etcdctl` (run with `ETCDCTL_API=3`). Default: `etcdctl`
    /// on the agent's PATH, else `/usr/bin/etcdctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcdctl: Option<PathBuf>,
    /// etcd 3.5+'s `etcdutl`, used instead of etcdctl when present (it can
    /// bump the revision on restore). Default: `etcdutl` on the agent's PATH
    /// when installed; a path set here must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcdutl: Option<PathBuf>,
    /// Seconds one restore may run before the tool is killed (it copies and
    /// hashes the whole database). At least 1.
    #[serde(default = "default_restore_timeout_secs")]
    pub timeout_secs: u64,
}

/// Ten minutes: a few GB copied and hashed on a slow disk.
pub const DEFAULT_RESTORE_TIMEOUT_SECS: u64 = 600;

fn default_restore_timeout_secs() -> u64 {
    DEFAULT_RESTORE_TIMEOUT_SECS
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            etcdctl: None,
            etcdutl: None,
            timeout_secs: DEFAULT_RESTORE_TIMEOUT_SECS,
        }
    }
}

/// The unit backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Process,
    Systemd,
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read agent config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid agent config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "invalid agent config {path}: etcd.endpoint {endpoint:?} must be an http:// or https:// URL with a host and port"
    )]
    Endpoint { path: PathBuf, endpoint: String },
    #[error("invalid agent config {path}: disk.fsync_p99_threshold_ms must be at least 1")]
    Threshold { path: PathBuf },
    #[error(
        "invalid agent config {path}: disk.metrics_url {url:?} must be an http:// or https:// URL with a host and port"
    )]
    MetricsUrl { path: PathBuf, url: String },
    #[error("invalid agent config {path}: restore.timeout_secs must be at least 1")]
    RestoreTimeout { path: PathBuf },
    #[error(
        "invalid agent config {path}: unit.stop_timeout_secs must be at least 1 (etcd gets that long to stop \
         gracefully before it is killed; default {DEFAULT_STOP_TIMEOUT_SECS})"
    )]
    StopTimeout { path: PathBuf },
    #[error(
        "invalid agent config {path}: telemetry.otlp_endpoint {url:?} must be an http:// or https:// URL with a host and port \
         (an OTLP/gRPC receiver, e.g. http://collector:4317)"
    )]
    OtlpEndpoint { path: PathBuf, url: String },
}

impl AgentConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AgentConfig::parse(path, &text)
    }

    /// Parses and validates config text; `path` is for messages only.
    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if !valid_endpoint(&config.etcd.endpoint) {
            return Err(ConfigError::Endpoint {
                path: path.to_path_buf(),
                endpoint: config.etcd.endpoint,
            });
        }
        if config.disk.fsync_p99_threshold_ms == 0 {
            return Err(ConfigError::Threshold {
                path: path.to_path_buf(),
            });
        }
        if let Some(url) = &config.disk.metrics_url
            && !valid_metrics_url(url)
        {
            return Err(ConfigError::MetricsUrl {
                path: path.to_path_buf(),
                url: url.clone(),
            });
        }
        if config.restore.timeout_secs == 0 {
            return Err(ConfigError::RestoreTimeout {
                path: path.to_path_buf(),
            });
        }
        if config.unit.stop_timeout_secs == 0 {
            return Err(ConfigError::StopTimeout {
                path: path.to_path_buf(),
            });
        }
        if let Some(url) = &config.telemetry.otlp_endpoint
            && !valid_metrics_url(url)
        {
            return Err(ConfigError::OtlpEndpoint {
                path: path.to_path_buf(),
                url: url.clone(),
            });
        }
        Ok(config)
    }

    /// The config as TOML text (the sandbox writes agents' configs with it).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn valid_endpoint(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

/// An http(s) URL with a host and port, and any path.
fn valid_metrics_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let origin_len = url.len() - rest.len() + rest.find('/').unwrap_or(rest.len());
    valid_endpoint(&url[..origin_len])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:7443"
[tls]
ca = "/p/ca.crt"
cert = "/p/agent.crt"
key = "/p/agent.key"
[etcd]
endpoint = "http://127.0.0.1:2379"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = AgentConfig::parse(Path::new("a.toml"), MINIMAL).expect("parse");
        assert_eq!(c.etcd.env_file, PathBuf::from("/etc/default/etcd"));
        assert_eq!(c.unit.backend, Backend::Process);
        assert_eq!(c.unit.name, "etcd.service");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/etcdops-agent"));
        assert_eq!(
            AgentConfig::parse(Path::new("a.toml"), &c.to_toml()).expect("round trip"),
            c
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = format!("{MINIMAL}\nlisten_port = 3\n");
        let err = AgentConfig::parse(Path::new("a.toml"), &text).expect_err("unknown key");
        // toml reports where: the key sits after the [etcd] table here.
        assert!(err.to_string().contains("listen_port"), "{err}");
        let text = MINIMAL.replace("[etcd]", "[etcd]\nendpont = \"x\"");
        assert!(
            AgentConfig::parse(Path::new("a.toml"), &text)
                .expect_err("typo")
                .to_string()
                .contains("endpont")
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            "127.0.0.1:2379",
            "http://127.0.0.1",
            "http://:2379",
            "ftp://h:1",
            "http://h:0",
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:2379", bad);
            assert!(
                matches!(
                    AgentConfig::parse(Path::new("a.toml"), &text),
                    Err(ConfigError::Endpoint { .. })
                ),
                "{bad}"
            );
        }
        let text = MINIMAL.replace("127.0.0.1:7443", "nope");
        assert!(matches!(
            AgentConfig::parse(Path::new("a.toml"), &text),
            Err(ConfigError::Parse { .. })
        ));
        let text = format!("{MINIMAL}\n[unit]\nbackend = \"docker\"\n");
        assert!(
            AgentConfig::parse(Path::new("a.toml"), &text)
                .expect_err("backend")
                .to_string()
                .contains("docker")
        );
    }

    #[test]
    fn disk_table_is_optional_checked_and_strict() {
        let c = AgentConfig::parse(Path::new("a.toml"), MINIMAL).expect("parse");
        assert_eq!(
            c.disk,
            DiskConfig {
                fsync_p99_threshold_ms: 10,
                metrics_url: None,
                probe_interval_secs: 60
            }
        );
        assert_eq!(c.metrics_listen, None);

        let text = format!(
            "{MINIMAL}\n[disk]\nfsync_p99_threshold_ms = 25\nmetrics_url = \"http://127.0.0.1:2381/metrics\"\n"
        );
        let c = AgentConfig::parse(Path::new("a.toml"), &text).expect("parse");
        assert_eq!(c.disk.fsync_p99_threshold_ms, 25);
        assert_eq!(
            c.disk.metrics_url.as_deref(),
            Some("http://127.0.0.1:2381/metrics")
        );
        assert_eq!(
            AgentConfig::parse(Path::new("a.toml"), &c.to_toml()).expect("round trip"),
            c
        );

        let text =
            format!("metrics_listen = \"127.0.0.1:9443\"\n{MINIMAL}\n[disk]\nprobe_interval_secs = 0\n");
        let c = AgentConfig::parse(Path::new("a.toml"), &text).expect("parse");
        assert_eq!(
            (c.disk.probe_interval_secs, c.metrics_listen),
            (0, Some(([127, 0, 0, 1], 9443).into()))
        );
        assert_eq!(
            AgentConfig::parse(Path::new("a.toml"), &c.to_toml()).expect("round trip"),
            c
        );

        let text = format!("{MINIMAL}\n[disk]\nfsync_p99_threshold_ms = 0\n");
        assert!(matches!(
            AgentConfig::parse(Path::new("a.toml"), &text),
            Err(ConfigError::Threshold { .. })
        ));
        for bad in [
            "127.0.0.1:2381/metrics",
            "http://127.0.0.1/metrics",
            "http:///metrics",
        ] {
            let text = format!("{MINIMAL}\n[disk]\nmetrics_url = \"{bad}\"\n");
            assert!(
                matches!(
                    AgentConfig::parse(Path::new("a.toml"), &text),
                    Err(ConfigError::MetricsUrl { .. })
                ),
                "{bad}"
            );
        }
        let text = format!("{MINIMAL}\n[disk]\nfsync_p99_threshold = 5\n");
        let err = AgentConfig::parse(Path::new("a.toml"), &text).expect_err("typo");
        assert!(err.to_string().contains("fsync_p99_threshold"), "{err}");
    }

    #[test]
    fn restore_table_is_optional_checked_and_strict() {
        let c = AgentConfig::parse(Path::new("a.toml"), MINIMAL).expect("parse");
        assert_eq!(
            c.restore,
            RestoreConfig {
                etcdctl: None,
                etcdutl: None,
                timeout_secs: 600
            }
        );
        let text = format!(
            "{MINIMAL}\n[restore]\netcdctl = \"/opt/etcd/etcdctl\"\netcdutl = \"/opt/etcd/etcdutl\"\ntimeout_secs = 30\n"
        );
        let c = AgentConfig::parse(Path::new("a.toml"), &text).expect("parse");
        assert_eq!(c.restore.etcdctl.as_deref(), Some(Path::new("/opt/etcd/etcdctl")));
        assert_eq!(c.restore.etcdutl.as_deref(), Some(Path::new("/opt/etcd/etcdutl")));
        assert_eq!(c.restore.timeout_secs, 30);
        assert_eq!(
            AgentConfig::parse(Path::new("a.toml"), &c.to_toml()).expect("round trip"),
            c
        );
        let text = format!("{MINIMAL}\n[restore]\ntimeout_secs = 0\n");
        assert!(matches!(
            AgentConfig::parse(Path::new("a.toml"), &text),
            Err(ConfigError::RestoreTimeout { .. })
        ));
        let text = format!("{MINIMAL}\n[restore]\netcdctl_path = \"x\"\n");
        let err = AgentConfig::parse(Path::new("a.toml"), &text).expect_err("typo");
        assert!(err.to_string().contains("etcdctl_path"), "{err}");
    }

    #[test]
    fn stop_timeout_defaults_to_30_s_and_must_be_positive() {
        let c = AgentConfig::parse(Path::new("a.toml"), MINIMAL).expect("parse");
        assert_eq!(c.unit.stop_timeout(), std::time::Duration::from_secs(30));
        let text = format!("{MINIMAL}\n[unit]\nstop_timeout_secs = 5\n");
        let c = AgentConfig::parse(Path::new("a.toml"), &text).expect("parse");
        assert_eq!(c.unit.stop_timeout_secs, 5);
        assert_eq!(
            AgentConfig::parse(Path::new("a.toml"), &c.to_toml()).expect("round trip"),
            c
        );
        let text = format!("{MINIMAL}\n[unit]\nstop_timeout_secs = 0\n");
        let err = AgentConfig::parse(Path::new("a.toml"), &text).expect_err("zero");
        assert!(
            matches!(err, ConfigError::StopTimeout { .. })
                && err.to_string().contains("unit.stop_timeout_secs"),
            "{err}"
        );
    }

    #[test]
    fn telemetry_is_optional_and_its_endpoint_a_url() {
        let c = AgentConfig::parse(Path::new("a.toml"), MINIMAL).expect("parse");
        assert_eq!(c.telemetry.otlp_endpoint, None);
        assert!(!c.to_toml().contains("[telemetry]"), "{}", c.to_toml());
        let text = format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\n");
        let c = AgentConfig::parse(Path::new("a.toml"), &text).expect("parse");
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(
            AgentConfig::parse(Path::new("a.toml"), &c.to_toml()).expect("round trip"),
            c
        );
        let text = format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"collector:4317\"\n");
        let err = AgentConfig::parse(Path::new("a.toml"), &text).expect_err("no scheme");
        assert!(
            matches!(err, ConfigError::OtlpEndpoint { .. })
                && err.to_string().contains("telemetry.otlp_endpoint"),
            "{err}"
        );
        let text = format!("{MINIMAL}\n[telemetry]\nendpoint = \"http://x:1\"\n");
        let err = AgentConfig::parse(Path::new("a.toml"), &text).expect_err("unknown key");
        assert!(err.to_string().contains("endpoint"), "{err}");
    }
}
