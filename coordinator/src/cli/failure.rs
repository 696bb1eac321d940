//! How an error ends the program: its exit code and the hint printed under it.

use etcdops_certs::{PkiError, TlsError};

use crate::backup::BackupError;
use crate::backup::target::TargetError;
use crate::cli::operate::ConfirmationRequired;
use crate::cli::{ImportError, ScopeError};
use crate::exec::ExecError;
use crate::exec::fence::FenceError;
use crate::exit::ExitStatus;
use crate::fleet::FleetError;
use crate::journal::JournalError;
use crate::plan::planner::PlanError;
use crate::plan::rule::RuleError;
use crate::sandbox::SandboxError;
use crate::snapshot::save::SaveError;
use crate::snapshot::status::SnapshotFileError;

/// The error and its causes on one line, `outer: inner: innermost`, leaving
/// out a cause whose text a message before it already quotes (many errors
/// both print their source and return it from `source()`).
pub(crate) fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        let part = part.trim_end();
        if part.is_empty() || text.contains(part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    text
}

/// Usage and configuration errors exit 2; everything else 1.
pub(crate) fn exit_status(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<FleetError>()
            || cause.is::<TlsError>()
            || cause.is::<ImportError>()
            || cause.is::<ScopeError>()
            || cause.is::<crate::cli::target::AccessError>()
            || cause.is::<crate::cli::cert_lifecycle::OwnCertificateError>()
            || cause.is::<crate::cli::cert_lifecycle::RenewRefused>()
            || cause.is::<crate::cli::cert_lifecycle::RotateCaRefused>()
        {
            return ExitStatus::Usage;
        }
        if let Some(FenceError::Held { .. }) = cause.downcast_ref::<FenceError>() {
            return ExitStatus::Busy;
        }
        // Every serve error that ends the process is a start-up error.
        if cause.is::<crate::serve::ServeError>() || cause.is::<crate::serve::config::ConfigError>() {
            return ExitStatus::Usage;
        }
        if cause.is::<RuleError>() || cause.is::<ConfirmationRequired>() {
            return ExitStatus::Usage;
        }
        if let Some(e) = cause.downcast_ref::<JournalError>()
            && matches!(
                e,
                JournalError::NotFound { .. }
                    | JournalError::Ambiguous { .. }
                    | JournalError::NotAJournal { .. }
            )
        {
            return ExitStatus::Usage;
        }
        if let Some(e) = cause.downcast_ref::<PlanError>()
            && matches!(
                e,
                PlanError::UnknownMember { .. } | PlanError::Rule { .. } | PlanError::Usage(_)
            )
        {
            return ExitStatus::Usage;
        }
        if let Some(e) = cause.downcast_ref::<BackupError>()
            && matches!(e, BackupError::NoTarget { .. } | BackupError::NoPolicy { .. })
        {
            return ExitStatus::Usage;
        }
        if let Some(e) = cause.downcast_ref::<SaveError>()
            && matches!(e, SaveError::UnknownMember { .. } | SaveError::Exists { .. })
        {
            return ExitStatus::Usage;
        }
        if let Some(pki) = cause.downcast_ref::<PkiError>() {
            return match pki {
                PkiError::AlreadyExists { .. }
                | PkiError::NoCa { .. }
                | PkiError::InvalidName { .. }
                | PkiError::InvalidHost { .. }
                | PkiError::MissingHost { .. }
                | PkiError::InvalidValidity { .. }
                | PkiError::UnsafeKeyPermissions { .. } => ExitStatus::Usage,
                _ => ExitStatus::Failed,
            };
        }
    }
    ExitStatus::Failed
}

