//! The etcd data dir: its size and the free space of its filesystem.

use std::path::{Path, PathBuf};

/// What the agent knows about the data dir.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirInfo {
    pub path: PathBuf,
    pub exists: bool,
    pub size_bytes: u64,
    pub fs_free_bytes: u64,
    pub fs_total_bytes: u64,
    /// Why some figure could not be read.
    pub error: Option<String>,
}

impl DataDirInfo {
    /// Reads the figures (blocking: walks the tree). A missing dir is not an
    /// error: the filesystem figures then come from its nearest parent.
    pub fn read(path: &Path) -> DataDirInfo {
        let mut info = DataDirInfo { path: path.to_path_buf(), exists: path.is_dir(), ..Default::default() };
        if info.exists {
            match dir_size(path) {
                Ok(size) => info.size_bytes = size,
                Err(e) => info.error = Some(format!("cannot measure {}: {e}", path.display())),
            }
        }
        let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        match nix::sys::statvfs::statvfs(probe) {
            Ok(st) => {
                let frag = st.fragment_size();
                info.fs_free_bytes = st.blocks_available().saturating_mul(frag);
                info.fs_total_bytes = st.blocks().saturating_mul(frag);
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
}
