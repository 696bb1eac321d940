//! `etcdops snapshot save`: picks a healthy, caught-up member (a follower
//! when there is one), streams its snapshot through its agent into a temp
//! file while hashing, checks etcd's sha256 trailer and the agent's summary,
//! fsyncs, and only then renames the file into place beside a metadata
//! sidecar (`<file>.json`). A failed or interrupted save leaves no file that
//! looks like a snapshot.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcdops_format::snapfile::TrailerCheck;
use etcdops_proto::v1::snapshot_chunk::Kind;
use etcdops_proto::v1::{SaveSnapshotRequest, SnapshotHeader};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::agents::Agents;
use crate::fleet::{Cluster, Member};

/// What a save needs.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Member to snapshot; `None` picks one.
    pub member: Option<String>,
    /// Output file, or an existing directory.
    pub out: PathBuf,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Accept the named member while its cluster has no quorum (its
    /// linearizable read fails; its local data is what a majority-loss
    /// recovery keeps).
    pub without_quorum: bool,
}

/// The sidecar written beside every snapshot as `<file>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Schema version of this sidecar.
    pub version: u32,
    /// The snapshot's file name (no directory).
    pub file: String,
    /// The fleet's cluster name.
    pub cluster: String,
    /// etcd's cluster ID, 16 hex digits.
    pub cluster_id: String,
    pub member_name: String,
    /// 16 hex digits.
    pub member_id: String,
    /// Store revision and raft index when the snapshot started.
    pub revision: i64,
    pub raft_index: u64,
    pub etcd_version: String,
    /// File size in bytes, trailer included.
    pub size: u64,
    /// Hex sha256 of the database bytes (equal to the file's trailer).
    pub sha256: String,
    /// When the save finished, RFC 3339 UTC.
    pub created: String,
}

/// A snapshot saved and verified.
#[derive(Debug, Clone)]
pub struct Saved {
    pub path: PathBuf,
    pub sidecar: PathBuf,
    pub meta: SnapshotMeta,
    /// Why this member was chosen.
    pub why: String,
}

/// Errors of a save. Each names the member and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("no member {name:?} in cluster {cluster}; members: {known}")]
    UnknownMember {
        name: String,
        cluster: String,
        known: String,
    },
    #[error("member {member} cannot be snapshotted: {reason}")]
    Unsuitable { member: String, reason: String },
    #[error(
        "no healthy, caught-up member to snapshot in cluster {cluster}: {problems}. Check `etcdops status`"
    )]
    NoCandidate { cluster: String, problems: String },
    #[error("{path} already exists; refusing to overwrite it: choose another --out or move it away")]
    Exists { path: PathBuf },
    #[error("cannot write the snapshot to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] crate::agents::AgentError),
    #[error(
        "snapshot from {member} failed mid-stream after {bytes} bytes: {message}; no snapshot file was left"
    )]
    Stream {
        member: String,
        bytes: u64,
        message: String,
    },
    #[error("snapshot from {member} failed verification: {message}; no snapshot file was left")]
    Verify { member: String, message: String },
    #[error("interrupted; the partial file was removed and no snapshot was saved")]
    Interrupted,
}

/// The member chosen for a snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub member: String,
    pub why: String,
}

/// What `choose_member` needs to know of each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Why the member cannot serve at all (unreachable, unhealthy), if so.
    pub problem: Option<String>,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_applied_index: u64,
}

/// How far (in raft entries) a member may trail the most advanced one and
/// still count as caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 1000;

