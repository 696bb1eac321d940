//! Swapping a staged restore in place of the data dir, and rolling back to
//! a kept copy: renames only (`datadir::move_aside`, never replacing), only
//! names the agent itself made are accepted, and a completed swap is
//! remembered in the state dir so a retry answers the same.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::{RestoreError, invalid, io_error, is_restored_dir, valid_operation_id};
use crate::datadir;

/// `staged` must be `<data dir>.restore-<operation>` beside the data dir,
/// by name (never an arbitrary path, nor a kept copy or a failed leftover).
pub fn check_staged_path(data_dir: &Path, staged: &Path) -> Result<(), RestoreError> {
    let bad = |why: &str| {
        invalid(
            "staged_dir",
            format!(
                "{:?} {why}; it must be {}.restore-<operation> beside the data dir, as StageRestore answered",
                staged.display().to_string(),
                data_dir.display()
            ),
        )
    };
    if staged.as_os_str().is_empty() {
        return Err(invalid("staged_dir", "required: StageRestoreResponse.staged_dir"));
    }
    if staged
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("has '.' or '..' components"));
    }
    let name = data_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let operation = staged
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(name))
        .and_then(|n| n.strip_prefix(".restore-"));
    if datadir::parent_dir(staged) != datadir::parent_dir(data_dir)
        || !operation.is_some_and(valid_operation_id)
        || datadir::is_kept_copy_name(data_dir, staged)
    {
        return Err(bad("is not a staged restore"));
    }
    Ok(())
}

/// A completed swap, remembered in `<state_dir>/restore-swaps.json` so a
/// retried SwapInRestore answers the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Swapped {
    pub staged_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where the previous data dir is kept; `None` when there was none.
    pub previous_kept_as: Option<PathBuf>,
}

const SWAPS_FILE: &str = "restore-swaps.json";
const SWAPS_KEPT: usize = 16;

