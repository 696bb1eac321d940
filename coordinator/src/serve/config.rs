//! `serve.toml`: what `etcdops serve` reads at start-up, and its validation.
//!
//! [`ServeConfig`] is the file as written (TOML, `deny_unknown_fields`, every
//! field documented; `deploy/config/serve.toml` is the documented example).
//! [`ServeConfig::validate`] checks it against the fleet and turns it into
//! [`Validated`]: every job's cron parsed, its time zone resolved, its kind
//! and parameters typed, its windows checked to open. Every refusal is a
//! [`ConfigError`] naming the job or window and the fix; `etcdops serve`
//! exits 2 on one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Deserialize;

use super::schedule::{Schedule, ScheduleError, Window, WindowError};
use crate::duration::{self, DurationError};
use crate::fleet::Fleet;

/// Where `etcdops serve` reads its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/etcdops/serve.toml";

/// The state directory's default: last run times (`serve-state.json`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/etcdops";

/// How long a job waits for a cluster held by another operation, by default.
pub const DEFAULT_FENCE_WAIT: Duration = Duration::from_secs(60);

/// `serve.toml` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The fleet file (clusters, members, agents, the coordinator's TLS files).
    /// Relative paths are relative to this file's directory.
    #[serde(default = "default_fleet")]
    pub fleet: PathBuf,
    /// The operation journal every job run is recorded in (`etcdops op list
    /// --journal PATH` reads it). Default: `<state_dir>/journal.redb`.
    #[serde(default)]
    pub journal: Option<PathBuf>,
    /// Where serve keeps its own state: `serve-state.json`, the last run of
    /// every job (a missed run after downtime runs once, not once per slot).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The `/metrics` listener (Prometheus text format), e.g. `127.0.0.1:9465`.
    /// None: no listener.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The time zone of every schedule and window without its own (IANA
    /// name, e.g. `Europe/Berlin`). Default: UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// How long each agent gets to connect and answer, e.g. `5s`.
    #[serde(default = "default_timeout")]
    pub agent_timeout: String,
    /// How long a job waits for a cluster whose fence another operation
    /// (a person's `etcdops restart`, say) holds; afterwards the run is
    /// journaled as refused, naming the holder. `0s` refuses at once.
    #[serde(default = "default_fence_wait")]
    pub fence_wait: String,
    /// Maintenance windows by name: compact and defrag jobs run only while
    /// one of theirs is open.
    #[serde(default)]
    pub windows: BTreeMap<String, WindowConfig>,
    /// The jobs, each on one cluster of the fleet.
    #[serde(default)]
    pub jobs: Vec<JobConfig>,
    /// `[ha]`: run as one of several replicas electing a leader on the home
    /// etcd (`[home]` of the fleet file), which then also holds the journal
    /// (`journal` above is not used). See `serve/ha.rs`.
    #[serde(default)]
    pub ha: Option<super::ha::HaConfig>,
}

fn default_fleet() -> PathBuf {
    PathBuf::from(crate::fleet::DEFAULT_PATH)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_timeout() -> String {
    "5s".into()
}

fn default_fence_wait() -> String {
    "1m".into()
}

/// A maintenance window: either `when = "Sat 02:00-04:00"` (days `Mon`..`Sun`,
/// a range `Mon-Fri`, a list `Sat,Sun`, or `daily`; the end may be past
/// midnight) or `cron` (when it opens) with `duration` (how long it stays open).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Days and hours, e.g. `Sat 02:00-04:00`, `Mon-Fri 01:00-01:30`, `daily 23:00-01:00`.
    #[serde(default)]
    pub when: Option<String>,
    /// When the window opens, as a cron expression (with `duration`).
    #[serde(default)]
    pub cron: Option<String>,
    /// How long the window stays open after `cron`, e.g. `2h`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Its time zone (IANA name); default: the file's `time_zone`, else UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// One job as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The cluster's name in the fleet file.
    pub cluster: String,
    /// What the job does: `backup`, `compact`, `defrag`, `health`,
    /// `cert-expiry`, `restore-drill` or `housekeeping`.
    pub kind: String,
    /// Its name in metrics and logs (unique per cluster). Default: the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// When it runs: cron with 5 fields (minute precision) or 6 (seconds
    /// first), e.g. `0 * * * *` (hourly) or `*/20 * * * * *` (every 20 s).
    pub schedule: String,
    /// The schedule's time zone (IANA name); default: the file's, else UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// At most this much random delay before each run (spreads load), e.g. `30s`.
    #[serde(default)]
    pub jitter: Option<String>,
    /// Names of `[windows.NAME]`: the job runs only while one is open (a run
    /// due outside them waits for the next opening). Required for compact and defrag.
    #[serde(default)]
    pub windows: Vec<String>,
    /// The kind's parameters (see [`JobParams`]).
    #[serde(default)]
    pub params: toml::Table,
}

