//! The executor's etcd upgrade steps (an upgrade and its rollback alike):
//! `switch-binary:M` (leadership moved away first when M leads; the
//! binary its unit runs switched through its agent's SetEtcdBinary, a
//! restart, then healthy, caught up and reporting the operation's version —
//! the executor compares HashKV after it) and `cluster-version` (every
//! member reports the new minor as the cluster version).

use etcdops_format::etcd_version::EtcdVersion;
use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{Executor, StepError, format_took};
use crate::agents::Client;
use crate::plan::view::ClusterView;

impl Executor {
    /// `switch-binary:M`.
    pub(super) async fn switch_binary(
        &self,
        member: &str,
        view: &ClusterView,
        fence: &pb::Fence,
        deadline: Instant,
        processed: &[String],
    ) -> Result<String, StepError> {
        let (binary, version) = self.operation.upgrade_target(member).ok_or_else(|| {
            StepError::look_first(format!(
                "operation {} has no etcd binary to switch {member} to",
                fence.operation_id
            ))
        })?;
        let mut detail = self
            .transfer_if_leader(view, member, fence, deadline, processed)
            .await?;
        let request = pb::SetEtcdBinaryRequest {
            fence: Some(fence.clone()),
            path: binary.clone(),
        };
        let switched = self
            .call(member, deadline, move |mut c: Client| {
                let request = request.clone();
                async move { c.set_etcd_binary(request).await }
            })
            .await?;
        if switched.version != version {
            return Err(StepError::look_first(format!(
                "{binary} on {member} reports etcd {}, not the {version} this operation installs",
                switched.version
            ))
            .next("install the same release on every host, then `etcdops op resume`"));
        }
        let restarted = self.restart_member(member, fence, deadline).await?;
        let reported = self.wait_version(member, &version, deadline).await?;
        detail.push_str(&format!(
            "{} -> {binary} (etcd {reported}); {restarted}",
            switched.previous,
        ));
        Ok(detail)
    }

    /// Polls `member`'s agent until its etcd reports `version`.
    async fn wait_version(
        &self,
        member: &str,
        version: &str,
        deadline: Instant,
    ) -> Result<String, StepError> {
        loop {
            let request = pb::EtcdVersionsRequest {
                binaries: Vec::new(),
                timeout_ms: 2000,
            };
            let last = match self
                .call(member, deadline, move |mut c: Client| {
                    let request = request.clone();
                    async move { c.etcd_versions(request).await }
                })
                .await
            {
                Ok(r) if r.server_version == version => return Ok(r.server_version),
                Ok(r) if r.server_version.is_empty() => format!("no version ({})", r.metrics_error),
                Ok(r) => format!("etcd {}", r.server_version),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(StepError::look_first(format!(
                    "{member} does not report etcd {version} after its restart: {last}"
                ))
                .next("check which binary its unit runs (`etcdops status`) and its etcd log"));
            }
            self.pause(&format!("{member} to report etcd {version}")).await?;
        }
    }

    /// `cluster-version`: every member reports the target's minor.
    pub(super) async fn cluster_version(&self, deadline: Instant) -> Result<String, StepError> {
        let Some((_, version)) = self
            .members_now()
            .first()
            .and_then(|m| self.operation.upgrade_target(&m.name))
        else {
            return Err(StepError::look_first("the operation has no target version"));
        };
        let want = version
            .parse::<EtcdVersion>()
            .map(|v| v.minor_string())
            .map_err(|e| StepError::look_first(e.to_string()))?;
        let started = Instant::now();
        let members = self.members_now();
        loop {
            let agents = self.agents.clone();
            let timeout_ms = 2000;
            let replies = agents
                .fan_out(&members, move |mut c: Client| async move {
                    c.etcd_versions(pb::EtcdVersionsRequest {
                        binaries: Vec::new(),
                        timeout_ms,
                    })
                    .await
                })
                .await;
            let seen: Vec<String> = replies
                .iter()
                .map(|r| match &r.result {
                    Ok(v) if !v.cluster_version.is_empty() => format!("{} {}", r.member, v.cluster_version),
                    Ok(v) => format!("{} unknown ({})", r.member, v.metrics_error),
                    Err(e) => format!("{} unreadable ({e})", r.member),
                })
                .collect();
            if replies
                .iter()
                .all(|r| r.result.as_ref().is_ok_and(|v| v.cluster_version == want))
            {
                return Ok(format!(
                    "the cluster version moved to {want} after {} (every member reports it): the upgrade to etcd \
                     {version} is complete; going back now means a restore of the pre-upgrade snapshot",
                    format_took(started.elapsed())
                ));
            }
            if Instant::now() >= deadline {
                return Err(StepError::retry(format!(
                    "the cluster version did not move to {want} in time: {}",
                    seen.join(", ")
                ))
                .next("etcd moves it once every member runs the new release: check `etcdops status`, then `etcdops op resume`"));
            }
            self.pause(&format!("the cluster version {want}")).await?;
        }
    }
}
