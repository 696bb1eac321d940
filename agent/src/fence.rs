//! Fencing: one writer per cluster. Per cluster name the agent records the
//! highest epoch it has seen and which operation holds the fence, persisted
//! in `<state_dir>/fences.json`. The decisions ([`decide_acquire`],
//! [`decide_release`], [`decide_check`]) are pure; [`FenceStore`] persists
//! their outcome and keeps the record of completed calls ([`CallLog`],
//! persisted in `<state_dir>/calls.json` so it survives an agent restart) and
//! of calls whose work is still running ([`Running`], memory only), which
//! answer retries without acting twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file in the state dir.
pub const FENCES_FILE: &str = "fences.json";
/// The record of completed calls in the state dir.
pub const CALLS_FILE: &str = "calls.json";
/// How many completed calls are remembered for retries.
pub const CALL_LOG_CAPACITY: usize = 1024;
/// At most this many bytes of recorded answers and messages (the oldest
/// calls are forgotten first), so the file stays small.
pub const CALL_LOG_MAX_BYTES: usize = 4 << 20;
/// The file format's version (of both files).
const SCHEMA_VERSION: u32 = 1;

/// A cluster's fence as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceRecord {
    pub cluster: String,
    /// The highest epoch seen for the cluster.
    pub epoch: u64,
    /// True while an operation holds it.
    pub held: bool,
    /// The holding (or last) operation, its kind and who ran it.
    pub operation_id: String,
    pub operation_kind: String,
    pub holder: String,
    /// When it was acquired (seconds since the Unix epoch, UTC).
    pub acquired_at_unix: i64,
}

impl FenceRecord {
    /// "operation OP (KIND) of HOLDER, held since T, epoch E" for messages.
    fn describe(&self) -> String {
        format!(
            "operation {} ({}) of {}, {} since {} (unix {}), epoch {}",
            self.operation_id,
            if self.operation_kind.is_empty() {
                "unknown kind"
            } else {
                &self.operation_kind
            },
            if self.holder.is_empty() {
                "an unnamed holder"
            } else {
                &self.holder
            },
            if self.held { "held" } else { "released; acquired" },
            utc(self.acquired_at_unix),
            self.acquired_at_unix,
            self.epoch,
        )
    }
}

fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The fence a call carries (the domain form of `pb::Fence`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceToken {
    pub cluster: String,
    pub epoch: u64,
    pub operation_id: String,
    /// The step of the operation; empty means no deduplication.
    pub step: String,
}

impl FenceToken {
    /// Checks the fields: cluster and operation_id non-empty, epoch above 0.
    pub fn new(cluster: &str, epoch: u64, operation_id: &str, step: &str) -> Result<FenceToken, FenceError> {
        if cluster.trim().is_empty() {
            return Err(FenceError::InvalidField {
                field: "fence.cluster",
                reason: "required: the cluster's name in the fleet file",
            });
        }
        if operation_id.trim().is_empty() {
            return Err(FenceError::InvalidField {
                field: "fence.operation_id",
                reason: "required: the operation holding the fence",
            });
        }
        if epoch == 0 {
            return Err(FenceError::InvalidField {
                field: "fence.epoch",
                reason: "must be above 0",
            });
        }
        Ok(FenceToken {
            cluster: cluster.to_string(),
            epoch,
            operation_id: operation_id.to_string(),
            step: step.to_string(),
        })
    }
}

/// An AcquireFence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    pub token: FenceToken,
    pub holder: String,
    pub operation_kind: String,
    pub takeover: bool,
}

