//! Restore (disaster recovery) on the host, beside the data dir: the
//! validated request ([`RestoreSpec`]), the staging paths, the free-space
//! rule, the snapshot file written as it arrives ([`PartWriter`]) and
//! checked (size, sha256, etcd's trailer), then swapping the restored
//! directory in and rolling back ([`swap`]). Nothing here deletes etcd data: the old
//! data dir, a failed attempt's leftover and a rolled-back dir are renamed
//! to kept copies (`datadir::move_aside`). The tool itself is in [`tool`].

pub mod swap;
pub mod tool;

pub use swap::{RolledBack, Swapped, check_staged_path, roll_back, swap_in};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::datadir::{self, DataDirError};
use crate::envfile::{EnvFileError, validate_var};
use etcdops_format::snapfile::{TRAILER, TrailerCheck, TrailerError};

/// Errors of staging, swapping in and rolling back a restore. The RPC layer
/// maps each to one gRPC code (`rpc::restore::status`).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A request field is wrong (InvalidArgument).
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(
        "not enough free space beside the data dir ({dir}): {free} bytes free, {needed} needed \
         (twice the snapshot's {size} bytes: the file and the restored copy)"
    )]
    NoSpace {
        dir: PathBuf,
        free: u64,
        needed: u64,
        size: u64,
    },
    #[error("size: the stream carries more bytes than announced: expected {expected}, got at least {got}")]
    TooManyBytes { expected: u64, got: u64 },
    #[error("size: expected {expected} bytes, got {got}")]
    SizeMismatch { expected: u64, got: u64 },
    #[error("sha256: expected {expected}, got {got}")]
    ShaMismatch { expected: String, got: String },
    /// etcd's trailer does not match the database bytes (TrailerCheck's words).
    #[error(transparent)]
    Integrity(TrailerError),
    #[error(
        "{tool} cannot bump the revision on restore (etcdutl 3.5.10+ or etcdctl 3.4.27+ can); install one and \
         set restore.etcdutl (or restore.etcdctl) in the agent config, or restore with bump_revision = 0 (asked: {bump})"
    )]
    BumpUnsupported { bump: u64, tool: String },
    #[error(
        "restore tool {path} not found: install etcd's tools (etcdutl for 3.5+, etcdctl for 3.4) \
         or set {setting} in the agent config"
    )]
    ToolMissing { setting: &'static str, path: PathBuf },
    #[error("cannot run {tool}: {source}")]
    ToolStart {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} did not finish within {timeout:?} and was killed (see restore.timeout_secs)")]
    ToolTimeout { tool: PathBuf, timeout: Duration },
    #[error("{tool} {args} failed ({status}): {tail}")]
    ToolFailed {
        tool: PathBuf,
        args: String,
        status: String,
        tail: String,
    },
    #[error("the restore tool reported success but {dir} has no member/wal")]
    NotRestored { dir: PathBuf },
    #[error("{what} only while etcd is stopped; {unit} is {state}: call StopEtcd first")]
    EtcdRunning {
        what: &'static str,
        unit: String,
        state: String,
    },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io { op, path, source }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RestoreError {
    RestoreError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// What StageRestore is asked to do, validated ([`RestoreSpec::validated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    /// The fence's operation: it names the staged directory.
    pub operation_id: String,
    /// Bytes of the snapshot file, trailer included.
    pub size: u64,
    /// Hex sha256 of the database bytes (the file less its 32-byte trailer):
    /// what the trailer must hold (lower case once validated).
    pub sha256: String,
    pub name: String,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    /// 0: no bump.
    pub bump_revision: u64,
}

/// An operation ID usable in a file name: `[A-Za-z0-9_-]`, at most 128.
fn valid_operation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// An etcd setting checked by the env file's rules, named by its request field.
fn setting(field: &'static str, var: &str, value: &str) -> Result<(), RestoreError> {
    validate_var(var, value).map_err(|e| match e {
        EnvFileError::InvalidValue { value, reason, .. } => {
            invalid(field, format!("invalid value {value:?}: {reason}"))
        }
        other => invalid(field, other.to_string()),
    })
}

impl RestoreSpec {
    /// Checks every field (the first bad one named), as etcd's restore would
    /// (`--name` in `--initial-cluster` with the advertised peer URLs), and
    /// lower-cases the sha256.
    pub fn validated(mut self) -> Result<RestoreSpec, RestoreError> {
        if !valid_operation_id(&self.operation_id) {
            return Err(invalid(
                "fence.operation_id",
                format!(
                    "{:?} names the staged directory: letters, digits, '-' and '_', at most 128",
                    self.operation_id
                ),
            ));
        }
        if self.size <= TRAILER as u64 {
            return Err(invalid(
                "size",
                format!(
                    "{} bytes is no snapshot file (the database and etcd's 32-byte sha256 trailer)",
                    self.size
                ),
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "sha256",
                format!("{:?} is not 64 hex digits", self.sha256),
            ));
        }
        self.sha256.make_ascii_lowercase();
        setting("name", "ETCD_NAME", &self.name)?;
        setting("initial_cluster", "ETCD_INITIAL_CLUSTER", &self.initial_cluster)?;
        setting(
            "initial_advertise_peer_urls",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            &self.initial_advertise_peer_urls,
        )?;
        let token = &self.initial_cluster_token;
        if token.is_empty() || token.len() > 256 || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "initial_cluster_token",
                format!(
                    "{token:?}: required, at most 256 characters, no spaces (a new token per restored cluster)"
                ),
            ));
        }
        let mine: Vec<&str> = self
            .initial_cluster
            .split(',')
            .filter_map(|e| e.split_once('='))
            .filter(|(n, _)| *n == self.name)
            .map(|(_, url)| url)
            .collect();
        if mine.is_empty() {
            return Err(invalid(
                "initial_cluster",
                format!(
                    "{:?} has no member named {:?} (name)",
                    self.initial_cluster, self.name
                ),
            ));
        }
        let mut advertised: Vec<&str> = self.initial_advertise_peer_urls.split(',').collect();
        let mut listed = mine;
        advertised.sort_unstable();
        advertised.dedup();
        listed.sort_unstable();
        if advertised != listed {
            return Err(invalid(
                "initial_advertise_peer_urls",
                format!(
                    "{:?} must equal {}'s URLs in initial_cluster ({})",
                    self.initial_advertise_peer_urls,
                    self.name,
                    listed.join(",")
                ),
            ));
        }
        Ok(self)
    }
}