fn load_swaps(state_dir: &Path) -> Vec<Swapped> {
    let path = state_dir.join(SWAPS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable record of restore swaps; ignored");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// The kept copy the most recent swap into `data_dir` put aside (what a
/// rollback of that restore puts back), with the restore's staged dir:
/// housekeeping never removes it.
pub fn latest_swap_kept(state_dir: &Path, data_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    load_swaps(state_dir)
        .into_iter()
        .rev()
        .find(|s| s.data_dir == data_dir)
        .and_then(|s| s.previous_kept_as.map(|kept| (kept, s.staged_dir)))
}

fn save_swap(state_dir: &Path, swap: &Swapped) -> Result<(), RestoreError> {
    let mut swaps = load_swaps(state_dir);
    swaps.retain(|s| s.staged_dir != swap.staged_dir);
    swaps.push(swap.clone());
    let skip = swaps.len().saturating_sub(SWAPS_KEPT);
    let path = state_dir.join(SWAPS_FILE);
    let bytes = serde_json::to_vec_pretty(&swaps[skip..]).unwrap_or_default();
    crate::statefile::write_atomic(&path, &bytes).map_err(io_error("writing", &path))
}

/// Swaps the staged restore in (blocking; the caller checked etcd is
/// stopped): the data dir renamed to `<dir>.pre-restore-<UTC>` (never
/// replacing), then the staged dir renamed to the data dir. A retry after
/// it completed (staged gone, data dir and kept copy there) answers the
/// same; a retry after a crash between the two renames finishes the second.
pub fn swap_in(
    data_dir: &Path,
    staged: &Path,
    state_dir: &Path,
    now: SystemTime,
) -> Result<Swapped, RestoreError> {
    check_staged_path(data_dir, staged)?;
    let recorded = load_swaps(state_dir)
        .into_iter()
        .find(|s| s.staged_dir == staged && s.data_dir == data_dir);
    if std::fs::symlink_metadata(staged).is_err() {
        return match recorded {
            Some(done)
                if is_restored_dir(data_dir) && done.previous_kept_as.as_deref().is_none_or(Path::exists) =>
            {
                tracing::info!(staged = %staged.display(), "restore already swapped in");
                Ok(done)
            }
            _ => Err(invalid(
                "staged_dir",
                format!("{} does not exist", staged.display()),
            )),
        };
    }
    if !is_restored_dir(staged) {
        return Err(invalid(
            "staged_dir",
            format!(
                "{} is not a restored data dir (a real directory with member/wal)",
                staged.display()
            ),
        ));
    }
    let previous = match std::fs::symlink_metadata(data_dir) {
        Ok(_) => Some(datadir::move_aside(data_dir, "pre-restore", now)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => recorded.and_then(|r| r.previous_kept_as),
        Err(e) => return Err(io_error("reading", data_dir)(e)),
    };
    let swap = Swapped {
        staged_dir: staged.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        previous_kept_as: previous,
    };
    // Recorded between the renames: a crash there still knows the kept copy.
    save_swap(state_dir, &swap)?;
    datadir::rename_no_replace(staged, data_dir)?;
    tracing::warn!(
        data_dir = %data_dir.display(), from = %staged.display(),
        previous = %swap.previous_kept_as.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        "restored data dir swapped in"
    );
    Ok(swap)
}

/// A completed roll-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub data_dir: PathBuf,
    /// Where the data dir it replaced is kept; `None` when there was none.
    pub replaced_kept_as: Option<PathBuf>,
}

/// `previous` must be named like a kept copy of the data dir
/// (`<dir>.<reason>-<YYYYMMDDTHHMMSSZ>` beside it), by name.
pub fn check_previous_path(data_dir: &Path, previous: &Path) -> Result<(), RestoreError> {
    if previous.as_os_str().is_empty() {
        return Err(invalid(
            "previous",
            "required: the kept copy to put back (SwapInRestoreResponse.previous_kept_as)",
        ));
    }
    if previous
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || !datadir::is_kept_copy_name(data_dir, previous)
    {
        return Err(invalid(
            "previous",
            format!(
                "{:?} is not a kept copy of the data dir: it must be {}.<reason>-<YYYYMMDDTHHMMSSZ> beside it",
                previous.display().to_string(),
                data_dir.display()
            ),
        ));
    }
    Ok(())
}

/// Puts the kept copy `previous` back as the data dir (blocking; the caller
/// checked etcd is stopped): the current data dir renamed to
/// `<dir>.rolled-back-<UTC>`, then `previous` renamed to the data dir.
/// `previous` must be one of `datadir::kept_copies`.
pub fn roll_back(data_dir: &Path, previous: &Path, now: SystemTime) -> Result<RolledBack, RestoreError> {
    check_previous_path(data_dir, previous)?;
    let bad = |why: String| invalid("previous", why);
    if !datadir::kept_copies(data_dir)?
        .iter()
        .any(|k| k.path.file_name() == previous.file_name())
    {
        return Err(bad(format!(
            "{} does not exist (or is not a real directory)",
            previous.display()
        )));
    }
    let replaced = match std::fs::symlink_metadata(data_dir) {
        Ok(_) => Some(datadir::move_aside(data_dir, "rolled-back", now)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("reading", data_dir)(e)),
    };
    datadir::rename_no_replace(previous, data_dir)?;
    tracing::warn!(data_dir = %data_dir.display(), from = %previous.display(), "kept data dir rolled back");
    Ok(RolledBack {
        data_dir: data_dir.to_path_buf(),
        replaced_kept_as: replaced,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn field_of(e: RestoreError) -> &'static str {
        match e {
            RestoreError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn the_latest_swap_into_the_data_dir_names_the_copy_housekeeping_keeps() {
        let state = tempfile::tempdir().expect("tempdir");
        let data = PathBuf::from("/d/default");
        assert_eq!(latest_swap_kept(state.path(), &data), None);
        for (op, kept) in [
            ("op-1", "/d/default.pre-restore-20261201T000000Z"),
            ("op-2", "/d/default.pre-restore-20261202T000000Z"),
        ] {
            save_swap(
                state.path(),
                &Swapped {
                    staged_dir: PathBuf::from(format!("/d/default.restore-{op}")),
                    data_dir: data.clone(),
                    previous_kept_as: Some(PathBuf::from(kept)),
                },
            )
            .expect("save");
        }
        save_swap(
            state.path(),
            &Swapped {
                staged_dir: PathBuf::from("/e/other.restore-op-3"),
                data_dir: PathBuf::from("/e/other"),
                previous_kept_as: None,
            },
        )
        .expect("save");
        assert_eq!(
            latest_swap_kept(state.path(), &data),
            Some((
                PathBuf::from("/d/default.pre-restore-20261202T000000Z"),
                PathBuf::from("/d/default.restore-op-2")
            ))
        );
    }

    #[test]
    fn staged_paths_must_be_a_staged_restore_beside_the_data_dir() {
        let data = Path::new("/var/lib/etcd/default");
        assert!(check_staged_path(data, Path::new("/var/lib/etcd/default.restore-op-1")).is_ok());
        for bad in [
            "",
            "/var/lib/etcd/default",
            "/tmp/default.restore-op-1",
            "/var/lib/etcd/other.restore-op-1",
            "/var/lib/etcd/default.restore-",
            "/var/lib/etcd/default.restore-op-1.failed-20231114T221320Z",
            "/var/lib/etcd/default.restore-20231114T221320Z",
            "/var/lib/etcd/sub/../default.restore-op-1",
            "/var/lib/etcd/default.pre-restore-20231114T221320Z",
        ] {
            let err = check_staged_path(data, Path::new(bad)).expect_err(bad);
            assert_eq!(field_of(err), "staged_dir", "{bad}");
        }
    }

    fn restored(dir: &Path) {
        std::fs::create_dir_all(dir.join("member/wal")).expect("mkdir");
        std::fs::create_dir_all(dir.join("member/snap")).expect("mkdir");
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn swap_in_keeps_the_old_dir_is_idempotent_and_rolls_back() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = root.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        let data = root.path().join("default");
        restored(&data);
        std::fs::write(data.join("old"), b"old").expect("write");
        let staged = root.path().join("default.restore-op-1");
        // Not restored yet.
        assert_eq!(
            field_of(swap_in(&data, &staged, &state, at(1)).expect_err("missing")),
            "staged_dir"
        );
        std::fs::create_dir(&staged).expect("mkdir");
        assert_eq!(
            field_of(swap_in(&data, &staged, &state, at(1)).expect_err("no wal")),
            "staged_dir"
        );
        restored(&staged);
        std::fs::write(staged.join("new"), b"new").expect("write");

        let swap = swap_in(&data, &staged, &state, at(1_700_000_000)).expect("swap");
        let kept = root.path().join("default.pre-restore-20231114T221320Z");
        assert_eq!(swap.previous_kept_as.as_deref(), Some(kept.as_path()));
        assert!(data.join("new").exists() && kept.join("old").exists() && !staged.exists());
        assert_eq!(
            swap_in(&data, &staged, &state, at(1_700_000_100)).expect("retry"),
            swap,
            "same answer"
        );

        let err = roll_back(
            &data,
            Path::new("/tmp/default.pre-restore-20231114T221320Z"),
            at(2),
        )
        .expect_err("far");
        assert_eq!(field_of(err), "previous");
        let err = roll_back(
            &data,
            &root.path().join("default.pre-restore-20231114T221321Z"),
            at(2),
        )
        .expect_err("gone");
        assert_eq!(field_of(err), "previous");
        let back = roll_back(&data, &kept, at(1_700_000_200)).expect("roll back");
        let replaced = root.path().join("default.rolled-back-20231114T221640Z");
        assert_eq!(back.replaced_kept_as.as_deref(), Some(replaced.as_path()));
        assert!(data.join("old").exists() && replaced.join("new").exists() && !kept.exists());
    }

    #[test]
    fn a_swap_interrupted_between_the_renames_is_finished() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("default");
        let staged = root.path().join("default.restore-op-2");
        restored(&staged);
        let kept = root.path().join("default.pre-restore-20231114T221320Z");
        restored(&kept);
        save_swap(
            root.path(),
            &Swapped {
                staged_dir: staged.clone(),
                data_dir: data.clone(),
                previous_kept_as: Some(kept.clone()),
            },
        )
        .expect("record");
        let swap = swap_in(&data, &staged, root.path(), at(5)).expect("finish");
        assert_eq!(swap.previous_kept_as, Some(kept));
        assert!(is_restored_dir(&data) && !staged.exists());
    }
}
