//! Several clusters at once (`--all-clusters`, `--cluster GLOB`): each cluster's own report under its name, and one verdict.
//!
//! JSON: `{"ok", "total", "failed": [CLUSTER..], "clusters": [REPORT..]}` where
//! each REPORT is the command's one-cluster document, or
//! `{"cluster", "ok": false, "error"}` when the cluster could not be read at all.

use serde::Serialize;

/// The grouped report; also the JSON document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grouped<T> {
    /// No cluster has a problem (exit 0; else 1).
    pub ok: bool,
    /// Clusters reported.
    pub total: usize,
    /// The clusters with a problem, in report order.
    pub failed: Vec<String>,
    /// One entry per cluster, in fleet order.
    pub clusters: Vec<Outcome<T>>,
}

/// One cluster's report, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome<T> {
    Report(T),
    Error(ClusterError),
}

/// A cluster that could not be read at all (its report has no members to show).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterError {
    pub cluster: String,
    /// Always false.
    pub ok: bool,
    pub error: String,
}

/// One cluster's result as the fan-out returns it: its name, and its report with its verdict or an error.
pub type ClusterResult<T> = (String, Result<(T, bool), String>);

/// Groups the results, in the order given.
pub fn group<T>(results: Vec<ClusterResult<T>>) -> Grouped<T> {
    let total = results.len();
    let mut failed = Vec::new();
    let mut clusters = Vec::with_capacity(total);
    for (cluster, result) in results {
        match result {
            Ok((report, ok)) => {
                if !ok {
                    failed.push(cluster);
                }
                clusters.push(Outcome::Report(report));
            }
            Err(error) => {
                failed.push(cluster.clone());
                clusters.push(Outcome::Error(ClusterError {
                    cluster,
                    ok: false,
                    error,
                }));
            }
        }
    }
    Grouped {
        ok: failed.is_empty(),
        total,
        failed,
        clusters,
    }
}

/// The table: each cluster's own table under a `=== cluster NAME ===` line, then one summary line.
pub fn render<T>(grouped: &Grouped<T>, name: impl Fn(&T) -> String, table: impl Fn(&T) -> String) -> String {
    let mut text = String::new();
    for outcome in &grouped.clusters {
        match outcome {
            Outcome::Report(report) => {
                text.push_str(&format!("=== cluster {} ===\n", name(report)));
                text.push_str(&table(report));
            }
            Outcome::Error(e) => {
                text.push_str(&format!("=== cluster {} ===\nerror: {}\n", e.cluster, e.error));
            }
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
    }
    text.push_str(&summary(grouped));
    text
}

/// `N clusters: all ok` or `N clusters: K ok, M with problems: a, b`.
pub fn summary<T>(grouped: &Grouped<T>) -> String {
    let plural = if grouped.total == 1 { "" } else { "s" };
    if grouped.failed.is_empty() {
        format!("{} cluster{plural}: all ok\n", grouped.total)
    } else {
        format!(
            "{} cluster{plural}: {} ok, {} with problems: {}\n",
            grouped.total,
            grouped.total - grouped.failed.len(),
            grouped.failed.len(),
            grouped.failed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize)]
    struct R {
        cluster: String,
        ok: bool,
    }

    fn r(name: &str, ok: bool) -> ClusterResult<R> {
        (
            name.into(),
            Ok((
                R {
                    cluster: name.into(),
                    ok,
                },
                ok,
            )),
        )
    }

    #[test]
    fn groups_and_judges() {
        let g = group(vec![
            r("a", true),
            r("b", false),
            ("c".into(), Err("no target".into())),
        ]);
        assert!(!g.ok);
        assert_eq!(g.total, 3);
        assert_eq!(g.failed, ["b", "c"]);
        let json = serde_json::to_value(&g).expect("json");
        assert_eq!(
            json["clusters"][0],
            serde_json::json!({"cluster": "a", "ok": true})
        );
        assert_eq!(
            json["clusters"][2],
            serde_json::json!({"cluster": "c", "ok": false, "error": "no target"})
        );
        let text = render(&g, |r| r.cluster.clone(), |r| format!("table of {}", r.cluster));
        assert_eq!(
            text,
            "=== cluster a ===\ntable of a\n\n=== cluster b ===\ntable of b\n\n=== cluster c ===\nerror: no target\n\n\
             3 clusters: 1 ok, 2 with problems: b, c\n"
        );
        let fine = group(vec![r("a", true)]);
        assert!(fine.ok);
        assert_eq!(summary(&fine), "1 cluster: all ok\n");
    }
}