/// Where a restore is staged, beside the data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePaths {
    /// `<parent>/.<data dir name>.restore-<operation>.snapshot.part`
    pub part: PathBuf,
    /// `<data dir>.restore-<operation>`
    pub staged: PathBuf,
}

impl StagePaths {
    pub fn new(data_dir: &Path, operation_id: &str) -> Result<StagePaths, RestoreError> {
        if !valid_operation_id(operation_id) {
            return Err(invalid(
                "fence.operation_id",
                format!("{operation_id:?} cannot name a directory"),
            ));
        }
        let name = data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DataDirError::NoName {
                path: data_dir.to_path_buf(),
            })?;
        let parent = datadir::parent_dir(data_dir);
        let staged = parent.join(format!("{name}.restore-{operation_id}"));
        if datadir::is_kept_copy_name(data_dir, &staged) {
            return Err(invalid(
                "fence.operation_id",
                format!("{operation_id:?} would name the staged directory like a kept copy of the data dir"),
            ));
        }
        Ok(StagePaths {
            part: parent.join(format!(".{name}.restore-{operation_id}.snapshot.part")),
            staged,
        })
    }
}

/// The free-space rule: room for the snapshot file and the restored copy
/// (about as large as the file), so at least twice `size`.
pub fn check_free_space(dir: &Path, free: u64, size: u64) -> Result<(), RestoreError> {
    let needed = size.saturating_mul(2);
    if free < needed {
        return Err(RestoreError::NoSpace {
            dir: dir.to_path_buf(),
            free,
            needed,
            size,
        });
    }
    Ok(())
}

/// Moves a leftover staged directory (a failed earlier attempt: etcd's
/// restore refuses an existing dir) aside to `<staged>.failed-<UTC>`;
/// returns where, or `None` when there was none.
pub fn set_aside_leftover(staged: &Path, now: SystemTime) -> Result<Option<PathBuf>, RestoreError> {
    match std::fs::symlink_metadata(staged) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", staged)(e)),
        Ok(_) => {
            let kept = datadir::move_aside(staged, "failed", now)?;
            tracing::warn!(leftover = %staged.display(), kept = %kept.display(), "a staged restore's leftover set aside");
            Ok(Some(kept))
        }
    }
}

/// Removes a file when dropped (the snapshot `.part` copy: ours, not etcd
/// data), on every path out, also when the call is abandoned.
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => tracing::debug!(path = %self.0.display(), "snapshot copy removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.0.display(), error = %e, "cannot remove the snapshot copy"),
        }
    }
}

/// What was written: its size and etcd's trailer verdict (the database's
/// hex sha256, equal to the trailer, or why not).
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    pub trailer: Result<String, TrailerError>,
}

