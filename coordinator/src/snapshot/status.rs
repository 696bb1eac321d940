//! `etcdops snapshot status FILE`: a snapshot file's hash, revision, key
//! count and size computed as `etcdctl snapshot status` computes them, from
//! the file alone (read with `etcdops_format::bbolt`), plus the sha256
//! trailer check `snapshot restore` makes. The command-line side is
//! `cli/snapshot.rs`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use etcdops_format::bbolt::{BoltError, Db, Item};
use etcdops_format::snapfile::TRAILER;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::output::table;

/// What `snapshot status` finds in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub path: PathBuf,
    /// CRC-32C of every bucket name, key and value, as etcdctl computes it.
    pub hash: u32,
    /// Main revision of the last key in the `key` bucket (0 when it is empty).
    pub revision: i64,
    /// Entries in all buckets (etcd 3.4/3.5 semantics).
    pub total_key: u64,
    /// Database size: high-water mark × page size, trailer excluded.
    pub total_size: u64,
    /// The whole file's size, trailer included.
    pub file_size: u64,
    pub page_size: u32,
    /// The transaction of the meta page in force.
    pub txid: u64,
    pub integrity: Integrity,
}

/// The sha256 trailer check of `snapshot restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// The trailer matches; the hex sha256 of the database bytes.
    Ok { sha256: String },
    /// No trailer (the file is not 32 bytes more than a multiple of 512).
    Missing,
    /// The trailer (`expected`) does not match the sha256 of the bytes before it (`actual`).
    Mismatch { expected: String, actual: String },
}

impl Integrity {
    /// `ok`, `missing` or `mismatch`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Integrity::Ok { .. } => "ok",
            Integrity::Missing => "missing",
            Integrity::Mismatch { .. } => "mismatch",
        }
    }

    /// The sha256 of the database bytes, when there is a trailer.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            Integrity::Ok { sha256 } => Some(sha256),
            Integrity::Mismatch { actual, .. } => Some(actual),
            Integrity::Missing => None,
        }
    }
}

/// Why a snapshot file cannot be read as one.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("cannot open snapshot file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read snapshot file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot file {}: {source}{}", path.display(), if *trailer_mismatch { TRAILER_ALSO } else { "" })]
    Corrupt {
        path: PathBuf,
        #[source]
        source: BoltError,
        /// The sha256 trailer does not match either.
        trailer_mismatch: bool,
    },
    #[error(
        "snapshot file {}: bucket \"key\" holds a key of {len} bytes, too short for a revision \
         (17 bytes, 18 for a tombstone)",
        path.display()
    )]
    BadRevisionKey { path: PathBuf, len: usize },
}

const TRAILER_ALSO: &str = " (its sha256 trailer does not match its contents either: the file was changed or damaged after it was saved)";

/// Why a readable snapshot would not pass `snapshot restore`'s check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "snapshot file {} has no sha256 trailer ({size} bytes is not 32 more than a multiple of 512): \
         `snapshot restore` refuses it unless given --skip-hash-check (a copy of a member's \
         member/snap/db has none; a file from `snapshot save` without one was cut short)",
        path.display()
    )]
    Missing { path: PathBuf, size: u64 },
    #[error(
        "snapshot file {} failed its integrity check: the sha256 of its {db_size} database bytes is \
         {actual}, its trailer says {expected}: the file was changed or damaged after it was saved",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        db_size: u64,
        expected: String,
        actual: String,
    },
}

impl SnapshotStatus {
    /// `Ok` when the trailer is there and matches, as restore requires.
    pub fn verify(&self) -> Result<(), IntegrityError> {
        match &self.integrity {
            Integrity::Ok { .. } => Ok(()),
            Integrity::Missing => Err(IntegrityError::Missing {
                path: self.path.clone(),
                size: self.file_size,
            }),
            Integrity::Mismatch { expected, actual } => Err(IntegrityError::Mismatch {
                path: self.path.clone(),
                db_size: self.file_size - TRAILER as u64,
                expected: expected.clone(),
                actual: actual.clone(),
            }),
        }
    }
}

