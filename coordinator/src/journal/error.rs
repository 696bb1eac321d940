//! `JournalError`: what can go wrong with the operation journal, each naming the journal file and what to do.

use std::path::PathBuf;
use std::time::Duration;

use super::record::{OpState, StepState};

/// An error of the operation journal. Every variant names the journal file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal's directory could not be created (or the file could not be pre-created).
    #[error(
        "cannot create the operation journal {path}: {source}; \
         make its directory writable, or pass --journal PATH / set ETCDOPS_JOURNAL"
    )]
    Create { path: PathBuf, source: std::io::Error },

    /// Another process kept the journal open past the wait.
    #[error(
        "the operation journal {path} is busy: another etcdops process kept it open for {:.1}s; \
         retry when it is done, or pass --journal PATH / set ETCDOPS_JOURNAL to use another journal",
        waited.as_secs_f64()
    )]
    Busy { path: PathBuf, waited: Duration },

    /// The file exists but is not a redb database, or is damaged.
    #[error(
        "{path} is not an etcdops operation journal, or it is damaged ({reason}); \
         move it aside (operations recorded in it can no longer be resumed) \
         or pass --journal PATH / set ETCDOPS_JOURNAL to use another file"
    )]
    NotAJournal { path: PathBuf, reason: String },

    /// The journal was written by a newer etcdops.
    #[error(
        "the operation journal {path} holds {what} of schema version {found}, newer than this \
         etcdops reads (up to {supported}); use the newer etcdops that wrote it"
    )]
    NewerSchema {
        path: PathBuf,
        what: String,
        found: u64,
        supported: u64,
    },

    /// The database could not be opened for another reason (I/O, permissions, locking protocol).
    #[error("cannot open the operation journal {path}: {source}; check the file's permissions and disk")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },

    /// A read or write transaction failed.
    #[error("cannot {action} in the operation journal {path}: {source}")]
    Database {
        path: PathBuf,
        action: &'static str,
        source: Box<redb::Error>,
    },

    /// A stored record does not parse.
    #[error(
        "the operation journal {path} holds a record for {id} that does not parse ({source}); \
         move the journal aside if it was edited or damaged"
    )]
    Decode {
        path: PathBuf,
        id: String,
        source: serde_json::Error,
    },

    /// A record of an older schema cannot be read into this one.
    #[error(
        "the operation journal {path} holds operation {id} of schema version {from} that this etcdops \
         cannot read: {reason}; finish or abort it with the etcdops that started it, or move the \
         journal aside"
    )]
    Migrate {
        path: PathBuf,
        id: String,
        from: u64,
        reason: String,
    },

    /// A record could not be serialized (should not happen).
    #[error("cannot encode operation {id} for the operation journal {path}: {source}")]
    Encode {
        path: PathBuf,
        id: String,
        source: serde_json::Error,
    },

    /// `create` with an ID already in the journal.
    #[error("operation {id} is already in the operation journal {path}; create it under a new ID")]
    Exists { path: PathBuf, id: String },

    /// No operation has this ID (or ID prefix).
    #[error("no operation {id} in the operation journal {path}; `etcdops op list --all` shows them")]
    NotFound { path: PathBuf, id: String },

    /// An ID prefix matches several operations.
    #[error(
        "{prefix} matches {} operations in the operation journal {path}: {}; give more of the ID",
        candidates.len(),
        candidates.join(", ")
    )]
    Ambiguous {
        path: PathBuf,
        prefix: String,
        candidates: Vec<String>,
    },

    /// The operation has no step of this ID.
    #[error("operation {id} in the operation journal {path} has no step {step}")]
    NoStep { path: PathBuf, id: String, step: String },

    /// The home etcd failed a call (unreachable, TLS refused, timeout).
    #[error(
        "cannot {action} in the operation journal {path} (the home etcd): {source}; check that the home \
         etcd answers ([home] endpoints and [home.tls] in the fleet file)"
    )]
    Etcd {
        path: PathBuf,
        action: &'static str,
        source: Box<etcd_client::Error>,
    },

    /// A write of a serve replica that is no longer the leader.
    #[error(
        "the operation journal {path} refused to {action}: this serve replica is no longer the leader \
         (election key {key} of term {rev} is gone or newer); a deposed leader writes nothing, the new \
         leader carries its operations on"
    )]
    NotLeader {
        path: PathBuf,
        action: &'static str,
        key: String,
        rev: i64,
    },

    /// A write through a reader of the journal in the home etcd.
    #[error(
        "cannot {action} in the operation journal {path}: it is the serve replicas' journal in the home \
         etcd, and only their leader writes it (`etcdops op list|show` read it); pass --journal PATH to \
         work on a local journal"
    )]
    ReadOnly { path: PathBuf, action: &'static str },

    /// The record changed between the read and the write of an update (two writers).
    #[error(
        "operation {id} changed in the operation journal {path} while it was being updated: another \
         writer? (only the serve leader writes it); look at `etcdops op show {id}`"
    )]
    Conflict { path: PathBuf, id: String },

    /// `step_finished` with a state that does not end a step.
    #[error(
        "step {step} of operation {id} cannot finish as {state} (journal {path}): use done, failed or skipped"
    )]
    StepNotFinal {
        path: PathBuf,
        id: String,
        step: String,
        state: StepState,
    },

    /// `finish` with a state that does not end an operation.
    #[error("operation {id} cannot finish as {state} (journal {path}): use succeeded, failed or aborted")]
    OpNotFinal {
        path: PathBuf,
        id: String,
        state: OpState,
    },
}
