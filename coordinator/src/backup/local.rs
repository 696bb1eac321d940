//! A backup target that is a local directory (`file:///var/backups/etcd/prod-a`):
//! files written to a temporary name, fsynced, renamed into place (mode 0600:
//! a snapshot holds every key of the cluster), and the directory fsynced.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use etcdops_format::snapfile::TrailerCheck;

use super::target::{StoredObject, TargetError};

/// A local directory holding backups.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    url: String,
    dir: PathBuf,
}

impl LocalTarget {
    pub fn new(url: String, dir: PathBuf) -> LocalTarget {
        LocalTarget { url, dir }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory (also where `backup run` stages its snapshot).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, what: impl Into<String>, source: std::io::Error) -> TargetError {
        TargetError::Io {
            target: self.url.clone(),
            what: what.into(),
            source,
        }
    }

    /// The directory exists, is a directory, and a file can be created in it.
    pub async fn check(&self) -> Result<(), TargetError> {
        let meta = match std::fs::metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TargetError::Missing {
                    target: self.url.clone(),
                    dir: self.dir.clone(),
                });
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => {
                return Err(TargetError::NotADirectory {
                    target: self.url.clone(),
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(self.io(format!("cannot read {}", self.dir.display()), e)),
        };
        if !meta.is_dir() {
            return Err(TargetError::NotADirectory {
                target: self.url.clone(),
                dir: self.dir.clone(),
            });
        }
        let probe = self
            .dir
            .join(format!(".etcdops-write-probe-{}", std::process::id()));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe);
        match created {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) if is_full(&e) => Err(TargetError::Full {
                target: self.url.clone(),
                name: "a probe file".into(),
            }),
            Err(source) => Err(TargetError::NotWritable {
                target: self.url.clone(),
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    pub async fn list(&self) -> Result<Vec<StoredObject>, TargetError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| match e {
            e if e.kind() == std::io::ErrorKind::NotFound => TargetError::Missing {
                target: self.url.clone(),
                dir: self.dir.clone(),
            },
            e if e.raw_os_error() == Some(nix::libc::ENOTDIR) => TargetError::NotADirectory {
                target: self.url.clone(),
                dir: self.dir.clone(),
            },
            e => self.io(format!("cannot list {}", self.dir.display()), e),
        })?;
        let mut objects = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io(format!("cannot list {}", self.dir.display()), e))?;
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                objects.push(StoredObject {
                    name: name.to_string(),
                    size: meta.len(),
                });
            }
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    pub async fn put_file(&self, name: &str, source: &Path) -> Result<u64, TargetError> {
        let dest = self.dir.join(name);
        if source == dest {
            let meta = std::fs::metadata(&dest)
                .map_err(|e| self.io(format!("cannot stat {}", dest.display()), e))?;
            return Ok(meta.len());
        }
        let (this, name, source) = (self.clone(), name.to_string(), source.to_path_buf());
        tokio::task::spawn_blocking(move || {
            this.write_new(&name, |file| {
                let mut input = std::fs::File::open(&source)?;
                std::io::copy(&mut input, file)
            })
        })
        .await
        .map_err(|e| self.io("the copy task failed", std::io::Error::other(e)))?
    }

    pub async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), TargetError> {
        self.write_new(name, |file| file.write_all(&bytes).map(|()| bytes.len() as u64))
            .map(|_| ())
    }

    /// Writes `<name>.part-<pid>` with `fill`, fsyncs it, renames it to
    /// `name` (refusing to replace an existing file) and fsyncs the
    /// directory. On any failure the partial file is removed.
    fn write_new(
        &self,
        name: &str,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<u64>,
    ) -> Result<u64, TargetError> {
        let dest = self.dir.join(name);
        if dest.exists() {
            return Err(TargetError::Exists {
                target: self.url.clone(),
                name: name.to_string(),
            });
        }
        let part = self.dir.join(format!("{name}.part-{}", std::process::id()));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&part)?;
            let written = fill(&mut file)?;
            file.sync_all()?;
            if dest.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "appeared while writing",
                ));
            }
            std::fs::rename(&part, &dest)?;
            std::fs::File::open(&self.dir)?.sync_all()?;
            Ok(written)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&part);
            if is_full(&e) {
                TargetError::Full {
                    target: self.url.clone(),
                    name: name.to_string(),
                }
            } else if e.kind() == std::io::ErrorKind::AlreadyExists {
                TargetError::Exists {
                    target: self.url.clone(),
                    name: name.to_string(),
                }
            } else if e.kind() == std::io::ErrorKind::PermissionDenied {
                TargetError::NotWritable {
                    target: self.url.clone(),
                    dir: self.dir.clone(),
                    source: e,
                }
            } else {
                self.io(format!("cannot write {}", dest.display()), e)
            }
        })
    }

    pub async fn read(&self, name: &str) -> Result<Vec<u8>, TargetError> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(|e| self.io(format!("cannot read {}", path.display()), e))
    }

    pub async fn size(&self, name: &str) -> Result<Option<u64>, TargetError> {
        let path = self.dir.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(format!("cannot stat {}", path.display()), e)),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), TargetError> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(format!("cannot delete {}", path.display()), e)),
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(format!("cannot sync {}", self.dir.display()), e))
    }

    /// Re-reads a stored snapshot: `(size, sha256 of the database bytes)`,
    /// after checking etcd's sha256 trailer against them.
    pub async fn hash_snapshot(&self, name: &str) -> Result<(u64, String), TargetError> {
        let path = self.dir.join(name);
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let io = |e| TargetError::Io {
                target: url.clone(),
                what: format!("cannot re-read {}", path.display()),
                source: e,
            };
            let mut file = std::fs::File::open(&path).map_err(io)?;
            let mut check = TrailerCheck::default();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                check.update(&buf[..n]);
            }
            check
                .finish()
                .map_err(|m| io(std::io::Error::new(std::io::ErrorKind::InvalidData, m)))
        })
        .await
        .map_err(|e| self.io("the hashing task failed", std::io::Error::other(e)))?
    }
}

