//! The records the journal keeps: an operation, its steps and their states; operation IDs and holders.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::plan::operation::{Operation, RunOptions};
use crate::plan::planner::OpKind;
use time::OffsetDateTime;
use time::macros::format_description;

/// One cluster-wide operation as the journal keeps it: what was asked, by whom, under which fence
/// epoch, and every step's outcome. JSON (`op show -w json`) is this struct as is (OUTPUT.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Unique in the journal: `<kind>-<YYYYMMDDTHHMMSSZ>-<4 hex>` (see [`new_operation_id`]).
    pub id: String,
    /// What the operation does: `defrag`, `restart`, `compact`, `recover-nospace`, `alarm-disarm`, ...
    /// (always `operation`'s kind; kept at the top for readers of `op show -w json`).
    pub kind: OpKind,
    /// The cluster's name in the fleet file.
    pub cluster: String,
    /// The fleet file the operation was planned with.
    pub fleet: PathBuf,
    /// What the operation is and carries (typed, with its kind as the `kind` tag).
    pub operation: Operation,
    /// How it runs: step timeout, slow-disk override.
    pub options: RunOptions,
    /// Who runs it: `user@host (pid N)` (see [`holder`]).
    pub holder: String,
    /// The certificate it runs with (the fleet file's `[tls]`): subject,
    /// serial, role and SHA-256 fingerprint, as the agents' audit trails
    /// record the caller. `None` in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<etcdops_certs::CertDetails>,
    /// The cluster fence epoch the operation holds.
    pub epoch: u64,
    /// Where the operation stands.
    pub state: OpState,
    /// When it was created, Unix seconds.
    pub created_at_unix: i64,
    /// When its record last changed, Unix seconds.
    pub updated_at_unix: i64,
    /// Why it stopped (failed or aborted); `None` while running and on success.
    pub error: Option<String>,
    /// Its steps in the order they run.
    pub steps: Vec<StepRecord>,
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Stable within the operation, so a resumed plan finds it again: e.g. `defrag:etcd2`.
    pub id: String,
    /// What it does, for people: `defragment etcd2`.
    pub description: String,
    /// Where it stands.
    pub state: StepState,
    /// When its latest attempt started, Unix seconds.
    pub started_at_unix: Option<i64>,
    /// When its latest attempt ended, Unix seconds.
    pub finished_at_unix: Option<i64>,
    /// How many times it was started.
    pub attempts: u32,
    /// Its outcome, e.g. `db 251 MB -> 12 MB in 3.1 s`, or why it failed or was skipped.
    pub detail: Option<String>,
    /// The distributed trace of its latest attempt (32 hex digits), when
    /// traces were exported (`OTEL_EXPORTER_OTLP_ENDPOINT`); the agents' log
    /// lines of the step carry the same ID. Left out (JSON and journal)
    /// when there is none, as in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpState {
    /// Started and not finished: being run, or its coordinator died (resume or abort it).
    Running,
    /// Every step done or skipped.
    Succeeded,
    /// Stopped by a failed step or check; `error` says why.
    Failed,
    /// Stopped on request (`etcdops op abort`).
    Aborted,
    /// Stopped on purpose after a step (`--pause-after`), the cluster still
    /// held (its fence kept): `etcdops op resume` continues, `op abort` ends it.
    Paused,
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not started yet.
    Pending,
    /// Started, outcome not recorded (in progress, or its coordinator died).
    Running,
    /// Finished successfully: never redone on resume.
    Done,
    /// Finished unsuccessfully.
    Failed,
    /// Not needed (e.g. the member was already in the wanted state): never redone on resume.
    Skipped,
}

impl OpState {
    /// The name used in tables and JSON: `running`, `succeeded`, `failed`, `aborted`, `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Aborted => "aborted",
            OpState::Paused => "paused",
        }
    }

    /// The operation has ended (anything but `Running` or `Paused`).
    pub fn is_final(self) -> bool {
        !matches!(self, OpState::Running | OpState::Paused)
    }
}

impl StepState {
    /// The name used in tables and JSON: `pending`, `running`, `done`, `failed`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
        }
    }

    /// An attempt of the step has ended (`Done`, `Failed`, `Skipped`).
    pub fn is_final(self) -> bool {
        matches!(self, StepState::Done | StepState::Failed | StepState::Skipped)
    }

    /// Nothing is left to do for the step (`Done` or `Skipped`): a resume passes over it.
    pub fn is_complete(self) -> bool {
        matches!(self, StepState::Done | StepState::Skipped)
    }
}

impl fmt::Display for OpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepRecord {
    /// A step not started yet.
    pub fn pending(id: impl Into<String>, description: impl Into<String>) -> StepRecord {
        StepRecord {
            id: id.into(),
            description: description.into(),
            state: StepState::Pending,
            started_at_unix: None,
            finished_at_unix: None,
            attempts: 0,
            detail: None,
            trace_id: None,
        }
    }
}

