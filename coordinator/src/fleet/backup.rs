//! The `[clusters.backup]` table of the fleet file: where a cluster's backups
//! go and how long they are kept, with the types its fields are written in
//! ([`TargetUrl`], [`Span`]). Plain data checked at load; `backup/` turns it
//! into a target and a retention policy (`backup::config`). S3 credentials
//! never come from here, only from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`).
//!
//! ```toml
//! [clusters.backup]
//! target = "s3://etcd-backups/prod-a"   # or "file:///var/backups/etcd/prod-a"
//! s3_endpoint = "https://minio.example.com:9000"   # S3-compatible servers only
//! keep_last = 3
//! keep_hourly = 24
//! keep_daily = 7
//! keep_within = "2d"
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{self, DurationError};

/// The S3 region unless `s3_region` says otherwise.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

fn default_region() -> String {
    DEFAULT_S3_REGION.to_string()
}

fn is_default_region(region: &str) -> bool {
    region == DEFAULT_S3_REGION
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A cluster's backups: target and retention (`[clusters.backup]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawBackupConfig")]
pub struct BackupConfig {
    /// Where backups are stored: `file:///var/backups/etcd/prod-a` (an
    /// existing directory) or `s3://bucket/prefix`. `--target` overrides it.
    pub target: TargetUrl,
    /// An S3-compatible server (MinIO, Ceph RGW, ...), e.g.
    /// `https://minio.example.com:9000`. Unset: AWS S3 in `s3_region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (default `us-east-1`).
    #[serde(default = "default_region", skip_serializing_if = "is_default_region")]
    pub s3_region: String,
    /// Allow a plain `http://` `s3_endpoint` (test servers only; default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub s3_allow_http: bool,
    /// Keep the N newest verified backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<NonZeroU32>,
    /// Keep the newest backup of each of the N most recent hours that have one (24: a day of hourly backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<NonZeroU32>,
    /// Keep the newest backup of each of the N most recent UTC days that have one (7: a week of dailies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<NonZeroU32>,
    /// Keep every backup younger than this span, e.g. `"7d"`, `"36h"`, `"2w"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Span>,
}

/// [`BackupConfig`] as written, before the fields are checked together.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackupConfig {
    target: TargetUrl,
    #[serde(default)]
    s3_endpoint: Option<String>,
    #[serde(default)]
    s3_region: Option<String>,
    #[serde(default)]
    s3_allow_http: Option<bool>,
    #[serde(default)]
    keep_last: Option<NonZeroU32>,
    #[serde(default)]
    keep_hourly: Option<NonZeroU32>,
    #[serde(default)]
    keep_daily: Option<NonZeroU32>,
    #[serde(default)]
    keep_within: Option<Span>,
}

impl TryFrom<RawBackupConfig> for BackupConfig {
    type Error = String;

    fn try_from(raw: RawBackupConfig) -> Result<BackupConfig, String> {
        let is_s3 = matches!(raw.target, TargetUrl::S3 { .. });
        if !is_s3 {
            let s3_fields = [
                ("s3_endpoint", raw.s3_endpoint.is_some()),
                ("s3_region", raw.s3_region.is_some()),
                ("s3_allow_http", raw.s3_allow_http.is_some()),
            ];
            if let Some((field, _)) = s3_fields.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "backup: {field} is set but target {} is not s3://",
                    raw.target
                ));
            }
        }
        let allow_http = raw.s3_allow_http.unwrap_or(false);
        if let Some(endpoint) = &raw.s3_endpoint {
            let http = endpoint.starts_with("http://");
            if !http && !endpoint.starts_with("https://") {
                return Err(format!(
                    "backup: s3_endpoint {endpoint:?} must start with https:// (or http://)"
                ));
            }
            if http && !allow_http {
                return Err(format!(
                    "backup: s3_endpoint {endpoint:?} is plain http: use https, or set s3_allow_http = true (test servers only)"
                ));
            }
        }
        let region = raw.s3_region.unwrap_or_else(default_region);
        if region.trim().is_empty() {
            return Err("backup: s3_region is empty; leave it out for us-east-1".to_string());
        }
        Ok(BackupConfig {
            target: raw.target,
            s3_endpoint: raw.s3_endpoint,
            s3_region: region,
            s3_allow_http: allow_http,
            keep_last: raw.keep_last,
            keep_hourly: raw.keep_hourly,
            keep_daily: raw.keep_daily,
            keep_within: raw.keep_within,
        })
    }
}

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

