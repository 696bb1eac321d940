//! The operation journal: every cluster-wide operation and each step's outcome, in a redb file.
//!
//! One file per user (see [`default_path`]) holds one JSON record per operation, keyed by its ID,
//! each with a schema version. The database is open only for the length of each call (open,
//! one transaction, close), so several `etcdops` processes on a machine share the journal: a call
//! that finds it open elsewhere retries for up to [`BUSY_TIMEOUT`]. Each call commits durably
//! before it returns, so a coordinator killed at any point finds every finished step on restart.
//!
//! - [`record`] — the records ([`OperationRecord`], [`StepRecord`]), their states, operation IDs, holders.
//! - [`error`] — [`JournalError`].
//! - [`path`] — [`default_path`].
//! - `migrate` — records of schema v1 (an untyped `args` bag) read into the typed v2 record.
//! - `store` — the redb file: tables, one open and transaction per call, busy retries, encoding.

pub mod error;
mod migrate;
pub mod path;
pub mod record;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::ReadableTable;

pub use error::JournalError;
pub use path::default_path;
pub use record::{OpState, OperationRecord, StepRecord, StepState, holder, new_operation_id};
use store::OPERATIONS;

/// The schema version this etcdops writes, of the file and of each record. Readers refuse
/// anything newer; older records are migrated as they are read (v1: `kind` and an untyped
/// `args` bag; v2: the typed [`crate::plan::operation::Operation`] and its run options).
pub const SCHEMA_VERSION: u64 = 2;

/// How long a call waits for another process to close the journal.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The operation journal at a path. Cheap to keep: it holds no open file between calls.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
    busy_timeout: Duration,
}

impl Journal {
    /// Opens the journal at `path`, creating it (and its directories, mode 0700; the file 0600)
    /// when missing. Refuses a file that is not an etcdops journal or is of a newer schema.
    pub fn open(path: impl Into<PathBuf>) -> Result<Journal, JournalError> {
        let journal = Journal {
            path: path.into(),
            busy_timeout: BUSY_TIMEOUT,
        };
        journal.prepare_file()?;
        journal.init()?;
        Ok(journal)
    }

    /// The same journal with another wait for a busy file (default [`BUSY_TIMEOUT`]).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Journal {
        self.busy_timeout = timeout;
        self
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new operation. Refuses an ID already in the journal.
    pub fn create(&self, op: &OperationRecord) -> Result<(), JournalError> {
        let text = self.encode(op)?;
        self.write("record a new operation", |txn| {
            let mut table = txn
                .open_table(OPERATIONS)
                .map_err(|e| self.db_err("record a new operation", e))?;
            let exists = table
                .get(op.id.as_str())
                .map_err(|e| self.db_err("record a new operation", e))?
                .is_some();
            if exists {
                return Err(JournalError::Exists {
                    path: self.path.clone(),
                    id: op.id.clone(),
                });
            }
            table
                .insert(op.id.as_str(), text.as_str())
                .map_err(|e| self.db_err("record a new operation", e))?;
            Ok(())
        })
    }