/// Writes the snapshot file as chunks arrive, hashing on the way (blocking).
#[derive(Debug)]
pub struct PartWriter {
    path: PathBuf,
    file: std::fs::File,
    trailer: TrailerCheck,
    bytes: u64,
}

impl PartWriter {
    /// Creates `path` (mode 0600); a leftover of an earlier attempt is
    /// replaced (it is a copy the agent made).
    pub fn create(path: &Path) -> Result<PartWriter, RestoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_error("creating", path))?;
        Ok(PartWriter {
            path: path.to_path_buf(),
            file,
            trailer: TrailerCheck::default(),
            bytes: 0,
        })
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), RestoreError> {
        self.file
            .write_all(chunk)
            .map_err(io_error("writing", &self.path))?;
        self.trailer.update(chunk);
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// fsyncs the file and returns what was written.
    pub fn finish(self) -> Result<Written, RestoreError> {
        self.file.sync_all().map_err(io_error("fsyncing", &self.path))?;
        Ok(Written {
            bytes: self.bytes,
            trailer: self.trailer.finish().map(|(_, digest)| digest),
        })
    }
}

/// The file's checks, in order: size, etcd's trailer against the bytes
/// before it, the trailer against the header's sha256 (the snapshot meant).
/// Returns the database's sha256.
pub fn verify(spec: &RestoreSpec, written: &Written) -> Result<String, RestoreError> {
    if written.bytes != spec.size {
        return Err(RestoreError::SizeMismatch {
            expected: spec.size,
            got: written.bytes,
        });
    }
    let digest = written.trailer.clone().map_err(RestoreError::Integrity)?;
    if digest != spec.sha256 {
        return Err(RestoreError::ShaMismatch {
            expected: spec.sha256.clone(),
            got: digest,
        });
    }
    Ok(digest)
}

/// Gives `tree` (everything under it, symlinks not followed) the owner of
/// `reference` (the data dir etcd runs with), when they differ: a restore
/// run by a root agent must stay readable by etcd's own user.
pub fn chown_like(tree: &Path, reference: &Path) -> Result<(), RestoreError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(want) = std::fs::metadata(reference) else {
        return Ok(());
    };
    let have = std::fs::symlink_metadata(tree).map_err(io_error("reading", tree))?;
    if (have.uid(), have.gid()) == (want.uid(), want.gid()) {
        return Ok(());
    }
    let mut stack = vec![tree.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(want.uid()), Some(want.gid()))
            .map_err(io_error("chown", &path))?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            for entry in std::fs::read_dir(&path).map_err(io_error("listing", &path))? {
                stack.push(entry.map_err(io_error("listing", &path))?.path());
            }
        }
    }
    Ok(())
}

