//! etcd's environment file (Debian's `/etc/default/etcd`): `ETCD_*=value`
//! lines read by etcd.service's `EnvironmentFile=` and by the process backend.
//!
//! The file is kept as lines so a rewrite preserves comments, order and
//! variables we do not manage. Syntax follows systemd's EnvironmentFile:
//! `KEY=VALUE`, optional single or double quotes around the value, `#` and
//! `;` comment lines, blank lines.
//!
//! Rewriting: [`EnvFile::set`] and [`EnvFile::remove`] change only the lines of
//! their variable; values of the etcd settings we know are validated first
//! ([`validate_var`]), so a bad value is refused before anything is written;
//! [`EnvFile::save`] replaces the file atomically and keeps the previous
//! version as `<file>.prev`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A value etcd would refuse (or misread), named with its variable.
    #[error("{key}: invalid value {value:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("invalid variable name {key:?}: letters, digits and _, not starting with a digit")]
    InvalidKey { key: String },
    #[error("cannot write etcd environment file {path}: {op}: {source}")]
    Write {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl EnvFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<EnvFile, EnvFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
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
            let syntax = |reason: String| EnvFileError::Syntax {
                path: path.to_path_buf(),
                line: n + 1,
                reason,
            };
            let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
            let Some((key, value)) = body.split_once('=') else {
                return Err(syntax(format!("expected KEY=VALUE, found {trimmed:?}")));
            };
            let key = key.trim();
            if !valid_key(key) {
                return Err(syntax(format!("invalid variable name {key:?}")));
            }
            let value = unquote(value.trim()).map_err(syntax)?;
            lines.push(Line::Var {
                key: key.to_string(),
                value,
                raw: raw.to_string(),
            });
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

    /// Sets `key` to `value` after validating it ([`validate_var`]). The last
    /// assignment (the one in effect) is rewritten in place, keeping an
    /// `export ` prefix; earlier assignments of `key`, which had no effect,
    /// are dropped. A new variable is appended. Setting the value a variable
    /// already has leaves its line untouched. On error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), EnvFileError> {
        if !valid_key(key) {
            return Err(EnvFileError::InvalidKey { key: key.to_string() });
        }
        validate_var(key, value)?;
        let positions: Vec<usize> = self.positions(key);
        let Some((&last, earlier)) = positions.split_last() else {
            self.lines.push(Line::Var {
                key: key.to_string(),
                value: value.to_string(),
                raw: render(key, value, false),
            });
            return Ok(());
        };
        if let Line::Var {
            value: current, raw, ..
        } = &mut self.lines[last]
            && current != value
        {
            let export = raw.trim_start().starts_with("export ");
            *raw = render(key, value, export);
            *current = value.to_string();
        }
        for &i in earlier.iter().rev() {
            self.lines.remove(i);
        }
        Ok(())
    }

    /// Removes every assignment of `key`; true when there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Var { key: k, .. } if k == key));
        self.lines.len() != before
    }

    fn positions(&self, key: &str) -> Vec<usize> {
        let is_key = |l: &Line| matches!(l, Line::Var { key: k, .. } if k == key);
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| is_key(l))
            .map(|(i, _)| i)
            .collect()
    }

    /// The file's text: every line as kept, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(match line {
                Line::Var { raw, .. } | Line::Other(raw) => raw,
            });
            text.push('\n');
        }
        text
    }

    /// Writes the file to `path` atomically: every known etcd setting is
    /// validated first (nothing is written if one is bad); the text goes to
    /// a temporary file in the same directory, is fsynced and renamed over
    /// the file, and the directory is fsynced. The file being replaced is
    /// kept as `<file>.prev` (itself replaced atomically). The new file gets
    /// the old one's mode and, when we may, its owner; a new file is 0644.
    /// A symlink is followed: its target is rewritten.
    pub fn save(&self, path: &Path) -> Result<(), EnvFileError> {
        for (key, value) in self.vars() {
            validate_var(key, value)?;
        }
        let target = match std::fs::canonicalize(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
            Err(source) => return Err(write_error(path, "resolving the path", source)),
        };
        let err = |op: &'static str| move |source| write_error(path, op, source);
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let previous = match std::fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(err("reading its metadata")(source)),
        };
        let mode = previous
            .as_ref()
            .map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let owner = previous.as_ref().map(|m| (m.uid(), m.gid()));
        if previous.is_some() {
            let prev_tmp = TempPath(dir.join(format!(".{name}.prev.tmp-{}", std::process::id())));
            std::fs::copy(&target, &prev_tmp.0).map_err(err("copying it to .prev"))?;
            let copy = File::open(&prev_tmp.0).map_err(err("opening the .prev copy"))?;
            copy.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(err("setting the .prev mode"))?;
            copy.sync_all().map_err(err("fsyncing the .prev copy"))?;
            std::fs::rename(&prev_tmp.0, dir.join(format!("{name}.prev")))
                .map_err(err("renaming the .prev copy"))?;
            prev_tmp.disarm();
        }
        let tmp = TempPath(dir.join(format!(".{name}.tmp-{}", std::process::id())));
        let _ = std::fs::remove_file(&tmp.0); // a leftover of a crashed save by a process with our pid
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp.0)
            .map_err(err("creating a temporary file"))?;
        // The umask may have narrowed the mode: set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err("setting the mode"))?;
        if let Some((uid, gid)) = owner
            && let Err(e) = std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
        {
            tracing::debug!(error = %e, uid, gid, "cannot keep the env file's owner");
        }
        file.write_all(self.to_text().as_bytes())
            .map_err(err("writing"))?;
        file.sync_all().map_err(err("fsyncing"))?;
        drop(file);
        std::fs::rename(&tmp.0, &target).map_err(err("renaming the new file into place"))?;
        tmp.disarm();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(err("fsyncing the directory"))?;
        Ok(())
    }
}