/// Reads a snapshot file: its trailer check, then the database checked as
/// bbolt's `tx.Check()` does and its status computed as etcdctl's.
pub fn read_status(path: &Path) -> Result<SnapshotStatus, SnapshotFileError> {
    let file = File::open(path).map_err(|source| SnapshotFileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let read_err = |source| SnapshotFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = file.metadata().map_err(read_err)?;
    if metadata.is_dir() {
        return Err(SnapshotFileError::Open {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::IsADirectory, "it is a directory"),
        });
    }
    let file_size = metadata.len();
    let integrity = check_trailer(&file, file_size).map_err(read_err)?;
    let corrupt = |source: BoltError| SnapshotFileError::Corrupt {
        path: path.to_path_buf(),
        trailer_mismatch: matches!(integrity, Integrity::Mismatch { .. }) && !source.is_foreign(),
        source,
    };
    let db = Db::new(&file, file_size).map_err(corrupt)?;
    let mut counter = Counter::default();
    db.walk(&mut |item| counter.add(item)).map_err(corrupt)?;
    if let Some(len) = counter.short_key {
        return Err(SnapshotFileError::BadRevisionKey {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(SnapshotStatus {
        path: path.to_path_buf(),
        hash: counter.hash.value(),
        revision: counter.revision,
        total_key: counter.total_key,
        total_size: db.size(),
        file_size,
        page_size: db.page_size(),
        txid: db.meta().txid,
        integrity,
    })
}

/// etcd's `hasChecksum`: a trailer is there when `size % 512 == 32`; then
/// the sha256 of the bytes before it must equal it.
fn check_trailer(file: &File, size: u64) -> io::Result<Integrity> {
    const TRAILER_LEN: u64 = TRAILER as u64;
    if size % 512 != TRAILER_LEN {
        return Ok(Integrity::Missing);
    }
    let db_size = size - TRAILER_LEN;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut offset = 0;
    while offset < db_size {
        let n = buf.len().min((db_size - offset) as usize);
        file.read_exact_at(&mut buf[..n], offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let mut trailer = [0; TRAILER];
    file.read_exact_at(&mut trailer, db_size)?;
    let actual = hex::encode(hasher.finalize());
    let expected = hex::encode(trailer);
    Ok(if actual == expected {
        Integrity::Ok { sha256: actual }
    } else {
        Integrity::Mismatch { expected, actual }
    })
}

/// etcdctl's status loop: hash, count and the last revision of `key`.
#[derive(Debug, Default)]
struct Counter {
    hash: Crc32c,
    total_key: u64,
    revision: i64,
    in_key_bucket: bool,
    /// Length of a `key` bucket key too short for a revision (etcdctl would panic).
    short_key: Option<usize>,
}

impl Counter {
    fn add(&mut self, item: Item<'_>) {
        match item {
            Item::Bucket(name) => {
                self.hash.update(name);
                self.in_key_bucket = name == b"key";
            }
            Item::Entry { key, value } => {
                self.hash.update(key);
                self.hash.update(value.unwrap_or_default());
                if self.in_key_bucket {
                    // Big-endian `main`, then `_`, `sub` (and `t` for a tombstone).
                    match key.first_chunk::<8>() {
                        Some(main) => self.revision = i64::from_be_bytes(*main),
                        None => {
                            self.short_key.get_or_insert(key.len());
                        }
                    }
                }
                self.total_key += 1;
            }
        }
    }
}

/// CRC-32C (Castagnoli), as Go's `crc32.MakeTable(crc32.Castagnoli)`, slice-by-8.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Crc32c(u32);

const CRC32C_POLY: u32 = 0x82F6_3B78;
static CRC32C_TABLES: [[u32; 256]; 8] = crc32c_tables();

const fn crc32c_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CRC32C_POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut t = 1;
        while t < 8 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            t += 1;
        }
        i += 1;
    }
    tables
}

impl Crc32c {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let t = &CRC32C_TABLES;
        let mut crc = !self.0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let lo = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ crc;
            let hi = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            crc = t[7][(lo & 0xFF) as usize]
                ^ t[6][((lo >> 8) & 0xFF) as usize]
                ^ t[5][((lo >> 16) & 0xFF) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xFF) as usize]
                ^ t[2][((hi >> 8) & 0xFF) as usize]
                ^ t[1][((hi >> 16) & 0xFF) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &byte in chunks.remainder() {
            crc = t[0][((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
        }
        self.0 = !crc;
    }

    pub(crate) fn value(self) -> u32 {
        self.0
    }
}

/// `-w json`: etcdctl's four fields, then the trailer check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
    /// Hex sha256 of the database bytes; null without a trailer.
    pub sha256: Option<String>,
    /// `ok`, `missing` or `mismatch`.
    pub integrity: &'static str,
}

impl From<&SnapshotStatus> for StatusReport {
    fn from(status: &SnapshotStatus) -> StatusReport {
        StatusReport {
            hash: status.hash,
            revision: status.revision,
            total_key: status.total_key,
            total_size: status.total_size,
            sha256: status.integrity.sha256().map(str::to_string),
            integrity: status.integrity.as_str(),
        }
    }
}

/// The etcdctl table with an INTEGRITY column.
pub fn render_table(report: &StatusReport) -> String {
    let mut t = table::new_table(&["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "INTEGRITY"]);
    t.add_row(vec![
        format!("{:x}", report.hash),
        report.revision.to_string(),
        report.total_key.to_string(),
        table::human_bytes(report.total_size),
        report.integrity.to_string(),
    ]);
    table::render(&t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdops_format::bbolt::sample::sample_db;

    fn crc(bytes: &[u8]) -> u32 {
        let mut c = Crc32c::default();
        c.update(bytes);
        c.value()
    }

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        assert_eq!(crc(b""), 0);
        assert_eq!(crc(b"123456789"), 0xE306_9283);
        assert_eq!(crc(&[0; 32]), 0x8A91_36AA);
        assert_eq!(crc(&[0xFF; 32]), 0x62A8_AB43);
        // Incremental writes equal one write, at any split.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for split in [0, 1, 7, 8, 9, 500, 1000] {
            let mut c = Crc32c::default();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.value(), crc(&data), "{split}");
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    fn with_trailer(db: &[u8]) -> Vec<u8> {
        let mut file = db.to_vec();
        file.extend_from_slice(&Sha256::digest(db));
        file
    }

    #[test]
    fn status_of_a_sample_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sample_db();
        let path = write(dir.path(), "ok.db", &with_trailer(&db));
        let status = read_status(&path).expect("status");
        // The sample's entries, hashed as etcdctl hashes them.
        let mut expected = Crc32c::default();
        let rev = |main: u64, tomb: bool| {
            let mut k = main.to_be_bytes().to_vec();
            k.push(b'_');
            k.extend_from_slice(&0u64.to_be_bytes());
            if tomb {
                k.push(b't');
            }
            k
        };
        for part in [
            b"key".to_vec(),
            rev(2, false),
            b"v2".to_vec(),
            rev(3, false),
            b"v3".to_vec(),
            rev(4, true),
            vec![b'v'; 5000],
            b"meta".to_vec(),
            b"consistent_index".to_vec(),
            9u64.to_be_bytes().to_vec(),
            b"scheduled".to_vec(),
            b"x".to_vec(),
            b"nest".to_vec(),
            b"plain".to_vec(),
            b"p".to_vec(),
            b"sub".to_vec(),
        ] {
            expected.update(&part);
        }
        assert_eq!(status.hash, expected.value());
        assert_eq!(status.revision, 4);
        assert_eq!(status.total_key, 7);
        assert_eq!(status.total_size, db.len() as u64);
        assert_eq!(status.file_size, db.len() as u64 + 32);
        assert_eq!(
            status.integrity,
            Integrity::Ok {
                sha256: hex::encode(Sha256::digest(&db))
            }
        );
        assert!(status.verify().is_ok());

        let report = StatusReport::from(&status);
        let json: serde_json::Value =
            serde_json::from_str(&crate::output::to_json(&report).expect("json")).expect("parse");
        assert_eq!(json["totalKey"], 7);
        assert_eq!(json["totalSize"], db.len() as u64);
        assert_eq!(json["integrity"], "ok");
        let text = render_table(&report);
        assert!(
            text.contains("| HASH ") && text.contains("| INTEGRITY |"),
            "{text}"
        );
        assert!(
            text.contains(&format!("| {:x} ", status.hash)) && text.contains("| 33 kB "),
            "{text}"
        );
    }

    #[test]
    fn integrity_missing_and_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sample_db();
        let status = read_status(&write(dir.path(), "copy.db", &db)).expect("status");
        assert_eq!(status.integrity, Integrity::Missing);
        let err = status.verify().expect_err("missing");
        assert!(err.to_string().contains("has no sha256 trailer"), "{err}");

        // A flipped byte in a value: readable, but the trailer does not match.
        let mut file = with_trailer(&db);
        file[5 * 4096 + 2000] ^= 1;
        let status = read_status(&write(dir.path(), "flipped.db", &file)).expect("status");
        assert!(matches!(status.integrity, Integrity::Mismatch { .. }));
        assert_eq!(StatusReport::from(&status).integrity, "mismatch");
        assert!(
            status
                .verify()
                .expect_err("mismatch")
                .to_string()
                .contains("failed its integrity check")
        );

        // A flipped byte in a page header: unreadable, and the message says the trailer fails too.
        let mut file = with_trailer(&db);
        file[4 * 4096] ^= 1;
        let err = read_status(&write(dir.path(), "header.db", &file)).expect_err("corrupt");
        assert!(err.to_string().contains("page 4 has id 5"), "{err}");
        assert!(
            err.to_string().contains("does not match its contents either"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_files_name_the_path_and_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.db");
        let err = read_status(dir.path()).expect_err("a directory");
        assert!(err.to_string().ends_with("it is a directory"), "{err}");
        let err = read_status(&missing).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot open snapshot file {}", missing.display())),
            "{err}"
        );
        let empty = write(dir.path(), "empty.db", b"");
        let err = read_status(&empty).expect_err("empty");
        assert!(
            err.to_string()
                .ends_with("not an etcd snapshot: the file is empty"),
            "{err}"
        );
        let text = write(dir.path(), "notes.txt", b"just some text\n");
        let err = read_status(&text).expect_err("text");
        assert!(
            err.to_string()
                .ends_with("not an etcd snapshot: 15 bytes is too short for a bbolt database"),
            "{err}"
        );
        let text = write(
            dir.path(),
            "long.txt",
            &b"etcd backups go to /var/backups\n".repeat(100),
        );
        let err = read_status(&text).expect_err("text");
        assert!(err.to_string().contains("no valid bbolt meta page"), "{err}");
    }
}
