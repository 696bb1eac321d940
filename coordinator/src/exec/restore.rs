//! The executor's restore steps: stream the snapshot to every agent at once,
//! stop, swap, configure and start every member, verify; and the rollback.
//! What each agent answers (staged and kept dirs) goes to the journal, so a
//! resumed restore or a rollback finds it.

use std::future::Future;
use std::io::Read;
use std::time::Duration;

use etcdops_proto::v1 as pb;
use tokio::time::Instant;

use super::{Executor, Retry, StepError, format_took, ms_until};
use crate::agents::Client;
use crate::fleet::Member;
use crate::plan::operation::Operation;
use crate::plan::restore::RestoreArgs;
use crate::plan::step::RestoreStep;

/// Bytes per streamed chunk (well under tonic's 4 MiB message limit).
const CHUNK: usize = 1 << 20;

impl Executor {
    fn restore_args(&self, op: &str) -> Result<RestoreArgs, StepError> {
        let record = self
            .journal
            .get(op)
            .map_err(|e| StepError::look_first(e.to_string()))?
            .ok_or_else(|| StepError::look_first(format!("operation {op} is not in the journal")))?;
        record.operation.restore().cloned().ok_or_else(|| {
            StepError::look_first(format!("operation {op} is a {}, not a restore", record.kind))
        })
    }

    fn save_restore_args(&self, op: &str, args: &RestoreArgs) -> Result<(), StepError> {
        self.journal
            .update(op, |r| {
                if let Operation::Restore { restore } = &mut r.operation {
                    *restore = args.clone();
                }
            })
            .map(|_| ())
            .map_err(|e| StepError::look_first(e.to_string()))
    }

