//! The operation journal: every cluster-wide operation and each step's outcome.
//!
//! Two stores behind one [`Journal`]: the local redb file (the CLI's default) and the home etcd
//! (`etcdops serve`, `[home] journal = "home"` in the fleet file). The redb file is one per user
//! (see [`default_path`]) and holds one JSON record per operation, keyed by its ID, each with a
//! schema version. The database is open only for the length of each call (open, one transaction,
//! close), so several `etcdops` processes on a machine share the journal: a call that finds it open
//! elsewhere retries for up to [`BUSY_TIMEOUT`]. Each call commits durably before it returns, so a
//! coordinator killed at any point finds every finished step on restart. In the home etcd the same
//! records live under `<prefix>journal/ops/<ID>`, and every write is a transaction guarded by the
//! serve leader's election key: a deposed leader cannot write.
//!
//! - [`record`] — the records ([`OperationRecord`], [`StepRecord`]), their states, operation IDs, holders.
//! - [`error`] — [`JournalError`].
//! - [`path`] — [`default_path`].
//! - `migrate` — records of schema v1 (an untyped `args` bag) read into the typed v2 record.
//! - `store` — the redb file: tables, one open and transaction per call, busy retries, encoding.
//! - [`etcd`] — the home etcd: keys under a prefix, leader-guarded transactions ([`LeaderGuard`]).

pub mod error;
pub mod etcd;
mod migrate;
pub mod path;
pub mod record;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::JournalError;
pub use etcd::{EtcdStore, LeaderGuard, OpRequest, RequestRecord, UnreadableRequest};
pub use path::default_path;
pub use record::{OpState, OperationRecord, StepRecord, StepState, holder, new_operation_id};
use store::RedbStore;

/// The schema version this etcdops writes, of the file and of each record. Readers refuse
/// anything newer; older records are migrated as they are read (v1: `kind` and an untyped
/// `args` bag; v2: the typed [`crate::plan::operation::Operation`] and its run options).
pub const SCHEMA_VERSION: u64 = 2;

/// How long a call waits for another process to close the journal.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The operation journal: a redb file, or the home etcd. Cheap to clone and keep: the redb store
/// holds no open file between calls; the etcd store shares one client.
#[derive(Debug, Clone)]
pub struct Journal {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Redb(RedbStore),
    Etcd(Arc<EtcdStore>),
}

impl Journal {
    /// Opens the journal at `path`, creating it (and its directories, mode 0700; the file 0600)
    /// when missing. Refuses a file that is not an etcdops journal or is of a newer schema.
    pub fn open(path: impl Into<PathBuf>) -> Result<Journal, JournalError> {
        let store = RedbStore::new(path.into(), BUSY_TIMEOUT);
        store.prepare_file()?;
        store.init()?;
        Ok(Journal {
            backend: Backend::Redb(store),
        })
    }

    /// The journal in the home etcd (see [`EtcdStore`]).
    pub fn etcd(store: EtcdStore) -> Journal {
        Journal {
            backend: Backend::Etcd(Arc::new(store)),
        }
    }

    /// The home etcd's store, when the journal is there (its requests: [`EtcdStore::ask`]).
    pub fn home(&self) -> Option<&EtcdStore> {
        match &self.backend {
            Backend::Redb(_) => None,
            Backend::Etcd(s) => Some(s),
        }
    }

    /// The same journal with another wait for a busy file (default [`BUSY_TIMEOUT`]; the redb
    /// store only).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Journal {
        if let Backend::Redb(store) = &mut self.backend {
            store.busy_timeout = timeout;
        }
        self
    }

    /// Where the journal is: the redb file, or `etcd:ENDPOINTS` + the key prefix (in messages).
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::Redb(s) => &s.path,
            Backend::Etcd(s) => s.location(),
        }
    }

    /// True for the journal in the home etcd.
    pub fn is_etcd(&self) -> bool {
        matches!(self.backend, Backend::Etcd(_))
    }

    /// Records a new operation. Refuses an ID already in the journal.
    pub fn create(&self, op: &OperationRecord) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Redb(s) => s.create(op),
            Backend::Etcd(s) => s.create(op),
        }
    }

    /// Deletes these operations (IDs not in the journal are skipped) in one
    /// transaction; returns how many were deleted.
    pub fn delete(&self, ids: &[String]) -> Result<usize, JournalError> {
        match &self.backend {
            Backend::Redb(s) => s.delete(ids),
            Backend::Etcd(s) => s.delete(ids),
        }
    }

    /// The operation with exactly this ID.
    pub fn get(&self, id: &str) -> Result<Option<OperationRecord>, JournalError> {
        match &self.backend {
            Backend::Redb(s) => s.get(id),
            Backend::Etcd(s) => s.get(id),
        }
    }

    /// The operation with this ID, or the only one whose ID starts with it. `NotFound` when none
    /// does, `Ambiguous` (listing them) when several do.
    pub fn find(&self, id_or_prefix: &str) -> Result<OperationRecord, JournalError> {
        match &self.backend {
            Backend::Redb(s) => s.find(id_or_prefix),
            Backend::Etcd(s) => s.find(id_or_prefix),
        }
    }

    /// Every operation, newest first (by creation time, then ID).
    pub fn list(&self) -> Result<Vec<OperationRecord>, JournalError> {
        let mut ops = match &self.backend {
            Backend::Redb(s) => s.list()?,
            Backend::Etcd(s) => s.list()?,
        };
        ops.sort_by(|a, b| (b.created_at_unix, &b.id).cmp(&(a.created_at_unix, &a.id)));
        Ok(ops)
    }

    /// Read, change, write back in one transaction (sets `updated_at_unix`; the ID cannot
    /// change); nothing is written when `change` fails.
    fn modify(
        &self,
        id: &str,
        change: impl FnOnce(&mut OperationRecord) -> Result<(), JournalError>,
    ) -> Result<OperationRecord, JournalError> {
        match &self.backend {
            Backend::Redb(s) => s.modify(id, change),
            Backend::Etcd(s) => s.modify(id, change),
        }
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
                path: self.path().to_path_buf(),
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
                path: self.path().to_path_buf(),
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
                path: self.path().to_path_buf(),
                id,
                step: step_id.to_string(),
            })
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests;
