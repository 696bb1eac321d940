//! The process exit codes of `etcdops`, kept in one place.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success: the command did what was asked and the cluster looks healthy |
//! | 1 | the operation failed, or the cluster is unhealthy (an agent unreachable, a member unreachable or unhealthy, members disagreeing) |
//! | 2 | usage or configuration error: bad flags, a bad fleet file, unusable TLS files |
//! | 3 | busy: another operation holds the cluster's fence |

use std::process::ExitCode;

/// How `etcdops` ends. The discriminants are the exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitStatus {
    /// 0: done, and everything looked healthy.
    Ok = 0,
    /// 1: the operation failed, or the cluster is unhealthy.
    Failed = 1,
    /// 2: bad flags, a bad fleet file or unusable TLS files: nothing was tried.
    Usage = 2,
    /// 3: another operation holds the cluster's fence: nothing was changed.
    Busy = 3,
}

/// The exit code table as printed at the end of `etcdops --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; every agent answered and the cluster is healthy
  1  the operation failed, or the cluster is unhealthy (an agent or member
     unreachable, a member unhealthy, members disagreeing, no single leader)
  2  usage or configuration error (bad flags, bad fleet file, unusable TLS files)
  3  busy: another operation holds the cluster (etcdops op list / op abort)";

impl ExitStatus {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// `Ok` when `ok`, `Failed` otherwise: the verdict of a report.
    pub fn from_ok(ok: bool) -> ExitStatus {
        if ok { ExitStatus::Ok } else { ExitStatus::Failed }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(ExitStatus::Ok.code(), 0);
        assert_eq!(ExitStatus::Failed.code(), 1);
        assert_eq!(ExitStatus::Usage.code(), 2);
        assert_eq!(ExitStatus::Busy.code(), 3);
        assert_eq!(ExitStatus::from_ok(true), ExitStatus::Ok);
        assert_eq!(ExitStatus::from_ok(false), ExitStatus::Failed);
    }
}
