//! The systemd backend's etcd binary switch, as text: the drop-in
//! `/etc/systemd/system/<unit>.d/`[`DROPIN_NAME`] that replaces the unit's
//! `ExecStart=` with the same command line run by another binary
//! (`ExecStart=` to clear, then `ExecStart=<binary> <the unit's own
//! arguments>`, e.g. Debian's `/usr/bin/etcd $DAEMON_ARGS` becomes
//! `/opt/etcd-3.5.1/etcd $DAEMON_ARGS`). Pure: [`render`] writes it from the
//! unit's ExecStart as systemd reports it over D-Bus (its argv, variables
//! unexpanded, specifiers resolved), [`parse`] reads one back (only a file
//! carrying [`MARKER`] is ours), [`quote_word`] / [`split_words`] are
//! systemd's command-line quoting both ways. The file names the binary the
//! unit runs without it (`# etcdops-unit-binary: PATH`): switching back to
//! that one removes the file instead of writing it. [`write`] and
//! [`remove`] touch the file (atomic, mode 0644); the D-Bus side (reload,
//! read back) is `systemd.rs`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The drop-in's file name: late in the order, so it overrides the
/// package's ExecStart and earlier drop-ins.
pub const DROPIN_NAME: &str = "90-etcdops-binary.conf";
/// Where systemd reads administrators' drop-ins (`<unit>.d/` below it).
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The first line of every drop-in the agent writes.
pub const MARKER: &str = "# Written by etcdops-agent (SetEtcdBinary, `etcdops upgrade`): do not edit.";
/// The comment that names the binary the unit runs without the drop-in.
const UNIT_BINARY_KEY: &str = "# etcdops-unit-binary: ";

/// One ExecStart command as systemd's D-Bus property reports it
/// (`ExecStart a(sasbttttuii)`: path, argv, ignore failure, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The binary systemd executes.
    pub path: String,
    /// Its argument vector, argv[0] included; `$VAR`s unexpanded.
    pub argv: Vec<String>,
    /// The `-` prefix: a failure exit is not a failure of the unit.
    pub ignore_failure: bool,
}

/// What a drop-in of ours says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropIn {
    /// The binary its ExecStart runs.
    pub binary: PathBuf,
    /// The binary the unit runs without it.
    pub unit_binary: PathBuf,
}

/// Why a drop-in cannot be written, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum DropInError {
    #[error("{path} exists but was not written by etcdops-agent (no \"{MARKER}\" line): move it away first")]
    NotOurs { path: PathBuf },
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("the binary {binary:?} cannot go into an ExecStart= line: {reason}")]
    BadBinary { binary: PathBuf, reason: String },
    #[error(
        "cannot {action} {path}: {source}; the agent writes etcd's drop-ins there (its packaged unit's \
         ConfigurationDirectory=systemd/system/etcd.service.d; another unit name needs a drop-in of \
         etcdops-agent.service with ReadWritePaths=/etc/systemd/system/UNIT.d)"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The drop-in's path for `unit` below `unit_dir` ([`UNIT_DIR`]).
pub fn path(unit_dir: &Path, unit: &str) -> PathBuf {
    unit_dir.join(format!("{unit}.d")).join(DROPIN_NAME)
}

/// Characters a word may hold unquoted in a unit file's command line (`%`
/// only doubled, which [`quote_word`] does first).
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./=:,+@${}%".contains(c)
}

/// One argument for an `ExecStart=` line, as systemd will split it back:
/// `%` doubled (specifiers were resolved when systemd loaded the unit), a
/// word of plain characters as it is (`$DAEMON_ARGS` stays a variable that
/// systemd splits at whitespace), anything else in double quotes with `\`,
/// `"` and control characters escaped. `$` is left alone: systemd expands
/// variables (and `$$`) only when it runs the command, so the argv it
/// reports still holds them as the unit file wrote them.
pub fn quote_word(word: &str) -> String {
    let word = word.replace('%', "%%");
    if !word.is_empty() && word != ";" && word.chars().all(plain) {
        return word;
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A command line split into words the way systemd does for ExecStart
/// (quotes, C escapes, `%%`), for reading back what [`render`] wrote.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match c {
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c if c.is_whitespace() && quote.is_none() => break,
                '%' => match chars.next() {
                    Some('%') => word.push('%'),
                    other => return Err(format!("unresolved specifier %{}", other.unwrap_or(' '))),
                },
                '\\' => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('r') => word.push('\r'),
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        let code =
                            u32::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?;
                        word.push(char::from_u32(code).ok_or_else(|| format!("bad escape \\x{hex}"))?);
                    }
                    Some(c) => word.push(c),
                    None => return Err("a trailing backslash".into()),
                },
                c => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("an unterminated quote".into());
        }
        words.push(word);
    }
}

