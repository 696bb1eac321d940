//! Where the journal lives by default: `$ETCDOPS_JOURNAL`, else the user's XDG state directory.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that names the journal file (as `--journal`).
pub const ENV: &str = "ETCDOPS_JOURNAL";

/// The journal when there is no home directory at all (a system service).
pub const SYSTEM_PATH: &str = "/var/lib/etcdops/journal.redb";

/// The default journal file: `$ETCDOPS_JOURNAL`, else `$XDG_STATE_HOME/etcdops/journal.redb`, else
/// `$HOME/.local/state/etcdops/journal.redb`, else `/var/lib/etcdops/journal.redb`. Empty
/// variables count as unset; a relative `XDG_STATE_HOME` is ignored, as the XDG spec says.
pub fn default_path() -> PathBuf {
    path_from(|key| std::env::var_os(key))
}

fn path_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |key: &str| env(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = var(ENV) {
        return path;
    }
    if let Some(state) = var("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return state.join("etcdops").join("journal.redb");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local/state/etcdops/journal.redb");
    }
    PathBuf::from(SYSTEM_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> PathBuf {
        path_from(|key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn follows_env_then_xdg_then_home_then_system() {
        let all = [
            ("ETCDOPS_JOURNAL", "/j.redb"),
            ("XDG_STATE_HOME", "/state"),
            ("HOME", "/home/a"),
        ];
        assert_eq!(with(&all), PathBuf::from("/j.redb"));
        assert_eq!(with(&all[1..]), PathBuf::from("/state/etcdops/journal.redb"));
        assert_eq!(
            with(&all[2..]),
            PathBuf::from("/home/a/.local/state/etcdops/journal.redb")
        );
        assert_eq!(with(&[]), PathBuf::from(SYSTEM_PATH));
        // Empty counts as unset; a relative XDG_STATE_HOME is ignored.
        assert_eq!(
            with(&[("ETCDOPS_JOURNAL", ""), ("XDG_STATE_HOME", "rel"), ("HOME", "/h")]),
            PathBuf::from("/h/.local/state/etcdops/journal.redb")
        );
    }
}
