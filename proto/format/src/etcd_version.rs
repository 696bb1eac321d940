//! etcd's release numbers and what a release can do, decided by the real
//! version (pure, table-tested): both binaries ask the same question — the
//! agent before it runs its restore tool, the coordinator when it plans a
//! restore or an upgrade.

use std::fmt;
use std::str::FromStr;

/// An etcd release, `MAJOR.MINOR.PATCH` (a pre-release or build suffix such
/// as `-rc.0` or `+git` is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtcdVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

/// A version string that is not `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an etcd version (MAJOR.MINOR.PATCH, e.g. 3.5.1)")]
pub struct VersionError(pub String);

impl EtcdVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self { major, minor, patch }
    }

    /// `MAJOR.MINOR` (etcd's cluster version and storage version are minors).
    pub fn minor_string(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Whether `snapshot restore` of this release's tool takes
    /// `--bump-revision` / `--mark-compacted`: etcdutl 3.5.10+ (etcd's
    /// CHANGELOG-3.5), etcdctl 3.4.27+ (etcd PR #16193), and every later minor.
    pub fn restore_can_bump(&self) -> bool {
        match (self.major, self.minor) {
            (3, 4) => self.patch >= 27,
            (3, 5) => self.patch >= 10,
            (major, minor) => (major, minor) > (3, 5),
        }
    }

    /// The releases etcd's maintainers recommend against for production:
    /// 3.5.0–3.5.2 (a data-inconsistency bug, etcd #13766, fixed in 3.5.3).
    pub fn unsafe_release(&self) -> bool {
        (self.major, self.minor) == (3, 5) && self.patch <= 2
    }
}

impl FromStr for EtcdVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError(s.to_string());
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut next = || -> Result<u64, VersionError> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = EtcdVersion::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version in `etcd --version`'s output (`etcd Version: 3.5.1`), or in a
/// tool's `version` (`etcdutl version: 3.5.1`): the first line that has one.
pub fn parse_version_output(stdout: &str) -> Option<EtcdVersion> {
    stdout.lines().find_map(|line| {
        let (label, value) = line.split_once(':')?;
        let label = label.trim().to_ascii_lowercase();
        (label == "etcd version" || label.ends_with(" version") && !label.starts_with("api"))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> EtcdVersion {
        s.parse().expect(s)
    }

    #[test]
    fn versions_parse_and_print() {
        assert_eq!(v("3.5.1"), EtcdVersion::new(3, 5, 1));
        assert_eq!(v("v3.4.23"), EtcdVersion::new(3, 4, 23));
        assert_eq!(v("3.6.0-rc.1"), EtcdVersion::new(3, 6, 0));
        assert_eq!(v("3.5.17").to_string(), "3.5.17");
        assert_eq!(v("3.5.17").minor_string(), "3.5");
        for bad in ["", "3", "3.5", "3.5.x", "3.5.1.2", "garbage", "3..1", " . . "] {
            assert!(bad.parse::<EtcdVersion>().is_err(), "{bad:?}");
        }
        assert!(v("3.4.23") < v("3.5.1") && v("3.5.1") < v("3.5.10"));
    }

    #[test]
    fn the_restore_bump_needs_3_5_10_or_3_4_27() {
        let table = [
            ("3.4.23", false),
            ("3.4.26", false),
            ("3.4.27", true),
            ("3.4.40", true),
            ("3.5.0", false),
            ("3.5.1", false),
            ("3.5.9", false),
            ("3.5.10", true),
            ("3.5.17", true),
            ("3.6.0", true),
            ("4.0.0", true),
            ("3.3.27", false),
            ("2.3.8", false),
        ];
        for (version, can) in table {
            assert_eq!(v(version).restore_can_bump(), can, "{version}");
        }
    }

    #[test]
    fn unsafe_releases_are_3_5_0_to_3_5_2() {
        let table = [
            ("3.5.0", true),
            ("3.5.1", true),
            ("3.5.2", true),
            ("3.5.3", false),
            ("3.4.2", false),
            ("3.6.1", false),
        ];
        for (version, unsafe_) in table {
            assert_eq!(v(version).unsafe_release(), unsafe_, "{version}");
        }
    }

    #[test]
    fn version_output_of_etcd_and_its_tools() {
        let etcd = "etcd Version: 3.5.1\nGit SHA: e8732fb5f\nGo Version: go1.16.3\nGo OS/Arch: linux/amd64\n";
        assert_eq!(parse_version_output(etcd), Some(v("3.5.1")));
        let debian = "etcd Version: 3.4.23\nGit SHA: Not provided (use ./build instead of go build)\nGo Version: go1.19.8\n";
        assert_eq!(parse_version_output(debian), Some(v("3.4.23")));
        assert_eq!(
            parse_version_output("etcdutl version: 3.5.1\nAPI version: 3.5\n"),
            Some(v("3.5.1"))
        );
        assert_eq!(parse_version_output("API version: 3.5\n"), None);
        assert_eq!(parse_version_output("Go Version: go1.16.3\n"), None);
        assert_eq!(parse_version_output(""), None);
    }
}