/// Why `serve.toml` is refused. `etcdops serve` exits 2 on each.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the serve configuration {path}: {source}; pass --config PATH (default {DEFAULT_PATH})"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the serve configuration {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{what}: {source}")]
    Duration {
        what: String,
        #[source]
        source: DurationError,
    },
    #[error("{what}: unknown time zone {name:?}: use an IANA name such as UTC or Europe/Berlin ({message})")]
    TimeZone {
        what: String,
        name: String,
        message: String,
    },
    #[error("job {job}: cluster {cluster:?} is not in the fleet file {fleet} (its clusters: {known})")]
    UnknownCluster {
        job: String,
        cluster: String,
        fleet: PathBuf,
        known: String,
    },
    #[error(
        "job {job}: unknown job kind {kind:?}; the kinds are backup, compact, defrag, health, cert-expiry, restore-drill, housekeeping"
    )]
    UnknownKind { job: String, kind: String },
    #[error("job {job}: {source}")]
    Schedule {
        job: String,
        #[source]
        source: ScheduleError,
    },
    #[error("window {window}: {source}")]
    Window {
        window: String,
        #[source]
        source: WindowError,
    },
    #[error("job {job}: unknown window {window:?} (defined: {known}); add a [windows.{window}] table")]
    UnknownWindow {
        job: String,
        window: String,
        known: String,
    },
    #[error(
        "job {job}: {kind} changes the cluster and runs only inside maintenance windows: add windows = [\"NAME\"] and a [windows.NAME] table"
    )]
    WindowRequired { job: String, kind: String },
    #[error(
        "job {job}: cluster {cluster} has no backup target: add a [clusters.backup] table with target = \"file:///dir\" or \"s3://bucket/prefix\" to the fleet file"
    )]
    NoBackupTarget { job: String, cluster: String },
    #[error("job {job}: parameters: {message}")]
    Params { job: String, message: String },
    #[error("job {job} is defined twice on cluster {cluster}: give one a name = \"...\"")]
    Duplicate { job: String, cluster: String },
    #[error("the serve configuration has no [[jobs]]: nothing would ever run")]
    NoJobs,
    #[error("{0}")]
    Fleet(String),
}

/// The kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Backup,
    Compact,
    Defrag,
    Health,
    CertExpiry,
    RestoreDrill,
    Housekeeping,
}

impl JobKind {
    /// Every kind, as written in `kind = "..."`.
    pub const ALL: [JobKind; 7] = [
        JobKind::Backup,
        JobKind::Compact,
        JobKind::Defrag,
        JobKind::Health,
        JobKind::CertExpiry,
        JobKind::RestoreDrill,
        JobKind::Housekeeping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Compact => "compact",
            JobKind::Defrag => "defrag",
            JobKind::Health => "health",
            JobKind::CertExpiry => "cert-expiry",
            JobKind::RestoreDrill => "restore-drill",
            JobKind::Housekeeping => "housekeeping",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Changes the cluster's data layout (compaction, defragmentation): runs
    /// only inside maintenance windows.
    pub fn needs_window(self) -> bool {
        matches!(self, JobKind::Compact | JobKind::Defrag)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `backup` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// The member to snapshot; default: a healthy, caught-up follower.
    #[serde(default)]
    pub member: Option<String>,
    /// Skip the cluster's retention policy after the backup (default: apply it).
    #[serde(default)]
    pub no_prune: bool,
}

/// `compact` parameters: exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactParams {
    /// Keep the newest N revisions.
    #[serde(default)]
    pub keep_revisions: Option<u64>,
    /// Keep the revisions of the last span, e.g. `1h`, `2d` (at most the agents' 8 days).
    #[serde(default)]
    pub keep_duration: Option<String>,
}

/// `defrag` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefragParams {
    /// Only members this `--rule` (CEL) selects, e.g. `dbSize - dbSizeInUse > 100 * MB`.
    #[serde(default)]
    pub rule: Option<String>,
    /// Compact the history up to the current revision first.
    #[serde(default)]
    pub compact: bool,
}