/// A span of time as written in the fleet file (`7d`, `36h`), kept with its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    text: String,
    duration: Duration,
}

impl Span {
    /// Parses `7d`, `2w`, `36h` (see [`duration::parse_span`]).
    pub fn parse(text: &str) -> Result<Span, DurationError> {
        let duration = duration::parse_span(text)?;
        Ok(Span {
            text: text.trim().to_string(),
            duration,
        })
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Span {
    type Error = DurationError;

    fn try_from(text: String) -> Result<Span, DurationError> {
        Span::parse(&text)
    }
}

impl From<Span> for String {
    fn from(span: Span) -> String {
        span.text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Parses one `[backup]` table the way the fleet file nests it.
    fn parse(body: &str) -> Result<BackupConfig, String> {
        #[derive(Deserialize)]
        struct Doc {
            backup: BackupConfig,
        }
        toml::from_str::<Doc>(&format!("[backup]\n{body}"))
            .map(|d| d.backup)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_full_s3_table() {
        let config = parse(
            "target = \"s3://etcd-backups/prod-a\"\ns3_endpoint = \"http://127.0.0.1:9000\"\ns3_region = \"eu-west-1\"\n\
             s3_allow_http = true\nkeep_last = 3\nkeep_hourly = 24\nkeep_daily = 7\nkeep_within = \"7d\"\n",
        )
        .expect("parses");
        assert_eq!(
            config.target,
            TargetUrl::S3 {
                bucket: "etcd-backups".into(),
                prefix: "prod-a".into()
            }
        );
        assert_eq!(config.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.s3_region, "eu-west-1");
        assert!(config.s3_allow_http);
        assert_eq!(config.keep_last.map(|n| n.get()), Some(3));
        assert_eq!(config.keep_hourly.map(|n| n.get()), Some(24));
        assert_eq!(config.keep_daily.map(|n| n.get()), Some(7));
        assert_eq!(
            config.keep_within.as_ref().map(|s| s.duration()),
            Some(Duration::from_secs(7 * 86_400))
        );
        // Round trip through TOML.
        #[derive(Serialize)]
        struct Doc<'a> {
            backup: &'a BackupConfig,
        }
        let text = toml::to_string(&Doc { backup: &config }).expect("serialize");
        let body = text.trim_start_matches("[backup]\n");
        assert_eq!(parse(body).expect("reparse"), config);
    }

    #[test]
    fn defaults_for_a_local_target() {
        let config = parse("target = \"file:///var/backups/etcd\"\n").expect("parses");
        assert_eq!(config.target, TargetUrl::Local("/var/backups/etcd".into()));
        assert_eq!(config.s3_region, "us-east-1");
        assert!(!config.s3_allow_http);
        assert_eq!(
            (
                config.keep_last,
                config.keep_hourly,
                config.keep_daily,
                config.keep_within
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn refuses_bad_tables_saying_what_is_wrong() {
        let cases = [
            ("", "target"),
            ("target = \"/var/backups\"", "file:///absolute/dir"),
            (
                "target = \"s3://b-1/p\"\ns3_endpoint = \"http://h:9000\"",
                "s3_allow_http",
            ),
            ("target = \"s3://b-1/p\"\ns3_endpoint = \"h:9000\"", "https://"),
            ("target = \"file:///d\"\ns3_region = \"eu-west-1\"", "not s3://"),
            ("target = \"s3://b-1/p\"\nkeep_last = 0", "nonzero"),
            ("target = \"s3://b-1/p\"\nkeep_daily = -1", "keep_daily"),
            (
                "target = \"s3://b-1/p\"\nkeep_within = \"7 days\"",
                "unknown unit",
            ),
            ("target = \"s3://b-1/p\"\nkeep_weekly = 4", "keep_weekly"),
            (
                "target = \"s3://b-1/p\"\naws_secret_access_key = \"x\"",
                "aws_secret_access_key",
            ),
        ];
        for (body, expect) in cases {
            let err = parse(body).expect_err(body);
            assert!(err.contains(expect), "{body}: {err}");
        }
    }
}