impl OperationRecord {
    /// Records the trace of a step's attempt (nothing when there is no such step).
    pub fn set_step_trace_id(&mut self, step_id: &str, trace_id: String) {
        if let Some(step) = self.steps.iter_mut().find(|s| s.id == step_id) {
            step.trace_id = Some(trace_id);
        }
    }

    /// The step with this ID.
    pub fn step(&self, step_id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.id == step_id)
    }

    /// How many steps are complete (done or skipped).
    pub fn steps_complete(&self) -> usize {
        self.steps.iter().filter(|s| s.state.is_complete()).count()
    }

    /// The first step that is not complete: where a resume starts. `None` when all are.
    pub fn next_step(&self) -> Option<&StepRecord> {
        self.steps.iter().find(|s| !s.state.is_complete())
    }
}

/// A new operation ID: `<kind>-<YYYYMMDDTHHMMSSZ>-<4 hex>`, e.g. `defrag-20261125T183000Z-3f9a`.
/// The time is `now` in UTC; the suffix is random enough to tell apart two operations started in
/// the same second (hashed from the clock, the process ID and a counter, no extra crate).
pub fn new_operation_id(kind: &str, now: OffsetDateTime) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stamp = now
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year][month][day]T[hour][minute][second]Z"))
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i128(now.unix_timestamp_nanos());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let suffix = hasher.finish() & 0xffff;
    format!("{kind}-{stamp}-{suffix:04x}")
}

/// Who runs an operation: `user@host (pid N)`. The user from `$USER`, else `$LOGNAME`, else the
/// numeric uid; the host from `/proc/sys/kernel/hostname`.
pub fn holder() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    holder_from(user, host, std::process::id())
}

fn holder_from(user: Option<String>, host: Option<String>, pid: u32) -> String {
    let user = user.unwrap_or_else(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map_or_else(|_| "unknown-user".to_string(), |m| format!("uid {}", m.uid()))
    });
    let host = host
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{user}@{host} (pid {pid})")
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn ids_carry_kind_utc_time_and_a_suffix() {
        let now = datetime!(2026-11-25 19:30:00 +1);
        let id = new_operation_id("defrag", now);
        let (head, suffix) = id.rsplit_once('-').expect("suffix");
        assert_eq!(head, "defrag-20261125T183000Z");
        assert_eq!(suffix.len(), 4);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        // Two IDs in the same second almost never collide.
        let ids: std::collections::HashSet<_> = (0..20).map(|_| new_operation_id("defrag", now)).collect();
        assert!(ids.len() >= 18, "{ids:?}");
    }

    #[test]
    fn holder_names_user_host_and_pid() {
        assert_eq!(
            holder_from(Some("alice".into()), Some("ops1\n".into()), 42),
            "alice@ops1 (pid 42)"
        );
        let h = holder_from(None, None, 7);
        assert!(h.ends_with("@unknown-host (pid 7)"), "{h}");
        assert!(holder().contains(&format!("(pid {})", std::process::id())));
    }

    #[test]
    fn states_serialize_lowercase() {
        assert_eq!(
            serde_json::to_string(&OpState::Succeeded).expect("json"),
            "\"succeeded\""
        );
        assert_eq!(
            serde_json::to_string(&StepState::Skipped).expect("json"),
            "\"skipped\""
        );
        assert_eq!(OpState::Aborted.to_string(), "aborted");
        assert!(StepState::Skipped.is_complete() && !StepState::Failed.is_complete());
        assert!(StepState::Failed.is_final() && !StepState::Running.is_final());
        assert!(!OpState::Running.is_final() && OpState::Failed.is_final());
    }

    #[test]
    fn next_step_passes_over_completed_ones() {
        let mut steps = vec![
            StepRecord::pending("a", "first"),
            StepRecord::pending("b", "second"),
            StepRecord::pending("c", "third"),
        ];
        steps[0].state = StepState::Done;
        steps[1].state = StepState::Skipped;
        let op = OperationRecord {
            id: "x".into(),
            kind: OpKind::AlarmDisarm,
            cluster: "c".into(),
            fleet: PathBuf::from("/f.toml"),
            operation: Operation::AlarmDisarm,
            options: RunOptions::default(),
            holder: "h".into(),
            operator: None,
            epoch: 1,
            state: OpState::Running,
            created_at_unix: 0,
            updated_at_unix: 0,
            error: None,
            steps,
        };
        assert_eq!(op.next_step().map(|s| s.id.as_str()), Some("c"));
        assert_eq!(op.steps_complete(), 2);
        assert_eq!(op.step("b").map(|s| s.state), Some(StepState::Skipped));
    }
}
