//! Calls on every member's agent at once, and the corruption check built on
//! them: etcd's HashKV compared across members at one common revision, run
//! after every step that changes a member (and by the restore and recovery
//! verifications).

use std::future::Future;

use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{Executor, Retry, StepError, ms_until};
use crate::agents::Client;
use crate::fleet::Member;

impl Executor {
    /// Runs `call` on every member's agent at once; the answers by member, or every failure.
    pub(super) async fn on_every_member<T, F, Fut>(
        &self,
        deadline: Instant,
        call: F,
    ) -> Result<Vec<(String, T)>, StepError>
    where
        T: Send + 'static,
        F: Fn(String, Client) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        self.on_members(self.members_now(), deadline, call).await
    }

    /// Runs `call` on these members' agents at once.
    pub(super) async fn on_members<T, F, Fut>(
        &self,
        members: Vec<Member>,
        deadline: Instant,
        call: F,
    ) -> Result<Vec<(String, T)>, StepError>
    where
        T: Send + 'static,
        F: Fn(String, Client) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let calls = members.iter().map(|m| {
            let (name, call) = (m.name.clone(), call.clone());
            async move {
                let n = name.clone();
                let result = self
                    .call(&name, deadline, move |c: Client| call(n.clone(), c))
                    .await;
                (name, result)
            }
        });
        let results = futures::future::join_all(calls).await;
        let failures: Vec<(String, &StepError)> = results
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|e| (format!("{n}: {e}"), e)))
            .collect();
        if !failures.is_empty() {
            // Safe to run again only when every failure was.
            let retry = failures.iter().all(|(_, e)| e.retry == Retry::Safe);
            let seen = failures
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(if retry {
                StepError::retry(seen)
            } else {
                StepError::look_first(seen)
            });
        }
        Ok(results
            .into_iter()
            .filter_map(|(n, r)| r.ok().map(|t| (n, t)))
            .collect())
    }

    /// etcd's HashKV up to `revision` on every member: the hash when all
    /// agree, else what each answered.
    pub(super) async fn hashes_agree(&self, revision: i64, deadline: Instant) -> Result<u32, StepError> {
        self.hashes_agree_on(self.members_now(), revision, deadline).await
    }

    /// [`Executor::hashes_agree`] on these members.
    async fn hashes_agree_on(
        &self,
        members: Vec<Member>,
        revision: i64,
        deadline: Instant,
    ) -> Result<u32, StepError> {
        let timeout_ms = ms_until(deadline).min(30_000);
        let answers = self
            .on_members(members, deadline, move |_, mut c: Client| async move {
                c.hash_kv(pb::HashKvRequest { revision, timeout_ms }).await
            })
            .await?;
        let mut seen: Vec<(u32, i64)> = answers
            .iter()
            .map(|(_, h)| (h.hash, h.compact_revision))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        match seen.as_slice() {
            [(hash, _)] => Ok(*hash),
            _ => Err(StepError::look_first(format!(
                "hashkv at revision {revision} differs: {}",
                answers
                    .iter()
                    .map(|(n, h)| format!("{n} {:08x} (compacted at {})", h.hash, h.compact_revision))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The corruption check after a step that changed a member: etcd's
    /// HashKV on every member at the lowest revision they all have, equal
    /// everywhere, or the step fails naming each member's hash.
    pub(super) async fn hashkv_after_step(&self, deadline: Instant) -> Result<String, StepError> {
        let view = crate::observe::observe(&self.agents, &self.cluster.name, &self.members_now()).await;
        // The members that answer now (one whose agent is gone is the next
        // step's check to stop at, not this one's).
        let answering: Vec<_> = view.members.iter().filter(|m| m.is_healthy()).collect();
        if answering.len() < 2 {
            return Ok("hashkv not compared (fewer than two members answer)".into());
        }
        let revision = answering.iter().map(|m| m.revision).min().unwrap_or(0);
        let members: Vec<Member> = self
            .members_now()
            .into_iter()
            .filter(|m| answering.iter().any(|a| a.name == m.name))
            .collect();
        let count = members.len();
        let started = Instant::now();
        match self.hashes_agree_on(members, revision, deadline).await {
            Ok(hash) => Ok(format!(
                "hashkv {hash:08x} equal on {count} members at revision {revision} ({})",
                super::format_took(started.elapsed())
            )),
            // etcd hashes only revisions after the last compaction: with
            // nothing written since one, there is nothing to compare yet.
            Err(e) if e.seen.contains("required revision has been compacted") => Ok(format!(
                "hashkv not compared: revision {revision} is the latest compaction (nothing written since)"
            )),
            Err(e) if e.seen.starts_with("hashkv at revision") => Err(StepError::look_first(format!(
                "etcd's key-value stores differ between members: {e}"
            ))
            .next(
                "stop writing through the odd member: compare with `etcdops check hashkv`, then replace it \
                 (`etcdops member replace`) or restore; `--skip-hashkv-check` runs operations without this check",
            )),
            Err(e) => Err(e),
        }
    }
}
