//! The fdatasync probe: writes a file in blocks, each followed by fdatasync,
//! the way etcd's hardware guidance measures a disk with fio
//! (`fio --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300`), and
//! reports the fdatasync latency quantiles and the throughput.
//!
//! The probe writes only in a directory of its own,
//! `<location>/.etcdops-probe-<pid>-<n>`, and removes it (file, then the
//! then-empty directory) on every path out: success, error, cancellation,
//! deadline, panic. It never removes anything it did not create, except the
//! leftovers of a probe whose process died (same name pattern, dead pid).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// The request's limits and defaults live in the shared crate (the CLI
// validates its flags against them); re-exported so the agent's modules name
// the probe's whole vocabulary through this one path.
pub use etcdops_format::probe::{
    DEFAULT_BLOCK_SIZE, DEFAULT_TOTAL_BYTES, MAX_BLOCK_SIZE, MAX_TOTAL_BYTES, MAX_WRITES, OptionsError,
    ProbeOptions,
};

/// Every probe directory's name starts with this.
pub const PROBE_DIR_PREFIX: &str = ".etcdops-probe-";
/// The one file a probe writes, inside its directory.
const PROBE_FILE: &str = "probe.dat";

/// What a finished probe measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// The directory the probe wrote in (removed by now).
    pub path: PathBuf,
    pub writes: u64,
    pub bytes: u64,
    /// fdatasync latency quantiles (nearest rank) and maximum.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// From the first write to the last fdatasync.
    pub elapsed: Duration,
    /// `bytes` over `elapsed`.
    pub throughput_bytes_per_sec: f64,
}

/// Why a probe gave no result. Whatever the error, the probe's directory is
/// gone (or [`ProbeError::Cleanup`] says why not).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot create a probe directory in {location}: {source}")]
    CreateDir {
        location: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the probe file {path}: {source}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} failed after {writes} writes: {source}")]
    Write {
        path: PathBuf,
        writes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("fdatasync of {path} failed after {writes} writes: {source}")]
    Sync {
        path: PathBuf,
        writes: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the probe did not finish within {}s: {writes} of {planned} writes done — the disk is very slow, or lower total_bytes", limit.as_secs())]
    Deadline {
        limit: Duration,
        writes: u64,
        planned: u64,
    },
    #[error("the probe was cancelled after {writes} writes")]
    Cancelled { writes: u64 },
    #[error("the probe finished but its directory {path} could not be removed: {source}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a probe for `data_dir` writes: beside the data dir (its parent), on
/// the same filesystem. When the data dir is itself a mount point (a
/// dedicated etcd disk), the parent is another filesystem, so the probe
/// writes inside the data dir instead, beside etcd's `member/` (etcd ignores
/// other entries there). A data dir that does not exist yet is judged by its
/// nearest existing ancestor, where it would be created. Blocking (stat).
pub fn location_for(data_dir: &Path) -> PathBuf {
    let parent = match data_dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return data_dir.to_path_buf(),
    };
    if let (Ok(dir), Ok(up)) = (std::fs::metadata(data_dir), std::fs::metadata(parent))
        && dir.is_dir()
        && dir.dev() != up.dev()
    {
        return data_dir.to_path_buf();
    }
    parent
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Runs a probe in a new directory inside `location`. Blocking: run it on a
/// blocking thread. Stops with an error once `limit` has passed or `cancel`
/// is set (checked before every write).
pub fn run(
    location: &Path,
    options: ProbeOptions,
    limit: Duration,
    cancel: &AtomicBool,
) -> Result<ProbeResult, ProbeError> {
    remove_stale(location);
    let mut dir = ProbeDir::create(location)?;
    let measured = write_and_sync(&dir, options, limit, cancel);
    let cleaned = dir.remove();
    let (latencies, elapsed) = match (measured, cleaned) {
        (Ok(m), Ok(())) => m,
        (Ok(_), Err(source)) => {
            return Err(ProbeError::Cleanup {
                path: dir.dir.clone(),
                source,
            });
        }
        (Err(e), cleaned) => {
            if let Err(c) = cleaned {
                tracing::error!(dir = %dir.dir.display(), error = %c, "cannot remove the probe directory");
            }
            return Err(e);
        }
    };
    Ok(summarize(
        dir.dir.clone(),
        options.total_bytes(),
        latencies,
        elapsed,
    ))
}

/// The writes: one file, preallocated as fio does, each block followed by
/// fdatasync whose latency alone is recorded.
fn write_and_sync(
    dir: &ProbeDir,
    options: ProbeOptions,
    limit: Duration,
    cancel: &AtomicBool,
) -> Result<(Vec<Duration>, Duration), ProbeError> {
    let path = &dir.file;
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| ProbeError::CreateFile {
            path: path.clone(),
            source,
        })?;
    // fio lays its file out with fallocate first, as etcd preallocates WAL
    // segments; filesystems without it just skip this step, as fio does.
    if let Ok(len) = i64::try_from(options.total_bytes())
        && let Err(e) = nix::fcntl::posix_fallocate(&file, 0, len)
    {
        tracing::debug!(error = %e, "posix_fallocate not available; writing without preallocation");
    }
    let block = pseudo_random_block(options.block_size() as usize);
    let planned = options.writes();
    let mut latencies = Vec::with_capacity(usize::try_from(planned).unwrap_or(0));
    let mut remaining = options.total_bytes();
    let start = Instant::now();
    while remaining > 0 {
        let writes = latencies.len() as u64;
        if cancel.load(Ordering::Relaxed) {
            return Err(ProbeError::Cancelled { writes });
        }
        if start.elapsed() > limit {
            return Err(ProbeError::Deadline {
                limit,
                writes,
                planned,
            });
        }
        let n = remaining.min(u64::from(options.block_size())) as usize;
        file.write_all(&block[..n]).map_err(|source| ProbeError::Write {
            path: path.clone(),
            writes,
            source,
        })?;
        let synced = Instant::now();
        file.sync_data().map_err(|source| ProbeError::Sync {
            path: path.clone(),
            writes,
            source,
        })?;
        latencies.push(synced.elapsed());
        remaining -= n as u64;
    }
    Ok((latencies, start.elapsed()))
}