/// Picks the member to snapshot (pure): the named one if given and usable;
/// else a healthy, caught-up follower (the most advanced one), so the
/// leader is spared the extra load; else the leader.
pub fn choose_member(
    cluster: &str,
    wanted: Option<&str>,
    candidates: &[Candidate],
) -> Result<Choice, SaveError> {
    let best = candidates
        .iter()
        .filter(|c| c.problem.is_none())
        .map(|c| c.raft_applied_index)
        .max()
        .unwrap_or(0);
    let lag = |c: &Candidate| best.saturating_sub(c.raft_applied_index);
    if let Some(name) = wanted {
        let c = candidates
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| SaveError::UnknownMember {
                name: name.to_string(),
                cluster: cluster.to_string(),
                known: candidates
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if let Some(problem) = &c.problem {
            return Err(SaveError::Unsuitable {
                member: c.name.clone(),
                reason: problem.clone(),
            });
        }
        if lag(c) > CAUGHT_UP_ENTRIES {
            return Err(SaveError::Unsuitable {
                member: c.name.clone(),
                reason: format!(
                    "it trails the cluster by {} raft entries; pick another --member or wait",
                    lag(c)
                ),
            });
        }
        return Ok(Choice {
            member: c.name.clone(),
            why: "asked for with --member".to_string(),
        });
    }
    let usable = |c: &&Candidate| c.problem.is_none() && !c.is_learner && lag(c) <= CAUGHT_UP_ENTRIES;
    let follower = candidates
        .iter()
        .filter(usable)
        .filter(|c| !c.is_leader)
        .max_by_key(|c| c.raft_applied_index);
    if let Some(c) = follower {
        let why = if lag(c) == 0 {
            "a healthy follower, fully caught up (the leader is spared the load)".to_string()
        } else {
            format!(
                "a healthy follower, {} raft entries behind (the leader is spared the load)",
                lag(c)
            )
        };
        return Ok(Choice {
            member: c.name.clone(),
            why,
        });
    }
    if let Some(c) = candidates.iter().filter(usable).find(|c| c.is_leader) {
        return Ok(Choice {
            member: c.name.clone(),
            why: "the leader: no healthy, caught-up follower".to_string(),
        });
    }
    let problems = candidates
        .iter()
        .map(|c| match &c.problem {
            Some(p) => format!("{}: {p}", c.name),
            None if c.is_learner => format!("{}: a learner", c.name),
            None => format!("{}: {} raft entries behind", c.name, lag(c)),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(SaveError::NoCandidate {
        cluster: cluster.to_string(),
        problems,
    })
}

/// Saves a verified snapshot of `cluster` (see the module docs).
pub async fn save(agents: &Agents, cluster: &Cluster, opts: &SaveOptions) -> Result<Saved, SaveError> {
    // Without quorum the linearizable read would only wait out its budget.
    let health = async {
        if opts.without_quorum {
            Vec::new()
        } else {
            agents.health(&cluster.members).await
        }
    };
    let (statuses, health) = tokio::join!(agents.get_status(&cluster.members), health);
    let candidates: Vec<Candidate> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let h = health.get(i).map(|h| &h.result);
            let mut c = Candidate {
                name: s.member.clone(),
                problem: None,
                is_leader: false,
                is_learner: false,
                raft_applied_index: 0,
            };
            match (&s.result, h) {
                (Err(e), _) | (_, Some(Err(e))) => c.problem = Some(e.brief()),
                (Ok(status), h) => {
                    let health = h.and_then(|h| h.as_ref().ok());
                    let healthy = opts.without_quorum || health.is_some_and(|h| h.healthy);
                    match &status.member {
                        Some(m) if m.reachable && healthy => {
                            c.is_leader = m.is_leader;
                            c.is_learner = m.is_learner;
                            c.raft_applied_index = m.raft_applied_index;
                        }
                        Some(m) if !m.reachable => {
                            c.problem = Some(format!("etcd not answering: {}", m.error))
                        }
                        _ => {
                            c.problem = Some(format!(
                                "unhealthy: {}",
                                health.map(|h| h.error.as_str()).unwrap_or_default()
                            ))
                        }
                    }
                }
            }
            c
        })
        .collect();
    let choice = choose_member(&cluster.name, opts.member.as_deref(), &candidates)?;
    let member = cluster
        .member(&choice.member)
        .ok_or_else(|| SaveError::UnknownMember {
            name: choice.member.clone(),
            cluster: cluster.name.clone(),
            known: String::new(),
        })?
        .clone();
    let dest = destination(&opts.out, &cluster.name)?;
    tracing::info!(member = %member.name, why = %choice.why, dest = %dest.display(), "saving a snapshot");

    let part = part_path(&dest);
    let result = tokio::select! {
        r = stream_to(agents, &member, &part, opts.progress) => r,
        _ = tokio::signal::ctrl_c() => Err(SaveError::Interrupted),
    };
    let (header, total, sha256) = match result {
        Ok(ok) => ok,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    let meta = SnapshotMeta {
        version: 1,
        file: dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cluster: cluster.name.clone(),
        cluster_id: format!("{:016x}", header.cluster_id),
        member_name: member.name.clone(),
        member_id: format!("{:016x}", header.member_id),
        revision: header.revision,
        raft_index: header.raft_index,
        etcd_version: header.etcd_version,
        size: total,
        sha256,
        created: now_rfc3339(),
    };
    let sidecar = sidecar_path(&dest);
    let finish = || -> std::io::Result<()> {
        if dest.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "appeared while saving",
            ));
        }
        std::fs::rename(&part, &dest)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
        write_synced(&sidecar, &json)?;
        sync_dir(&dest)
    };
    if let Err(source) = finish() {
        let _ = std::fs::remove_file(&part);
        return Err(SaveError::Write { path: dest, source });
    }
    Ok(Saved {
        path: dest,
        sidecar,
        meta,
        why: choice.why,
    })
}

