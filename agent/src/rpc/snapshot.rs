//! SaveSnapshot: streams the local member's snapshot through the agent,
//! checking etcd's sha256 trailer on the way. Memory stays bounded: at
//! most a few coalesced chunks are in flight.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use etcdops_proto::v1::{SnapshotChunk, SnapshotHeader, SnapshotSummary, snapshot_chunk::Kind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::etcd::SnapshotReader;
use crate::state::AgentState;
use etcdops_format::snapfile::TrailerCheck;

/// The response stream.
pub type SnapshotStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

/// Chunks sent to the coordinator are coalesced up to this size.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between etcd and the coordinator.
const IN_FLIGHT: usize = 8;

pub async fn save_snapshot(state: &AgentState, start_timeout: Duration) -> Result<SnapshotStream, Status> {
    let member = state
        .etcd
        .status_without_alarms(start_timeout)
        .await
        .map_err(|e| Status::unavailable(format!("cannot snapshot: {e}")))?;
    let reader = state
        .etcd
        .snapshot(start_timeout)
        .await
        .map_err(|e| Status::unavailable(format!("cannot start the snapshot: {e}")))?;
    let header = SnapshotHeader {
        member_id: member.member_id,
        member_name: member.member_name,
        cluster_id: member.cluster_id,
        revision: member.revision,
        raft_index: member.raft_index,
        etcd_version: member.version,
        db_size: member.db_size,
    };
    tracing::info!(
        revision = header.revision,
        db_size = header.db_size,
        "streaming a snapshot"
    );
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(tracing::Instrument::in_current_span(pump(reader, header, tx)));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Hashes the chunks on a thread of its own, so checking the trailer does
/// not slow the stream; the chunks are shared (`Bytes`), not copied.
fn spawn_hasher() -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<TrailerCheck>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
    let handle = tokio::task::spawn_blocking(move || {
        let mut check = TrailerCheck::default();
        while let Some(chunk) = rx.blocking_recv() {
            check.update(&chunk);
        }
        check
    });
    (tx, handle)
}

async fn pump(
    mut reader: SnapshotReader,
    header: SnapshotHeader,
    tx: mpsc::Sender<Result<SnapshotChunk, Status>>,
) {
    let chunk = |kind| Ok(SnapshotChunk { kind: Some(kind) });
    if tx.send(chunk(Kind::Header(header))).await.is_err() {
        return;
    }
    let (hash_tx, hasher) = spawn_hasher();
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        match reader.next_chunk().await {
            Ok(Some(bytes)) => {
                buf.extend_from_slice(&bytes);
                if buf.len() >= CHUNK {
                    let data = std::mem::replace(&mut buf, BytesMut::with_capacity(CHUNK)).freeze();
                    let _ = hash_tx.send(data.clone()).await;
                    if tx.send(chunk(Kind::Data(data))).await.is_err() {
                        tracing::warn!("the coordinator went away mid-snapshot");
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "snapshot stream from etcd failed");
                let _ = tx
                    .send(Err(Status::unavailable(format!(
                        "the snapshot stream from etcd broke: {e}"
                    ))))
                    .await;
                return;
            }
        }
    }
    if !buf.is_empty() {
        let data = buf.freeze();
        let _ = hash_tx.send(data.clone()).await;
        if tx.send(chunk(Kind::Data(data))).await.is_err() {
            return;
        }
    }
    drop(hash_tx);
    let verdict = match hasher.await {
        Ok(check) => check.finish().map_err(|e| e.to_string()),
        Err(e) => Err(format!("the snapshot hasher failed: {e}")),
    };
    match verdict {
        Ok((total_bytes, sha256)) => {
            tracing::info!(total_bytes, %sha256, "snapshot streamed and verified");
            let _ = tx
                .send(chunk(Kind::Summary(SnapshotSummary { total_bytes, sha256 })))
                .await;
        }
        Err(message) => {
            tracing::error!(%message, "snapshot failed its integrity check");
            let _ = tx.send(Err(Status::data_loss(message))).await;
        }
    }
}