/// The drop-in that makes `unit` run `binary` with the arguments of
/// `current` (the unit's ExecStart now: its own, or ours of an earlier
/// switch, which carries the same arguments); `unit_binary` is what the
/// unit runs without the drop-in.
pub fn render(
    unit: &str,
    binary: &Path,
    unit_binary: &Path,
    current: &ExecCommand,
) -> Result<String, DropInError> {
    let text = binary.to_str().ok_or_else(|| DropInError::BadBinary {
        binary: binary.to_path_buf(),
        reason: "not UTF-8".into(),
    })?;
    if !binary.is_absolute() || text.chars().any(|c| c.is_control() || c == '$') {
        return Err(DropInError::BadBinary {
            binary: binary.to_path_buf(),
            reason: "an absolute path without control characters or `$` is needed".into(),
        });
    }
    let unit_binary_text = unit_binary.display().to_string();
    if unit_binary_text.contains('\n') {
        return Err(DropInError::BadBinary {
            binary: unit_binary.to_path_buf(),
            reason: "holds a newline".into(),
        });
    }
    let mut words = vec![quote_word(text)];
    // `@`: argv[0] differs from the path systemd executes; keep that argv[0].
    let prefix = match current.argv.first() {
        Some(zero) if zero != &current.path => {
            words.push(quote_word(zero));
            "@"
        }
        _ => "",
    };
    words.extend(current.argv.iter().skip(1).map(|w| quote_word(w)));
    let ignore = if current.ignore_failure { "-" } else { "" };
    Ok(format!(
        "{MARKER}\n\
         # {unit} runs {text} instead of {unit_binary_text} from its next start.\n\
         # To go back by hand: remove this file, `systemctl daemon-reload`, then\n\
         # restart etcd one member at a time (only while the cluster version has\n\
         # not moved; see `etcdops upgrade --rollback`).\n\
         {UNIT_BINARY_KEY}{unit_binary_text}\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={ignore}{prefix}{}\n",
        words.join(" ")
    ))
}

/// Reads a drop-in of ours back; `path` is for messages.
pub fn parse(path: &Path, text: &str) -> Result<DropIn, DropInError> {
    if text.lines().next() != Some(MARKER) {
        return Err(DropInError::NotOurs {
            path: path.to_path_buf(),
        });
    }
    let unreadable = |reason: String| DropInError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let unit_binary = text
        .lines()
        .find_map(|l| l.strip_prefix(UNIT_BINARY_KEY))
        .map(|p| PathBuf::from(p.trim()))
        .ok_or_else(|| unreadable(format!("no \"{UNIT_BINARY_KEY}\" line")))?;
    let line = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| unreadable("no ExecStart= command".into()))?;
    let line = line.trim_start_matches(['-', '@']);
    let words = split_words(line).map_err(|why| unreadable(format!("ExecStart={line}: {why}")))?;
    let binary = words
        .first()
        .map(PathBuf::from)
        .ok_or_else(|| unreadable("an empty ExecStart= command".into()))?;
    Ok(DropIn { binary, unit_binary })
}

/// The drop-in at `path` if there is one: `None` when missing, an error
/// when unreadable or not ours.
pub fn read(path: &Path) -> Result<Option<DropIn>, DropInError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DropInError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `text` to `path` atomically (a temp file in the same directory
/// that systemd ignores, mode 0644 as unit files are, fsync, rename, fsync
/// the directory), creating the directory (0755) when missing.
pub fn write(path: &Path, text: &str) -> Result<(), DropInError> {
    let io = |action, source| DropInError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| io("create the directory of", e))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // The agent's umask (0077) would leave it 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io("write", e))
}

