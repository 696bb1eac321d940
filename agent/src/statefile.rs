//! The agent's state dir (`state_dir`, default `/var/lib/etcdops-agent`):
//! created 0700 at start-up, and the one atomic write its files use (fences,
//! revision samples).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates the state dir (mode 0700, parents as needed) when it is missing.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same dir
/// (mode 0600), fsync, rename over `path`, fsync the dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp); // a leftover of a crashed write by a process with our pid
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_the_dir_private_and_replaces_files_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/state");
        ensure_dir(&dir).expect("create");
        assert_eq!(
            std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777,
            0o700
        );
        ensure_dir(&dir).expect("exists already");
        let file = dir.join("x.json");
        write_atomic(&file, b"one").expect("write");
        write_atomic(&file, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&file).expect("read"), b"two");
        assert_eq!(
            std::fs::read_dir(&dir).expect("ls").count(),
            1,
            "no temporary file left"
        );
        assert!(ensure_dir(&file).is_err(), "a file is not a state dir");
    }
}
