//! `etcdops check disk`: the fdatasync probe on every member's disk, all at once.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use etcdops_format::probe::{
    DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MAX_TOTAL_BYTES, MAX_WRITES, OptionsError, ProbeOptions,
};
use etcdops_proto::v1::ProbeDiskRequest;

use crate::agents::{Agents, Client};
use crate::cli::target::target;
use crate::cli::{GlobalArgs, clusters, emit};
use crate::duration;
use crate::exit::ExitStatus;
use crate::fleet::Cluster;
use crate::output::disk::{self, DiskReport};
use crate::output::hashkv::{self, HashReport};

/// `etcdops check ...`
#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Measure fdatasync latency on every member's disk, as etcd's fio guidance does.
    #[command(long_about = DISK_LONG_ABOUT, after_help = DISK_AFTER_HELP)]
    Disk(CheckDiskArgs),
    /// Compare every member's key-value store: etcd's HashKV at one revision.
    #[command(long_about = HASHKV_LONG_ABOUT, after_help = HASHKV_AFTER_HELP)]
    Hashkv(CheckHashArgs),
}

const HASHKV_LONG_ABOUT: &str = "\
Compare every member's key-value store: each agent asks its member for etcd's HashKV (a hash
of every key and value up to a revision, the check behind `etcdctl endpoint hashkv`), all at
the same revision, and etcdops says whether they agree. Members that applied the same history
have the same hash; a different one means corrupt data or a member that took another history
(replace it). By default the revision is the lowest current revision among the members, so
none is asked about a revision it has not applied; a member behind is waited for within
--timeout. Read-only: nothing is written, no fence is taken. HashKV reads the member's whole
database: seconds on a large one.";

const HASHKV_AFTER_HELP: &str = "\
Examples:
  etcdops check hashkv
  etcdops check hashkv --revision 123456 -w json
  etcdops check hashkv --all-clusters           every cluster at its own lowest revision

Exit codes: 0 every member answered with the same hash; 1 a hash differs or a member could
not be hashed; 2 usage or configuration error.";

/// `etcdops check hashkv` options.
#[derive(Debug, Clone, Args)]
pub struct CheckHashArgs {
    /// Hash up to this revision (default: the lowest current revision among the members).
    #[arg(long, value_name = "REV", value_parser = clap::value_parser!(i64).range(1..))]
    pub revision: Option<i64>,
}

const DISK_LONG_ABOUT: &str = "\
Measure every member's disk the way etcd's hardware guidance does with fio
(fio --rw=write --ioengine=sync --fdatasync=1 --size=22m --bs=2300).

Each agent writes --size bytes in --block-size writes, each followed by
fdatasync, in a directory of its own beside the member's data dir (on the same
filesystem; inside the data dir when the data dir is a mount point), records
the latency of every fdatasync, removes the directory, and reports the
latency's p50, p99 (nearest rank) and maximum and the throughput. Beside them
it shows etcd's own p99 of WAL fsync and backend commit, interpolated from
the member's /metrics histograms the way Prometheus' histogram_quantile does;
those are cumulative since etcd started.

