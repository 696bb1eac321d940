//! Where backups are stored: the target URL (`file:///dir`, `s3://bucket/prefix`),
//! the [`Target`] the commands list, write and delete through, and its errors.
//!
//! A target is a flat set of objects named `<cluster>-<time>.db` and
//! `<cluster>-<time>.db.json`; [`Target`] knows nothing of snapshots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::local::LocalTarget;
use super::s3::{S3Credentials, S3Target};

// The URL type is part of the fleet file's `[clusters.backup]` table, so it
// lives with it in `fleet::backup`; re-exported as this module's vocabulary.
pub use crate::fleet::backup::{TargetUrl, TargetUrlError};

/// How to reach an S3 target: the fleet file's `s3_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// An S3-compatible server (`https://minio.example.com:9000`); `None` is AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Plain `http://` endpoints allowed.
    pub allow_http: bool,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            endpoint: None,
            region: crate::fleet::backup::DEFAULT_S3_REGION.to_string(),
            allow_http: false,
        }
    }
}

/// One object in a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The object's name in the target (no directory or prefix).
    pub name: String,
    pub size: u64,
}

/// Errors of a target. Each names the target and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("backup target {target}: the directory {} does not exist: create it (mkdir -p) or fix `target` in the fleet file's [clusters.backup] or --target", dir.display())]
    Missing { target: String, dir: PathBuf },
    #[error("backup target {target}: {} is not a directory: point `target` at a directory", dir.display())]
    NotADirectory { target: String, dir: PathBuf },
    #[error("backup target {target}: cannot write into {}: {source}; check the directory's owner and mode", dir.display())]
    NotWritable {
        target: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "backup target {target} is full: no space left while writing {name}; the partial file was removed. Free space, or run `etcdops backup prune`"
    )]
    Full { target: String, name: String },
    #[error("backup target {target}: {what}: {source}")]
    Io {
        target: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "backup target {target}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones) in etcdops' environment; they are never read from the fleet file"
    )]
    NoCredentials { target: String },
    #[error("backup target {target}: S3 endpoint {endpoint} is unreachable: {detail} (gave up within {}); check s3_endpoint in the fleet file, the network and the server", crate::duration::format(*within))]
    Unreachable {
        target: String,
        endpoint: String,
        within: Duration,
        detail: String,
    },
    #[error(
        "backup target {target}: bucket {bucket:?} does not exist at {endpoint}: create it, or fix `target` in the fleet file"
    )]
    NoBucket {
        target: String,
        bucket: String,
        endpoint: String,
    },
    #[error(
        "backup target {target}: access denied by {endpoint} ({detail}): check the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
    )]
    Denied {
        target: String,
        endpoint: String,
        detail: String,
    },
    #[error("backup target {target}: {name} already exists; refusing to overwrite a backup")]
    Exists { target: String, name: String },
    #[error("backup target {target}: cannot set up the S3 client: {detail}")]
    Setup { target: String, detail: String },
    #[error("backup target {target}: {what} failed: {detail}")]
    S3 {
        target: String,
        what: String,
        detail: String,
    },
}

/// A backup target, opened: local directory or S3 bucket.
#[derive(Debug)]
pub enum Target {
    Local(LocalTarget),
    S3(S3Target),
}

/// The environment etcdops reads for backups, gathered in one place
/// (tests pass their own instead of changing the process's).
#[derive(Debug, Clone, Default)]
pub struct BackupEnv {
    pub s3: Option<S3Credentials>,
}

