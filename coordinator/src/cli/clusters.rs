//! `--all-clusters` and `--cluster GLOB`: a read command over several clusters, a bounded number at once (`--parallel`), grouped by cluster.
//!
//! Every cluster's agents are reached through one [`Agents`] reusing one
//! channel per agent; at most `--parallel` clusters are read at a time, each
//! cluster's agents all at once, a new cluster started whenever one ends (a
//! cluster waiting out a blackholed agent holds one slot only). A cluster that cannot be read at all is an
//! error entry for that cluster; the others still answer. Exit 1 when any
//! cluster has a problem.

use std::future::Future;
use std::io::Write;

use futures::StreamExt;
use serde::Serialize;

use crate::agents::Agents;
use crate::cli::GlobalArgs;
use crate::cli::failure;
use crate::exit::ExitStatus;
use crate::fleet::{Cluster, Fleet, glob};
use crate::output::grouped::{self, ClusterResult, Grouped};
use crate::output::{self, WriteOut};

/// The commands that take `--all-clusters` / `--cluster GLOB`.
pub(crate) const SUPPORTED: &str = "status, health, check disk, check hashkv, backup list and op list";

/// A misuse of `--all-clusters` / `--cluster GLOB` (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("{flag} works with {SUPPORTED} only; `{command}` works on one cluster: pass --cluster NAME")]
    Unsupported { flag: String, command: &'static str },
    #[error(
        "--all-clusters and --cluster {0:?} contradict each other: drop one (a glob such as 'prod-*' picks several)"
    )]
    Conflict(String),
}

/// Whether the command runs over several clusters; `Err` for `--all-clusters` with a plain `--cluster NAME`.
pub(crate) fn wants_many(global: &GlobalArgs) -> Result<bool, ScopeError> {
    let glob = global.cluster.as_deref().is_some_and(glob::is_pattern);
    match (&global.cluster, global.all_clusters) {
        (Some(name), true) if !glob => Err(ScopeError::Conflict(name.clone())),
        _ => Ok(global.all_clusters || glob),
    }
}

/// Refuses `--all-clusters` / `--cluster GLOB` for a command that works on one cluster.
pub(crate) fn refuse_many(global: &GlobalArgs, command: &'static str) -> Result<(), ScopeError> {
    if wants_many(global)? {
        let flag = match &global.cluster {
            Some(pattern) if glob::is_pattern(pattern) => format!("--cluster {pattern:?}"),
            _ => "--all-clusters".to_string(),
        };
        return Err(ScopeError::Unsupported { flag, command });
    }
    Ok(())
}

/// The fleet's clusters `--all-clusters` / `--cluster GLOB` names, in fleet order.
pub(crate) fn chosen(global: &GlobalArgs, fleet: &Fleet) -> anyhow::Result<Vec<Cluster>> {
    let pattern = global.cluster.as_deref().filter(|c| glob::is_pattern(c));
    Ok(fleet.select_many(pattern)?.into_iter().cloned().collect())
}