/// Why a fence decision refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(
        "fence: required: mutating calls must come from an etcdops operation holding the cluster's fence"
    )]
    Missing,
    #[error("{field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error(
        "the fence of cluster {cluster} is held by {}: wait for it to finish, or if its coordinator is gone: \
         `etcdops op abort {}` / resume with --takeover",
        current.describe(), current.operation_id
    )]
    Held {
        cluster: String,
        current: Box<FenceRecord>,
    },
    #[error("epoch {epoch} is not above the recorded epoch {recorded} for cluster {cluster} ({})", current.describe())]
    StaleEpoch {
        cluster: String,
        epoch: u64,
        recorded: u64,
        current: Box<FenceRecord>,
    },
    #[error(
        "operation {operation_id} at epoch {epoch} does not hold the fence of cluster {cluster}: it is {} \
         (a stale coordinator? acquire the fence again, or resume with --takeover)",
        current.as_ref().map_or_else(|| "not recorded on this agent".to_string(), |c| c.describe())
    )]
    NotHolder {
        cluster: String,
        operation_id: String,
        epoch: u64,
        current: Option<Box<FenceRecord>>,
    },
    #[error(
        "fence file {path}: {reason}; fix or move the file aside (the agent never resets fences silently)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "call record {path}: {reason}; fix or move the file aside (the agent never forgets answered calls \
         silently: a retried call would act twice)"
    )]
    CallsCorrupt { path: PathBuf, reason: String },
    #[error("fence file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FenceError {
    /// The gRPC code: the one mapping of fence errors.
    pub fn code(&self) -> tonic::Code {
        match self {
            FenceError::Missing | FenceError::InvalidField { .. } => tonic::Code::InvalidArgument,
            FenceError::Held { .. } | FenceError::NotHolder { .. } => tonic::Code::FailedPrecondition,
            FenceError::StaleEpoch { .. } => tonic::Code::Aborted,
            FenceError::Corrupt { .. } | FenceError::CallsCorrupt { .. } | FenceError::Io { .. } => {
                tonic::Code::Internal
            }
        }
    }
}

impl From<FenceError> for tonic::Status {
    fn from(e: FenceError) -> tonic::Status {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// AcquireFence: the new record, or why not. Grants when the fence is free
/// and the epoch above the recorded one; when the same operation holds it
/// and the epoch is not below (a resume); when another operation holds it
/// only with `takeover` and an epoch above the recorded one.
pub fn decide_acquire(
    current: Option<&FenceRecord>,
    req: &AcquireRequest,
    now_unix: i64,
) -> Result<FenceRecord, FenceError> {
    let t = &req.token;
    let granted = |acquired_at_unix| FenceRecord {
        cluster: t.cluster.clone(),
        epoch: t.epoch,
        held: true,
        operation_id: t.operation_id.clone(),
        operation_kind: req.operation_kind.clone(),
        holder: req.holder.clone(),
        acquired_at_unix,
    };
    let Some(cur) = current else {
        return Ok(granted(now_unix));
    };
    let stale = || FenceError::StaleEpoch {
        cluster: t.cluster.clone(),
        epoch: t.epoch,
        recorded: cur.epoch,
        current: Box::new(cur.clone()),
    };
    match (cur.held, cur.operation_id == t.operation_id) {
        (false, _) if t.epoch > cur.epoch => Ok(granted(now_unix)),
        (false, _) => Err(stale()),
        // A resumed operation: the epoch may stay or rise; it keeps its start time.
        (true, true) if t.epoch >= cur.epoch => Ok(granted(cur.acquired_at_unix)),
        (true, true) => Err(stale()),
        (true, false) if !req.takeover => Err(FenceError::Held {
            cluster: t.cluster.clone(),
            current: Box::new(cur.clone()),
        }),
        (true, false) if t.epoch > cur.epoch => Ok(granted(now_unix)),
        (true, false) => Err(stale()),
    }
}

/// ReleaseFence: the record with `held = false` (epoch kept); releasing a
/// fence this operation already released is fine.
pub fn decide_release(current: Option<&FenceRecord>, token: &FenceToken) -> Result<FenceRecord, FenceError> {
    match current {
        Some(cur) if cur.operation_id == token.operation_id && cur.epoch == token.epoch => Ok(FenceRecord {
            held: false,
            ..cur.clone()
        }),
        _ => Err(not_holder(current, token)),
    }
}

/// A mutating call: its fence must match the held record exactly.
pub fn decide_check(current: Option<&FenceRecord>, token: &FenceToken) -> Result<(), FenceError> {
    match current {
        Some(cur) if cur.held && cur.operation_id == token.operation_id && cur.epoch == token.epoch => Ok(()),
        _ => Err(not_holder(current, token)),
    }
}

fn not_holder(current: Option<&FenceRecord>, token: &FenceToken) -> FenceError {
    FenceError::NotHolder {
        cluster: token.cluster.clone(),
        operation_id: token.operation_id.clone(),
        epoch: token.epoch,
        current: current.map(|c| Box::new(c.clone())),
    }
}

/// Identifies a call for deduplication: (operation_id, step, method).
pub type CallKey = (String, String, String);

/// How a call ended, as recorded for its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Its encoded answer: every retry gets it.
    Answer(Vec<u8>),
    /// A failure its caller never received (the caller had gone, the work
    /// went on): the first retry gets it, later ones run for real.
    Failure { code: tonic::Code, message: String },
}

/// A call whose work is still running: its outcome, once there is one.
pub type Running = tokio::sync::watch::Receiver<Option<CallOutcome>>;

impl CallOutcome {
    /// Its size as counted against [`CALL_LOG_MAX_BYTES`].
    fn bytes(&self) -> usize {
        match self {
            CallOutcome::Answer(b) => b.len(),
            CallOutcome::Failure { message, .. } => message.len(),
        }
    }
}

/// The outcomes of the last completed calls, oldest dropped first: at most
/// `capacity` calls and `max_bytes` of outcomes.
#[derive(Debug)]
pub struct CallLog {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<CallKey>,
    answers: HashMap<CallKey, CallOutcome>,
}

impl CallLog {
    pub fn new(capacity: usize) -> CallLog {
        CallLog::bounded(capacity, CALL_LOG_MAX_BYTES)
    }