/// Removes the drop-in at `path` (already gone is fine), then fsyncs its
/// directory. The directory itself stays.
pub fn remove(path: &Path) -> Result<bool, DropInError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(DropInError::Io {
                action: "remove",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| DropInError::Io {
                action: "fsync the directory of",
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> ExecCommand {
        ExecCommand {
            path: "/usr/bin/etcd".into(),
            argv: vec!["/usr/bin/etcd".into(), "$DAEMON_ARGS".into()],
            ignore_failure: false,
        }
    }

    #[test]
    fn debian_exec_start_keeps_its_variable() {
        let text = render(
            "etcd.service",
            Path::new("/opt/etcd-3.5.1/etcd"),
            Path::new("/usr/bin/etcd"),
            &debian(),
        )
        .expect("render");
        assert!(text.starts_with(MARKER), "{text}");
        assert!(
            text.ends_with("[Service]\nExecStart=\nExecStart=/opt/etcd-3.5.1/etcd $DAEMON_ARGS\n"),
            "{text}"
        );
        assert!(
            text.contains("remove this file, `systemctl daemon-reload`"),
            "{text}"
        );
        let back = parse(Path::new("x.conf"), &text).expect("parse");
        assert_eq!(
            back,
            DropIn {
                binary: "/opt/etcd-3.5.1/etcd".into(),
                unit_binary: "/usr/bin/etcd".into(),
            }
        );
    }

    #[test]
    fn awkward_arguments_round_trip() {
        let argv: Vec<String> = [
            "/usr/bin/etcd",
            "--name",
            "a b",
            "100%",
            "say \"hi\"",
            "back\\slash",
            "",
            ";",
            "${ETCD_OPTS}",
            "tab\tnew\nline",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let current = ExecCommand {
            path: "/usr/bin/etcd".into(),
            argv: argv.clone(),
            ignore_failure: true,
        };
        let text = render(
            "etcd.service",
            Path::new("/opt/etcd 3.5/etcd"),
            Path::new("/usr/bin/etcd"),
            &current,
        )
        .expect("render");
        let line = text
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .next_back()
            .expect("line");
        assert!(
            line.starts_with("-\"/opt/etcd 3.5/etcd\" --name \"a b\" 100%% "),
            "{line}"
        );
        let words = split_words(line.trim_start_matches('-')).expect("split");
        let mut want = argv;
        want[0] = "/opt/etcd 3.5/etcd".into();
        assert_eq!(words, want);
        assert_eq!(
            parse(Path::new("x"), &text).expect("parse").binary,
            PathBuf::from("/opt/etcd 3.5/etcd")
        );
    }

    #[test]
    fn an_argv0_of_its_own_is_kept_with_the_at_prefix() {
        let current = ExecCommand {
            path: "/usr/bin/etcd".into(),
            argv: vec!["etcd-main".into(), "--x".into()],
            ignore_failure: false,
        };
        let text = render(
            "etcd.service",
            Path::new("/opt/e/etcd"),
            Path::new("/usr/bin/etcd"),
            &current,
        )
        .expect("render");
        assert!(text.ends_with("ExecStart=@/opt/e/etcd etcd-main --x\n"), "{text}");
        assert_eq!(
            parse(Path::new("x"), &text).expect("parse").binary,
            PathBuf::from("/opt/e/etcd")
        );
    }

    #[test]
    fn refusals() {
        let err =
            parse(Path::new("/e/x.conf"), "[Service]\nExecStart=\nExecStart=/x\n").expect_err("not ours");
        assert!(matches!(err, DropInError::NotOurs { .. }));
        assert!(
            err.to_string()
                .contains("/e/x.conf exists but was not written by etcdops-agent")
        );
        let err = parse(Path::new("x"), &format!("{MARKER}\n[Service]\nExecStart=/x\n"))
            .expect_err("no unit binary");
        assert!(err.to_string().contains("etcdops-unit-binary"), "{err}");
        let err = parse(
            Path::new("x"),
            &format!("{MARKER}\n{UNIT_BINARY_KEY}/usr/bin/etcd\n[Service]\nExecStart=\n"),
        )
        .expect_err("no command");
        assert!(err.to_string().contains("no ExecStart= command"), "{err}");
        for bad in ["etcd", "/opt/x\n/etcd", "/opt/$X/etcd"] {
            assert!(
                render(
                    "etcd.service",
                    Path::new(bad),
                    Path::new("/usr/bin/etcd"),
                    &debian()
                )
                .is_err(),
                "{bad:?}"
            );
        }
        assert!(split_words("\"open").is_err());
        assert!(split_words("%H").is_err());
        assert_eq!(split_words("  a  'b c'  ").expect("split"), ["a", "b c"]);
    }

    #[test]
    fn written_atomically_readable_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = path(dir.path(), "etcd.service");
        assert_eq!(file, dir.path().join("etcd.service.d/90-etcdops-binary.conf"));
        assert_eq!(read(&file).expect("read"), None);
        let text = render(
            "etcd.service",
            Path::new("/opt/e/etcd"),
            Path::new("/usr/bin/etcd"),
            &debian(),
        )
        .expect("render");
        write(&file, &text).expect("write");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            std::fs::read_dir(file.parent().expect("dir"))
                .expect("dir")
                .count(),
            1,
            "no temp file left"
        );
        assert_eq!(
            read(&file).expect("read").map(|d| d.binary),
            Some(PathBuf::from("/opt/e/etcd"))
        );
        assert!(remove(&file).expect("remove"));
        assert!(!remove(&file).expect("gone already"));
        assert!(file.parent().expect("dir").is_dir(), "the directory stays");
    }
}