/// Runs `each` on every cluster, at most `--parallel` at once (a new one
/// starts as soon as any finishes); results in the order of `clusters`.
pub(crate) async fn for_each<T, F, Fut>(global: &GlobalArgs, clusters: Vec<Cluster>, each: F) -> Grouped<T>
where
    F: Fn(Cluster) -> Fut,
    Fut: Future<Output = anyhow::Result<(T, bool)>>,
{
    let parallel = usize::from(global.parallel.max(1));
    // Unordered: a slow cluster (a blackholed agent waits out --timeout)
    // holds one slot, never the clusters after it; the order is restored after.
    let mut results: Vec<(usize, ClusterResult<T>)> = futures::stream::iter(clusters.into_iter().enumerate())
        .map(|(index, cluster)| {
            let name = cluster.name.clone();
            let fut = each(cluster);
            async move { (index, (name, fut.await.map_err(|e| failure::message(&e)))) }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.sort_by_key(|(index, _)| *index);
    grouped::group(results.into_iter().map(|(_, result)| result).collect())
}

/// Prints the grouped report and says how to exit.
pub(crate) fn emit<T: Serialize>(
    out: &mut dyn Write,
    format: WriteOut,
    report: &Grouped<T>,
    name: impl Fn(&T) -> String,
    table: impl Fn(&T) -> String,
) -> anyhow::Result<ExitStatus> {
    let rendered = match format {
        WriteOut::Json => output::to_json(report)?,
        WriteOut::Table => grouped::render(report, name, table),
    };
    out.write_all(rendered.as_bytes())
        .map_err(|e| anyhow::Error::new(e).context("cannot write the output"))?;
    Ok(ExitStatus::from_ok(report.ok))
}

/// The fleet, the clusters chosen and agents (one channel each) for a fan-out over them.
pub(crate) fn targets(global: &GlobalArgs) -> anyhow::Result<(Vec<Cluster>, Agents)> {
    let fleet = Fleet::load(&global.fleet)?;
    let clusters = chosen(global, &fleet)?;
    let agents = crate::cli::target::agents(global, &fleet)?.reusing_channels();
    Ok((clusters, agents))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["etcdops"];
        argv.extend_from_slice(args);
        argv.push("status");
        Cli::try_parse_from(argv).expect("parse").global
    }

    #[test]
    fn scope_from_flags() {
        assert!(!wants_many(&global(&[])).expect("one"));
        assert!(!wants_many(&global(&["--cluster", "prod-a"])).expect("one"));
        assert!(wants_many(&global(&["--all-clusters"])).expect("many"));
        assert!(wants_many(&global(&["--cluster", "prod-*"])).expect("many"));
        assert!(wants_many(&global(&["--cluster", "prod-*", "--all-clusters"])).expect("many"));
        assert!(matches!(
            wants_many(&global(&["--cluster", "prod-a", "--all-clusters"])),
            Err(ScopeError::Conflict(_))
        ));
        let err = refuse_many(&global(&["--cluster", "p?"]), "defrag").expect_err("refused");
        assert!(
            err.to_string().contains("--cluster \"p?\" works with status"),
            "{err}"
        );
        assert!(refuse_many(&global(&["--cluster", "p"]), "defrag").is_ok());
        assert_eq!(global(&["--parallel", "3"]).parallel, 3);
        assert!(Cli::try_parse_from(["etcdops", "--parallel", "0", "status"]).is_err());
    }

    #[test]
    fn fans_out_bounded_in_order_and_a_slow_cluster_holds_one_slot() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        let clusters: Vec<Cluster> = (0..12)
            .map(|i| Cluster {
                name: format!("c{i:02}"),
                members: vec![crate::fleet::Member::new("e1", "https://127.0.0.1:1").expect("member")],
                backup: None,
            })
            .collect();
        let g = global(&["--parallel", "3"]);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let started = std::time::Instant::now();
        let grouped = runtime.block_on(for_each(&g, clusters, |cluster| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // c00 is slow (a blackholed agent); the others are quick.
                let ms = if cluster.name == "c00" { 400 } else { 20 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if cluster.name == "c05" {
                    anyhow::bail!("cannot read c05");
                }
                Ok((cluster.name.clone(), cluster.name != "c07"))
            }
        }));
        let elapsed = started.elapsed();
        assert_eq!(peak.load(Ordering::SeqCst), 3, "at most --parallel at once");
        // 11 quick clusters through the 2 free slots take ~120 ms, beside the slow one.
        assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
        let names: Vec<String> = grouped
            .clusters
            .iter()
            .map(|o| match o {
                grouped::Outcome::Report(name) => name.clone(),
                grouped::Outcome::Error(e) => format!("{}!", e.cluster),
            })
            .collect();
        assert_eq!(names[..7], ["c00", "c01", "c02", "c03", "c04", "c05!", "c06"]);
        assert_eq!(grouped.failed, ["c05", "c07"]);
        assert!(!grouped.ok);
    }
}
