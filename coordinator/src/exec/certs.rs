//! The executor's certificate step (`certs renew`, issue 17): a member's
//! staged certificates installed through its agent (fenced; a retry under
//! the same step key is answered from the agent's record), then the wait
//! until the member serves the new serials on its client and peer ports and
//! its agent on its own — no etcd restart.

use std::time::Duration;

use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{Executor, POLL_INTERVAL, StepError};
use crate::plan::certs::CertStep;

/// The certificates a member serves, and which of them the step waits for.
const SERVED: [&str; 3] = ["etcd-server", "etcd-peer", "agent"];

impl Executor {
    pub(super) async fn execute_certs(
        &self,
        step: &CertStep,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let CertStep::RenewCerts { member } = step;
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
        let changed: Vec<String> = installed
            .installed
            .iter()
            .map(|i| {
                format!(
                    "{} {}{}",
                    i.cert,
                    i.serial,
                    if i.changed { "" } else { " (already)" }
                )
            })
            .collect();
        let expected: Vec<(&str, &str)> = staged
            .serials
            .iter()
            .filter(|(c, _)| SERVED.contains(&c.as_str()))
            .map(|(c, s)| (c.as_str(), s.as_str()))
            .collect();
        loop {
            let seen = self
                .call(member, deadline, |mut client| async move {
                    client
                        .get_certificates(pb::GetCertificatesRequest { timeout_ms: 2_000 })
                        .await
                })
                .await?;
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
                return Ok(format!(
                    "installed {}; served: {}",
                    changed.join(", "),
                    expected
                        .iter()
                        .map(|(c, s)| format!("{c} {s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if Instant::now() + POLL_INTERVAL >= deadline {
                return Err(StepError::retry(format!(
                    "{member}'s new certificates are installed ({}) but not all served in time: {}",
                    changed.join(", "),
                    behind.join("; ")
                ))
                .next(
                    "check what the member serves with `etcdops certs check-expiration`; \
                     `etcdops op resume` installs again (no change) and waits again",
                ));
            }
            tokio::time::sleep(POLL_INTERVAL.max(Duration::from_millis(250))).await;
        }
    }
}
