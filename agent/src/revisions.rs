//! The member's revision over time, for RevisionAt ("which revision did the
//! cluster have at 03:00?", e.g. to compact to a point in time): a worker
//! samples it at start-up and once a minute, keeps 8 days of samples, and
//! persists them in `<state_dir>/revisions.json` after each sample (so at
//! most about once a minute). The ring and its lookup are pure. The worker
//! reads the member through [`RevisionSource`] (implemented by the agent's
//! state in `state.rs`), so this module does not import the state.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::etcd::EtcdError;

/// The file in the state dir.
pub const REVISIONS_FILE: &str = "revisions.json";
/// How long samples are kept.
pub const KEEP_SECS: i64 = 8 * 24 * 3600;
/// Between samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);
/// Between attempts while the member does not answer (e.g. at start-up).
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// The budget of one sample.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one sample a minute for 8 days, with some slack.
const MAX_SAMPLES: usize = 8 * 24 * 60 + 64;

/// The member's revision at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub unix: i64,
    pub revision: i64,
}

/// Samples, oldest first, at most 8 days apart from the newest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRing {
    samples: VecDeque<Sample>,
}

impl RevisionRing {
    /// Adds a sample (ignored unless newer than the newest) and drops the
    /// ones more than 8 days older than it.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.back().is_some_and(|last| last.unix >= sample.unix) {
            return;
        }
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|first| sample.unix - first.unix > KEEP_SECS)
            || self.samples.len() > MAX_SAMPLES
        {
            self.samples.pop_front();
        }
    }

    /// The newest sample at or before `unix`.
    pub fn at(&self, unix: i64) -> Option<Sample> {
        let after = self.samples.partition_point(|s| s.unix <= unix);
        after.checked_sub(1).and_then(|i| self.samples.get(i)).copied()
    }

    pub fn oldest(&self) -> Option<Sample> {
        self.samples.front().copied()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The ring shared by the worker and RevisionAt.
#[derive(Debug, Clone, Default)]
pub struct RevisionLog(Arc<Mutex<RevisionRing>>);

impl RevisionLog {
    /// Loads `<state_dir>/revisions.json`. The samples are a convenience,
    /// not a safety record: an unreadable file is logged and replaced.
    pub fn load(state_dir: &Path) -> RevisionLog {
        let path = state_dir.join(REVISIONS_FILE);
        let ring = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "revision samples unreadable; starting afresh");
                RevisionRing::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RevisionRing::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "revision samples unreadable; starting afresh");
                RevisionRing::default()
            }
        };
        RevisionLog(Arc::new(Mutex::new(ring)))
    }

    pub fn ring(&self) -> RevisionRing {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn push(&self, sample: Sample) -> RevisionRing {
        let mut ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ring.push(sample);
        ring.clone()
    }
}

/// What the sampling worker reads and where it keeps the samples.
pub trait RevisionSource: Send + Sync + 'static {
    /// The samples, shared with RevisionAt.
    fn revision_log(&self) -> RevisionLog;
    /// The agent's state dir (the samples go to [`REVISIONS_FILE`] there).
    fn state_dir(&self) -> PathBuf;
    /// The member's current revision, within `timeout`.
    fn current_revision(&self, timeout: Duration) -> impl Future<Output = Result<i64, EtcdError>> + Send;
}

/// Samples the member's revision at start-up (retrying every 2 s until the
/// member answers) and then once a minute, until `shutdown` turns true.
pub async fn run(state: Arc<impl RevisionSource>, mut shutdown: watch::Receiver<bool>) {
    let (log, path) = (state.revision_log(), state.state_dir().join(REVISIONS_FILE));
    loop {
        let wait = match state.current_revision(SAMPLE_TIMEOUT).await {
            Ok(revision) => {
                let ring = log.push(Sample {
                    unix: now_unix(),
                    revision,
                });
                let target = path.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    let bytes = serde_json::to_vec(&ring).map_err(std::io::Error::from)?;
                    crate::statefile::write_atomic(&target, &bytes)
                })
                .await;
                if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
                    tracing::warn!(error = %e, path = %path.display(), "saving revision samples");
                }
                SAMPLE_INTERVAL
            }
            Err(e) => {
                tracing::debug!(error = %e, "revision sample skipped");
                RETRY_INTERVAL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(unix: i64, revision: i64) -> Sample {
        Sample { unix, revision }
    }

    #[test]
    fn lookup_answers_the_newest_sample_at_or_before() {
        let mut ring = RevisionRing::default();
        assert_eq!(ring.at(100), None);
        for (t, r) in [(100, 5), (160, 9), (220, 30)] {
            ring.push(s(t, r));
        }
        // (asked, expected)
        for (asked, want) in [
            (99, None),
            (100, Some(s(100, 5))),
            (159, Some(s(100, 5))),
            (160, Some(s(160, 9))),
            (10_000, Some(s(220, 30))),
        ] {
            assert_eq!(ring.at(asked), want, "at {asked}");
        }
        // Out-of-order samples are ignored.
        ring.push(s(200, 1));
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn keeps_eight_days() {
        let mut ring = RevisionRing::default();
        ring.push(s(0, 1));
        ring.push(s(60, 2));
        ring.push(s(KEEP_SECS + 30, 3));
        assert_eq!(
            ring.oldest(),
            Some(s(60, 2)),
            "the sample older than 8 days is dropped"
        );
        for i in 0..(MAX_SAMPLES as i64 + 10) {
            ring.push(s(KEEP_SECS + 31 + i, 4 + i));
        }
        assert!(ring.len() <= MAX_SAMPLES);
        let json = serde_json::to_vec(&ring).expect("json");
        assert_eq!(
            serde_json::from_slice::<RevisionRing>(&json).expect("parse"),
            ring
        );
    }
}