/// `cert-expiry` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertExpiryParams {
    /// A certificate expiring within this span fails the job, e.g. `30d` (the default).
    #[serde(default)]
    pub warn_within: Option<String>,
}

/// A job's typed parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum JobParams {
    Backup(BackupParams),
    Compact {
        keep_revisions: Option<u64>,
        keep_duration: Option<Duration>,
    },
    Defrag {
        rule: Option<String>,
        compact: bool,
    },
    Health,
    CertExpiry {
        warn_within: Duration,
    },
    /// `restore-drill`: the newest verified backup (or a named one), restored
    /// into a throwaway etcd on this host within `deadline`.
    RestoreDrill {
        backup: Option<String>,
        deadline: Duration,
    },
    /// `housekeeping`: kept data dir copies and stale downloads pruned by a
    /// count, an age or both (at least one).
    Housekeeping {
        keep: Option<u32>,
        max_age: Option<Duration>,
    },
}

/// `restore-drill` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillParams {
    /// A backup's name in the target; default: the newest verified one.
    #[serde(default)]
    pub backup: Option<String>,
    /// The whole drill's time limit, e.g. `10m` (the default).
    #[serde(default)]
    pub deadline: Option<String>,
}

/// `housekeeping` parameters (at least one of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HousekeepingParams {
    /// Keep the newest this many kept copies (and downloads).
    #[serde(default)]
    pub keep: Option<u32>,
    /// Keep what is younger than this, e.g. `30d`.
    #[serde(default)]
    pub max_age: Option<String>,
}

/// One validated job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub cluster: String,
    pub name: String,
    pub kind: JobKind,
    pub schedule: Schedule,
    pub jitter: Option<Duration>,
    /// Open windows it may run in (empty: any time).
    pub windows: Vec<Window>,
    pub params: JobParams,
}

impl JobSpec {
    /// `cluster/name`: how logs and errors name the job.
    pub fn label(&self) -> String {
        format!("{}/{}", self.cluster, self.name)
    }
}

/// The configuration checked and typed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub fleet_path: PathBuf,
    pub fleet: Fleet,
    pub journal: PathBuf,
    pub state_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub agent_timeout: Duration,
    pub fence_wait: Duration,
    pub jobs: Vec<JobSpec>,
    /// High availability (`[ha]`), checked by `serve::ha` at start-up.
    pub ha: Option<super::ha::HaConfig>,
}