A member is slow when its probe's p99 is over its agent's threshold:
fsync_p99_threshold_ms in the [disk] table of the agent config, 10 ms by
default (etcd's guidance: WAL fsync p99 under 10 ms). etcd's own figures are
noted when they exceed the guidance (10 ms WAL fsync, 25 ms backend commit)
but do not decide the verdict.

All agents probe at once; each runs one probe at a time (a second request
gets ResourceExhausted). A probe takes about 10,000 times the disk's
fdatasync latency: seconds on an SSD, a minute or more on a slow disk. It
competes with etcd for the disk while it runs, so on a busy cluster run it
off-peak. Each agent gets --timeout to connect plus --probe-timeout for the
probe; an agent stops a probe itself after 100 s.";

const DISK_AFTER_HELP: &str = "\
Examples:
  etcdops check disk
  etcdops check disk -w json | jq '.members[] | {name, p99_us: .probe.p99_us, verdict}'
  etcdops --cluster prod-a check disk --size 64m --probe-timeout 5m
  etcdops check disk --cluster 'prod-*' --parallel 2   two clusters' disks at a time

Exit codes: 0 every member's fdatasync p99 within its threshold; 1 a member slow, its agent
unreachable or its probe failed; 2 usage or configuration error.";

/// `etcdops check disk` options.
#[derive(Debug, Clone, Args)]
pub struct CheckDiskArgs {
    /// Bytes each agent writes (fio's --size): a number, optionally with k, m or g (powers of 1024); at most 1g.
    #[arg(long, value_name = "SIZE", default_value = "22m", value_parser = parse_total)]
    pub size: u64,

    /// Bytes per write, each followed by fdatasync (fio's --bs); at most 1m.
    #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_BLOCK_SIZE, value_parser = parse_block)]
    pub block_size: u32,

    /// How long each agent's probe may take, on top of --timeout, e.g. 2m, 90s.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = duration::parse)]
    pub probe_timeout: Duration,
}

pub(crate) async fn run(
    global: &GlobalArgs,
    command: &CheckCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    match command {
        CheckCommand::Disk(args) => disk(global, args, out).await,
        CheckCommand::Hashkv(args) => hashkv(global, args, out).await,
    }
}

async fn hashkv(
    global: &GlobalArgs,
    args: &CheckHashArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    if clusters::wants_many(global)? {
        if args.revision.is_some() {
            anyhow::bail!(clusters::ScopeError::Unsupported {
                flag: "--revision".into(),
                command: "check hashkv over several clusters (each has its own revisions)",
            });
        }
        let (chosen, agents) = clusters::targets(global)?;
        let timeout = global.timeout;
        let grouped = clusters::for_each(global, chosen, |cluster| {
            let agents = agents.clone();
            async move {
                let report = hash_report(&agents, &cluster, None, timeout).await;
                let ok = report.consistent;
                Ok((report, ok))
            }
        })
        .await;
        return clusters::emit(
            out,
            global.write_out,
            &grouped,
            |r| r.cluster.clone(),
            hashkv::render_table,
        );
    }
    let target = target(global)?;
    let agents = target.agents.reusing_channels();
    let report = hash_report(&agents, &target.cluster, args.revision, global.timeout).await;
    emit(out, global.write_out, &report, hashkv::render_table)?;
    Ok(ExitStatus::from_ok(report.consistent))
}

/// One cluster's HashKV at `revision` (default: the lowest current one), a
/// member behind waited for within `timeout`.
async fn hash_report(
    agents: &Agents,
    cluster: &Cluster,
    revision: Option<i64>,
    timeout: Duration,
) -> HashReport {
    let revision = match revision {
        Some(r) => r,
        None => {
            let status = agents.get_status(&cluster.members).await;
            status
                .iter()
                .filter_map(|r| {
                    r.result
                        .as_ref()
                        .ok()
                        .and_then(|s| s.member.as_ref())
                        .map(|m| m.revision)
                })
                .filter(|r| *r > 0)
                .min()
                .unwrap_or(0)
        }
    };
    let timeout_ms = crate::agents::agent_budget_ms(timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let replies = loop {
        let replies = agents
            .fan_out(&cluster.members, move |mut client: Client| async move {
                client
                    .hash_kv(etcdops_proto::v1::HashKvRequest { revision, timeout_ms })
                    .await
            })
            .await;
        // A member that has not applied the revision yet catches up in a moment.
        let behind = replies.iter().any(|r| {
            r.result
                .as_ref()
                .is_err_and(|e| e.to_string().contains("above the cluster's current revision"))
        });
        if !behind || tokio::time::Instant::now() >= deadline {
            break replies;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    hashkv::evaluate(
        &cluster.name,
        revision,
        replies.into_iter().map(hashkv::member_hash).collect(),
    )
}

async fn disk(global: &GlobalArgs, args: &CheckDiskArgs, out: &mut dyn Write) -> anyhow::Result<ExitStatus> {
    // The flags are each in range (clap checked); only their combination can be refused.
    let options = ProbeOptions::new(args.size, args.block_size).map_err(|e| match e {
        OptionsError::TooManyWrites { writes, .. } => anyhow::anyhow!(
            "--size {} in --block-size {} writes would take {writes} writes, above the maximum of {MAX_WRITES}: \
             lower --size or raise --block-size",
            args.size,
            args.block_size
        ),
        other => anyhow::anyhow!("--size {} with --block-size {}: {other}", args.size, args.block_size),
    })?;
    // The probe's budget comes on top of the connect budget.
    let mut budget = global.clone();
    budget.timeout = global.timeout.saturating_add(args.probe_timeout);
    if clusters::wants_many(global)? {
        let (chosen, agents) = clusters::targets(&budget)?;
        let grouped = clusters::for_each(global, chosen, |cluster| {
            let agents = agents.clone();
            async move {
                let report = disk_report(&agents, &cluster, &options).await;
                let ok = report.ok;
                Ok((report, ok))
            }
        })
        .await;
        return clusters::emit(
            out,
            global.write_out,
            &grouped,
            |r| r.cluster.clone(),
            disk::render_table,
        );
    }
    let target = target(&budget)?;
    let report = disk_report(&target.agents.reusing_channels(), &target.cluster, &options).await;
    emit(out, global.write_out, &report, disk::render_table)?;
    Ok(ExitStatus::from_ok(report.ok))
}

/// One cluster's disk probe, every member at once.
async fn disk_report(agents: &Agents, cluster: &Cluster, options: &ProbeOptions) -> DiskReport {
    let (total_bytes, block_size) = (options.total_bytes(), options.block_size());
    tracing::info!(
        cluster = %cluster.name,
        members = cluster.members.len(),
        total_bytes,
        block_size,
        "probing disks"
    );
    let replies = agents
        .fan_out(&cluster.members, move |mut client: Client| async move {
            client
                .probe_disk(ProbeDiskRequest {
                    total_bytes,
                    block_size,
                })
                .await
        })
        .await;
    let members = replies.into_iter().map(disk::member_disk).collect();
    disk::evaluate(&cluster.name, members)
}

/// A byte count: `2300`, `4k`, `22m`, `1g`, also `22MiB` / `22MB` (all powers of 1024, as fio reads them).
fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a size: use e.g. 2300, 4k or 22m"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{input:?}: unknown unit {unit:?} (units: k, m, g)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{input:?} is too large"))
}

fn parse_total(input: &str) -> Result<u64, String> {
    match parse_size(input)? {
        0 => Err("the size must be above 0".to_string()),
        n if n > MAX_TOTAL_BYTES => Err(format!(
            "{n} bytes is above the maximum of 1g ({MAX_TOTAL_BYTES})"
        )),
        n => Ok(n),
    }
}

fn parse_block(input: &str) -> Result<u32, String> {
    match parse_size(input)? {
        0 => Err("the block size must be above 0".to_string()),
        n if n > u64::from(MAX_BLOCK_SIZE) => {
            Err(format!("{n} bytes is above the maximum of 1m ({MAX_BLOCK_SIZE})"))
        }
        n => Ok(n as u32),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn sizes() {
        let cases = [
            ("2300", Ok(2300)),
            ("4k", Ok(4096)),
            ("22m", Ok(22 << 20)),
            ("22MiB", Ok(22 << 20)),
            ("1G", Ok(1 << 30)),
            ("1.5m", Err(())),
            ("m", Err(())),
            ("22t", Err(())),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input).map_err(|_| ()), expected, "{input}");
        }
        assert!(parse_total("2g").expect_err("too big").contains("maximum"));
        assert!(parse_block("2m").expect_err("too big").contains("maximum"));
        assert!(parse_block("0").is_err());
    }

    #[test]
    fn parses_check_disk() {
        let cli = Cli::try_parse_from(["etcdops", "check", "disk", "-w", "json"]).expect("parse");
        let Command::Check(CheckCommand::Disk(args)) = cli.command else {
            panic!("not check disk")
        };
        assert_eq!(
            (args.size, args.block_size, args.probe_timeout),
            (22 << 20, 2300, Duration::from_secs(120))
        );
        let cli = Cli::try_parse_from(["etcdops", "check", "disk", "--size", "4m", "--block-size", "4k"])
            .expect("parse");
        let Command::Check(CheckCommand::Disk(args)) = cli.command else {
            panic!("not check disk")
        };
        assert_eq!((args.size, args.block_size), (4 << 20, 4096));
        assert!(Cli::try_parse_from(["etcdops", "check", "disk", "--block-size", "2m"]).is_err());
    }
}