    /// Deletes these operations (IDs not in the journal are skipped) in one
    /// transaction; returns how many were deleted.
    pub fn delete(&self, ids: &[String]) -> Result<usize, JournalError> {
        self.write("delete operations", |txn| {
            let mut table = txn
                .open_table(OPERATIONS)
                .map_err(|e| self.db_err("delete operations", e))?;
            let mut deleted = 0;
            for id in ids {
                if table
                    .remove(id.as_str())
                    .map_err(|e| self.db_err("delete operations", e))?
                    .is_some()
                {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
    }

    /// The operation with exactly this ID.
    pub fn get(&self, id: &str) -> Result<Option<OperationRecord>, JournalError> {
        self.read("read an operation", |txn| {
            let Some(table) = self.operations(txn, "read an operation")? else {
                return Ok(None);
            };
            let text = table.get(id).map_err(|e| self.db_err("read an operation", e))?;
            text.map(|t| self.decode(id, t.value())).transpose()
        })
    }

    /// The operation with this ID, or the only one whose ID starts with it. `NotFound` when none
    /// does, `Ambiguous` (listing them) when several do.
    pub fn find(&self, id_or_prefix: &str) -> Result<OperationRecord, JournalError> {
        const ACTION: &str = "look up an operation";
        let not_found = || JournalError::NotFound {
            path: self.path.clone(),
            id: id_or_prefix.to_string(),
        };
        if id_or_prefix.is_empty() {
            return Err(not_found());
        }
        self.read(ACTION, |txn| {
            let Some(table) = self.operations(txn, ACTION)? else {
                return Err(not_found());
            };
            let mut matches = Vec::new();
            for entry in table.range(id_or_prefix..).map_err(|e| self.db_err(ACTION, e))? {
                let (key, value) = entry.map_err(|e| self.db_err(ACTION, e))?;
                let key = key.value();
                if !key.starts_with(id_or_prefix) {
                    break;
                }
                if key == id_or_prefix {
                    return self.decode(key, value.value());
                }
                matches.push((key.to_string(), value.value().to_string()));
            }
            match matches.len() {
                0 => Err(not_found()),
                1 => {
                    let (id, text) = &matches[0];
                    self.decode(id, text)
                }
                _ => Err(JournalError::Ambiguous {
                    path: self.path.clone(),
                    prefix: id_or_prefix.to_string(),
                    candidates: matches.into_iter().map(|(id, _)| id).collect(),
                }),
            }
        })
    }

    /// Every operation, newest first (by creation time, then ID).
    pub fn list(&self) -> Result<Vec<OperationRecord>, JournalError> {
        const ACTION: &str = "list operations";
        let mut ops = self.read(ACTION, |txn| {
            let Some(table) = self.operations(txn, ACTION)? else {
                return Ok(Vec::new());
            };
            let mut ops = Vec::new();
            for entry in table.iter().map_err(|e| self.db_err(ACTION, e))? {
                let (key, value) = entry.map_err(|e| self.db_err(ACTION, e))?;
                ops.push(self.decode(key.value(), value.value())?);
            }
            Ok(ops)
        })?;
        ops.sort_by(|a, b| (b.created_at_unix, &b.id).cmp(&(a.created_at_unix, &a.id)));
        Ok(ops)
    }

    /// The cluster's operations still `Running` or `Paused`, newest first: being run, left
    /// by a coordinator that died, or paused (to resume or abort).
    pub fn running_for_cluster(&self, cluster: &str) -> Result<Vec<OperationRecord>, JournalError> {
        let mut ops = self.list()?;
        ops.retain(|op| op.cluster == cluster && !op.state.is_final());
        Ok(ops)
    }

    /// Changes an operation in one write transaction (read, `change`, write back, commit) and
    /// sets its `updated_at_unix`. The ID cannot change. Returns the record as written.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut OperationRecord),
    ) -> Result<OperationRecord, JournalError> {
        self.modify(id, |op| {
            change(op);
            Ok(())
        })
    }

    /// A step's attempt starts: state `Running`, `attempts` + 1, `started_at` now, no finish time.
    pub fn step_started(&self, id: &str, step_id: &str) -> Result<OperationRecord, JournalError> {
        let now = now_unix();
        self.modify(id, |op| {
            let step = self.step_mut(op, step_id)?;
            step.state = StepState::Running;
            step.attempts = step.attempts.saturating_add(1);
            step.started_at_unix = Some(now);
            step.finished_at_unix = None;
            // The new attempt's trace, if any, is set by the executor.
            step.trace_id = None;
            Ok(())
        })
    }

    /// A step's attempt ends as `Done`, `Failed` or `Skipped`, with its outcome.
    pub fn step_finished(
        &self,
        id: &str,
        step_id: &str,
        state: StepState,
        detail: Option<String>,
    ) -> Result<OperationRecord, JournalError> {
        if !state.is_final() {
            return Err(JournalError::StepNotFinal {
                path: self.path.clone(),
                id: id.to_string(),
                step: step_id.to_string(),
                state,
            });
        }
        let now = now_unix();
        self.modify(id, |op| {
            let step = self.step_mut(op, step_id)?;
            step.state = state;
            step.finished_at_unix = Some(now);
            step.detail = detail;
            Ok(())
        })
    }

    /// The operation ends as `Succeeded`, `Failed` or `Aborted`; `error` says why it stopped.
    pub fn finish(
        &self,
        id: &str,
        state: OpState,
        error: Option<String>,
    ) -> Result<OperationRecord, JournalError> {
        if !state.is_final() {
            return Err(JournalError::OpNotFinal {
                path: self.path.clone(),
                id: id.to_string(),
                state,
            });
        }
        self.modify(id, |op| {
            op.state = state;
            op.error = error;
            Ok(())
        })
    }

    fn step_mut<'a>(
        &self,
        op: &'a mut OperationRecord,
        step_id: &str,
    ) -> Result<&'a mut StepRecord, JournalError> {
        let id = op.id.clone();
        op.steps
            .iter_mut()
            .find(|s| s.id == step_id)
            .ok_or_else(|| JournalError::NoStep {
                path: self.path.clone(),
                id,
                step: step_id.to_string(),
            })
    }

    /// Read, change, write back in one write transaction; nothing is written when `change` fails.
    fn modify(
        &self,
        id: &str,
        change: impl FnOnce(&mut OperationRecord) -> Result<(), JournalError>,
    ) -> Result<OperationRecord, JournalError> {
        const ACTION: &str = "update an operation";
        self.write(ACTION, |txn| {
            let mut table = txn.open_table(OPERATIONS).map_err(|e| self.db_err(ACTION, e))?;
            let text = table
                .get(id)
                .map_err(|e| self.db_err(ACTION, e))?
                .map(|t| t.value().to_string())
                .ok_or_else(|| JournalError::NotFound {
                    path: self.path.clone(),
                    id: id.to_string(),
                })?;
            let mut op = self.decode(id, &text)?;
            change(&mut op)?;
            op.id = id.to_string();
            op.updated_at_unix = now_unix();
            let text = self.encode(&op)?;
            table
                .insert(id, text.as_str())
                .map_err(|e| self.db_err(ACTION, e))?;
            Ok(op)
        })
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests;