/// One line that tells the user what to do next, unless the error's own
/// message already does (the domain errors of snapshot, backup and sandbox).
pub(crate) fn hint(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if cause.is::<SnapshotFileError>() {
            return Some("give the path of a snapshot file (`etcdops snapshot save`, `etcdops backup list`); `etcdops snapshot status FILE` checks one".into());
        }
        if cause.is::<ImportError>() || cause.is::<ScopeError>() {
            return None;
        }
        if cause.is::<ExecError>()
            || cause.is::<FenceError>()
            || cause.is::<JournalError>()
            || cause.is::<PlanError>()
            || cause.is::<RuleError>()
        {
            return None;
        }
        if cause.is::<SaveError>()
            || cause.is::<BackupError>()
            || cause.is::<TargetError>()
            || cause.is::<SandboxError>()
        {
            return None;
        }
        if let Some(fleet) = cause.downcast_ref::<FleetError>() {
            return Some(match fleet {
                FleetError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    "pass --fleet PATH or set ETCDOPS_FLEET (default /etc/etcdops/fleet.toml); \
                     `etcdops --help` shows the file's format"
                        .to_string()
                }
                FleetError::Read { .. } => "check that you may read the fleet file".to_string(),
                FleetError::ClusterRequired { .. } | FleetError::UnknownCluster { .. } => {
                    "pass --cluster NAME with one of the clusters listed above".to_string()
                }
                FleetError::NoMatch { .. } | FleetError::BadPattern { .. } => {
                    "--cluster GLOB takes *, ? and [abc] over the clusters listed above; quote it for the shell"
                        .to_string()
                }
                FleetError::Write { .. } | FleetError::Serialize(_) => {
                    "check that the fleet file's directory exists and is writable".to_string()
                }
                _ => "fix the fleet file; `etcdops --help` shows its format".to_string(),
            });
        }
        if cause.is::<TlsError>() {
            return Some(
                "the fleet file's [tls] must name the fleet CA and a coordinator certificate and key; \
                    issue one with `etcdops certs issue coordinator --name NAME --dir DIR`"
                    .to_string(),
            );
        }
        if cause.is::<PkiError>() {
            return Some("`etcdops certs --help` describes the PKI directory and each command".to_string());
        }
    }
    Some("run with -v (or RUST_LOG=debug) for more detail".to_string())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use anyhow::Context;

    use super::*;

    #[test]
    fn messages_do_not_repeat_causes() {
        let err = anyhow::Error::new(FleetError::Read {
            path: PathBuf::from("/f.toml"),
            source: std::io::Error::other("denied"),
        });
        assert_eq!(message(&err), "cannot read the fleet file /f.toml: denied");
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("cannot write the output");
        assert_eq!(message(&err), "cannot write the output: disk full");
    }

    #[test]
    fn classifies_errors() {
        let not_found = anyhow::Error::new(FleetError::Read {
            path: PathBuf::from("/etc/etcdops/fleet.toml"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(exit_status(&not_found), ExitStatus::Usage);
        assert!(hint(&not_found).unwrap_or_default().contains("--fleet"));

        let wrapped: anyhow::Result<()> = Err(FleetError::ClusterRequired {
            known: vec!["a".into(), "b".into()],
        })
        .context("choosing a cluster");
        let wrapped = wrapped.expect_err("error");
        assert_eq!(exit_status(&wrapped), ExitStatus::Usage);
        assert!(hint(&wrapped).unwrap_or_default().contains("--cluster"));

        let exists = anyhow::Error::new(PkiError::AlreadyExists {
            path: PathBuf::from("/pki/ca.crt"),
        });
        assert_eq!(exit_status(&exists), ExitStatus::Usage);

        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(exit_status(&io), ExitStatus::Failed);
        assert!(hint(&io).unwrap_or_default().contains("-v"));

        // Domain errors say what to do themselves: no generic hint; usage-like ones exit 2.
        let no_target = anyhow::Error::new(BackupError::NoTarget { cluster: "a".into() });
        assert_eq!(exit_status(&no_target), ExitStatus::Usage);
        assert_eq!(hint(&no_target), None);
        let exists = anyhow::Error::new(SaveError::Exists {
            path: PathBuf::from("/x.db"),
        });
        assert_eq!(exit_status(&exists), ExitStatus::Usage);
        assert_eq!(hint(&exists), None);
    }
}