/// Streams member's snapshot into `part`, verifying it; returns the header,
/// the byte count and the sha256 once the file is complete and fsynced.
async fn stream_to(
    agents: &Agents,
    member: &Member,
    part: &Path,
    progress: bool,
) -> Result<(SnapshotHeader, u64, String), SaveError> {
    let mut client = agents.connect(member).await?;
    let stream_err = |bytes: u64, message: String| SaveError::Stream {
        member: member.name.clone(),
        bytes,
        message,
    };
    let mut stream = client
        .save_snapshot(SaveSnapshotRequest {
            start_timeout_ms: agents.agent_budget_ms(),
        })
        .await
        .map_err(|s| stream_err(0, s.message().to_string()))?
        .into_inner();
    let write_err = |source| SaveError::Write {
        path: part.to_path_buf(),
        source,
    };
    let (tx, writer) = spawn_writer(part.to_path_buf());
    let mut header = None;
    let mut summary = None;
    let mut bytes = 0u64;
    let bar = progress_bar(progress);
    // A stream that stops moving is a failure, not a hang.
    let stall = (agents.timeout() * 4).max(Duration::from_secs(5));
    let received: Result<(), SaveError> = async {
        loop {
            let next = tokio::time::timeout(stall, stream.message())
                .await
                .map_err(|_| stream_err(bytes, format!("no data for {stall:?}")))?
                .map_err(|s| stream_err(bytes, s.message().to_string()))?;
            let Some(chunk) = next else { return Ok(()) };
            match chunk.kind {
                Some(Kind::Header(h)) => {
                    if let Some(bar) = &bar {
                        bar.set_length(u64::try_from(h.db_size).unwrap_or(0) + 32);
                        bar.set_message(format!("from {}", member.name));
                    }
                    header = Some(h);
                }
                Some(Kind::Data(data)) => {
                    bytes += data.len() as u64;
                    if tx.send(data).await.is_err() {
                        // The writer stopped: its error is reported below.
                        return Ok(());
                    }
                    if let Some(bar) = &bar {
                        bar.set_position(bytes);
                    }
                }
                Some(Kind::Summary(s)) => summary = Some(s),
                None => {}
            }
        }
    }
    .await;
    drop(tx);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let written = writer
        .await
        .map_err(|e| write_err(std::io::Error::other(e)))?
        .map_err(write_err);
    received?;
    let check = written?;
    let verify = |message: String| SaveError::Verify {
        member: member.name.clone(),
        message,
    };
    let header = header.ok_or_else(|| verify("the agent sent no header".to_string()))?;
    let summary = summary
        .ok_or_else(|| stream_err(bytes, "the stream ended before the agent's summary".to_string()))?;
    let (total, sha256) = check.finish().map_err(|e| verify(e.to_string()))?;
    if summary.total_bytes != total || summary.sha256 != sha256 {
        return Err(verify(format!(
            "the agent streamed {} bytes with sha256 {}, we received {total} bytes with sha256 {sha256}",
            summary.total_bytes, summary.sha256
        )));
    }
    Ok((header, total, sha256))
}