/// ENOSPC or EDQUOT: the target is full.
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dir: &Path) -> LocalTarget {
        LocalTarget::new(format!("file://{}", dir.display()), dir.to_path_buf())
    }

    #[tokio::test]
    async fn writes_lists_reads_and_deletes_without_overwriting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(dir.path());
        t.check().await.expect("usable");
        t.put_bytes("a.db.json", b"{}".to_vec()).await.expect("put");
        assert!(matches!(
            t.put_bytes("a.db.json", b"x".to_vec()).await,
            Err(TargetError::Exists { .. })
        ));
        let src = dir.path().join("staged");
        std::fs::write(&src, vec![7u8; 3000]).expect("write");
        assert_eq!(t.put_file("a.db", &src).await.expect("copy"), 3000);
        assert_eq!(t.put_file("staged", &src).await.expect("in place"), 3000);
        let names: Vec<String> = t
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["a.db", "a.db.json", "staged"]);
        assert_eq!(t.read("a.db.json").await.expect("read"), b"{}");
        assert_eq!(t.size("a.db").await.expect("size"), Some(3000));
        t.delete("a.db").await.expect("delete");
        t.delete("a.db").await.expect("gone is fine");
        assert_eq!(t.size("a.db").await.expect("size"), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a.db.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn check_names_missing_and_non_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = target(&dir.path().join("nope"));
        let err = missing.check().await.expect_err("missing");
        assert!(
            matches!(err, TargetError::Missing { .. }) && err.to_string().contains("mkdir -p"),
            "{err}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            target(&file).check().await,
            Err(TargetError::NotADirectory { .. })
        ));
        assert!(matches!(
            target(&file.join("sub")).check().await,
            Err(TargetError::NotADirectory { .. })
        ));
        assert!(matches!(missing.list().await, Err(TargetError::Missing { .. })));
        assert!(matches!(
            target(&file).list().await,
            Err(TargetError::NotADirectory { .. })
        ));
    }

    #[tokio::test]
    async fn a_full_disk_is_named_and_leaves_no_partial_file() {
        // /dev/full fails every write with ENOSPC.
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(dir.path());
        let err = t
            .write_new("x.db", |file| {
                let mut full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
                file.write_all(b"some")?;
                full.write_all(&[0u8; 4096])?;
                full.flush().map(|()| 4)
            })
            .expect_err("full");
        assert!(matches!(err, TargetError::Full { .. }), "{err}");
        assert!(err.to_string().contains("partial file was removed"), "{err}");
        assert!(t.list().await.expect("list").is_empty(), "no partial file left");
    }

    #[tokio::test]
    async fn hashes_a_snapshot_checking_its_trailer() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().expect("tempdir");
        let t = target(dir.path());
        let db = vec![3u8; 5000];
        let mut file = db.clone();
        file.extend_from_slice(&Sha256::digest(&db));
        std::fs::write(dir.path().join("s.db"), &file).expect("write");
        let (size, sha) = t.hash_snapshot("s.db").await.expect("hash");
        assert_eq!(size, 5032);
        assert_eq!(sha, hex::encode(Sha256::digest(&db)));
        file[10] ^= 1;
        std::fs::write(dir.path().join("bad.db"), &file).expect("write");
        assert!(t.hash_snapshot("bad.db").await.is_err());
    }
}
