//! The etcd data dir: its size, its filesystem's free space and inodes, what
//! it holds; and moving it aside instead of ever deleting it.
//!
//! Rule of safety: a data dir is never deleted. [`move_aside`] renames it to
//! a kept copy `<dir>.<reason>-<YYYYMMDDTHHMMSSZ>` beside it; [`prune_kept`]
//! is the only deletion in etcdops, and it deletes only kept copies beyond an
//! explicit retention count; [`plan_prune`] (pure) decides by a count and
//! an age which kept copies housekeeping removes ([`remove_kept_copy`]),
//! never the newest one nor a protected one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What the agent knows about the data dir.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirInfo {
    pub path: PathBuf,
    pub exists: bool,
    pub size_bytes: u64,
    pub fs_free_bytes: u64,
    pub fs_total_bytes: u64,
    /// Inodes of the filesystem, and how many are free (statvfs `f_files`,
    /// `f_ffree`): a full inode table stops etcd as surely as a full disk.
    pub fs_files: u64,
    pub fs_files_free: u64,
    /// Whether `member/wal` and `member/snap` are there (an initialised member).
    pub has_wal: bool,
    pub has_snap: bool,
    /// The data dir's owner; `None` when it does not exist.
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    /// Why some figure could not be read.
    pub error: Option<String>,
}

impl DataDirInfo {
    /// Reads the figures (blocking: walks the tree). A missing dir is not an
    /// error: the filesystem figures then come from its nearest parent.
    pub fn read(path: &Path) -> DataDirInfo {
        let mut info = DataDirInfo {
            path: path.to_path_buf(),
            exists: path.is_dir(),
            ..Default::default()
        };
        if info.exists {
            match dir_size(path) {
                Ok(size) => info.size_bytes = size,
                Err(e) => info.error = Some(format!("cannot measure {}: {e}", path.display())),
            }
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::MetadataExt;
                info.owner_uid = Some(meta.uid());
                info.owner_gid = Some(meta.gid());
            }
            info.has_wal = path.join("member/wal").is_dir();
            info.has_snap = path.join("member/snap").is_dir();
        }
        let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        match nix::sys::statvfs::statvfs(probe) {
            Ok(st) => {
                let frag = st.fragment_size();
                info.fs_free_bytes = st.blocks_available().saturating_mul(frag);
                info.fs_total_bytes = st.blocks().saturating_mul(frag);
                info.fs_files = st.files();
                info.fs_files_free = st.files_free();
            }
            Err(e) => info.error = Some(format!("statvfs {}: {e}", probe.display())),
        }
        info
    }
}

/// Sum of the allocated sizes of regular files under `dir`, not following
/// symlinks (etcd preallocates WAL files, so allocated size is what counts).
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    Ok(total)
}

