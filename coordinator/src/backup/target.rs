//! Where backups are stored: the target URL (`file:///dir`, `s3://bucket/prefix`),
//! the [`Target`] the commands list, write and delete through, and its errors.
//!
//! A target is a flat set of objects named `<cluster>-<time>.db` and
//! `<cluster>-<time>.db.json`; [`Target`] knows nothing of snapshots.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::local::LocalTarget;
use super::s3::{S3Credentials, S3Target};

/// A backup target as written in the fleet file or `--target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TargetUrl {
    /// `file:///var/backups/etcd/prod-a`: an existing local directory.
    Local(PathBuf),
    /// `s3://bucket/prefix`: objects `prefix/<name>` in an S3 (or S3-compatible) bucket.
    S3 { bucket: String, prefix: String },
}

/// Why a target URL does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetUrlError {
    #[error("backup target {url:?}: use file:///absolute/dir or s3://bucket/prefix")]
    Scheme { url: String },
    #[error("backup target {url:?}: the directory must be absolute, as in file:///var/backups/etcd")]
    NotAbsolute { url: String },
    #[error("backup target {url:?}: {reason}")]
    Bucket { url: String, reason: &'static str },
    #[error(
        "backup target {url:?}: the prefix {prefix:?} is not a valid object path (no empty, `.` or `..` parts)"
    )]
    Prefix { url: String, prefix: String },
}

impl TargetUrl {
    /// Parses `file:///dir` or `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<TargetUrl, TargetUrlError> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(TargetUrlError::NotAbsolute { url: url.to_string() });
            }
            let trimmed = path.trim_end_matches('/');
            let dir = if trimmed.is_empty() { "/" } else { trimmed };
            if Path::new(dir)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(TargetUrlError::NotAbsolute { url: url.to_string() });
            }
            return Ok(TargetUrl::Local(PathBuf::from(dir)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(|reason| TargetUrlError::Bucket {
                url: url.to_string(),
                reason,
            })?;
            let prefix = prefix.trim_matches('/');
            let bad_part = prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..");
            if !prefix.is_empty() && (bad_part || object_store::path::Path::parse(prefix).is_err()) {
                return Err(TargetUrlError::Prefix {
                    url: url.to_string(),
                    prefix: prefix.to_string(),
                });
            }
            return Ok(TargetUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(TargetUrlError::Scheme { url: url.to_string() })
    }

    /// The URL of one object in this target.
    pub fn object_url(&self, name: &str) -> String {
        match self {
            TargetUrl::Local(dir) => format!("file://{}", dir.join(name).display()),
            TargetUrl::S3 { .. } => format!("{}/{name}", self.to_string().trim_end_matches('/')),
        }
    }
}

/// S3 bucket naming rules, the part that catches typos.
fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    if bucket.is_empty() {
        return Err("no bucket: use s3://bucket/prefix");
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err("a bucket name has 3 to 63 characters");
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err("a bucket name has only lower-case letters, digits, `-` and `.`");
    }
    Ok(())
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetUrl::Local(dir) => write!(f, "file://{}", dir.display()),
            TargetUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            TargetUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl TryFrom<String> for TargetUrl {
    type Error = TargetUrlError;

    fn try_from(url: String) -> Result<TargetUrl, TargetUrlError> {
        TargetUrl::parse(&url)
    }
}

impl From<TargetUrl> for String {
    fn from(url: TargetUrl) -> String {
        url.to_string()
    }
}

impl std::str::FromStr for TargetUrl {
    type Err = TargetUrlError;

    fn from_str(url: &str) -> Result<TargetUrl, TargetUrlError> {
        TargetUrl::parse(url)
    }
}

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
            region: super::config::DEFAULT_S3_REGION.to_string(),
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