impl ServeConfig {
    /// Reads and parses `path` (no checks against the fleet yet).
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = ServeConfig::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.fleet = base.join(&config.fleet);
        config.state_dir = base.join(&config.state_dir);
        config.journal = config.journal.map(|j| base.join(j));
        Ok(config)
    }

    /// Parses TOML text as if read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<ServeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Loads the fleet file and checks everything against it.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let fleet = Fleet::load(&self.fleet).map_err(|e| ConfigError::Fleet(e.to_string()))?;
        self.validate_with(fleet)
    }

    /// Checks everything against `fleet` (pure: no file is read).
    pub fn validate_with(&self, fleet: Fleet) -> Result<Validated, ConfigError> {
        let default_tz = match &self.time_zone {
            Some(name) => time_zone("time_zone", name)?,
            None => TimeZone::UTC,
        };
        let mut windows = BTreeMap::new();
        for (name, w) in &self.windows {
            let tz = match &w.time_zone {
                Some(tz) => time_zone(&format!("window {name}"), tz)?,
                None => default_tz.clone(),
            };
            let duration = w
                .duration
                .as_deref()
                .map(|d| {
                    duration::parse_span(d).map_err(|source| ConfigError::Duration {
                        what: format!("window {name}: duration"),
                        source,
                    })
                })
                .transpose()?;
            let window =
                Window::new(w.when.as_deref(), w.cron.as_deref(), duration, tz).map_err(|source| {
                    ConfigError::Window {
                        window: name.clone(),
                        source,
                    }
                })?;
            windows.insert(name.clone(), window);
        }
        if self.jobs.is_empty() {
            return Err(ConfigError::NoJobs);
        }
        let mut jobs = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let label = format!(
                "#{} ({}/{})",
                i + 1,
                job.cluster,
                job.name.as_deref().unwrap_or(&job.kind)
            );
            let kind = JobKind::parse(&job.kind).ok_or_else(|| ConfigError::UnknownKind {
                job: label.clone(),
                kind: job.kind.clone(),
            })?;
            if !fleet.clusters.iter().any(|c| c.name == job.cluster) {
                return Err(ConfigError::UnknownCluster {
                    job: label,
                    cluster: job.cluster.clone(),
                    fleet: self.fleet.clone(),
                    known: fleet
                        .clusters
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if kind == JobKind::Backup
                && fleet
                    .clusters
                    .iter()
                    .any(|c| c.name == job.cluster && c.backup.is_none())
            {
                return Err(ConfigError::NoBackupTarget {
                    job: label,
                    cluster: job.cluster.clone(),
                });
            }
            let name = job.name.clone().unwrap_or_else(|| kind.as_str().to_string());
            if !seen.insert((job.cluster.clone(), name.clone())) {
                return Err(ConfigError::Duplicate {
                    job: name,
                    cluster: job.cluster.clone(),
                });
            }
            let tz = match &job.time_zone {
                Some(tz) => time_zone(&format!("job {label}"), tz)?,
                None => default_tz.clone(),
            };
            let schedule = Schedule::parse(&job.schedule, tz).map_err(|source| ConfigError::Schedule {
                job: label.clone(),
                source,
            })?;
            let jitter = job
                .jitter
                .as_deref()
                .map(|j| {
                    duration::parse(j).map_err(|source| ConfigError::Duration {
                        what: format!("job {label}: jitter"),
                        source,
                    })
                })
                .transpose()?;
            let mut job_windows = Vec::new();
            for w in &job.windows {
                let window = windows.get(w).ok_or_else(|| ConfigError::UnknownWindow {
                    job: label.clone(),
                    window: w.clone(),
                    known: if windows.is_empty() {
                        "none".to_string()
                    } else {
                        windows.keys().cloned().collect::<Vec<_>>().join(", ")
                    },
                })?;
                job_windows.push(window.clone());
            }
            if kind.needs_window() && job_windows.is_empty() {
                return Err(ConfigError::WindowRequired {
                    job: label,
                    kind: kind.to_string(),
                });
            }
            let params = params(kind, &job.params).map_err(|message| ConfigError::Params {
                job: label.clone(),
                message,
            })?;
            jobs.push(JobSpec {
                cluster: job.cluster.clone(),
                name,
                kind,
                schedule,
                jitter,
                windows: job_windows,
                params,
            });
        }
        let parse = |what: &str, text: &str| {
            duration::parse(text).map_err(|source| ConfigError::Duration {
                what: what.to_string(),
                source,
            })
        };
        let fence_wait = if self.fence_wait.trim() == "0s" || self.fence_wait.trim() == "0" {
            Duration::ZERO
        } else {
            parse("fence_wait", &self.fence_wait)?
        };
        Ok(Validated {
            fleet_path: self.fleet.clone(),
            fleet,
            journal: self
                .journal
                .clone()
                .unwrap_or_else(|| self.state_dir.join("journal.redb")),
            state_dir: self.state_dir.clone(),
            metrics_listen: self.metrics_listen,
            agent_timeout: parse("agent_timeout", &self.agent_timeout)?,
            fence_wait,
            jobs,
            ha: self.ha.clone(),
        })
    }
}

fn time_zone(what: &str, name: &str) -> Result<TimeZone, ConfigError> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|e| ConfigError::TimeZone {
        what: what.to_string(),
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// A kind's parameters, typed; the message names the bad field.
fn params(kind: JobKind, table: &toml::Table) -> Result<JobParams, String> {
    fn typed<T: for<'de> Deserialize<'de>>(table: &toml::Table) -> Result<T, String> {
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string().trim().replace('\n', " "))
    }
    let none = |kind: JobKind| {
        if table.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{kind} takes no parameters (found {})",
                table.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        }
    };
    Ok(match kind {
        JobKind::Backup => JobParams::Backup(typed(table)?),
        JobKind::Compact => {
            let p: CompactParams = typed(table)?;
            let keep_duration = p
                .keep_duration
                .as_deref()
                .map(duration::parse_span)
                .transpose()
                .map_err(|e| format!("keep_duration: {e}"))?;
            match (p.keep_revisions, keep_duration) {
                (Some(0), _) => return Err("keep_revisions must be at least 1".into()),
                (Some(_), Some(_)) | (None, None) => {
                    return Err(
                        "compact needs exactly one of keep_revisions = N or keep_duration = \"1h\"".into(),
                    );
                }
                (keep_revisions, keep_duration) => JobParams::Compact {
                    keep_revisions,
                    keep_duration,
                },
            }
        }
        JobKind::Defrag => {
            let p: DefragParams = typed(table)?;
            if let Some(rule) = &p.rule {
                crate::plan::rule::Rule::parse(rule).map_err(|e| format!("rule: {e}"))?;
            }
            JobParams::Defrag {
                rule: p.rule,
                compact: p.compact,
            }
        }
        JobKind::Health => {
            none(kind)?;
            JobParams::Health
        }
        JobKind::CertExpiry => {
            let p: CertExpiryParams = typed(table)?;
            let warn_within = p
                .warn_within
                .as_deref()
                .map(duration::parse_span)
                .transpose()
                .map_err(|e| format!("warn_within: {e}"))?
                .unwrap_or(Duration::from_secs(30 * 24 * 3600));
            JobParams::CertExpiry { warn_within }
        }
        JobKind::RestoreDrill => {
            let p: DrillParams = typed(table)?;
            let deadline = p
                .deadline
                .as_deref()
                .map(duration::parse_span)
                .transpose()
                .map_err(|e| format!("deadline: {e}"))?
                .unwrap_or(Duration::from_secs(600));
            JobParams::RestoreDrill {
                backup: p.backup,
                deadline,
            }
        }
        JobKind::Housekeeping => {
            let p: HousekeepingParams = typed(table)?;
            let max_age = p
                .max_age
                .as_deref()
                .map(duration::parse_span)
                .transpose()
                .map_err(|e| format!("max_age: {e}"))?;
            if p.keep.is_none() && max_age.is_none() {
                return Err(
                    "set keep, max_age or both: housekeeping never removes anything without a rule".into(),
                );
            }
            JobParams::Housekeeping {
                keep: p.keep,
                max_age,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = "[tls]\nca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\n\
        [[clusters]]\nname = \"prod-a\"\n[clusters.backup]\ntarget = \"file:///var/backups/etcd\"\nkeep_last = 3\n\
        [[clusters.members]]\nname = \"e1\"\nagent = \"https://127.0.0.1:1\"\n\
        [[clusters]]\nname = \"dev\"\n[[clusters.members]]\nname = \"e1\"\nagent = \"https://127.0.0.1:2\"\n";

    fn fleet() -> Fleet {
        Fleet::parse(FLEET, Path::new("/etc/etcdops/fleet.toml")).expect("fleet")
    }

    fn check(text: &str) -> Result<Validated, ConfigError> {
        ServeConfig::parse(text, Path::new("/etc/etcdops/serve.toml"))?.validate_with(fleet())
    }

    const GOOD: &str = r#"
fleet = "fleet.toml"
metrics_listen = "127.0.0.1:9465"
fence_wait = "30s"

[windows.weekend]
when = "Sat,Sun 02:00-04:00"

[windows.nightly]
cron = "0 1 * * *"
duration = "90m"
time_zone = "Europe/Berlin"

[[jobs]]
cluster = "prod-a"
kind = "backup"
schedule = "0 * * * *"
jitter = "30s"

[[jobs]]
cluster = "prod-a"
kind = "defrag"
schedule = "*/10 * * * *"
windows = ["weekend", "nightly"]
params = { rule = "dbSize - dbSizeInUse > 100 * MB", compact = true }

[[jobs]]
cluster = "prod-a"
kind = "compact"
schedule = "30 * * * *"
windows = ["nightly"]
params = { keep_duration = "1h" }

[[jobs]]
cluster = "prod-a"
kind = "health"
name = "health-fast"
schedule = "*/15 * * * * *"
time_zone = "America/New_York"

[[jobs]]
cluster = "prod-a"
kind = "cert-expiry"
schedule = "0 6 * * *"
params = { warn_within = "14d" }

[[jobs]]
cluster = "prod-a"
kind = "restore-drill"
schedule = "0 3 * * SUN"
params = { deadline = "15m" }
"#;

    #[test]
    fn the_documented_shapes_validate() {
        let v = check(GOOD).expect("valid");
        assert_eq!(v.jobs.len(), 6);
        assert_eq!(v.fence_wait, Duration::from_secs(30));
        assert_eq!(v.agent_timeout, Duration::from_secs(5));
        assert_eq!(v.journal, PathBuf::from("/var/lib/etcdops/journal.redb"));
        let defrag = &v.jobs[1];
        assert_eq!(defrag.kind, JobKind::Defrag);
        assert_eq!(defrag.windows.len(), 2);
        assert_eq!(
            defrag.params,
            JobParams::Defrag {
                rule: Some("dbSize - dbSizeInUse > 100 * MB".into()),
                compact: true
            }
        );
        assert_eq!(v.jobs[3].name, "health-fast");
        assert_eq!(v.jobs[0].jitter, Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_shipped_example_validates() {
        let text = include_str!("../../../deploy/config/serve.toml");
        let config = ServeConfig::parse(text, Path::new("serve.toml")).expect("parses");
        config.validate_with(fleet()).expect("valid");
    }

    fn err(text: &str) -> String {
        check(text).expect_err("refused").to_string()
    }

    #[test]
    fn start_up_errors_name_the_job_and_the_fix() {
        let job = |extra: &str| {
            format!("[[jobs]]\ncluster = \"prod-a\"\nkind = \"backup\"\nschedule = \"0 * * * *\"\n{extra}")
        };
        let e = err("[[jobs]]\ncluster = \"prod-b\"\nkind = \"backup\"\nschedule = \"0 * * * *\"\n");
        assert!(
            e.contains("\"prod-b\" is not in the fleet") && e.contains("prod-a"),
            "{e}"
        );
        let e = err("[[jobs]]\ncluster = \"dev\"\nkind = \"backup\"\nschedule = \"0 * * * *\"\n");
        assert!(e.contains("cluster dev has no backup target"), "{e}");
        let e = err("[[jobs]]\ncluster = \"prod-a\"\nkind = \"reboot\"\nschedule = \"0 * * * *\"\n");
        assert!(
            e.contains("unknown job kind \"reboot\"") && e.contains("backup, compact"),
            "{e}"
        );
        let e = err("[[jobs]]\ncluster = \"prod-a\"\nkind = \"backup\"\nschedule = \"61 * * * *\"\n");
        assert!(
            e.contains("#1 (prod-a/backup)") && e.contains("61 * * * *"),
            "{e}"
        );
        let e = err(&job("time_zone = \"Mars/Olympus\""));
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        let e = err(&job("jitter = \"5\""));
        assert!(e.contains("jitter") && e.contains("no unit"), "{e}");
        let e = err(&job("params = { member = 3 }"));
        assert!(e.contains("parameters") && e.contains("member"), "{e}");
        let e = err(&job("params = { nope = true }"));
        assert!(e.contains("nope"), "{e}");
        let e = err(&job("windows = [\"w\"]"));
        assert!(
            e.contains("unknown window \"w\"") && e.contains("[windows.w]"),
            "{e}"
        );
        let e = err(&format!("{}{}", job(""), job("")));
        assert!(e.contains("defined twice"), "{e}");
        let e = err("[[jobs]]\ncluster = \"prod-a\"\nkind = \"defrag\"\nschedule = \"0 * * * *\"\n");
        assert!(e.contains("only inside maintenance windows"), "{e}");
        let e = err(
            "[[jobs]]\ncluster = \"prod-a\"\nkind = \"compact\"\nschedule = \"0 * * * *\"\nwindows = [\"w\"]\n\
             [windows.w]\nwhen = \"daily 01:00-02:00\"\n",
        );
        assert!(e.contains("exactly one of keep_revisions"), "{e}");
        let e = err("bogus = 1\n");
        assert!(e.contains("unknown field") && e.contains("bogus"), "{e}");
        assert!(err("").contains("no [[jobs]]"));
        let e = err(&format!(
            "[windows.never]\ncron = \"0 0 30 2 *\"\nduration = \"1h\"\n{}",
            job("")
        ));
        assert!(e.contains("window never") && e.contains("never opens"), "{e}");
        let e = err(&format!("[windows.w]\nwhen = \"Sat 02:00-02:00\"\n{}", job("")));
        assert!(e.contains("window w") && e.contains("never opens"), "{e}");
    }

    #[test]
    fn every_kind_parses_and_names_itself() {
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert!(JobKind::Defrag.needs_window() && !JobKind::Backup.needs_window());
    }
}