    /// Runs `call` on every member's agent at once; the answers by member, or every failure.
    async fn on_every_member<T, F, Fut>(
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
        let timeout_ms = ms_until(deadline).min(30_000);
        let answers = self
            .on_every_member(deadline, move |_, mut c: Client| async move {
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

    pub(super) async fn execute_restore(
        &self,
        kind: &RestoreStep,
        fence: &pb::Fence,
        deadline: Instant,
    ) -> Result<String, StepError> {
        let op = fence.operation_id.clone();
        match kind {
            RestoreStep::StageAll => {
                let mut args = self.restore_args(&op)?;
                let shared = std::sync::Arc::new(args.clone());
                let fence = fence.clone();
                let started = Instant::now();
                let bars = std::sync::Arc::new(upload_bars(&self.members_now(), args.file_size));
                let answers = self
                    .on_every_member(deadline, move |name, mut c: Client| {
                        let (args, fence) = (shared.clone(), fence.clone());
                        let bar = bars.get(&name).cloned();
                        async move {
                            let header = pb::RestoreHeader {
                                fence: Some(fence),
                                size: args.file_size,
                                sha256: args.db_sha256.clone(),
                                name: name.clone(),
                                initial_cluster: args.initial_cluster.clone(),
                                initial_cluster_token: args.token.clone(),
                                initial_advertise_peer_urls: args
                                    .peer_urls
                                    .get(&name)
                                    .cloned()
                                    .unwrap_or_default(),
                                bump_revision: args.bump_revision,
                            };
                            let stream = snapshot_stream(args.snapshot.clone(), header, bar.clone())
                                .map_err(|e| tonic::Status::failed_precondition(e.to_string()))?;
                            let answer = c.stage_restore(stream).await;
                            if let Some(bar) = bar {
                                let end = if answer.is_ok() {
                                    "verified and restored"
                                } else {
                                    "FAILED"
                                };
                                bar.finish_with_message(format!("{name}: {end}"));
                            }
                            answer
                        }
                    })
                    .await?;
                let mut lines = Vec::new();
                for (name, a) in answers {
                    let ms = |ms: u64| format_took(Duration::from_millis(ms));
                    lines.push(format!(
                        "{name}: {} bytes received and verified in {}, restored by {} in {}",
                        a.bytes,
                        ms(a.receive_ms),
                        a.tool,
                        ms(a.restore_ms)
                    ));
                    args.staged.insert(name, a.staged_dir);
                }
                self.save_restore_args(&op, &args)?;
                Ok(format!(
                    "{} (all in {})",
                    lines.join("; "),
                    format_took(started.elapsed())
                ))
            }
            RestoreStep::StopAll => {
                // Followers first, the leader last: a leader stopped while its
                // followers stop too tries to hand leadership to one of them
                // and waits out the transfer; alone, it stops at once.
                let members = self.members_now();
                let leader = self.observe().await.leader().map(|l| l.name.clone());
                let (last, first): (Vec<Member>, Vec<Member>) = members
                    .into_iter()
                    .partition(|m| Some(&m.name) == leader.as_ref());
                let mut stopped = Vec::new();
                for group in [first, last] {
                    if group.is_empty() {
                        continue;
                    }
                    let fence = fence.clone();
                    let timeout_ms = ms_until(deadline).min(600_000);
                    let answers = self
                        .on_members(group, deadline, move |_, mut c: Client| {
                            let request = pb::UnitRequest {
                                operation_id: fence.operation_id.clone(),
                                timeout_ms,
                                fence: Some(fence.clone()),
                                boot: false,
                            };
                            async move { c.stop_etcd(request).await }
                        })
                        .await?;
                    stopped.extend(answers.into_iter().map(|(n, _)| n));
                }
                let leader = leader
                    .map(|l| format!(" (the leader, {l}, last)"))
                    .unwrap_or_default();
                Ok(format!("stopped on {}{leader}", stopped.join(", ")))
            }
            RestoreStep::SwapAll => {
                let mut args = self.restore_args(&op)?;
                let staged = std::sync::Arc::new(args.staged.clone());
                let fence = fence.clone();
                let answers = self
                    .on_every_member(deadline, move |name, mut c: Client| {
                        let request = pb::SwapInRestoreRequest {
                            fence: Some(fence.clone()),
                            staged_dir: staged.get(&name).cloned().unwrap_or_default(),
                        };
                        async move { c.swap_in_restore(request).await }
                    })
                    .await?;
                let mut lines = Vec::new();
                for (name, a) in answers {
                    lines.push(format!("{name}: previous kept as {}", a.previous_kept_as));
                    args.kept.insert(name, a.previous_kept_as);
                }
                self.save_restore_args(&op, &args)?;
                Ok(lines.join("; "))
            }
            RestoreStep::ConfigureAll => {
                let args = std::sync::Arc::new(self.restore_args(&op)?);
                let fence = fence.clone();
                self.on_every_member(deadline, move |name, mut c: Client| {
                    let var = |key: &str, value: &str| pb::EnvVar {
                        key: key.into(),
                        value: value.into(),
                    };
                    let request = pb::SetEtcdEnvRequest {
                        operation_id: fence.operation_id.clone(),
                        set: vec![
                            var("ETCD_NAME", &name),
                            var("ETCD_INITIAL_CLUSTER", &args.initial_cluster),
                            var("ETCD_INITIAL_CLUSTER_STATE", "new"),
                            var("ETCD_INITIAL_CLUSTER_TOKEN", &args.token),
                        ],
                        unset: Vec::new(),
                        fence: Some(fence.clone()),
                    };
                    async move { c.set_etcd_env(request).await }
                })
                .await?;
                Ok("initial cluster, state `new` and the new token written on every member (previous files kept as .prev)".into())
            }
            RestoreStep::StartAll => {
                let fence = fence.clone();
                let timeout_ms = ms_until(deadline).min(600_000);
                self.on_every_member(deadline, move |_, mut c: Client| {
                    let request = pb::UnitRequest {
                        operation_id: fence.operation_id.clone(),
                        timeout_ms,
                        fence: Some(fence.clone()),
                        boot: false,
                    };
                    async move { c.start_etcd(request).await }
                })
                .await?;
                Ok("started on every member".into())
            }
            RestoreStep::VerifyRestore => {
                let revision = self.restore_args(&op).map(|a| a.revision).unwrap_or(0);
                let started = Instant::now();
                loop {
                    let view = self.observe().await;
                    let findings = crate::plan::safety::check(&view, self.tolerate);
                    let low: Vec<String> = view
                        .members
                        .iter()
                        .filter(|m| m.unreachable.is_none() && m.revision < revision)
                        .map(|m| format!("{} at revision {}", m.name, m.revision))
                        .collect();
                    let mut differ = None;
                    if findings.is_empty()
                        && low.is_empty()
                        && let Some(leader) = view.leader()
                    {
                        let at = view.members.iter().map(|m| m.revision).min().unwrap_or(0);
                        match self.hashes_agree(at, deadline).await {
                            Ok(hash) => {
                                return Ok(format!(
                                    "{} members healthy, cluster ID {:016x}, leader {}, revision {} (snapshot {revision}), \
                                     the same hashkv {hash:08x} at revision {at} on every member, after {}",
                                    view.members.len(),
                                    leader.cluster_id,
                                    leader.name,
                                    leader.revision,
                                    format_took(started.elapsed())
                                ));
                            }
                            Err(e) => differ = Some(e),
                        }
                    }
                    let last = findings
                        .iter()
                        .map(ToString::to_string)
                        .chain(low)
                        .chain(differ.map(|e| e.to_string()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    if Instant::now() >= deadline {
                        return Err(StepError::look_first(format!(
                            "the restored cluster did not become healthy in time: {last}"
                        )));
                    }
                    self.pause("the step's condition").await?;
                }
            }
            RestoreStep::RollBackAll => {
                let Operation::RestoreRollback { rollback_of: of } = &self.operation else {
                    return Err("this operation does not name the restore it rolls back".into());
                };
                let kept = std::sync::Arc::new(self.restore_args(of)?.kept);
                // A member whose swap never happened still has its own data dir.
                let swapped: Vec<Member> = self
                    .members_now()
                    .into_iter()
                    .filter(|m| kept.contains_key(&m.name))
                    .collect();
                let untouched: Vec<String> = self
                    .members_now()
                    .into_iter()
                    .filter(|m| !kept.contains_key(&m.name))
                    .map(|m| m.name)
                    .collect();
                let fence = fence.clone();
                let answers = self
                    .on_members(swapped, deadline, move |name, mut c: Client| {
                        let request = pb::RollBackRestoreRequest {
                            fence: Some(fence.clone()),
                            previous: kept.get(&name).cloned().unwrap_or_default(),
                        };
                        async move { c.roll_back_restore(request).await }
                    })
                    .await?;
                let mut lines: Vec<String> = answers
                    .iter()
                    .map(|(n, a)| format!("{n}: restored data kept as {}", a.replaced_kept_as))
                    .collect();
                lines.extend(
                    untouched
                        .iter()
                        .map(|n| format!("{n}: never swapped, its data dir is its own")),
                );
                Ok(lines.join("; "))
            }
        }
    }
}

/// One upload bar per member when stderr is a terminal (none otherwise: the
/// step's result line says what each agent verified).
fn upload_bars(members: &[Member], size: u64) -> std::collections::HashMap<String, indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return Default::default();
    }
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "  {msg:20} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    members
        .iter()
        .map(|m| {
            let bar = multi.add(indicatif::ProgressBar::new(size));
            bar.set_style(style.clone());
            bar.set_message(m.name.clone());
            (m.name.clone(), bar)
        })
        .collect()
}

/// The snapshot file as a stream of chunks after the header, read on a
/// thread of its own (bounded: 8 chunks in flight); `bar` counts the bytes
/// handed to the stream.
fn snapshot_stream(
    path: std::path::PathBuf,
    header: pb::RestoreHeader,
    bar: Option<indicatif::ProgressBar>,
) -> std::io::Result<tokio_stream::wrappers::ReceiverStream<pb::RestoreChunk>> {
    let mut file = std::fs::File::open(&path)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::thread::spawn(move || {
        let header = pb::RestoreChunk {
            kind: Some(pb::restore_chunk::Kind::Header(header)),
        };
        if tx.blocking_send(header).is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = pb::RestoreChunk {
                        kind: Some(pb::restore_chunk::Kind::Data(buf[..n].to_vec())),
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return;
                    }
                    if let Some(bar) = &bar {
                        bar.inc(n as u64);
                    }
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}
