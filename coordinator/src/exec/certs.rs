//! The executor's certificate step (`certs renew`, issue 17): a member's
//! staged certificates installed through its agent (fenced; a retry under
//! the same step key is answered from the agent's record), then the wait
//! until the member serves the new serials on its client and peer ports and
//! its agent on its own — no etcd restart.
//!
//! `certs rotate-ca` (`plan/rotate_ca.rs`): each step hands leadership to
//! the phase's first member if its member leads, installs the phase's files
//! (the trust bundle, or the new CA's leaves) through the agent under the
//! step's fence (repeated without change on a resume), restarts etcd
//! (RestartEtcd under the same step key: a resumed step whose restart was
//! answered is not restarted twice), waits until the member is healthy and
//! caught up, and in phase 2 until it serves the new serials on its client
//! and peer ports.

use std::time::Duration;

use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{Executor, POLL_INTERVAL, StepError};
use crate::plan::certs::CertStep;
use crate::plan::rotate_ca::{Phase, RotateCaArgs};
use crate::plan::view::ClusterView;

/// The certificates a member serves, and which of them the step waits for.
const SERVED: [&str; 3] = ["etcd-server", "etcd-peer", "agent"];

impl Executor {
    pub(super) async fn execute_certs(
        &self,
        step: &CertStep,
        view: &ClusterView,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let member = match step {
            CertStep::RenewCerts { member } => member,
            CertStep::RotateCa { phase, member } => {
                return self.rotate_ca_step(*phase, member, view, fence, deadline).await;
            }
        };
        let renew = self
            .operation
            .renew()
            .ok_or_else(|| StepError::look_first("the operation carries no renewal"))?;
        let staged = renew.of(member).ok_or_else(|| {
            StepError::look_first(format!(
                "nothing was staged for {member} in {}",
                renew.staging_dir.display()
            ))
        })?;
        let mut certificates = Vec::new();
        for (cert, _) in &staged.serials {
            let (cert_path, key_path) = renew.staged(member, cert);
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| {
                    StepError::look_first(format!("cannot read the staged {}: {e}", p.display())).next(
                        "the staging dir of this operation is gone: `etcdops op abort` it and run \
                         `etcdops certs renew` again",
                    )
                })
            };
            certificates.push(pb::NewCertificate {
                cert: cert.clone(),
                cert_pem: read(&cert_path)?,
                key_pem: read(&key_path)?,
            });
        }
        let changed = self.install(member, fence, deadline, certificates).await?;
        let expected: Vec<(&str, &str)> = staged
            .serials
            .iter()
            .filter(|(c, _)| SERVED.contains(&c.as_str()))
            .map(|(c, s)| (c.as_str(), s.as_str()))
            .collect();
        let served = self
            .wait_served(member, &expected, deadline)
            .await
            .map_err(|behind| {
                StepError::retry(format!(
                    "{member}'s new certificates are installed ({}) but not all served in time: {behind}",
                    changed.join(", "),
                ))
                .next(
                    "check what the member serves with `etcdops certs check-expiration`; \
                 `etcdops op resume` installs again (no change) and waits again",
                )
            })?;
        Ok(format!("installed {}; served: {served}", changed.join(", ")))
    }

    /// Installs `certificates` on `member` under the step's fence: each as
    /// "KIND SERIAL", " (already)" when the file held it.
    async fn install(
        &self,
        member: &str,
        fence: &pb::Fence,
        deadline: Instant,
        certificates: Vec<pb::NewCertificate>,
    ) -> Result<Vec<String>, StepError> {
        let request = pb::InstallCertificatesRequest {
            fence: Some(fence.clone()),
            certificates,
            check_only: false,
        };
        let installed = self
            .call(member, deadline, move |mut client| {
                let request = request.clone();
                async move { client.install_certificates(request).await }
            })
            .await?;
        Ok(installed
            .installed
            .iter()
            .map(|i| {
                let already = if i.changed { "" } else { " (already)" };
                format!("{} {}{already}", i.cert, i.serial)
            })
            .collect())
    }

    /// Waits until `member` serves `expected` (cert, serial) on its ports;
    /// what is served, or what is behind when the deadline passes.
    async fn wait_served(
        &self,
        member: &str,
        expected: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<String, String> {
        loop {
            let seen = self
                .call(member, deadline, |mut client| async move {
                    client
                        .get_certificates(pb::GetCertificatesRequest { timeout_ms: 2_000 })
                        .await
                })
                .await
                .map_err(|e| e.to_string())?;
            let behind: Vec<String> = expected
                .iter()
                .filter_map(|(cert, serial)| {
                    let served = seen
                        .certificates
                        .iter()
                        .find(|c| c.cert == *cert && c.source == "served");
                    match served {
                        Some(c) if c.error.is_empty() && c.serial == *serial => None,
                        Some(c) if !c.error.is_empty() => Some(format!("{cert}: {}", c.error)),
                        Some(c) => Some(format!(
                            "{cert} serves {} on {}, not {serial}",
                            c.serial, c.location
                        )),
                        None => Some(format!("{cert}: not served")),
                    }
                })
                .collect();
            if behind.is_empty() {
                return Ok(expected
                    .iter()
                    .map(|(c, s)| format!("{c} {s}"))
                    .collect::<Vec<_>>()
                    .join(", "));
            }
            if Instant::now() + POLL_INTERVAL >= deadline {
                return Err(behind.join("; "));
            }
            tokio::time::sleep(POLL_INTERVAL.max(Duration::from_millis(250))).await;
        }
    }

    /// One member's step of a CA rotation: leadership handed over if it
    /// leads, the phase's files installed, etcd restarted, the wait.
    async fn rotate_ca_step(
        &self,
        phase: Phase,
        member: &str,
        view: &ClusterView,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let rotate = self
            .operation
            .rotate_ca()
            .ok_or_else(|| StepError::look_first("the operation carries no CA rotation"))?;
        // The phase's first member restarted already: the preferred new leader.
        let prefer: Vec<String> = rotate.hand_to(phase, member).into_iter().collect();
        let mut detail = self
            .transfer_if_leader(view, member, fence, deadline, &prefer)
            .await?;
        let certificates = rotation_files(rotate, phase, member)?;
        let changed = self.install(member, fence, deadline, certificates).await?;
        detail.push_str(&format!("installed {}; ", changed.join(", ")));
        detail.push_str(&self.restart_member(member, fence, deadline).await?);
        if phase == Phase::Leaves {
            let staged = rotate.of(member).map(|c| c.serials.clone()).unwrap_or_default();
            let expected: Vec<(&str, &str)> = staged
                .iter()
                .filter(|(c, _)| c == "etcd-server" || c == "etcd-peer")
                .map(|(c, s)| (c.as_str(), s.as_str()))
                .collect();
            let served = self.wait_served(member, &expected, deadline).await.map_err(|behind| {
                StepError::retry(format!(
                    "{member} restarted with the new CA's certificates installed but does not serve them: {behind}"
                ))
                .next(
                    "check what it serves with `etcdops certs check-expiration`; `etcdops op resume` \
                     installs again (no change) and waits again",
                )
            })?;
            detail.push_str(&format!("; served: {served}"));
        }
        Ok(detail)
    }
}

/// What a rotation step installs on `member`: the phase's trust bundle, or
/// (phase 2) the member's staged leaves of the new CA.
fn rotation_files(
    rotate: &RotateCaArgs,
    phase: Phase,
    member: &str,
) -> Result<Vec<pb::NewCertificate>, StepError> {
    if phase != Phase::Leaves {
        return Ok(vec![pb::NewCertificate {
            cert: "etcd-trusted-ca".into(),
            cert_pem: rotate.bundle(phase),
            key_pem: String::new(),
        }]);
    }
    let staged = rotate.of(member).ok_or_else(|| {
        StepError::look_first(format!(
            "nothing was staged for {member} in {}",
            rotate.staging_dir.display()
        ))
    })?;
    let mut out = Vec::new();
    for (cert, _) in &staged.serials {
        let (cert_path, key_path) = rotate.staged(member, cert);
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| {
                StepError::look_first(format!("cannot read the staged {}: {e}", p.display())).next(
                    "the staging dir of this rotation is gone: issue the new CA's certificates again \
                     (`etcdops op abort` it and run `etcdops certs rotate-ca` again: phase 1 is then no change)",
                )
            })
        };
        out.push(pb::NewCertificate {
            cert: cert.clone(),
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        });
    }
    Ok(out)
}
