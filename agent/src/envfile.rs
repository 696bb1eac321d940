//! etcd's environment file (Debian's `/etc/default/etcd`): `ETCD_*=value`
//! lines read by etcd.service's `EnvironmentFile=` and by the process backend.
//!
//! The file is kept as lines so a later rewrite can preserve comments and
//! variables we do not manage. Syntax follows systemd's EnvironmentFile:
//! `KEY=VALUE`, optional single or double quotes around the value, `#` and
//! `;` comment lines, blank lines.

use std::path::{Path, PathBuf};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `KEY=VALUE`; `raw` is the line as written.
    Var { key: String, value: String, raw: String },
    /// A comment or blank line, kept verbatim.
    Other(String),
}

/// A parsed environment file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    lines: Vec<Line>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read etcd environment file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Syntax { path: PathBuf, line: usize, reason: String },
}

impl EnvFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<EnvFile, EnvFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| EnvFileError::Read { path: path.to_path_buf(), source })?;
        EnvFile::parse(path, &text)
    }

    /// Parses text; `path` is for messages only.
    pub fn parse(path: &Path, text: &str) -> Result<EnvFile, EnvFileError> {
        let mut lines = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                lines.push(Line::Other(raw.to_string()));
                continue;
            }
            let syntax = |reason: String| EnvFileError::Syntax { path: path.to_path_buf(), line: n + 1, reason };
            let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
            let Some((key, value)) = body.split_once('=') else {
                return Err(syntax(format!("expected KEY=VALUE, found {trimmed:?}")));
            };
            let key = key.trim();
            if !valid_key(key) {
                return Err(syntax(format!("invalid variable name {key:?}")));
            }
            let value = unquote(value.trim()).map_err(syntax)?;
            lines.push(Line::Var { key: key.to_string(), value, raw: raw.to_string() });
        }
        Ok(EnvFile { lines })
    }

    /// The value of `key`; the last assignment wins, as in systemd.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }

    /// Every assignment in file order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Var { key, value, .. } => Some((key.as_str(), value.as_str())),
            Line::Other(_) => None,
        })
    }

    /// The lines as parsed.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
}

fn valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn unquote(value: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(q) {
            let Some(inner) = rest.strip_suffix(q) else {
                return Err(format!("unterminated {q} quote in {value:?}"));
            };
            return Ok(if q == '"' { inner.replace("\\\"", "\"").replace("\\\\", "\\") } else { inner.to_string() });
        }
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"## etcd(1) daemon options
## See "/usr/share/doc/etcd-server/op-guide/configuration.md.gz"

### Member flags

##### --name
## Human-readable name for this member.
#ETCD_NAME="hostname"
ETCD_NAME="etcd1"
ETCD_DATA_DIR=/var/lib/etcd/default
export ETCD_INITIAL_CLUSTER='etcd1=http://198.18.0.11:2380,etcd2=http://198.18.0.12:2380'
; a systemd-style comment
ETCD_NAME=etcd1b
"#;

    #[test]
    fn parses_debian_layout() {
        let f = EnvFile::parse(Path::new("/etc/default/etcd"), DEBIAN).expect("parse");
        assert_eq!(f.get("ETCD_NAME"), Some("etcd1b"), "last assignment wins");
        assert_eq!(f.get("ETCD_DATA_DIR"), Some("/var/lib/etcd/default"));
        assert_eq!(
            f.get("ETCD_INITIAL_CLUSTER"),
            Some("etcd1=http://198.18.0.11:2380,etcd2=http://198.18.0.12:2380")
        );
        assert_eq!(f.get("ETCD_LOGGER"), None);
        assert_eq!(f.lines().len(), DEBIAN.lines().count(), "comments kept");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = EnvFile::parse(Path::new("e"), "ETCD_NAME=a\nnot a var\n").expect_err("bad line");
        assert_eq!(err.to_string(), "e:2: expected KEY=VALUE, found \"not a var\"");
        let err = EnvFile::parse(Path::new("e"), "1X=a\n").expect_err("bad key");
        assert!(err.to_string().contains("invalid variable name"), "{err}");
        let err = EnvFile::parse(Path::new("e"), "A=\"open\n").expect_err("quote");
        assert!(err.to_string().contains("unterminated"), "{err}");
    }
}