/// Hashes and writes chunks on a thread of its own, so receiving the next
/// chunk overlaps with hashing and writing this one. The file is created
/// (never replaced) and fsynced before the thread returns the hash state.
fn spawn_writer(
    path: PathBuf,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<std::io::Result<TrailerCheck>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut check = TrailerCheck::default();
        while let Some(chunk) = rx.blocking_recv() {
            check.update(&chunk);
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
        Ok(check)
    });
    (tx, handle)
}

fn progress_bar(wanted: bool) -> Option<ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{spinner} snapshot {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// The file to write: `out` itself, or `<out>/<cluster>-<UTC time>.db` when
/// `out` is a directory. Refuses an existing file.
fn destination(out: &Path, cluster: &str) -> Result<PathBuf, SaveError> {
    let dest = if out.is_dir() {
        out.join(format!("{cluster}-{}.db", now_compact()))
    } else {
        out.to_path_buf()
    };
    if dest.exists() {
        return Err(SaveError::Exists { path: dest });
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(SaveError::Write {
            path: dest.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("directory {} does not exist", parent.display()),
            ),
        });
    }
    Ok(dest)
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(format!(".part-{}", std::process::id()));
    PathBuf::from(name)
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = part_path(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// `YYYYMMDDTHHMMSSZ`, UTC.
pub fn now_compact() -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc().format(&f).unwrap_or_default()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The sidecar path of a snapshot file.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, leader: bool, applied: u64) -> Candidate {
        Candidate {
            name: name.to_string(),
            problem: None,
            is_leader: leader,
            is_learner: false,
            raft_applied_index: applied,
        }
    }

    #[test]
    fn choose_member_table() {
        let healthy = [c("e1", true, 100), c("e2", false, 100), c("e3", false, 99)];
        let pick = |wanted, cands: &[Candidate]| choose_member("k", wanted, cands).map(|ch| ch.member);
        // A caught-up follower, the most advanced one.
        assert_eq!(pick(None, &healthy).expect("pick"), "e2");
        // Followers down: the leader, and the reason says so.
        let mut only_leader = healthy.clone();
        only_leader[1].problem = Some("unreachable".into());
        only_leader[2].is_learner = true;
        let choice = choose_member("k", None, &only_leader).expect("leader");
        assert_eq!(choice.member, "e1");
        assert!(choice.why.contains("leader"));
        // A follower far behind is not caught up.
        let behind = [c("e1", true, 5000), c("e2", false, 10)];
        assert_eq!(pick(None, &behind).expect("leader"), "e1");
        // Asked for by name.
        assert_eq!(pick(Some("e3"), &healthy).expect("named"), "e3");
        assert!(matches!(
            pick(Some("nope"), &healthy),
            Err(SaveError::UnknownMember { .. })
        ));
        assert!(matches!(
            pick(Some("e2"), &only_leader),
            Err(SaveError::Unsuitable { .. })
        ));
        assert!(matches!(
            pick(Some("e2"), &behind),
            Err(SaveError::Unsuitable { .. })
        ));
        // Nobody usable.
        let mut none = healthy.clone();
        for m in &mut none {
            m.problem = Some("down".into());
        }
        let err = choose_member("k", None, &none).expect_err("none");
        assert!(err.to_string().contains("e1: down"), "{err}");
    }

    #[test]
    fn destination_refuses_existing_files_and_missing_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let picked = destination(dir.path(), "prod").expect("dir");
        assert!(
            picked
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("prod-"))
        );
        let file = dir.path().join("x.db");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            destination(&file, "prod"),
            Err(SaveError::Exists { .. })
        ));
        assert!(matches!(
            destination(&dir.path().join("no/such.db"), "prod"),
            Err(SaveError::Write { .. })
        ));
    }
}