impl BackupEnv {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_process() -> BackupEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let s3 = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(key_id), Some(secret)) => Some(S3Credentials {
                key_id,
                secret,
                token: var("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        BackupEnv { s3 }
    }
}

impl Target {
    /// Opens a target (no I/O yet for S3; [`Target::check`] makes the first call).
    /// `timeout` bounds connecting to S3 and each attempt at a small request.
    pub fn open(
        url: &TargetUrl,
        s3: &S3Settings,
        env: &BackupEnv,
        timeout: Duration,
    ) -> Result<Target, TargetError> {
        match url {
            TargetUrl::Local(dir) => Ok(Target::Local(LocalTarget::new(url.to_string(), dir.clone()))),
            TargetUrl::S3 { bucket, prefix } => {
                let credentials = env.s3.clone().ok_or_else(|| TargetError::NoCredentials {
                    target: url.to_string(),
                })?;
                Ok(Target::S3(S3Target::new(
                    url.to_string(),
                    bucket,
                    prefix,
                    s3,
                    credentials,
                    timeout,
                )?))
            }
        }
    }

    /// The target as a URL, for messages.
    pub fn url(&self) -> &str {
        match self {
            Target::Local(t) => t.url(),
            Target::S3(t) => t.url(),
        }
    }

    /// Checks the target can be used now: the directory exists and is
    /// writable, or the endpoint answers and the bucket exists. Bounded in time.
    pub async fn check(&self) -> Result<(), TargetError> {
        match self {
            Target::Local(t) => t.check().await,
            Target::S3(t) => t.check().await,
        }
    }

    /// Every object directly in the target (not in sub-directories or deeper prefixes).
    pub async fn list(&self) -> Result<Vec<StoredObject>, TargetError> {
        match self {
            Target::Local(t) => t.list().await,
            Target::S3(t) => t.list().await,
        }
    }

    /// Stores the file `source` as `name`, never overwriting. Local: copy,
    /// fsync and rename (a no-op when `source` is already `name` in the
    /// directory); S3: a streamed multipart upload. Returns the bytes stored.
    pub async fn put_file(&self, name: &str, source: &Path) -> Result<u64, TargetError> {
        match self {
            Target::Local(t) => t.put_file(name, source).await,
            Target::S3(t) => t.put_file(name, source).await,
        }
    }

    /// Stores a small object (a sidecar), never overwriting.
    pub async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), TargetError> {
        match self {
            Target::Local(t) => t.put_bytes(name, bytes).await,
            Target::S3(t) => t.put_bytes(name, bytes).await,
        }
    }

    /// Reads a small object (a sidecar) whole.
    pub async fn read(&self, name: &str) -> Result<Vec<u8>, TargetError> {
        match self {
            Target::Local(t) => t.read(name).await,
            Target::S3(t) => t.read(name).await,
        }
    }

    /// A local file holding `name`: a directory target's own file (no copy),
    /// or an S3 object downloaded into `download_dir` (created if needed).
    pub async fn fetch(&self, name: &str, download_dir: &Path) -> Result<PathBuf, TargetError> {
        match self {
            Target::Local(t) => Ok(t.dir().join(name)),
            Target::S3(t) => {
                std::fs::create_dir_all(download_dir).map_err(|source| TargetError::Io {
                    target: t.url().to_string(),
                    what: format!("cannot create {}", download_dir.display()),
                    source,
                })?;
                let dest = download_dir.join(name);
                if dest.exists() {
                    // Downloaded before (a retried restore); its sha256 is checked again.
                    return Ok(dest);
                }
                t.download(name, &dest).await?;
                Ok(dest)
            }
        }
    }

    /// The stored size of `name`, or `None` when there is no such object.
    pub async fn size(&self, name: &str) -> Result<Option<u64>, TargetError> {
        match self {
            Target::Local(t) => t.size(name).await,
            Target::S3(t) => t.size(name).await,
        }
    }

    /// Deletes `name`; an object already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), TargetError> {
        match self {
            Target::Local(t) => t.delete(name).await,
            Target::S3(t) => t.delete(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_urls() {
        let cases = [
            (
                "file:///var/backups/etcd/prod-a",
                TargetUrl::Local("/var/backups/etcd/prod-a".into()),
            ),
            ("file:///var/backups/", TargetUrl::Local("/var/backups".into())),
            (
                "s3://etcd-backups",
                TargetUrl::S3 {
                    bucket: "etcd-backups".into(),
                    prefix: String::new(),
                },
            ),
            (
                "s3://etcd-backups/prod/a/",
                TargetUrl::S3 {
                    bucket: "etcd-backups".into(),
                    prefix: "prod/a".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let url = TargetUrl::parse(text).expect(text);
            assert_eq!(url, want, "{text}");
            assert_eq!(TargetUrl::parse(&url.to_string()).expect("round trip"), url);
        }
        assert_eq!(
            TargetUrl::parse("s3://b-1/p").expect("s3").object_url("x.db"),
            "s3://b-1/p/x.db"
        );
        assert_eq!(
            TargetUrl::parse("file:///d").expect("file").object_url("x.db"),
            "file:///d/x.db"
        );
    }

    #[test]
    fn refuses_bad_target_urls_with_what_to_do() {
        let cases = [
            ("/var/backups", "file:///absolute/dir"),
            ("https://bucket/x", "s3://bucket/prefix"),
            ("file://var/backups", "absolute"),
            ("file:///var/../etc", "absolute"),
            ("s3://", "no bucket"),
            ("s3:///prefix", "no bucket"),
            ("s3://My_Bucket/x", "lower-case"),
            ("s3://ab/x", "3 to 63"),
            ("s3://bucket/a//b", "prefix"),
            ("s3://bucket/a/../b", "prefix"),
        ];
        for (text, expect) in cases {
            let err = TargetUrl::parse(text).expect_err(text).to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
