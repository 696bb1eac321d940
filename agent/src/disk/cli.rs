//! `etcdops-agent probe-disk`: the disk probe without an agent or a config,
//! for benchmarks and for a first look at a host's disk before etcd runs there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::DEFAULT_FSYNC_P99_THRESHOLD_MS;
use crate::disk::probe::{
    self, MAX_BLOCK_SIZE, MAX_TOTAL_BYTES, MAX_WRITES, OptionsError, ProbeOptions, ProbeResult,
};

pub const ABOUT: &str = "Measure fdatasync latency in a directory, as the agent's ProbeDisk does";

pub const LONG_ABOUT: &str = "\
Measure fdatasync latency in a directory the way etcd's hardware guidance does with
fio (fio --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300): write a
file in blocks, each followed by fdatasync, and report the fdatasync latency
quantiles (p50, p99 by nearest rank, max) and the throughput. etcd wants the WAL's
fsync p99 under 10 ms.

The probe writes in a new directory inside DIR (.etcdops-probe-<pid>-<n>) and removes
it afterwards, also on errors and on Ctrl-C. Measure the filesystem etcd's data dir
is on: the directory that holds the data dir, or the data dir itself when it is a
mount point. No agent config, etcd or network is needed. The probe competes with
anything else writing to that disk, etcd included, while it runs.";

pub const AFTER_HELP: &str = "\
Examples:
  etcdops-agent probe-disk --dir /var/lib/etcd
  etcdops-agent probe-disk --dir /var/lib/etcd --json | jq .p99_us
  etcdops-agent probe-disk --dir /mnt/new-disk --size 104857600 --threshold-ms 5

Exit status: 0 p99 within the threshold, 1 over it or the probe failed, 2 bad arguments.";

/// `probe-disk` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeDiskArgs {
    /// The directory to measure; the probe writes in a new directory inside it, then removes it.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Bytes to write in all (fio's --size); at most 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = probe::DEFAULT_TOTAL_BYTES)]
    pub size: u64,
    /// Bytes per write, each followed by fdatasync (fio's --bs); at most 1 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = probe::DEFAULT_BLOCK_SIZE)]
    pub block_size: u32,
    /// The fdatasync p99 above which the disk is too slow for etcd, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_FSYNC_P99_THRESHOLD_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub threshold_ms: u64,
    /// Print one JSON object (the ProbeDisk response's fields) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The JSON printed with `--json`: the agent's ProbeDisk figures.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The directory the probe wrote in (removed).
    pub path: String,
    pub writes: u64,
    pub bytes: u64,
    pub block_size: u32,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub elapsed_us: u64,
    pub throughput_bytes_per_sec: f64,
    pub threshold_p99_us: u64,
    pub within_threshold: bool,
}

impl ProbeReport {
    fn new(r: &ProbeResult, block_size: u32, threshold: Duration) -> ProbeReport {
        ProbeReport {
            path: r.path.display().to_string(),
            writes: r.writes,
            bytes: r.bytes,
            block_size,
            p50_us: micros(r.p50),
            p99_us: micros(r.p99),
            max_us: micros(r.max),
            elapsed_us: micros(r.elapsed),
            throughput_bytes_per_sec: r.throughput_bytes_per_sec,
            threshold_p99_us: micros(threshold),
            within_threshold: r.p99 <= threshold,
        }
    }

    fn text(&self) -> String {
        let d = |us: u64| format_duration(Duration::from_micros(us));
        let verdict = if self.within_threshold {
            format!(
                "ok: p99 {} within the {} threshold",
                d(self.p99_us),
                d(self.threshold_p99_us)
            )
        } else {
            format!(
                "slow: p99 {} over the {} threshold",
                d(self.p99_us),
                d(self.threshold_p99_us)
            )
        };
        format!(
            "dir         {} (removed)\n\
             writes      {} of {} B, fdatasync after each ({} bytes)\n\
             fdatasync   p50 {}  p99 {}  max {}\n\
             throughput  {:.0} B/s over {}\n\
             verdict     {verdict}\n",
            self.path,
            self.writes,
            self.block_size,
            self.bytes,
            d(self.p50_us),
            d(self.p99_us),
            d(self.max_us),
            self.throughput_bytes_per_sec,
            d(self.elapsed_us),
        )
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `850µs`, `2.345ms`, `1.2s`.
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    let (value, unit) = match us {
        0..1_000 => return format!("{us}µs"),
        1_000..1_000_000 => (us as f64 / 1e3, "ms"),
        _ => (d.as_secs_f64(), "s"),
    };
    let text = format!("{value:.3}");
    format!("{}{unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Runs the probe; Ctrl-C or SIGTERM stops it and still removes its directory.
pub fn run(args: &ProbeDiskArgs) -> ExitCode {
    let options = match ProbeOptions::new(args.size, args.block_size) {
        Ok(o) => o,
        Err(e) => {
            let message = match e {
                OptionsError::TotalBytesTooLarge(n) => {
                    format!("--size: {n} is above the maximum of {MAX_TOTAL_BYTES} (1 GiB)")
                }
                OptionsError::BlockSizeTooLarge(n) => {
                    format!("--block-size: {n} is above the maximum of {MAX_BLOCK_SIZE} (1 MiB)")
                }
                OptionsError::TooManyWrites { writes, .. } => format!(
                    "--size {} in --block-size {} writes would take {writes} writes, above the maximum of \
                     {MAX_WRITES}: lower --size or raise --block-size",
                    args.size, args.block_size
                ),
            };
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if !args.dir.is_dir() {
        eprintln!("error: --dir {}: not a directory", args.dir.display());
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let result = runtime.block_on(async {
        let (dir, flag) = (args.dir.clone(), cancel.clone());
        let mut work = tokio::task::spawn_blocking(move || probe::run(&dir, options, Duration::MAX, &flag));
        tokio::select! {
            joined = &mut work => joined,
            () = interrupted() => {
                cancel.store(true, Ordering::Relaxed);
                work.await
            }
        }
    });
    let result = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: the probe failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = ProbeReport::new(
        &result,
        options.block_size(),
        Duration::from_millis(args.threshold_ms),
    );
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.text());
    }
    if report.within_threshold {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn report_text_and_json() {
        let result = ProbeResult {
            path: PathBuf::from("/var/lib/.etcdops-probe-1-0"),
            writes: 10_030,
            bytes: 23_068_672,
            p50: Duration::from_micros(850),
            p99: Duration::from_micros(12_345),
            max: Duration::from_millis(40),
            elapsed: Duration::from_millis(14_200),
            throughput_bytes_per_sec: 1_624_554.4,
        };
        let report = ProbeReport::new(&result, 2300, Duration::from_millis(10));
        assert!(!report.within_threshold);
        let text = report.text();
        assert!(text.contains("p50 850µs  p99 12.345ms  max 40ms"), "{text}");
        assert!(
            text.contains("slow: p99 12.345ms over the 10ms threshold"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["p99_us"], 12_345);
        assert_eq!(json["threshold_p99_us"], 10_000);
        assert_eq!(json["path"], "/var/lib/.etcdops-probe-1-0");
        assert_eq!(format_duration(Duration::from_millis(1_200)), "1.2s");
        assert!(Path::new(&report.path).is_absolute());
    }
}