/// Errors moving a data dir aside or pruning kept copies.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "reason {reason:?} must be lower-case letters, digits and '-', starting with a letter or digit \
         (e.g. \"restore\"), at most 32 characters"
    )]
    InvalidReason { reason: String },
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not a directory (a symlink or a file); only a real data dir is moved aside")]
    NotADirectory { path: PathBuf },
    #[error("{path} has no directory name to keep a copy under")]
    NoName { path: PathBuf },
    #[error("cannot move {from} aside: {to} already exists (nothing was moved)")]
    TargetExists { from: PathBuf, to: PathBuf },
    #[error("{path} is the newest kept copy of the data dir: it is never removed")]
    Newest { path: PathBuf },
    #[error("{path} is not a kept copy of the data dir (not listed beside it): nothing removed")]
    NotKept { path: PathBuf },
    #[error("cannot format the time {0:?} as a UTC timestamp")]
    Time(SystemTime),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A data dir kept aside by [`move_aside`]: `<dir>.<reason>-<stamp>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptCopy {
    pub path: PathBuf,
    pub reason: String,
    /// When it was moved aside, UTC, `YYYYMMDDTHHMMSSZ`.
    pub stamp: String,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |source| DataDirError::Io { op, path, source }
}

/// Moves the data dir `dir` aside, never deleting it: renames it to
/// `<dir>.<reason>-<YYYYMMDDTHHMMSSZ>` (UTC time `now`) in the same parent
/// directory, atomically, and fsyncs the parent. Refuses when that name is
/// taken (the rename never replaces anything), when `reason` is not
/// `[a-z0-9-]`, and when `dir` is not a real directory. Returns the new path.
pub fn move_aside(dir: &Path, reason: &str, now: SystemTime) -> Result<PathBuf, DataDirError> {
    if !valid_reason(reason) {
        return Err(DataDirError::InvalidReason {
            reason: reason.to_string(),
        });
    }
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataDirError::Missing {
                path: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error("reading", dir)(e)),
    };
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DataDirError::NoName {
            path: dir.to_path_buf(),
        })?;
    let target = dir.with_file_name(format!("{name}.{reason}-{}", utc_stamp(now)?));
    rename_noreplace(dir, &target)?;
    let parent = parent_of(dir);
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsyncing", &parent))?;
    tracing::info!(from = %dir.display(), to = %target.display(), "data dir moved aside");
    Ok(target)
}

/// The copies of `dir` that [`move_aside`] kept: real directories beside it
/// named `<dir name>.<reason>-<YYYYMMDDTHHMMSSZ>`, newest first.
pub fn kept_copies(dir: &Path) -> Result<Vec<KeptCopy>, DataDirError> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DataDirError::NoName {
            path: dir.to_path_buf(),
        })?;
    let parent = parent_of(dir);
    let mut copies = Vec::new();
    for entry in std::fs::read_dir(&parent).map_err(io_error("listing", &parent))? {
        let entry = entry.map_err(io_error("listing", &parent))?;
        let file_name = entry.file_name();
        let Some((reason, stamp)) = file_name.to_str().and_then(|n| parse_kept_name(name, n)) else {
            continue;
        };
        // file_type does not follow symlinks: a symlink is never a kept copy.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copies.push(KeptCopy {
                path: entry.path(),
                reason: reason.to_string(),
                stamp: stamp.to_string(),
            });
        }
    }
    copies.sort_by(|a, b| b.stamp.cmp(&a.stamp).then_with(|| b.path.cmp(&a.path)));
    Ok(copies)
}

/// Deletes the kept copies of `dir` beyond the newest `keep`, and returns
/// what it deleted, oldest last.
///
/// This is the only deletion of etcd data anywhere in etcdops, and it is
/// bounded: it deletes only directories that [`kept_copies`] lists (real
/// directories beside `dir` whose names match `<dir>.<reason>-<stamp>`
/// exactly), never `dir` itself, never anything reached through a symlink,
/// and only when the retention count says so.
pub fn prune_kept(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, DataDirError> {
    let mut removed = Vec::new();
    for copy in kept_copies(dir)?.into_iter().skip(keep) {
        std::fs::remove_dir_all(&copy.path).map_err(io_error("removing the kept copy", &copy.path))?;
        tracing::info!(path = %copy.path.display(), "pruned a kept data dir copy");
        removed.push(copy.path);
    }
    if !removed.is_empty() {
        let parent = parent_of(dir);
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsyncing", &parent))?;
    }
    Ok(removed)
}

/// A retention policy for kept copies: a copy is kept when any rule keeps
/// it (the newest `keep`; those younger than `max_age`). At least one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptPolicy {
    /// Keep the newest this many copies.
    pub keep: Option<usize>,
    /// Keep copies younger than this.
    pub max_age: Option<Duration>,
}

/// What the policy decides for one kept copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptVerdict {
    pub copy: KeptCopy,
    /// Remove it (or, in a dry run, it would be).
    pub remove: bool,
    /// Why, for people and the log.
    pub why: String,
}

/// Decides which kept copies (`copies`, newest first as [`kept_copies`]
/// lists them) the policy removes at `now` (pure). Never the newest copy,
/// never one in `protected` (path, why), never one whose age cannot be
/// read from its name, and nothing without a rule.
pub fn plan_prune(
    copies: &[KeptCopy],
    policy: KeptPolicy,
    now: SystemTime,
    protected: &[(PathBuf, String)],
) -> Vec<KeptVerdict> {
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    copies
        .iter()
        .enumerate()
        .map(|(i, copy)| {
            let verdict = |remove: bool, why: String| KeptVerdict {
                copy: copy.clone(),
                remove,
                why,
            };
            if i == 0 {
                return verdict(false, "the newest copy (never removed)".into());
            }
            if let Some((_, why)) = protected.iter().find(|(p, _)| *p == copy.path) {
                return verdict(false, format!("protected: {why}"));
            }
            if policy.keep.is_none() && policy.max_age.is_none() {
                return verdict(false, "no retention rule given".into());
            }
            if let Some(keep) = policy.keep
                && i < keep
            {
                return verdict(false, format!("one of the newest {keep}"));
            }
            let Some(age) = policy.max_age else {
                return verdict(true, format!("beyond the newest {}", policy.keep.unwrap_or(0)));
            };
            let Some(stamp) = stamp_unix(&copy.stamp) else {
                return verdict(false, format!("its time {:?} cannot be read: kept", copy.stamp));
            };
            let old = now_unix.saturating_sub(stamp);
            let limit = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
            if old < limit {
                return verdict(false, format!("younger than {}", secs_text(age.as_secs())));
            }
            let why = match policy.keep {
                Some(keep) => format!(
                    "beyond the newest {keep} and older than {}",
                    secs_text(age.as_secs())
                ),
                None => format!("older than {}", secs_text(age.as_secs())),
            };
            verdict(true, why)
        })
        .collect()
}

/// `90000` → `1d1h`, `30` → `30s`: a duration in the units people write.
fn secs_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// A kept copy's stamp (`YYYYMMDDTHHMMSSZ`) as Unix seconds.
pub fn stamp_unix(stamp: &str) -> Option<i64> {
    if !valid_stamp(stamp) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| stamp.get(r).and_then(|s| s.parse::<u16>().ok());
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(n(0..4)?), month, u8::try_from(n(6..8)?).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(n(9..11)?).ok()?,
        u8::try_from(n(11..13)?).ok()?,
        u8::try_from(n(13..15)?).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// Allocated bytes of the regular files under `path` (0 when unreadable).
pub fn size_bytes(path: &Path) -> u64 {
    dir_size(path).unwrap_or(0)
}

/// Deletes one kept copy of `dir`: only a path [`kept_copies`] lists now
/// and not the newest of them; then fsyncs the parent. The caller decided
/// by [`plan_prune`]; this re-checks what the filesystem holds.
pub fn remove_kept_copy(dir: &Path, copy: &Path) -> Result<(), DataDirError> {
    let copies = kept_copies(dir)?;
    let position = copies.iter().position(|c| c.path == copy);
    match position {
        Some(0) => Err(DataDirError::Newest {
            path: copy.to_path_buf(),
        }),
        None => Err(DataDirError::NotKept {
            path: copy.to_path_buf(),
        }),
        Some(_) => {
            std::fs::remove_dir_all(copy).map_err(io_error("removing the kept copy", copy))?;
            let parent = parent_of(dir);
            std::fs::File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(io_error("fsyncing", &parent))
        }
    }
}

/// Free bytes (for unprivileged users) of the filesystem holding `path`, or
/// of its nearest existing ancestor when `path` does not exist yet.
pub fn fs_free_bytes(path: &Path) -> Result<u64, DataDirError> {
    let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let st = nix::sys::statvfs::statvfs(probe).map_err(|e| io_error("statvfs", probe)(e.into()))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Whether `candidate` is named like a kept copy of `dir`
/// (`<dir>.<reason>-<YYYYMMDDTHHMMSSZ>` in the same parent), by name only.
pub fn is_kept_copy_name(dir: &Path, candidate: &Path) -> bool {
    let (Some(name), Some(other)) = (
        dir.file_name().and_then(|n| n.to_str()),
        candidate.file_name().and_then(|n| n.to_str()),
    ) else {
        return false;
    };
    parent_of(dir) == parent_of(candidate) && parse_kept_name(name, other).is_some()
}

/// Renames `from` to `to` in one step, never replacing anything at `to`
/// (renameat2 NOREPLACE where available), then fsyncs `to`'s parent.
pub fn rename_no_replace(from: &Path, to: &Path) -> Result<(), DataDirError> {
    rename_noreplace(from, to)?;
    let parent = parent_of(to);
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsyncing", &parent))?;
    tracing::info!(from = %from.display(), to = %to.display(), "renamed");
    Ok(())
}

/// The directory holding `dir` (`.` for a bare name).
pub fn parent_dir(dir: &Path) -> PathBuf {
    parent_of(dir)
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn valid_reason(reason: &str) -> bool {
    reason.len() <= 32
        && reason
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `now` as `YYYYMMDDTHHMMSSZ`, UTC.
fn utc_stamp(now: SystemTime) -> Result<String, DataDirError> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = time::OffsetDateTime::from(now)
        .format(&format)
        .map_err(|_| DataDirError::Time(now))?;
    if valid_stamp(&stamp) {
        Ok(stamp)
    } else {
        Err(DataDirError::Time(now))
    }
}

fn valid_stamp(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
}

/// `(reason, stamp)` when `candidate` is `<name>.<reason>-<stamp>`.
fn parse_kept_name<'a>(name: &str, candidate: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = candidate.strip_prefix(name)?.strip_prefix('.')?;
    let (reason, stamp) = rest.rsplit_once('-')?;
    (valid_reason(reason) && valid_stamp(stamp)).then_some((reason, stamp))
}

/// rename(2) that never replaces: renameat2(RENAME_NOREPLACE) where the
/// kernel and filesystem have it, else a check then a rename.
fn rename_noreplace(from: &Path, to: &Path) -> Result<(), DataDirError> {
    let exists = || DataDirError::TargetExists {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => return Err(exists()),
            // Not supported here: fall back below.
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(e) => return Err(io_error("renaming", from)(e.into())),
        }
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(exists());
    }
    std::fs::rename(from, to).map_err(io_error("renaming", from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_files_and_tolerates_missing_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("member")).expect("mkdir");
        std::fs::write(dir.path().join("member/db"), vec![1u8; 64 * 1024]).expect("write");
        let info = DataDirInfo::read(dir.path());
        assert!(info.exists);
        assert!(info.size_bytes >= 64 * 1024, "{info:?}");
        assert!(info.fs_total_bytes > 0 && info.fs_free_bytes > 0);
        let missing = DataDirInfo::read(&dir.path().join("nope/deeper"));
        assert!(!missing.exists);
        assert_eq!(missing.size_bytes, 0);
        assert!(missing.fs_total_bytes > 0, "figures from the nearest parent");
        assert_eq!(missing.error, None);
    }

    #[test]
    fn reports_inodes_layout_and_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let info = DataDirInfo::read(dir.path());
        assert!(!info.has_wal && !info.has_snap);
        assert!(info.fs_files >= info.fs_files_free, "{info:?}");
        let meta = std::fs::metadata(dir.path()).expect("meta");
        assert_eq!(
            (info.owner_uid, info.owner_gid),
            (Some(meta.uid()), Some(meta.gid()))
        );
        std::fs::create_dir_all(dir.path().join("member/wal")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("member/snap")).expect("mkdir");
        let info = DataDirInfo::read(dir.path());
        assert!(info.has_wal && info.has_snap);
        let missing = DataDirInfo::read(&dir.path().join("nope"));
        assert_eq!((missing.owner_uid, missing.has_wal), (None, false));
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("e").file_name().to_string_lossy().into())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn move_aside_renames_with_a_utc_stamp_and_never_replaces() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("default");
        std::fs::create_dir_all(data.join("member/wal")).expect("mkdir");
        std::fs::write(data.join("member/wal/0.wal"), b"wal").expect("write");

        let kept = move_aside(&data, "restore", at(1_700_000_000)).expect("move aside");
        assert_eq!(kept, root.path().join("default.restore-20231114T221320Z"));
        assert!(!data.exists());
        assert_eq!(
            std::fs::read(kept.join("member/wal/0.wal")).expect("kept intact"),
            b"wal"
        );

        // Same name again in the same second: refused, nothing moved.
        std::fs::create_dir(&data).expect("mkdir");
        let err = move_aside(&data, "restore", at(1_700_000_000)).expect_err("taken");
        assert!(matches!(err, DataDirError::TargetExists { .. }), "{err}");
        assert!(data.exists());
        // Also when the name is taken by an empty directory (plain rename(2) would replace it).
        std::fs::create_dir(root.path().join("default.replace-20231114T221320Z")).expect("mkdir");
        let err = move_aside(&data, "replace", at(1_700_000_000)).expect_err("taken by an empty dir");
        assert!(matches!(err, DataDirError::TargetExists { .. }), "{err}");

        for bad in [
            "",
            "Restore",
            "re store",
            "../x",
            "-x",
            "a_b",
            "x".repeat(33).as_str(),
        ] {
            let err = move_aside(&data, bad, at(0)).expect_err(bad);
            assert!(
                matches!(err, DataDirError::InvalidReason { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            move_aside(&root.path().join("nope"), "x", at(0)),
            Err(DataDirError::Missing { .. })
        ));
        std::os::unix::fs::symlink(&data, root.path().join("link")).expect("symlink");
        assert!(matches!(
            move_aside(&root.path().join("link"), "x", at(0)),
            Err(DataDirError::NotADirectory { .. })
        ));
        assert!(data.exists(), "nothing was moved by the refusals");
    }

    #[test]
    fn kept_copies_are_listed_newest_first_and_pruned_by_count_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("default");
        let mut kept = Vec::new();
        for (i, secs) in [1_600_000_000u64, 1_700_000_000, 1_650_000_000]
            .into_iter()
            .enumerate()
        {
            std::fs::create_dir(&data).expect("mkdir");
            std::fs::write(data.join("db"), format!("{i}")).expect("write");
            kept.push(
                move_aside(&data, if i == 1 { "member-replace" } else { "restore" }, at(secs))
                    .expect("aside"),
            );
        }
        std::fs::create_dir(&data).expect("current data dir");
        // Look-alikes that are not kept copies: never listed, never pruned.
        for other in [
            "default.restore-2023",
            "default.Restore-20231114T221320Z",
            "default-restore-20231114T221320Z",
            "defaultx.restore-20231114T221320Z",
            "default.restore-20231114T221320Z.tmp",
        ] {
            std::fs::create_dir(root.path().join(other)).expect("mkdir");
        }
        std::fs::write(root.path().join("default.restore-20000101T000000Z"), b"a file").expect("file");
        std::os::unix::fs::symlink(&data, root.path().join("default.restore-19990101T000000Z"))
            .expect("symlink");

        let copies = kept_copies(&data).expect("list");
        let listed: Vec<&Path> = copies.iter().map(|c| c.path.as_path()).collect();
        assert_eq!(listed, [kept[1].as_path(), kept[2].as_path(), kept[0].as_path()]);
        assert_eq!(copies[0].reason, "member-replace");
        assert_eq!(copies[0].stamp, "20231114T221320Z");

        assert_eq!(
            prune_kept(&data, 5).expect("nothing to prune"),
            Vec::<PathBuf>::new()
        );
        let before = names(root.path());
        assert_eq!(
            prune_kept(&data, 1).expect("prune"),
            [kept[2].clone(), kept[0].clone()]
        );
        let after = names(root.path());
        assert_eq!(before.len() - 2, after.len());
        assert!(kept[1].exists() && data.exists());
        assert!(after.contains(&"default.restore-2023".to_string()));
        assert!(
            after.contains(&"default.restore-19990101T000000Z".to_string()),
            "symlink kept"
        );
        assert!(
            after.contains(&"default.restore-20000101T000000Z".to_string()),
            "file kept"
        );
        assert_eq!(prune_kept(&data, 0).expect("prune all copies"), [kept[1].clone()]);
        assert!(data.exists(), "the data dir itself is never pruned");
    }

    fn copy(stamp: &str) -> KeptCopy {
        KeptCopy {
            path: PathBuf::from(format!("/var/lib/etcd/default.restore-{stamp}")),
            reason: "restore".into(),
            stamp: stamp.into(),
        }
    }

    #[test]
    fn plan_prune_never_the_newest_never_protected_by_count_and_age() {
        let day = Duration::from_secs(86_400);
        // Newest first, one day apart; "now" is a day after the newest.
        let copies: Vec<KeptCopy> = [
            "20261205T000000Z",
            "20261204T000000Z",
            "20261203T000000Z",
            "20261202T000000Z",
        ]
        .into_iter()
        .map(copy)
        .collect();
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_secs(stamp_unix("20261206T000000Z").expect("stamp") as u64);
        let protect_third = vec![(copies[2].path.clone(), "restore op-1 is paused".to_string())];
        let none: Vec<(PathBuf, String)> = Vec::new();
        let pol = |keep: Option<usize>, days: Option<u64>| KeptPolicy {
            keep,
            max_age: days.map(|d| day * d as u32),
        };
        // (policy, protected, which are removed)
        type Protected<'a> = &'a [(PathBuf, String)];
        let cases: [(KeptPolicy, Protected<'_>, [bool; 4]); 10] = [
            (pol(None, None), &none, [false; 4]),
            (pol(Some(0), None), &none, [false, true, true, true]),
            (pol(Some(1), None), &none, [false, true, true, true]),
            (pol(Some(2), None), &none, [false, false, true, true]),
            (pol(Some(9), None), &none, [false; 4]),
            (pol(None, Some(0)), &none, [false, true, true, true]),
            // Exactly 3 days old counts as older than 3 days.
            (pol(None, Some(3)), &none, [false, false, true, true]),
            (pol(None, Some(4)), &none, [false, false, false, true]),
            // Both rules: kept when either keeps it.
            (pol(Some(3), Some(1)), &none, [false, false, false, true]),
            (pol(Some(1), None), &protect_third, [false, true, false, true]),
        ];
        for (i, (policy, protected, want)) in cases.iter().enumerate() {
            let got: Vec<bool> = plan_prune(&copies, *policy, now, protected)
                .iter()
                .map(|v| v.remove)
                .collect();
            assert_eq!(got, want, "case {i}: {policy:?}");
        }
        let verdicts = plan_prune(&copies, pol(Some(1), Some(3)), now, &protect_third);
        assert!(verdicts[0].why.contains("newest"), "{verdicts:?}");
        assert!(
            verdicts[2].why.contains("protected: restore op-1"),
            "{verdicts:?}"
        );
        assert!(verdicts[3].why.contains("older than 3d"), "{verdicts:?}");
        // A single copy is the newest: never removed, whatever the policy.
        assert!(!plan_prune(&copies[3..], pol(Some(0), Some(0)), now, &none)[0].remove);
        // An unreadable stamp under an age rule: kept.
        let odd = vec![copies[0].clone(), copy("20261399T000000Z")];
        assert!(!plan_prune(&odd, pol(None, Some(0)), now, &none)[1].remove);
        assert_eq!(stamp_unix("20231114T221320Z"), Some(1_700_000_000));
        assert_eq!(secs_text(90_061), "1d1h1m1s");
    }

    #[test]
    fn remove_kept_copy_refuses_the_newest_and_strangers() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("default");
        let mut kept = Vec::new();
        for secs in [1_600_000_000u64, 1_700_000_000] {
            std::fs::create_dir_all(data.join("member")).expect("mkdir");
            std::fs::write(data.join("member/db"), vec![0u8; 8192]).expect("write");
            kept.push(move_aside(&data, "replace", at(secs)).expect("aside"));
        }
        assert!(size_bytes(&kept[0]) >= 8192);
        assert!(matches!(
            remove_kept_copy(&data, &kept[1]),
            Err(DataDirError::Newest { .. })
        ));
        assert!(matches!(
            remove_kept_copy(&data, &root.path().join("other")),
            Err(DataDirError::NotKept { .. })
        ));
        remove_kept_copy(&data, &kept[0]).expect("remove the older");
        assert!(!kept[0].exists() && kept[1].exists());
    }

    #[test]
    fn kept_copy_names_free_space_and_renames_that_never_replace() {
        let data = Path::new("/var/lib/etcd/default");
        assert!(is_kept_copy_name(
            data,
            Path::new("/var/lib/etcd/default.pre-restore-20231114T221320Z")
        ));
        assert!(!is_kept_copy_name(
            data,
            Path::new("/tmp/default.pre-restore-20231114T221320Z")
        ));
        assert!(!is_kept_copy_name(
            data,
            Path::new("/var/lib/etcd/default.restore-op-1")
        ));
        assert!(!is_kept_copy_name(data, data));

        let root = tempfile::tempdir().expect("tempdir");
        assert!(
            fs_free_bytes(&root.path().join("not/yet")).expect("free") > 0,
            "nearest parent"
        );
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        assert!(matches!(
            rename_no_replace(&a, &b),
            Err(DataDirError::TargetExists { .. })
        ));
        std::fs::remove_dir(&b).expect("rmdir");
        rename_no_replace(&a, &b).expect("rename");
        assert!(b.is_dir() && !a.exists());
        assert_eq!(parent_dir(Path::new("default")), Path::new("."));
    }
}
