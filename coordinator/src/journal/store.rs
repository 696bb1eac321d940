//! The journal in a redb file (`RedbStore`): the file, its tables, one open and one transaction per call, busy retries, record encoding.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    TableError, WriteTransaction,
};

use std::path::PathBuf;

use super::{JournalError, OperationRecord, SCHEMA_VERSION, now_unix};

/// The journal in a redb file: its path and how long a call waits for another process.
#[derive(Debug, Clone)]
pub(super) struct RedbStore {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
}

/// Operation ID → the record as JSON, with a `schema` field.
pub(super) const OPERATIONS: TableDefinition<&str, &str> = TableDefinition::new("operations");
/// `schema` → the file's schema version. Its presence marks an etcdops journal.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const SCHEMA_KEY: &str = "schema";

/// redb's page cache per open; the journal is small.
const CACHE_BYTES: usize = 4 << 20;

impl RedbStore {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration) -> RedbStore {
        RedbStore { path, busy_timeout }
    }

    /// Records a new operation. Refuses an ID already in the journal.
    pub(super) fn create(&self, op: &OperationRecord) -> Result<(), JournalError> {
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
    pub(super) fn delete(&self, ids: &[String]) -> Result<usize, JournalError> {
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
    pub(super) fn get(&self, id: &str) -> Result<Option<OperationRecord>, JournalError> {
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
    pub(super) fn find(&self, id_or_prefix: &str) -> Result<OperationRecord, JournalError> {
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
    pub(super) fn list(&self) -> Result<Vec<OperationRecord>, JournalError> {
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

    /// Read, change, write back in one write transaction; nothing is written when `change` fails.
    pub(super) fn modify(
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

    /// The directories (0700) and an empty file (0600) that redb initialises on first open.
    pub(super) fn prepare_file(&self) -> Result<(), JournalError> {
        let create_err = |source| JournalError::Create {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create_err)?;
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(create_err(e)),
        }
    }

    /// Marks a new file as a journal of this schema; refuses other redb files and newer schemas.
    pub(super) fn init(&self) -> Result<(), JournalError> {
        const ACTION: &str = "initialise the journal";
        self.write_with(true, ACTION, |txn| {
            let tables: Vec<String> = txn
                .list_tables()
                .map_err(|e| self.db_err(ACTION, e))?
                .map(|t| redb::TableHandle::name(&t).to_string())
                .collect();
            if !tables.is_empty() && !tables.iter().any(|t| t == "meta") {
                return Err(JournalError::NotAJournal {
                    path: self.path.clone(),
                    reason: format!("a redb database with tables {}", tables.join(", ")),
                });
            }
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(ACTION, e))?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(|e| self.db_err(ACTION, e))?
                .map(|v| v.value());
            match found {
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(JournalError::NewerSchema {
                        path: self.path.clone(),
                        what: "a journal".to_string(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(found) if found == SCHEMA_VERSION => {}
                // An older file: its records are migrated as they are read, and the file is
                // marked with this schema so an older etcdops refuses it instead of misreading.
                Some(_) | None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                        .map_err(|e| self.db_err(ACTION, e))?;
                }
            }
            txn.open_table(OPERATIONS).map_err(|e| self.db_err(ACTION, e))?;
            Ok(())
        })
    }

    /// Opens the database, waiting up to the busy timeout while another handle has it open.
    /// Only `init` initialises an empty file; later calls refuse a file that vanished or was
    /// emptied rather than start a fresh journal unnoticed.
    pub(super) fn database(&self, initialise: bool) -> Result<Database, JournalError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            let mut builder = Database::builder();
            builder.set_cache_size(CACHE_BYTES);
            let opened = if initialise {
                builder.create(&self.path)
            } else {
                builder.open(&self.path)
            };
            match opened {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    let waited = start.elapsed();
                    if waited >= self.busy_timeout {
                        return Err(JournalError::Busy {
                            path: self.path.clone(),
                            waited,
                        });
                    }
                    std::thread::sleep(delay.min(self.busy_timeout - waited));
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(DatabaseError::Storage(StorageError::Corrupted(reason))) => {
                    return Err(JournalError::NotAJournal {
                        path: self.path.clone(),
                        reason,
                    });
                }
                Err(DatabaseError::Storage(StorageError::Io(e))) if e.kind() == ErrorKind::InvalidData => {
                    return Err(JournalError::NotAJournal {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(DatabaseError::Storage(StorageError::Io(e))) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Err(JournalError::NotAJournal {
                        path: self.path.clone(),
                        reason: "too short for a redb database".to_string(),
                    });
                }
                Err(DatabaseError::UpgradeRequired(version)) => {
                    return Err(JournalError::NotAJournal {
                        path: self.path.clone(),
                        reason: format!("redb file format {version}, older than this etcdops reads"),
                    });
                }
                Err(source) => {
                    return Err(JournalError::Open {
                        path: self.path.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// One read transaction on a freshly opened database, closed before returning.
    pub(super) fn read<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&ReadTransaction) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let db = self.database(false)?;
        let txn = db.begin_read().map_err(|e| self.db_err(action, e))?;
        let value = f(&txn);
        drop(txn);
        drop(db);
        value
    }

    /// One write transaction on a freshly opened database, committed (durably) only when `f`
    /// succeeds; the database is closed before returning.
    pub(super) fn write<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        self.write_with(false, action, f)
    }

    pub(super) fn write_with<T>(
        &self,
        initialise: bool,
        action: &'static str,
        f: impl FnOnce(&WriteTransaction) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let db = self.database(initialise)?;
        let txn = db.begin_write().map_err(|e| self.db_err(action, e))?;
        match f(&txn) {
            Ok(value) => {
                txn.commit().map_err(|e| self.db_err(action, e))?;
                db.close().map_err(|e| self.db_err(action, e))?;
                Ok(value)
            }
            Err(e) => {
                // The error that made us stop matters more than a failed abort.
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// The operations table, or `None` in a journal that has none yet.
    pub(super) fn operations(
        &self,
        txn: &ReadTransaction,
        action: &'static str,
    ) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static str>>, JournalError> {
        match txn.open_table(OPERATIONS) {
            Ok(table) => Ok(Some(table)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.db_err(action, e)),
        }
    }

    pub(super) fn db_err(&self, action: &'static str, source: impl Into<redb::Error>) -> JournalError {
        JournalError::Database {
            path: self.path.clone(),
            action,
            source: Box::new(source.into()),
        }
    }

    /// The record as stored: its JSON object with `"schema"` added.
    pub(super) fn encode(&self, op: &OperationRecord) -> Result<String, JournalError> {
        let encode_err = |source| JournalError::Encode {
            path: self.path.clone(),
            id: op.id.clone(),
            source,
        };
        let mut value = serde_json::to_value(op).map_err(encode_err)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("schema".to_string(), SCHEMA_VERSION.into());
        }
        serde_json::to_string(&value).map_err(encode_err)
    }

    pub(super) fn decode(&self, id: &str, text: &str) -> Result<OperationRecord, JournalError> {
        let decode_err = |source| JournalError::Decode {
            path: self.path.clone(),
            id: id.to_string(),
            source,
        };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(decode_err)?;
        let schema = value
            .as_object_mut()
            .and_then(|o| o.remove("schema"))
            .and_then(|s| s.as_u64())
            .unwrap_or(1);
        if schema > SCHEMA_VERSION {
            return Err(JournalError::NewerSchema {
                path: self.path.clone(),
                what: format!("operation {id}"),
                found: schema,
                supported: SCHEMA_VERSION,
            });
        }
        if schema < SCHEMA_VERSION {
            return super::migrate::from_v1(value).map_err(|reason| JournalError::Migrate {
                path: self.path.clone(),
                id: id.to_string(),
                from: schema,
                reason,
            });
        }
        serde_json::from_value(value).map_err(decode_err)
    }
}