/// Whether `dir` is a real directory (not a symlink) holding `member/wal`.
pub fn is_restored_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) && dir.join("member/wal").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn spec() -> RestoreSpec {
        RestoreSpec {
            operation_id: "restore-20261125T183000Z-3f9a".to_string(),
            size: 4096 + 32,
            sha256: "AB".repeat(32),
            name: "etcd1".to_string(),
            initial_cluster: "etcd1=http://10.0.0.1:2380,etcd2=http://10.0.0.2:2380".to_string(),
            initial_cluster_token: "restored-1".to_string(),
            initial_advertise_peer_urls: "http://10.0.0.1:2380".to_string(),
            bump_revision: 0,
        }
    }

    fn field_of(e: RestoreError) -> &'static str {
        match e {
            RestoreError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn headers_are_validated_field_by_field() {
        let ok = spec().validated().expect("valid");
        assert_eq!(ok.sha256, "ab".repeat(32), "lower-cased");
        type Change = Box<dyn Fn(&mut RestoreSpec)>;
        let cases: Vec<(&str, Change)> = vec![
            ("fence.operation_id", Box::new(|s| s.operation_id = "../x".into())),
            ("fence.operation_id", Box::new(|s| s.operation_id = "a.b".into())),
            ("size", Box::new(|s| s.size = 32)),
            ("sha256", Box::new(|s| s.sha256 = "abc".into())),
            ("sha256", Box::new(|s| s.sha256 = "zz".repeat(32))),
            ("name", Box::new(|s| s.name = "".into())),
            ("name", Box::new(|s| s.name = "a=b".into())),
            (
                "initial_cluster",
                Box::new(|s| s.initial_cluster = "etcd1=10.0.0.1:2380".into()),
            ),
            (
                "initial_cluster",
                Box::new(|s| s.initial_cluster = "etcd2=http://10.0.0.2:2380".into()),
            ),
            (
                "initial_advertise_peer_urls",
                Box::new(|s| s.initial_advertise_peer_urls = "http://h".into()),
            ),
            (
                "initial_advertise_peer_urls",
                Box::new(|s| s.initial_advertise_peer_urls = "http://10.0.0.9:2380".into()),
            ),
            (
                "initial_cluster_token",
                Box::new(|s| s.initial_cluster_token = "".into()),
            ),
            (
                "initial_cluster_token",
                Box::new(|s| s.initial_cluster_token = "a b".into()),
            ),
        ];
        for (field, change) in cases {
            let mut s = spec();
            change(&mut s);
            let err = s.clone().validated().expect_err(field);
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
            assert_eq!(field_of(err), field, "{s:?}");
        }
    }

    #[test]
    fn stage_paths_sit_beside_the_data_dir() {
        let p = StagePaths::new(Path::new("/var/lib/etcd/default"), "op-1").expect("paths");
        assert_eq!(
            p.part,
            Path::new("/var/lib/etcd/.default.restore-op-1.snapshot.part")
        );
        assert_eq!(p.staged, Path::new("/var/lib/etcd/default.restore-op-1"));
        assert_eq!(
            field_of(StagePaths::new(Path::new("/d/default"), "x/y").expect_err("slash")),
            "fence.operation_id"
        );
        let err = StagePaths::new(Path::new("/d/default"), "20231114T221320Z").expect_err("like a kept copy");
        assert_eq!(field_of(err), "fence.operation_id");
    }

    #[test]
    fn free_space_must_be_twice_the_size() {
        assert!(check_free_space(Path::new("/d"), 2000, 1000).is_ok());
        let err = check_free_space(Path::new("/d"), 1999, 1000).expect_err("short");
        assert!(err.to_string().contains("1999 bytes free, 2000 needed"), "{err}");
        assert!(
            check_free_space(Path::new("/d"), u64::MAX, u64::MAX).is_ok(),
            "saturates"
        );
        assert!(check_free_space(Path::new("/d"), u64::MAX - 1, u64::MAX).is_err());
    }

    fn with_trailer(db: &[u8]) -> Vec<u8> {
        let mut file = db.to_vec();
        file.extend_from_slice(&Sha256::digest(db));
        file
    }

    #[test]
    fn the_written_file_is_checked_for_size_sha_and_trailer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = with_trailer(&[7u8; 5000]);
        let write = |bytes: &[u8]| {
            let path = dir.path().join("x.part");
            let mut w = PartWriter::create(&path).expect("create");
            for c in bytes.chunks(777) {
                w.write(c).expect("write");
            }
            w.finish().expect("finish")
        };
        let good = RestoreSpec {
            size: file.len() as u64,
            sha256: hex::encode(Sha256::digest([7u8; 5000])),
            ..spec()
        };
        assert_eq!(verify(&good, &write(&file)).expect("valid"), good.sha256);
        let err = verify(
            &RestoreSpec {
                size: good.size + 1,
                ..good.clone()
            },
            &write(&file),
        )
        .expect_err("size");
        assert!(matches!(err, RestoreError::SizeMismatch { .. }), "{err}");
        // A flipped byte: the trailer no longer matches the bytes before it.
        let mut flipped = file.clone();
        flipped[100] ^= 1;
        let err = verify(&good, &write(&flipped)).expect_err("trailer");
        assert!(err.to_string().contains("integrity check failed"), "{err}");
        // Another snapshot, intact in itself: not the one the header names.
        let other = with_trailer(&[8u8; 5000]);
        let err = verify(&good, &write(&other)).expect_err("sha");
        assert!(err.to_string().starts_with("sha256: expected "), "{err}");
    }

    #[test]
    fn leftovers_are_set_aside_never_deleted() {
        let root = tempfile::tempdir().expect("tempdir");
        let staged = root.path().join("default.restore-op-3");
        assert_eq!(set_aside_leftover(&staged, at(0)).expect("none"), None);
        std::fs::create_dir_all(staged.join("member/snap")).expect("mkdir");
        std::fs::write(staged.join("member/snap/db"), b"partial").expect("write");
        let kept = set_aside_leftover(&staged, at(1_700_000_000))
            .expect("aside")
            .expect("moved");
        assert_eq!(
            kept,
            root.path().join("default.restore-op-3.failed-20231114T221320Z")
        );
        assert_eq!(
            std::fs::read(kept.join("member/snap/db")).expect("kept"),
            b"partial"
        );
        assert!(!staged.exists());
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }
}
