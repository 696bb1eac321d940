//! StageRestore, SwapInRestore, RollBackRestore: the restore RPCs (all
//! fenced). The header is converted to a `RestoreSpec` at once; the stream
//! is written to disk as it arrives (a writer thread, a few chunks in
//! flight); [`status`] is the one mapping of restore errors to gRPC codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use etcdops_proto::v1 as pb;
use etcdops_proto::v1::restore_chunk::Kind;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::datadir::{self, DataDirError};
use crate::restore::{self, PartWriter, RemoveOnDrop, RestoreError, RestoreSpec, StagePaths, tool};
use crate::state::AgentState;
use crate::unit::UnitState;

/// Chunks buffered between the gRPC stream and the writer thread.
const IN_FLIGHT: usize = 8;

/// The one mapping of restore errors to gRPC status codes.
pub fn status(e: RestoreError) -> Status {
    let code = match &e {
        RestoreError::InvalidField { .. } => tonic::Code::InvalidArgument,
        RestoreError::NoSpace { .. } => tonic::Code::ResourceExhausted,
        RestoreError::TooManyBytes { .. }
        | RestoreError::SizeMismatch { .. }
        | RestoreError::ShaMismatch { .. }
        | RestoreError::Integrity(_) => tonic::Code::DataLoss,
        RestoreError::BumpUnsupported { .. }
        | RestoreError::ToolMissing { .. }
        | RestoreError::EtcdRunning { .. } => tonic::Code::FailedPrecondition,
        RestoreError::ToolTimeout { .. } => tonic::Code::DeadlineExceeded,
        RestoreError::DataDir(d) => match d {
            DataDirError::Missing { .. }
            | DataDirError::NotADirectory { .. }
            | DataDirError::TargetExists { .. } => tonic::Code::FailedPrecondition,
            _ => tonic::Code::Internal,
        },
        RestoreError::ToolStart { .. }
        | RestoreError::ToolFailed { .. }
        | RestoreError::NotRestored { .. }
        | RestoreError::Io { .. } => tonic::Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// The stream's first message, which must be the header.
pub async fn header(stream: &mut Streaming<pb::RestoreChunk>) -> Result<pb::RestoreHeader, Status> {
    match stream.message().await? {
        Some(pb::RestoreChunk {
            kind: Some(Kind::Header(h)),
        }) => Ok(h),
        Some(_) => Err(Status::invalid_argument(
            "header: the first message must be the RestoreHeader, before any data",
        )),
        None => Err(Status::invalid_argument(
            "header: required; the stream ended before it",
        )),
    }
}

/// The header as a validated spec (the fence is checked by `fenced`).
pub fn spec(header: &pb::RestoreHeader, operation_id: &str) -> Result<RestoreSpec, Status> {
    RestoreSpec {
        operation_id: operation_id.to_string(),
        size: header.size,
        sha256: header.sha256.clone(),
        name: header.name.clone(),
        initial_cluster: header.initial_cluster.clone(),
        initial_cluster_token: header.initial_cluster_token.clone(),
        initial_advertise_peer_urls: header.initial_advertise_peer_urls.clone(),
        bump_revision: header.bump_revision,
    }
    .validated()
    .map_err(status)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, Status> {
    // On its thread too, the work is in the RPC's span (its trace, its logs).
    let span = tracing::info_span!("blocking", otel.name = what);
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Status::internal(format!("{what}: {e}")))?
        .map_err(status)
}

/// Refuses while etcd runs (or is starting or stopping).
async fn require_stopped(state: &AgentState, what: &'static str) -> Result<(), Status> {
    let unit = state.unit.info().await;
    if matches!(
        unit.state,
        UnitState::Active | UnitState::Activating | UnitState::Deactivating
    ) {
        return Err(status(RestoreError::EtcdRunning {
            what,
            unit: state.unit.unit().to_string(),
            state: unit.state.to_string(),
        }));
    }
    Ok(())
}

/// StageRestore after the header: free space, the tool, the file (written
/// and checked), the restore into `<data dir>.restore-<operation>`.
#[tracing::instrument(name = "restore.stage", skip_all, fields(operation = %spec.operation_id))]
pub async fn stage(
    state: Arc<AgentState>,
    spec: RestoreSpec,
    mut stream: Streaming<pb::RestoreChunk>,
) -> Result<pb::StageRestoreResponse, Status> {
    let started = Instant::now();
    let paths = StagePaths::new(&state.data_dir, &spec.operation_id).map_err(status)?;
    let tool = tool::resolve(&state.restore, std::env::var_os("PATH").as_deref()).map_err(status)?;
    let version = tool::version(&tool).await.map_err(status)?;
    // Refused before any byte is accepted (FAILED_PRECONDITION for a bump the tool cannot do).
    let args = tool::restore_args(&version, &spec, &paths.part, &paths.staged).map_err(status)?;
    // Removes the copy on every path out, also when the caller goes away.
    let _part_guard = RemoveOnDrop(paths.part.clone());
    {
        let (part, staged, size) = (paths.part.clone(), paths.staged.clone(), spec.size);
        blocking("preparing the restore", move || {
            let _ = std::fs::remove_file(&part); // an earlier attempt's copy
            let parent = datadir::parent_dir(&staged);
            restore::check_free_space(&parent, datadir::fs_free_bytes(&parent)?, size)?;
            restore::set_aside_leftover(&staged, SystemTime::now())?;
            Ok(())
        })
        .await?;
    }
    tracing::info!(
        operation = %spec.operation_id, size = spec.size, part = %paths.part.display(),
        tool = %version, "receiving a snapshot to restore"
    );
    let receiving = Instant::now();
    let written = receive(&mut stream, &paths.part, spec.size).await?;
    let receive_ms = millis(receiving.elapsed());
    let sha256 = restore::verify(&spec, &written).map_err(|e| {
        tracing::error!(operation = %spec.operation_id, error = %e, "the snapshot to restore failed its checks");
        status(e)
    })?;

    let timeout = Duration::from_secs(state.restore.timeout_secs);
    let restoring = Instant::now();
    let restored = tool::restore(&tool, &args, timeout).await;
    let restore_ms = millis(restoring.elapsed());
    if let Err(e) = restored {
        let staged = paths.staged.clone();
        let kept =
            tokio::task::spawn_blocking(move || restore::set_aside_leftover(&staged, SystemTime::now()))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
        tracing::error!(error = %e, kept = ?kept, "snapshot restore failed");
        let mut s = status(e);
        if let Some(kept) = kept {
            s = Status::new(
                s.code(),
                format!(
                    "{}; its partial output is kept as {}",
                    s.message(),
                    kept.display()
                ),
            );
        }
        return Err(s);
    }
    {
        let (staged, data_dir) = (paths.staged.clone(), state.data_dir.clone());
        blocking("checking the restored dir", move || {
            if !restore::is_restored_dir(&staged) {
                return Err(RestoreError::NotRestored { dir: staged });
            }
            restore::chown_like(&staged, &data_dir)?;
            let parent = datadir::parent_dir(&staged);
            std::fs::File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(|source| RestoreError::Io {
                    op: "fsyncing",
                    path: parent,
                    source,
                })
        })
        .await?;
    }
    tracing::warn!(
        operation = %spec.operation_id, staged = %paths.staged.display(), tool = %version,
        bump_revision = spec.bump_revision, "snapshot restored beside the data dir"
    );
    Ok(pb::StageRestoreResponse {
        staged_dir: paths.staged.display().to_string(),
        bytes: written.bytes,
        sha256,
        tool: version,
        took_ms: millis(started.elapsed()),
        receive_ms,
        restore_ms,
    })
}

/// Writes the stream's data chunks to `part` on a thread of its own, never
/// more than `size` bytes; returns what was written (checked by the caller).
async fn receive(
    stream: &mut Streaming<pb::RestoreChunk>,
    part: &Path,
    size: u64,
) -> Result<restore::Written, Status> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let path: PathBuf = part.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = PartWriter::create(&path)?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write(&chunk)?;
        }
        w.finish()
    });
    let mut got = 0u64;
    let read: Result<(), Status> = async {
        while let Some(chunk) = stream.message().await.map_err(|e| {
            Status::new(
                e.code(),
                format!("the restore stream broke after {got} bytes: {}", e.message()),
            )
        })? {
            let data = match chunk.kind {
                Some(Kind::Data(data)) => data,
                Some(Kind::Header(_)) => {
                    return Err(Status::invalid_argument(
                        "header: sent twice; only the first message is a header",
                    ));
                }
                None => {
                    return Err(Status::invalid_argument(
                        "data: a message carries neither header nor data",
                    ));
                }
            };
            got = got.saturating_add(data.len() as u64);
            if got > size {
                return Err(status(RestoreError::TooManyBytes { expected: size, got }));
            }
            if tx.send(data).await.is_err() {
                // The writer stopped on an error: it is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Status::internal(format!("writing the snapshot: {e}")))?;
    read?;
    written.map_err(status)
}

#[tracing::instrument(name = "restore.swap_in", skip_all)]
pub async fn swap_in(
    state: &AgentState,
    request: pb::SwapInRestoreRequest,
) -> Result<pb::SwapInRestoreResponse, Status> {
    let staged = PathBuf::from(&request.staged_dir);
    restore::check_staged_path(&state.data_dir, &staged).map_err(status)?;
    require_stopped(state, "a restore can be swapped in").await?;
    let (data_dir, state_dir) = (state.data_dir.clone(), state.state_dir.clone());
    let swap = blocking("swapping the restore in", move || {
        restore::swap_in(&data_dir, &staged, &state_dir, SystemTime::now())
    })
    .await?;
    Ok(pb::SwapInRestoreResponse {
        data_dir: swap.data_dir.display().to_string(),
        previous_kept_as: swap
            .previous_kept_as
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    })
}

#[tracing::instrument(name = "restore.roll_back", skip_all)]
pub async fn roll_back(
    state: &AgentState,
    request: pb::RollBackRestoreRequest,
) -> Result<pb::RollBackRestoreResponse, Status> {
    let previous = PathBuf::from(&request.previous);
    restore::swap::check_previous_path(&state.data_dir, &previous).map_err(status)?;
    require_stopped(state, "a kept data dir can be rolled back").await?;
    let data_dir = state.data_dir.clone();
    let back = blocking("rolling back", move || {
        restore::roll_back(&data_dir, &previous, SystemTime::now())
    })
    .await?;
    Ok(pb::RollBackRestoreResponse {
        data_dir: back.data_dir.display().to_string(),
        replaced_kept_as: back
            .replaced_kept_as
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_one_code_each() {
        let cases: Vec<(RestoreError, tonic::Code)> = vec![
            (
                RestoreError::InvalidField {
                    field: "name",
                    reason: "x".into(),
                },
                tonic::Code::InvalidArgument,
            ),
            (
                RestoreError::NoSpace {
                    dir: "/d".into(),
                    free: 1,
                    needed: 2,
                    size: 1,
                },
                tonic::Code::ResourceExhausted,
            ),
            (
                RestoreError::TooManyBytes { expected: 1, got: 2 },
                tonic::Code::DataLoss,
            ),
            (
                RestoreError::SizeMismatch { expected: 1, got: 2 },
                tonic::Code::DataLoss,
            ),
            (
                RestoreError::ShaMismatch {
                    expected: "a".into(),
                    got: "b".into(),
                },
                tonic::Code::DataLoss,
            ),
            (
                RestoreError::Integrity(etcdops_format::snapfile::TrailerError::TooShort { total: 1 }),
                tonic::Code::DataLoss,
            ),
            (
                RestoreError::BumpUnsupported {
                    bump: 1,
                    tool: "etcdctl 3.4.23".into(),
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                RestoreError::EtcdRunning {
                    what: "x",
                    unit: "etcd".into(),
                    state: "active".into(),
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                RestoreError::ToolTimeout {
                    tool: "t".into(),
                    timeout: Duration::from_secs(1),
                },
                tonic::Code::DeadlineExceeded,
            ),
            (
                RestoreError::ToolFailed {
                    tool: "t".into(),
                    args: "a".into(),
                    status: "1".into(),
                    tail: "e".into(),
                },
                tonic::Code::Internal,
            ),
            (
                RestoreError::DataDir(DataDirError::TargetExists {
                    from: "a".into(),
                    to: "b".into(),
                }),
                tonic::Code::FailedPrecondition,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let s = status(e);
            assert_eq!(s.code(), code, "{text}");
            assert_eq!(s.message(), text);
        }
    }
}