/// Incompressible bytes, so compressing filesystems write what we ask.
fn pseudo_random_block(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn summarize(path: PathBuf, bytes: u64, mut latencies: Vec<Duration>, elapsed: Duration) -> ProbeResult {
    latencies.sort_unstable();
    let secs = elapsed.as_secs_f64();
    ProbeResult {
        path,
        writes: latencies.len() as u64,
        bytes,
        p50: nearest_rank(&latencies, 50),
        p99: nearest_rank(&latencies, 99),
        max: latencies.last().copied().unwrap_or_default(),
        elapsed,
        throughput_bytes_per_sec: if secs > 0.0 { bytes as f64 / secs } else { 0.0 },
    }
}

/// The `percent`th percentile of sorted values by the nearest-rank method:
/// the smallest value with at least `percent`% of values at or below it.
/// Zero for no values.
pub fn nearest_rank(sorted: &[Duration], percent: u32) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    let rank = (n * percent.min(100) as usize).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// The probe's own directory; removed on drop if [`ProbeDir::remove`] was
/// not reached (a panic).
#[derive(Debug)]
struct ProbeDir {
    dir: PathBuf,
    file: PathBuf,
    removed: bool,
}

impl ProbeDir {
    fn create(location: &Path) -> Result<ProbeDir, ProbeError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        loop {
            let dir = location.join(format!(
                "{PROBE_DIR_PREFIX}{pid}-{}",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(ProbeDir {
                        file: dir.join(PROBE_FILE),
                        dir,
                        removed: false,
                    });
                }
                // A leftover of an earlier process with our pid: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(ProbeError::CreateDir {
                        location: location.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }

    /// Removes the probe file, then the directory (only if empty: nothing
    /// else is ever removed).
    fn remove(&mut self) -> std::io::Result<()> {
        self.removed = true;
        remove_probe_dir(&self.dir)
    }
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = self.remove()
        {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot remove the probe directory");
        }
    }
}

fn remove_probe_dir(dir: &Path) -> std::io::Result<()> {
    let ignore_missing = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    ignore_missing(std::fs::remove_file(dir.join(PROBE_FILE)))?;
    ignore_missing(std::fs::remove_dir(dir))
}

/// Removes the directories of probes whose process is gone (killed
/// mid-probe): `.etcdops-probe-<pid>-<n>` with a dead pid, holding at most
/// our probe file. Failures are logged, not fatal.
fn remove_stale(location: &Path) {
    let Ok(entries) = std::fs::read_dir(location) else {
        return;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(probe_dir_pid) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || pid == own || process_alive(pid) {
            continue;
        }
        match remove_probe_dir(&entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed the directory of an interrupted probe")
            }
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an interrupted probe's directory")
            }
        }
    }
}