fn write_error(path: &Path, op: &'static str, source: std::io::Error) -> EnvFileError {
    EnvFileError::Write {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A temporary file removed on drop unless disarmed (it was renamed).
struct TempPath(PathBuf);

impl TempPath {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `KEY=value`, quoted only when the value needs it.
fn render(key: &str, value: &str, export: bool) -> String {
    let prefix = if export { "export " } else { "" };
    let bare = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.,:/=@%+[]".contains(&b));
    if bare {
        format!("{prefix}{key}={value}")
    } else {
        format!(
            "{prefix}{key}=\"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        )
    }
}

/// Checks a value before it is written. Every value must fit on one line;
/// the etcd settings we manage must be what etcd accepts:
///
/// - `ETCD_NAME`: not empty, no `,` or `=` (they would break
///   `ETCD_INITIAL_CLUSTER`).
/// - `ETCD_*_URLS`: comma-separated `http://` or `https://` URLs with a host
///   and a port and no path.
/// - `ETCD_INITIAL_CLUSTER`: comma-separated `name=URL` with valid names and
///   URLs; a name may appear once (etcd would read a repeated name as a
///   second peer URL of one member, which etcdops does not manage and which
///   is usually a copy-paste mistake).
/// - `ETCD_INITIAL_CLUSTER_STATE`: `new` or `existing`.
pub fn validate_var(key: &str, value: &str) -> Result<(), EnvFileError> {
    let invalid = |reason: String| EnvFileError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid("contains a line break or control character".to_string()));
    }
    match key {
        "ETCD_NAME" => valid_name(value).map_err(invalid),
        "ETCD_INITIAL_CLUSTER" => valid_initial_cluster(value).map_err(invalid),
        "ETCD_INITIAL_CLUSTER_STATE" => match value {
            "new" | "existing" => Ok(()),
            _ => Err(invalid("must be \"new\" or \"existing\"".to_string())),
        },
        _ if key.starts_with("ETCD_") && key.ends_with("_URLS") => valid_urls(value).map_err(invalid),
        _ => Ok(()),
    }
}

fn valid_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a member name must not be empty".to_string());
    }
    if let Some(c) = name.chars().find(|c| matches!(c, ',' | '=')) {
        return Err(format!("a member name must not contain {c:?}"));
    }
    Ok(())
}

fn valid_urls(list: &str) -> Result<(), String> {
    if list.is_empty() {
        return Err("expected one or more comma-separated URLs".to_string());
    }
    for url in list.split(',') {
        valid_url(url)?;
    }
    Ok(())
}