    pub fn bounded(capacity: usize, max_bytes: usize) -> CallLog {
        CallLog {
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            answers: HashMap::new(),
        }
    }

    /// The recorded outcome of this call, if it completed.
    pub fn get(&self, key: &CallKey) -> Option<&CallOutcome> {
        self.answers.get(key)
    }

    /// The outcome a retry of this call gets: an answer stays recorded, a
    /// failure is told once and forgotten.
    pub fn take(&mut self, key: &CallKey) -> Option<CallOutcome> {
        match self.answers.get(key)? {
            CallOutcome::Answer(_) => self.answers.get(key).cloned(),
            CallOutcome::Failure { .. } => {
                self.order.retain(|k| k != key);
                let removed = self.answers.remove(key);
                self.bytes -= removed.as_ref().map_or(0, CallOutcome::bytes);
                removed
            }
        }
    }

    /// Records a completed call's outcome.
    pub fn insert(&mut self, key: CallKey, outcome: CallOutcome) {
        self.bytes += outcome.bytes();
        if let Some(old) = self.answers.insert(key.clone(), outcome) {
            self.bytes -= old.bytes();
        } else {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity || (self.bytes > self.max_bytes && self.order.len() > 1) {
            if let Some(old) = self.order.pop_front() {
                self.bytes -= self.answers.remove(&old).as_ref().map_or(0, CallOutcome::bytes);
            }
        }
    }

    /// The calls oldest first, as the file keeps them.
    fn to_file(&self) -> CallsFile {
        let calls = self
            .order
            .iter()
            .filter_map(|key| {
                let outcome = match self.answers.get(key)? {
                    CallOutcome::Answer(bytes) => StoredOutcome::Answer {
                        hex: hex::encode(bytes),
                    },
                    CallOutcome::Failure { code, message } => StoredOutcome::Failure {
                        code: *code as i32,
                        message: message.clone(),
                    },
                };
                Some(StoredCall {
                    operation_id: key.0.clone(),
                    step: key.1.clone(),
                    method: key.2.clone(),
                    outcome,
                })
            })
            .collect();
        CallsFile {
            version: SCHEMA_VERSION,
            calls,
        }
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// The on-disk form of the record of completed calls (`calls.json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallsFile {
    version: u32,
    /// Oldest first.
    calls: Vec<StoredCall>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCall {
    operation_id: String,
    step: String,
    method: String,
    outcome: StoredOutcome,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum StoredOutcome {
    /// The encoded answer, hex.
    Answer { hex: String },
    /// A failure not delivered yet: its gRPC code and message.
    Failure { code: i32, message: String },
}

/// The on-disk form of the fences.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceFile {
    version: u32,
    fences: Vec<FenceRecord>,
}

/// The fences, persisted; the record of completed and running calls; and
/// the one lock that serialises mutating calls.
#[derive(Debug)]
pub struct FenceStore {
    path: PathBuf,
    calls_path: PathBuf,
    records: tokio::sync::Mutex<BTreeMap<String, FenceRecord>>,
    calls: std::sync::Mutex<Calls>,
    /// Serialises writes of `calls.json` (each writes the latest log).
    calls_write: tokio::sync::Mutex<()>,
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// Completed calls and the ones whose work still runs.
#[derive(Debug)]
struct Calls {
    log: CallLog,
    running: HashMap<CallKey, Running>,
}

impl FenceStore {
    /// Loads `<state_dir>/fences.json` and `<state_dir>/calls.json` (none
    /// yet: no fences, no recorded calls). A file that cannot be read or
    /// parsed is an error naming it, never a reset.
    pub fn load(state_dir: &Path) -> Result<FenceStore, FenceError> {
        let path = state_dir.join(FENCES_FILE);
        let records = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(FenceError::Io { path, source }),
        };
        let calls_path = state_dir.join(CALLS_FILE);
        let log = match std::fs::read(&calls_path) {
            Ok(bytes) => parse_calls(&calls_path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CallLog::new(CALL_LOG_CAPACITY),
            Err(source) => {
                return Err(FenceError::Io {
                    path: calls_path,
                    source,
                });
            }
        };
        Ok(FenceStore {
            path,
            calls_path,
            records: tokio::sync::Mutex::new(records),
            calls: std::sync::Mutex::new(Calls {
                log,
                running: HashMap::new(),
            }),
            calls_write: tokio::sync::Mutex::new(()),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every recorded fence, by cluster name.
    pub async fn all(&self) -> Vec<FenceRecord> {
        self.records.lock().await.values().cloned().collect()
    }

    pub async fn acquire(&self, req: &AcquireRequest) -> Result<FenceRecord, FenceError> {
        let mut records = self.records.lock().await;
        let record = decide_acquire(records.get(&req.token.cluster), req, now_unix())?;
        self.store(&mut records, record.clone()).await?;
        Ok(record)
    }

    pub async fn release(&self, token: &FenceToken) -> Result<FenceRecord, FenceError> {
        let mut records = self.records.lock().await;
        let record = decide_release(records.get(&token.cluster), token)?;
        if records.get(&token.cluster) != Some(&record) {
            self.store(&mut records, record.clone()).await?;
        }
        Ok(record)
    }

    pub async fn check(&self, token: &FenceToken) -> Result<(), FenceError> {
        decide_check(self.records.lock().await.get(&token.cluster), token)
    }

    /// The lock every mutating call holds while it runs (one writer).
    pub async fn writer(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }

    /// The writer lock for work that outlives its call (held by its task).
    pub async fn writer_owned(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writer.clone().lock_owned().await
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The outcome a retry of a completed call gets (see [`CallLog::take`]);
    /// a failure told now is forgotten on disk too.
    pub async fn recorded(&self, key: &CallKey) -> Option<CallOutcome> {
        let outcome = self.calls().log.take(key);
        if matches!(outcome, Some(CallOutcome::Failure { .. })) {
            self.persist_calls().await;
        }
        outcome
    }

    /// Records a completed call, on disk before it returns (so the answer
    /// its caller gets is one a retry after an agent restart gets too).
    pub async fn record(&self, key: CallKey, outcome: CallOutcome) {
        self.calls().log.insert(key, outcome);
        self.persist_calls().await;
    }

    /// Writes the record of completed calls as it is now. A failed write is
    /// logged, not returned: the call it follows has acted, and memory still
    /// answers its retries until the agent restarts.
    async fn persist_calls(&self) {
        let _one_at_a_time = self.calls_write.lock().await;
        let file = self.calls().log.to_file();
        let path = self.calls_path.clone();
        let written = match serde_json::to_vec(&file) {
            Ok(bytes) => tokio::task::spawn_blocking(move || crate::statefile::write_atomic(&path, &bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(e) => Err(e.into()),
        };
        if let Err(error) = written {
            tracing::error!(
                path = %self.calls_path.display(), %error,
                "could not persist the record of completed calls: a retry after an agent restart may act again"
            );
        }
    }

    /// The call's work, when it is still running.
    pub fn running(&self, key: &CallKey) -> Option<Running> {
        self.calls().running.get(key).cloned()
    }

    /// Marks the call's work as running: retries wait for its outcome.
    pub fn begin(&self, key: CallKey) -> tokio::sync::watch::Sender<Option<CallOutcome>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.calls().running.insert(key, rx);
        tx
    }

    /// The call's work ended: records the outcome (an answer always; a
    /// failure only when nobody waits for it, so the next retry learns it)
    /// and hands it to whoever waits.
    pub async fn finish(
        &self,
        key: CallKey,
        outcome: CallOutcome,
        tx: &tokio::sync::watch::Sender<Option<CallOutcome>>,
    ) {
        let recorded = {
            let mut calls = self.calls();
            calls.running.remove(&key);
            let waited_for = tx.receiver_count() > 0;
            let recorded = matches!(outcome, CallOutcome::Answer(_)) || !waited_for;
            if recorded {
                calls.log.insert(key, outcome.clone());
            }
            recorded
        };
        if recorded {
            self.persist_calls().await;
        }
        tx.send_replace(Some(outcome));
    }

    /// Forgets a running call whose work ended without an outcome (its task
    /// panicked): retries then run for real.
    pub fn abandon(&self, key: &CallKey) {
        self.calls().running.remove(key);
    }

    /// Writes the map with `record` in it, then updates memory.
    async fn store(
        &self,
        records: &mut BTreeMap<String, FenceRecord>,
        record: FenceRecord,
    ) -> Result<(), FenceError> {
        let mut next = records.clone();
        next.insert(record.cluster.clone(), record);
        let file = FenceFile {
            version: SCHEMA_VERSION,
            fences: next.values().cloned().collect(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| FenceError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::statefile::write_atomic(&path, &text))
            .await
            .map_err(|e| FenceError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| FenceError::Io {
                path: self.path.clone(),
                source,
            })?;
        *records = next;
        Ok(())
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, FenceRecord>, FenceError> {
    let corrupt = |reason: String| FenceError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: FenceFile =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a fence file: {e}")))?;
    if file.version != SCHEMA_VERSION {
        return Err(corrupt(format!(
            "version {} is not {SCHEMA_VERSION} (written by another agent version?)",
            file.version
        )));
    }
    let mut records = BTreeMap::new();
    for record in file.fences {
        if let Some(dup) = records.insert(record.cluster.clone(), record) {
            return Err(corrupt(format!("cluster {} appears twice", dup.cluster)));
        }
    }
    Ok(records)
}

fn parse_calls(path: &Path, bytes: &[u8]) -> Result<CallLog, FenceError> {
    let corrupt = |reason: String| FenceError::CallsCorrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: CallsFile =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a call record: {e}")))?;
    if file.version != SCHEMA_VERSION {
        return Err(corrupt(format!(
            "version {} is not {SCHEMA_VERSION} (written by another agent version?)",
            file.version
        )));
    }
    let mut log = CallLog::new(CALL_LOG_CAPACITY);
    for (i, call) in file.calls.into_iter().enumerate() {
        let outcome = match call.outcome {
            StoredOutcome::Answer { hex } => CallOutcome::Answer(
                hex::decode(&hex).map_err(|e| corrupt(format!("call {i}: answer is not hex: {e}")))?,
            ),
            StoredOutcome::Failure { code, message } if (0..=16).contains(&code) => CallOutcome::Failure {
                code: tonic::Code::from(code),
                message,
            },
            StoredOutcome::Failure { code, .. } => {
                return Err(corrupt(format!("call {i}: {code} is not a gRPC status code")));
            }
        };
        log.insert((call.operation_id, call.step, call.method), outcome);
    }
    Ok(log)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(op: &str, epoch: u64) -> FenceToken {
        FenceToken::new("c1", epoch, op, "").expect("token")
    }

    fn record(op: &str, epoch: u64, held: bool) -> FenceRecord {
        FenceRecord {
            cluster: "c1".into(),
            epoch,
            held,
            operation_id: op.into(),
            operation_kind: "defrag".into(),
            holder: "alice@ops1".into(),
            acquired_at_unix: 100,
        }
    }

    fn acquire(op: &str, epoch: u64, takeover: bool) -> AcquireRequest {
        AcquireRequest {
            token: token(op, epoch),
            holder: "bob@ops2".into(),
            operation_kind: "restart".into(),
            takeover,
        }
    }

    #[test]
    fn token_fields_are_required_and_named() {
        for (cluster, epoch, op, field) in [
            ("", 1, "op", "fence.cluster"),
            ("c", 0, "op", "fence.epoch"),
            ("c", 1, " ", "fence.operation_id"),
        ] {
            let err = FenceToken::new(cluster, epoch, op, "").expect_err("invalid");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }

    #[test]
    fn acquire_decisions() {
        use tonic::Code::{Aborted, FailedPrecondition};
        // (current, request, Ok(epoch, acquired_at) or Err(code))
        type Row = (
            Option<FenceRecord>,
            AcquireRequest,
            Result<(u64, i64), tonic::Code>,
        );
        let table: Vec<Row> = vec![
            (None, acquire("b", 1, false), Ok((1, 500))),
            (Some(record("a", 5, false)), acquire("b", 6, false), Ok((6, 500))),
            (Some(record("a", 5, false)), acquire("b", 5, false), Err(Aborted)),
            (Some(record("a", 5, false)), acquire("a", 5, false), Err(Aborted)),
            (Some(record("a", 5, false)), acquire("b", 4, true), Err(Aborted)),
            // Resume: same operation, epoch equal or higher, start time kept.
            (Some(record("b", 5, true)), acquire("b", 5, false), Ok((5, 100))),
            (Some(record("b", 5, true)), acquire("b", 7, false), Ok((7, 100))),
            (Some(record("b", 5, true)), acquire("b", 4, false), Err(Aborted)),
            // Another operation holds it.
            (
                Some(record("a", 5, true)),
                acquire("b", 6, false),
                Err(FailedPrecondition),
            ),
            (
                Some(record("a", 5, true)),
                acquire("b", 9, false),
                Err(FailedPrecondition),
            ),
            (Some(record("a", 5, true)), acquire("b", 6, true), Ok((6, 500))),
            (Some(record("a", 5, true)), acquire("b", 5, true), Err(Aborted)),
        ];
        for (i, (current, req, want)) in table.into_iter().enumerate() {
            let got = decide_acquire(current.as_ref(), &req, 500);
            match (got, want) {
                (Ok(r), Ok((epoch, at))) => {
                    assert_eq!(
                        (r.epoch, r.acquired_at_unix, r.held),
                        (epoch, at, true),
                        "row {i}"
                    );
                    assert_eq!(
                        (r.operation_id.as_str(), r.holder.as_str()),
                        (req.token.operation_id.as_str(), "bob@ops2")
                    );
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "row {i}: {e}"),
                (got, want) => panic!("row {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn refusal_messages_name_holder_operation_and_fix() {
        let held = record("op-1", 5, true);
        let msg = decide_acquire(Some(&held), &acquire("op-2", 6, false), 500)
            .expect_err("held")
            .to_string();
        for part in [
            "alice@ops1",
            "op-1",
            "defrag",
            "since 1970-01-01T00:01:40Z",
            "epoch 5",
            "etcdops op abort op-1",
            "--takeover",
        ] {
            assert!(msg.contains(part), "{part:?} missing in {msg}");
        }
        let msg = decide_acquire(Some(&record("op-1", 5, false)), &acquire("op-2", 3, false), 500)
            .expect_err("stale")
            .to_string();
        assert!(
            msg.starts_with("epoch 3 is not above the recorded epoch 5 for cluster c1 ("),
            "{msg}"
        );
        assert!(msg.contains("op-1") && msg.contains("alice@ops1"), "{msg}");
    }

    #[test]
    fn release_decisions() {
        use tonic::Code::FailedPrecondition;
        let table: Vec<(Option<FenceRecord>, FenceToken, Result<(), tonic::Code>)> = vec![
            (Some(record("a", 5, true)), token("a", 5), Ok(())),
            // Idempotent.
            (Some(record("a", 5, false)), token("a", 5), Ok(())),
            (Some(record("a", 5, true)), token("b", 5), Err(FailedPrecondition)),
            (Some(record("a", 5, true)), token("a", 4), Err(FailedPrecondition)),
            (
                Some(record("a", 6, false)),
                token("a", 5),
                Err(FailedPrecondition),
            ),
            (None, token("a", 5), Err(FailedPrecondition)),
        ];
        for (i, (current, t, want)) in table.into_iter().enumerate() {
            match (decide_release(current.as_ref(), &t), want) {
                (Ok(r), Ok(())) => {
                    let cur = current.expect("current");
                    assert_eq!(
                        r,
                        FenceRecord { held: false, ..cur },
                        "row {i}: epoch and holder kept"
                    );
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "row {i}: {e}"),
                (got, want) => panic!("row {i}: got {got:?}, want {want:?}"),
            }
        }
        let msg = decide_release(Some(&record("a", 5, true)), &token("b", 5))
            .expect_err("other")
            .to_string();
        assert!(msg.contains("alice@ops1") && msg.contains("operation a"), "{msg}");
    }

    #[test]
    fn check_decisions() {
        assert!(decide_check(Some(&record("a", 5, true)), &token("a", 5)).is_ok());
        for (current, t) in [
            (Some(record("a", 5, false)), token("a", 5)),
            (Some(record("a", 6, true)), token("a", 5)),
            (Some(record("b", 5, true)), token("a", 5)),
            (None, token("a", 5)),
        ] {
            let err = decide_check(current.as_ref(), &t).expect_err("refused");
            assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
            assert!(err.to_string().contains("stale coordinator"), "{err}");
        }
        let msg = decide_check(Some(&record("b", 6, true)), &token("a", 5))
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("operation b") && msg.contains("epoch 6") && msg.contains("alice@ops1"),
            "{msg}"
        );
        assert_eq!(
            FenceError::Missing.to_string(),
            "fence: required: mutating calls must come from an etcdops operation holding the cluster's fence"
        );
        assert_eq!(FenceError::Missing.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn call_log_answers_retries_and_forgets_the_oldest() {
        let key = |i: usize| (format!("op{i}"), "step".to_string(), "Defragment".to_string());
        let answer = |b: u8| CallOutcome::Answer(vec![b]);
        let mut log = CallLog::new(3);
        for i in 0..4 {
            log.insert(key(i), answer(i as u8));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.get(&key(0)), None, "the oldest is forgotten");
        assert_eq!(log.get(&key(3)), Some(&answer(3)));
        // Same operation and step, another method: another call.
        assert_eq!(log.get(&("op3".into(), "step".into(), "Compact".into())), None);
        // Re-recording a key does not grow the log.
        log.insert(key(3), answer(9));
        assert_eq!((log.len(), log.get(&key(3))), (3, Some(&answer(9))));
        // An answer is told to every retry; an undelivered failure once.
        assert_eq!(log.take(&key(3)), Some(answer(9)));
        assert_eq!(log.take(&key(3)), Some(answer(9)));
        let failure = CallOutcome::Failure {
            code: tonic::Code::Internal,
            message: "etcd on etcd1 is stopped".into(),
        };
        log.insert(key(5), failure.clone());
        assert_eq!(log.take(&key(5)), Some(failure));
        assert_eq!(log.take(&key(5)), None);
        assert_eq!(log.len(), 2);
    }

    #[tokio::test]
    async fn running_calls_hand_their_outcome_to_waiters_and_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FenceStore::load(dir.path()).expect("empty");
        let key: CallKey = ("op".into(), "step-1".into(), "RestartEtcd".into());
        let tx = store.begin(key.clone());
        let mut waiter = store.running(&key).expect("running");
        store.finish(key.clone(), CallOutcome::Answer(vec![7]), &tx).await;
        assert!(store.running(&key).is_none());
        let got = waiter.wait_for(Option::is_some).await.expect("outcome").clone();
        assert_eq!(got, Some(CallOutcome::Answer(vec![7])));
        assert_eq!(store.recorded(&key).await, Some(CallOutcome::Answer(vec![7])));

        // A failure somebody waited for is not recorded (a retry runs again)...
        let key2: CallKey = ("op".into(), "step-2".into(), "RestartEtcd".into());
        let failure = CallOutcome::Failure {
            code: tonic::Code::Internal,
            message: "no".into(),
        };
        let tx = store.begin(key2.clone());
        let waiter = store.running(&key2).expect("running");
        store.finish(key2.clone(), failure.clone(), &tx).await;
        assert_eq!(store.recorded(&key2).await, None);
        drop(waiter);
        // ...one nobody waited for is told to the next retry, once.
        let tx = store.begin(key2.clone());
        store.finish(key2.clone(), failure.clone(), &tx).await;
        assert_eq!(store.recorded(&key2).await, Some(failure));
        assert_eq!(store.recorded(&key2).await, None);
    }

    #[test]
    fn call_log_is_bounded_in_bytes() {
        let key = |i: usize| (format!("op{i}"), "s".to_string(), "Defragment".to_string());
        let mut log = CallLog::bounded(100, 10);
        for i in 0..5 {
            log.insert(key(i), CallOutcome::Answer(vec![0; 4]));
        }
        assert_eq!(log.len(), 2, "8 bytes fit, 12 do not");
        assert!(log.get(&key(4)).is_some() && log.get(&key(2)).is_none());
        // One call larger than the bound is still kept (alone).
        log.insert(key(9), CallOutcome::Answer(vec![0; 50]));
        assert_eq!(log.len(), 1);
    }

    #[tokio::test]
    async fn completed_calls_survive_a_restart_and_corrupt_records_stop_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FenceStore::load(dir.path()).expect("empty");
        let answered: CallKey = ("op".into(), "defrag:etcd1#1".into(), "Defragment".into());
        let failed: CallKey = ("op".into(), "restart:etcd2#1".into(), "RestartEtcd".into());
        let failure = CallOutcome::Failure {
            code: tonic::Code::DeadlineExceeded,
            message: "etcd on etcd2 is still starting".into(),
        };
        store
            .record(answered.clone(), CallOutcome::Answer(vec![1, 2, 255]))
            .await;
        let tx = store.begin(failed.clone());
        store.finish(failed.clone(), failure.clone(), &tx).await;
        drop(store);

        let again = FenceStore::load(dir.path()).expect("reload");
        assert_eq!(
            again.recorded(&answered).await,
            Some(CallOutcome::Answer(vec![1, 2, 255]))
        );
        assert_eq!(again.recorded(&failed).await, Some(failure), "told once...");
        let third = FenceStore::load(dir.path()).expect("reload");
        assert_eq!(third.recorded(&failed).await, None, "...also across restarts");
        assert!(third.recorded(&answered).await.is_some());

        let path = dir.path().join(CALLS_FILE);
        for bad in [
            "{ half".to_string(),
            r#"{"version":2,"calls":[]}"#.to_string(),
            r#"{"version":1,"calls":[{"operation_id":"o","step":"s","method":"m","outcome":{"answer":{"hex":"zz"}}}]}"#
                .to_string(),
            r#"{"version":1,"calls":[{"operation_id":"o","step":"s","method":"m","outcome":{"failure":{"code":99,"message":""}}}]}"#
                .to_string(),
        ] {
            std::fs::write(&path, &bad).expect("write");
            let err = FenceStore::load(dir.path()).expect_err("corrupt");
            let msg = err.to_string();
            assert!(
                msg.contains("calls.json") && msg.contains("never forgets answered calls"),
                "{bad}: {msg}"
            );
            assert_eq!(std::fs::read_to_string(&path).expect("kept"), bad, "never reset");
        }
    }

    #[tokio::test]
    async fn store_persists_and_refuses_corrupt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FenceStore::load(dir.path()).expect("empty");
        let r = store.acquire(&acquire("op-1", 3, false)).await.expect("acquire");
        assert!(r.held);
        let again = FenceStore::load(dir.path()).expect("reload");
        assert_eq!(again.all().await, vec![r.clone()]);
        again.check(&token("op-1", 3)).await.expect("held after reload");
        again.release(&token("op-1", 3)).await.expect("release");
        assert!(!FenceStore::load(dir.path()).expect("reload").all().await[0].held);

        std::fs::write(dir.path().join(FENCES_FILE), b"{ not json").expect("write");
        let err = FenceStore::load(dir.path()).expect_err("corrupt");
        assert!(
            err.to_string().contains("fences.json") && err.to_string().contains("never resets"),
            "{err}"
        );
    }
}