/// The pid in a probe directory's name, `.etcdops-probe-<pid>-<n>`.
fn probe_dir_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(PROBE_DIR_PREFIX)?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank_quantiles() {
        let cases: [(&[u64], u32, u64); 9] = [
            (&[], 50, 0),
            (&[7], 50, 7),
            (&[7], 99, 7),
            (&[1, 2], 50, 1),
            (&[1, 2, 3, 4], 50, 2),
            (&[1, 2, 3, 4, 5], 50, 3),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99, 10),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, 9),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 100, 10),
        ];
        for (values, p, expected) in cases {
            assert_eq!(
                nearest_rank(&us(values), p),
                Duration::from_micros(expected),
                "{values:?} p{p}"
            );
        }
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&us(&hundred), 99), Duration::from_micros(99));
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&us(&thousand), 99), Duration::from_micros(990));
    }

    #[test]
    fn summary_figures() {
        let r = summarize(
            PathBuf::from("/x"),
            1000,
            us(&[5, 1, 3, 2, 4]),
            Duration::from_millis(500),
        );
        assert_eq!((r.writes, r.bytes), (5, 1000));
        assert_eq!(
            (r.p50, r.p99, r.max),
            (
                Duration::from_micros(3),
                Duration::from_micros(5),
                Duration::from_micros(5)
            )
        );
        assert!((r.throughput_bytes_per_sec - 2000.0).abs() < 1e-9);
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn probes_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("keep"), b"mine").expect("write");
        let options = ProbeOptions::new(10 * 2300 + 100, 2300).expect("options");
        let r = run(
            tmp.path(),
            options,
            Duration::from_secs(60),
            &AtomicBool::new(false),
        )
        .expect("probe");
        assert_eq!(r.writes, 11);
        assert_eq!(r.bytes, 10 * 2300 + 100);
        assert!(r.p50 <= r.p99 && r.p99 <= r.max, "{r:?}");
        assert!(r.throughput_bytes_per_sec > 0.0);
        assert!(r.path.starts_with(tmp.path()));
        assert!(
            r.path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with(PROBE_DIR_PREFIX)
        );
        assert_eq!(entries(tmp.path()), ["keep"]);
    }

    #[test]
    fn cleans_up_on_cancel_deadline_and_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = ProbeOptions::new(4600, 2300).expect("options");
        let err = run(
            tmp.path(),
            options,
            Duration::from_secs(60),
            &AtomicBool::new(true),
        )
        .expect_err("cancelled");
        assert!(matches!(err, ProbeError::Cancelled { writes: 0 }), "{err:?}");
        let err = run(tmp.path(), options, Duration::ZERO, &AtomicBool::new(false));
        // A zero budget stops before the first or second write.
        assert!(
            matches!(err, Err(ProbeError::Deadline { .. })) || err.is_ok(),
            "{err:?}"
        );
        assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
        let missing = tmp.path().join("missing");
        let err = run(
            &missing,
            options,
            Duration::from_secs(60),
            &AtomicBool::new(false),
        )
        .expect_err("no dir");
        assert!(matches!(err, ProbeError::CreateDir { .. }), "{err:?}");
        assert!(!missing.exists());
    }

    #[test]
    fn removes_only_dead_probes_leftovers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // A pid that cannot be running (above the kernel's pid_max limit).
        let dead = tmp.path().join(format!("{PROBE_DIR_PREFIX}{}-0", 1 << 23));
        std::fs::create_dir(&dead).expect("mkdir");
        std::fs::write(dead.join(PROBE_FILE), b"x").expect("write");
        let alive = tmp.path().join(format!("{PROBE_DIR_PREFIX}1-0"));
        std::fs::create_dir(&alive).expect("mkdir");
        let foreign = tmp
            .path()
            .join(format!("{PROBE_DIR_PREFIX}{}-0-not-ours", 1 << 23));
        std::fs::create_dir(&foreign).expect("mkdir");
        let crowded = tmp.path().join(format!("{PROBE_DIR_PREFIX}{}-1", 1 << 23));
        std::fs::create_dir(&crowded).expect("mkdir");
        std::fs::write(crowded.join("someone-elses"), b"x").expect("write");
        remove_stale(tmp.path());
        assert!(!dead.exists());
        assert!(alive.exists(), "pid 1 is alive");
        assert!(foreign.exists(), "not our name pattern");
        assert!(crowded.join("someone-elses").exists(), "only our file is removed");
        assert_eq!(probe_dir_pid(".etcdops-probe-42-7"), Some(42));
        assert_eq!(probe_dir_pid(".etcdops-probe-42"), None);
        assert_eq!(probe_dir_pid("etcdops-probe-42-7"), None);
    }

    #[test]
    fn location_is_beside_the_data_dir_on_its_filesystem() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("etcd/default");
        assert_eq!(
            location_for(&data),
            tmp.path(),
            "missing: nearest existing ancestor"
        );
        std::fs::create_dir_all(&data).expect("mkdir");
        assert_eq!(location_for(&data), tmp.path().join("etcd"));
        assert_eq!(location_for(Path::new("data")), Path::new("."));
        // /proc is a mount point on another filesystem than /.
        assert_eq!(location_for(Path::new("/proc")), Path::new("/proc"));
    }
}