/// An etcd URL: `http(s)://host:port`, nothing else.
fn valid_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    if rest.contains('/') {
        return Err(format!("{url:?} must not have a path"));
    }
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| valid_host(host) && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok {
        return Err(format!(
            "{url:?} must have a host and a port (e.g. http://10.0.0.1:2380)"
        ));
    }
    Ok(())
}

fn valid_host(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    }
}

fn valid_initial_cluster(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("expected name=URL,... for every initial member".to_string());
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, entry) in value.split(',').enumerate() {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(format!("entry {} {entry:?} is not name=URL", i + 1));
        };
        valid_name(name).map_err(|e| format!("entry {} {entry:?}: {e}", i + 1))?;
        valid_url(url).map_err(|e| format!("entry {} {entry:?}: {e}", i + 1))?;
        if !names.insert(name) {
            return Err(format!("member name {name:?} appears more than once"));
        }
    }
    Ok(())
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
            return Ok(if q == '"' {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            } else {
                inner.to_string()
            });
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

    #[test]
    fn unchanged_files_round_trip_byte_for_byte() {
        let f = EnvFile::parse(Path::new("e"), DEBIAN).expect("parse");
        assert_eq!(f.to_text(), DEBIAN);
        let mut same = f.clone();
        same.set("ETCD_DATA_DIR", "/var/lib/etcd/default")
            .expect("same value");
        assert_eq!(
            same.to_text(),
            DEBIAN,
            "setting the value in effect changes nothing"
        );
    }

    #[test]
    fn set_and_remove_touch_only_their_variable() {
        let mut f = EnvFile::parse(Path::new("e"), DEBIAN).expect("parse");
        f.set("ETCD_NAME", "etcd2").expect("set");
        f.set("ETCD_INITIAL_CLUSTER_STATE", "existing").expect("new var");
        f.set(
            "ETCD_INITIAL_CLUSTER",
            "etcd1=http://198.18.0.11:2380,etcd2=https://[fd00::2]:2380",
        )
        .expect("set");
        assert!(f.remove("ETCD_DATA_DIR"));
        assert!(!f.remove("ETCD_DATA_DIR"));
        let expected = DEBIAN
            .replace("ETCD_NAME=\"etcd1\"\n", "")
            .replace("ETCD_NAME=etcd1b", "ETCD_NAME=etcd2")
            .replace("ETCD_DATA_DIR=/var/lib/etcd/default\n", "")
            .replace(
                "export ETCD_INITIAL_CLUSTER='etcd1=http://198.18.0.11:2380,etcd2=http://198.18.0.12:2380'",
                "export ETCD_INITIAL_CLUSTER=etcd1=http://198.18.0.11:2380,etcd2=https://[fd00::2]:2380",
            )
            + "ETCD_INITIAL_CLUSTER_STATE=existing\n";
        assert_eq!(f.to_text(), expected);
        assert!(f.to_text().contains("#ETCD_NAME=\"hostname\"\n"), "comments kept");
        let reread = EnvFile::parse(Path::new("e"), &f.to_text()).expect("reparse");
        assert_eq!(reread.get("ETCD_NAME"), Some("etcd2"));
        assert_eq!(reread.get("ETCD_INITIAL_CLUSTER_STATE"), Some("existing"));
    }

    #[test]
    fn values_needing_quotes_read_back_the_same() {
        for value in [
            "",
            "a b",
            "with \"quotes\"",
            "back\\slash\\",
            "#not a comment",
            "$HOME",
            "x'y",
        ] {
            let mut f = EnvFile::default();
            f.set("ETCD_EXTRA", value).expect("set");
            let reread = EnvFile::parse(Path::new("e"), &f.to_text()).expect("reparse");
            assert_eq!(reread.get("ETCD_EXTRA"), Some(value), "{}", f.to_text());
        }
    }

    #[test]
    fn bad_values_are_refused_naming_variable_and_value() {
        let cases = [
            ("ETCD_NAME", ""),
            ("ETCD_NAME", "a,b"),
            ("ETCD_NAME", "a=b"),
            ("ETCD_LISTEN_PEER_URLS", ""),
            ("ETCD_LISTEN_PEER_URLS", "10.0.0.1:2380"),
            ("ETCD_LISTEN_CLIENT_URLS", "http://10.0.0.1:2379,ftp://x:1"),
            ("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.0.1"),
            ("ETCD_ADVERTISE_CLIENT_URLS", "http://:2379"),
            ("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.0.1:2379/"),
            (
                "ETCD_ADVERTISE_CLIENT_URLS",
                "http://10.0.0.1:2379, http://10.0.0.2:2379",
            ),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://[zz::1]:2380"),
            ("ETCD_INITIAL_CLUSTER", ""),
            ("ETCD_INITIAL_CLUSTER", "etcd1"),
            ("ETCD_INITIAL_CLUSTER", "=http://a:2380"),
            ("ETCD_INITIAL_CLUSTER", "etcd1=http://a"),
            ("ETCD_INITIAL_CLUSTER", "etcd1=http://a:2380,etcd1=http://b:2380"),
            ("ETCD_INITIAL_CLUSTER_STATE", "New"),
            ("ETCD_DATA_DIR", "/var/lib/etcd\nETCD_NAME=x"),
        ];
        for (key, value) in cases {
            let mut f = EnvFile::parse(Path::new("e"), DEBIAN).expect("parse");
            let err = f.set(key, value).expect_err(value);
            assert!(
                matches!(&err, EnvFileError::InvalidValue { key: k, value: v, .. } if k == key && v == value),
                "{key}={value:?}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("{key}: invalid value {value:?}: ")),
                "{err}"
            );
            assert_eq!(f.to_text(), DEBIAN, "{key}: nothing changed");
        }
        let mut f = EnvFile::default();
        assert!(matches!(f.set("1BAD", "x"), Err(EnvFileError::InvalidKey { .. })));
        for (key, value) in [
            ("ETCD_NAME", "etcd-1.example"),
            ("ETCD_LISTEN_METRICS_URLS", "http://127.0.0.1:2381"),
            (
                "ETCD_LISTEN_CLIENT_URLS",
                "https://0.0.0.0:2379,http://[::1]:2379",
            ),
            ("ETCD_INITIAL_CLUSTER_STATE", "new"),
            ("ETCD_UNMANAGED", "anything goes"),
        ] {
            f.set(key, value).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
        }
    }

    #[test]
    fn save_is_atomic_keeps_prev_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd");
        std::fs::write(&path, DEBIAN).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");

        let mut f = EnvFile::load(&path).expect("load");
        f.set("ETCD_NAME", "etcd3").expect("set");
        f.save(&path).expect("save");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), f.to_text());
        assert_eq!(
            EnvFile::load(&path).expect("reload").get("ETCD_NAME"),
            Some("etcd3")
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etcd.prev")).expect("prev"),
            DEBIAN
        );
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o640);
        assert_eq!(mode(&dir.path().join("etcd.prev")), 0o640);

        // A second save keeps the version it replaces.
        let saved = f.to_text();
        f.set("ETCD_NAME", "etcd4").expect("set");
        f.save(&path).expect("save again");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etcd.prev")).expect("prev"),
            saved
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, ["etcd", "etcd.prev"], "no temporary files left");

        // A new file: 0644, no .prev.
        let fresh = dir.path().join("fresh");
        f.save(&fresh).expect("save new");
        assert_eq!(mode(&fresh), 0o644);
        assert!(!dir.path().join("fresh.prev").exists());
    }

    #[test]
    fn save_refuses_invalid_files_and_leaves_them_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd");
        let bad = "ETCD_NAME=etcd1\nETCD_INITIAL_CLUSTER_STATE=maybe\n";
        std::fs::write(&path, bad).expect("write");
        let mut f = EnvFile::load(&path).expect("load: parsing does not judge values");
        f.set("ETCD_NAME", "etcd2").expect("a good value");
        let err = f.save(&path).expect_err("the file still has a bad value");
        assert!(
            err.to_string()
                .starts_with("ETCD_INITIAL_CLUSTER_STATE: invalid value \"maybe\""),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), bad);
        assert!(!dir.path().join("etcd.prev").exists());
    }

    #[test]
    fn save_follows_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.env");
        std::fs::write(&real, "ETCD_NAME=a\n").expect("write");
        let link = dir.path().join("etcd");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let mut f = EnvFile::load(&link).expect("load");
        f.set("ETCD_NAME", "b").expect("set");
        f.save(&link).expect("save");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).expect("read"), "ETCD_NAME=b\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("real.env.prev")).expect("prev"),
            "ETCD_NAME=a\n"
        );
    }
}
