//! etcd's own disk figures from the member's Prometheus `/metrics`: the p99
//! of `etcd_disk_wal_fsync_duration_seconds` and
//! `etcd_disk_backend_commit_duration_seconds`, computed from the cumulative
//! histogram buckets the way Prometheus' `histogram_quantile` does.
//!
//! The histograms are cumulative since etcd started, so the figures describe
//! the member's whole life, not the last minutes. etcd serves `/metrics` on
//! its client port, or on `--listen-metrics-urls`. The page is read with
//! one pooled HTTP/1.1 client per [`MetricsEndpoint`] (reqwest, built once,
//! keep-alive: a GetStatus reuses the connection instead of a new TCP and
//! TLS handshake), every request under its own timeout. An `https://` URL
//! is read over TLS with the agent's etcd client identity (`[etcd.tls]`:
//! the CA as the only trust anchor, the etcd-client certificate), as etcd
//! requires with client-certificate auth on its client port.

use std::time::Duration;

use crate::config::TlsConfig;

/// Where etcd's metrics are read: the URL and its HTTP client, built once
/// (for `https://`, with the agent's etcd client certificate and the CA of
/// etcd's server certificate). Clones share the client and its pool.
#[derive(Clone)]
pub struct MetricsEndpoint {
    url: String,
    /// `Err`: the client could not be built, e.g. the `[etcd.tls]` files
    /// could not be loaded (said at each scrape).
    /// Shared by clones; replaced by [`MetricsEndpoint::reload`] (a
    /// certificate rotation changed the `[etcd.tls]` files or the trust).
    client: std::sync::Arc<std::sync::RwLock<Result<reqwest::Client, ClientProblem>>>,
}

/// Why an endpoint has no client.
#[derive(Debug, Clone)]
enum ClientProblem {
    /// An `https://` URL without `[etcd.tls]`.
    NoIdentity,
    /// The TLS files or the client itself: what failed.
    Tls(String),
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("url", &self.url)
            .field("client", &self.current().as_ref().map(|_| "pooled"))
            .finish()
    }
}

impl MetricsEndpoint {
    /// `url`, read with `tls` when it is `https://` (`None`: no client
    /// identity; an https URL is then refused at each scrape). Builds the
    /// pooled client now; a problem with it is said at each scrape.
    pub fn new(url: impl Into<String>, tls: Option<&TlsConfig>) -> MetricsEndpoint {
        let url = url.into();
        let client = Self::client_for(&url, tls);
        MetricsEndpoint {
            url,
            client: std::sync::Arc::new(std::sync::RwLock::new(client)),
        }
    }

    fn client_for(url: &str, tls: Option<&TlsConfig>) -> Result<reqwest::Client, ClientProblem> {
        match tls {
            _ if !url.starts_with("https://") => http_client(None).map_err(ClientProblem::Tls),
            Some(tls) => http_client(Some(tls)).map_err(ClientProblem::Tls),
            None => Err(ClientProblem::NoIdentity),
        }
    }

    /// Rebuilds the client (and every clone's) from `tls` (re-read now).
    pub fn reload(&self, tls: Option<&TlsConfig>) {
        let client = Self::client_for(&self.url, tls);
        *self
            .client
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }

    fn current(&self) -> Result<reqwest::Client, ClientProblem> {
        self.client
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// How long an idle pooled connection to etcd is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The HTTP client for one endpoint: HTTP/1.1 with keep-alive, no proxy
/// (etcd is a local or fleet-internal address), and with `tls` the CA as the
/// only trust anchor and the etcd-client certificate as the identity; without,
/// it trusts nothing (it is only used for `http://`).
fn http_client(tls: Option<&TlsConfig>) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider: it takes the
    // process-wide one (ring), installed here too in case a caller did not.
    etcdops_certs::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .user_agent("etcdops-agent")
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(2)
        .tls_certs_only(Vec::new());
    let builder = match tls {
        None => builder,
        Some(tls) => {
            let read = |what: &str, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| format!("etcd.tls.{what} {}: {e}", path.display()))
            };
            let (ca, mut identity) = (read("ca", &tls.ca)?, read("cert", &tls.cert)?);
            identity.push(b'\n');
            identity.extend(read("key", &tls.key)?);
            let roots = reqwest::Certificate::from_pem_bundle(&ca)
                .map_err(|e| format!("etcd.tls.ca {}: {}", tls.ca.display(), chain(&e)))?;
            if roots.is_empty() {
                return Err(format!(
                    "etcd.tls.ca {}: holds no PEM certificate",
                    tls.ca.display()
                ));
            }
            let identity = reqwest::Identity::from_pem(&identity).map_err(|e| {
                format!(
                    "etcd.tls.cert {} with etcd.tls.key {}: {}",
                    tls.cert.display(),
                    tls.key.display(),
                    chain(&e)
                )
            })?;
            builder.tls_certs_only(roots).identity(identity)
        }
    };
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {}", chain(&e)))
}

/// An error and its causes, `: `-separated (reqwest's own message alone
/// hides the cause, e.g. the TLS alert or the refused connection).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// etcd's WAL fsync latency histogram (seconds).
pub const WAL_FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
/// etcd's backend (bbolt) commit latency histogram (seconds).
pub const BACKEND_COMMIT: &str = "etcd_disk_backend_commit_duration_seconds";
/// etcd's backend quota (bytes), a gauge.
pub const QUOTA_BACKEND_BYTES: &str = "etcd_server_quota_backend_bytes";
/// The largest metrics page we read (etcd's is a few hundred kB).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// One cumulative bucket: observations at or below `le` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub count: f64,
}

/// etcd's disk figures; a figure is `None` when it could not be had, and
/// `problems` then says why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdDiskMetrics {
    pub wal_fsync_p99: Option<Duration>,
    pub backend_commit_p99: Option<Duration>,
    pub problems: Vec<String>,
}

/// A line of the exposition format we could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Why the metrics page could not be had.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "{url}: reading metrics over https needs the agent's etcd client certificate: set [etcd.tls] in the \
         agent config, or set disk.metrics_url to an http:// listener of etcd's --listen-metrics-urls"
    )]
    Https { url: String },
    #[error("{url}: cannot load the agent's etcd client TLS files: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url}: not an http:// or https:// URL with a host and port")]
    BadUrl { url: String },
    /// No connection, a refused TLS handshake, a connection cut mid-answer.
    #[error("{url}: {reason}{hint}")]
    Request {
        url: String,
        /// What failed, with its causes.
        reason: String,
        /// What to check when it was the TLS handshake (else empty).
        hint: &'static str,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: answered {status}")]
    Status { url: String, status: String },
    #[error("{url}: malformed HTTP response: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{url}: {source}")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
}

/// Reads the metrics page and computes etcd's disk figures.
pub async fn scrape(endpoint: &MetricsEndpoint, timeout: Duration) -> Result<EtcdDiskMetrics, MetricsError> {
    let text = fetch(endpoint, timeout).await?;
    disk_metrics(&text).map_err(|source| MetricsError::Parse {
        url: endpoint.url.clone(),
        source,
    })
}

/// Reads the metrics page and returns the value of the unlabelled gauge
/// `name` (`None` when the page does not have it).
pub async fn scrape_gauge(
    endpoint: &MetricsEndpoint,
    name: &str,
    timeout: Duration,
) -> Result<Option<f64>, MetricsError> {
    let text = fetch(endpoint, timeout).await?;
    Ok(gauge(&text, name))
}

/// The metrics page's text, within `timeout` (connecting, or reusing a
/// pooled connection, and reading the whole body).
pub async fn fetch(endpoint: &MetricsEndpoint, timeout: Duration) -> Result<String, MetricsError> {
    let url = endpoint.url.as_str();
    let scheme = if url.starts_with("https://") {
        "https://"
    } else {
        "http://"
    };
    check_url(url, scheme)?;
    let current = endpoint.current();
    let client = match &current {
        Ok(client) => client,
        Err(ClientProblem::NoIdentity) => return Err(MetricsError::Https { url: url.to_string() }),
        Err(ClientProblem::Tls(reason)) => {
            return Err(MetricsError::Tls {
                url: url.to_string(),
                reason: reason.clone(),
            });
        }
    };
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            return MetricsError::Timeout {
                url: url.to_string(),
                timeout,
            };
        }
        let reason = chain(&e);
        let hint = crate::etcd::handshake_hint(&reason, scheme == "https://").unwrap_or_default();
        MetricsError::Request {
            url: url.to_string(),
            reason,
            hint,
        }
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "text/plain")
        .timeout(timeout)
        .send()
        .await
        .map_err(failed)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(MetricsError::Status {
            url: url.to_string(),
            status: response.status().to_string(),
        });
    }
    let too_large = || MetricsError::Malformed {
        url: url.to_string(),
        reason: format!("larger than {MAX_BODY} bytes"),
    };
    if response.content_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if (body.len() + chunk.len()) as u64 > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| MetricsError::Malformed {
        url: url.to_string(),
        reason: "the body is not UTF-8".into(),
    })
}

/// The value of the sample `name` (with or without labels: the first one).
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(name)?;
        let rest = match rest.strip_prefix('{') {
            Some(inner) => &inner[closing_brace(inner)? + 1..],
            None if rest.starts_with([' ', '\t']) => rest,
            None => return None,
        };
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The p99s of etcd's WAL fsync and backend commit histograms in a metrics page.
pub fn disk_metrics(text: &str) -> Result<EtcdDiskMetrics, ParseError> {
    let mut m = EtcdDiskMetrics::default();
    for (name, what, slot) in [
        (WAL_FSYNC, "WAL fsyncs", &mut m.wal_fsync_p99),
        (BACKEND_COMMIT, "backend commits", &mut m.backend_commit_p99),
    ] {
        let buckets = parse_buckets(text, name)?;
        if buckets.is_empty() {
            m.problems.push(format!("etcd exposes no {name} histogram"));
            continue;
        }
        match histogram_quantile(0.99, &buckets) {
            Some(secs) if secs.is_finite() && secs >= 0.0 => {
                *slot = Some(Duration::from_nanos((secs * 1e9).round() as u64));
            }
            Some(secs) => m.problems.push(format!("{name}: p99 {secs} is not a duration")),
            None => m
                .problems
                .push(format!("etcd has recorded no {what} yet ({name} is empty)")),
        }
    }
    Ok(m)
}

/// The cumulative buckets of histogram `name` (its `<name>_bucket` series),
/// summed over any other labels (`sum by (le)`), sorted by upper bound.
/// Empty when the page does not have the metric.
pub fn parse_buckets(text: &str, name: &str) -> Result<Vec<Bucket>, ParseError> {
    let series = format!("{name}_bucket");
    let mut buckets: Vec<Bucket> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |reason: String| ParseError { line: n + 1, reason };
        let Some(rest) = line.trim_start().strip_prefix(&series) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(inner) => {
                let end =
                    closing_brace(inner).ok_or_else(|| err(format!("unterminated labels in {line:?}")))?;
                (&inner[..end], &inner[end + 1..])
            }
            // Another metric that starts with this name, e.g. `<name>_bucket_total`.
            None if !rest.starts_with([' ', '\t']) => continue,
            None => ("", rest),
        };
        let le = label_value(labels, "le")
            .map_err(|reason| err(format!("{reason} in {line:?}")))?
            .ok_or_else(|| err(format!("bucket without an le label: {line:?}")))?;
        let le: f64 = le
            .parse()
            .map_err(|_| err(format!("le {le:?} is not a number")))?;
        let value = value
            .split_whitespace()
            .next()
            .ok_or_else(|| err(format!("no value in {line:?}")))?;
        let count: f64 = value
            .parse()
            .map_err(|_| err(format!("value {value:?} is not a number")))?;
        match buckets.iter_mut().find(|b| b.le == le) {
            Some(b) => b.count += count,
            None => buckets.push(Bucket { le, count }),
        }
    }
    buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
    Ok(buckets)
}

/// Where the label set `k="v",...` ends: the `}` outside quotes.
fn closing_brace(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value of label `key` in `k="v",k2="v2"` (escapes `\"`, `\\`, `\n`).
fn label_value(labels: &str, key: &str) -> Result<Option<String>, String> {
    let mut rest = labels.trim();
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("bad label set {labels:?}"))?;
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("unquoted label value in {labels:?}"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated label value in {labels:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {labels:?}")),
            }
        };
        if k.trim() == key {
            return Ok(Some(value));
        }
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(None)
}

/// The `q` quantile of a cumulative histogram, as Prometheus'
/// `histogram_quantile` computes it: find the bucket holding rank
/// `q × count` and interpolate linearly inside it (from 0 for the first
/// bucket). `None` without observations or without a `+Inf` bucket. A rank
/// in the `+Inf` bucket answers the highest finite upper bound.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() < 2 {
        return None;
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.le.total_cmp(&b.le));
    let last = sorted.len() - 1;
    if sorted[last].le != f64::INFINITY {
        return None;
    }
    // Counts must not fall with the bound (they can, transiently, in a
    // scrape racing with observations); Prometheus evens them out the same way.
    let mut max = f64::NEG_INFINITY;
    for b in &mut sorted {
        max = max.max(b.count);
        b.count = max;
    }
    let observations = sorted[last].count;
    // Also false for NaN.
    if observations.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let rank = q * observations;
    let b = sorted[..last]
        .iter()
        .position(|b| b.count >= rank)
        .unwrap_or(last);
    if b == last {
        return Some(sorted[last - 1].le);
    }
    if b == 0 && sorted[0].le <= 0.0 {
        return Some(sorted[0].le);
    }
    let (start, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (sorted[b - 1].le, sorted[b - 1].count)
    };
    let (end, count) = (sorted[b].le, sorted[b].count - below);
    Some(start + (end - start) * ((rank - below) / count))
}

/// `url` is `scheme` followed by a host and a port.
fn check_url(url: &str, scheme: &str) -> Result<(), MetricsError> {
    let bad = || MetricsError::BadUrl { url: url.to_string() };
    let rest = url.strip_prefix(scheme).ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if !authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd 3.4's buckets: 0.001 × 2^i, i = 0..13, then +Inf.
    fn etcd_buckets(counts: [f64; 15]) -> Vec<Bucket> {
        let mut les: Vec<f64> = (0..14).map(|i| 0.001 * f64::from(1u32 << i)).collect();
        les.push(f64::INFINITY);
        les.into_iter()
            .zip(counts)
            .map(|(le, count)| Bucket { le, count })
            .collect()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn gauge_reads_the_quota() {
        let text = "# TYPE etcd_server_quota_backend_bytes gauge\netcd_server_quota_backend_bytes_x 1\netcd_server_quota_backend_bytes 2.147483648e+09\n";
        assert_eq!(gauge(text, QUOTA_BACKEND_BYTES), Some(2_147_483_648.0));
        assert_eq!(gauge("up{job=\"a\"} 1\n", "up"), Some(1.0));
        assert_eq!(gauge("other 1\n", QUOTA_BACKEND_BYTES), None);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = |pairs: &[(f64, f64)]| {
            pairs
                .iter()
                .map(|&(le, count)| Bucket { le, count })
                .collect::<Vec<_>>()
        };
        let inf = f64::INFINITY;
        // (q, buckets, expected); values from Prometheus' own histogram_quantile rules.
        let cases: Vec<(f64, Vec<Bucket>, Option<f64>)> = vec![
            // All in the first bucket: interpolated from 0.
            (
                0.99,
                b(&[(0.001, 100.0), (0.002, 100.0), (inf, 100.0)]),
                Some(0.00099),
            ),
            (
                0.5,
                b(&[(0.001, 100.0), (0.002, 100.0), (inf, 100.0)]),
                Some(0.0005),
            ),
            // Rank 99 of 100 falls in (0.008, 0.016], holding 80..100: 0.008 + 0.008 × 19/20.
            (
                0.99,
                b(&[(0.004, 50.0), (0.008, 80.0), (0.016, 100.0), (inf, 100.0)]),
                Some(0.0156),
            ),
            // The rank lands exactly on a bucket's count: that bucket's bound.
            (0.5, b(&[(0.004, 50.0), (0.008, 80.0), (inf, 100.0)]), Some(0.004)),
            // In the +Inf bucket: the highest finite bound.
            (
                0.99,
                b(&[(0.001, 10.0), (0.002, 20.0), (inf, 100.0)]),
                Some(0.002),
            ),
            // No observations, no +Inf bucket, too few buckets, q out of range.
            (0.99, b(&[(0.001, 0.0), (inf, 0.0)]), None),
            (0.99, b(&[(0.001, 1.0), (0.002, 2.0)]), None),
            (0.99, b(&[(inf, 5.0)]), None),
            (1.5, b(&[(0.001, 1.0), (inf, 1.0)]), None),
            // Unsorted input and a count that dips are handled.
            (0.5, b(&[(inf, 4.0), (0.002, 3.0), (0.001, 4.0)]), Some(0.0005)),
        ];
        for (q, buckets, expected) in cases {
            let got = histogram_quantile(q, &buckets);
            match expected {
                Some(e) => assert!(close(got, e), "q={q} {buckets:?}: got {got:?}, want {e}"),
                None => assert_eq!(got, None, "q={q} {buckets:?}"),
            }
        }
        // etcd's own buckets: rank 990 is exactly the 0.064 bucket's count.
        let counts = [
            0., 0., 0., 900., 980., 985., 990., 1000., 1000., 1000., 1000., 1000., 1000., 1000., 1000.,
        ];
        assert!(close(histogram_quantile(0.99, &etcd_buckets(counts)), 0.064));
    }

    const PAGE: &str = r#"# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 900
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 950
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 990
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.008"} 1000
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 1000
etcd_disk_wal_fsync_duration_seconds_sum 0.9
etcd_disk_wal_fsync_duration_seconds_count 1000
# TYPE etcd_disk_backend_commit_duration_seconds histogram
etcd_disk_backend_commit_duration_seconds_bucket{le="0.001"} 0
etcd_disk_backend_commit_duration_seconds_bucket{le="+Inf"} 0
etcd_disk_backend_commit_duration_seconds_sum 0
etcd_disk_backend_commit_duration_seconds_count 0
etcd_disk_backend_defrag_duration_seconds_bucket{le="0.1"} 3
etcd_disk_backend_defrag_duration_seconds_bucket{le="+Inf"} 3
"#;

    #[test]
    fn reads_etcd_pages() {
        let wal = parse_buckets(PAGE, WAL_FSYNC).expect("parse");
        assert_eq!(wal.len(), 5);
        assert_eq!(
            wal[4],
            Bucket {
                le: f64::INFINITY,
                count: 1000.0
            }
        );
        let m = disk_metrics(PAGE).expect("metrics");
        // Rank 990 is exactly the 0.004 bucket's count.
        assert_eq!(m.wal_fsync_p99, Some(Duration::from_millis(4)));
        assert_eq!(m.backend_commit_p99, None);
        assert_eq!(
            m.problems,
            ["etcd has recorded no backend commits yet (etcd_disk_backend_commit_duration_seconds is empty)"]
        );
        let m = disk_metrics("# nothing here\nup 1\n").expect("metrics");
        assert_eq!((m.wal_fsync_p99, m.backend_commit_p99), (None, None));
        assert_eq!(m.problems.len(), 2);
        assert!(
            m.problems[0].contains("exposes no etcd_disk_wal_fsync_duration_seconds"),
            "{:?}",
            m.problems
        );
    }

    #[test]
    fn labels_are_summed_and_parsed_strictly() {
        let text = "m_bucket{a=\"x,}\\\"y\",le=\"0.5\"} 2\nm_bucket{le=\"0.5\",a=\"z\"} 3 1700000000\n\
                    m_bucket{le=\"+Inf\"} 1e1\nm_bucket_total 9\nm_count 10\n";
        let b = parse_buckets(text, "m").expect("parse");
        assert_eq!(
            b,
            [
                Bucket { le: 0.5, count: 5.0 },
                Bucket {
                    le: f64::INFINITY,
                    count: 10.0
                }
            ]
        );
        for bad in [
            "m_bucket{le=\"0.5\" 1\n",
            "m_bucket{x=\"1\"} 1\n",
            "m_bucket{le=\"a\"} 1\n",
            "m_bucket{le=\"1\"} z\n",
            "m_bucket{le=1} 1\n",
        ] {
            let err = parse_buckets(bad, "m").expect_err(bad);
            assert_eq!(err.line, 1, "{bad}: {err}");
        }
    }

    /// Reads one HTTP request's head from `s`.
    async fn read_head(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.expect("read") == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    #[tokio::test]
    async fn scrapes_reuse_the_connection() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut heads = Vec::new();
            for _ in 0..3 {
                heads.push(read_head(&mut s).await);
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{PAGE}", PAGE.len());
                s.write_all(answer.as_bytes()).await.expect("write");
            }
            // A second connection would be a new handshake per scrape.
            let again = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
            (heads, again.is_ok())
        });
        let endpoint = MetricsEndpoint::new(format!("http://{addr}/metrics"), None);
        for _ in 0..3 {
            let m = scrape(&endpoint.clone(), Duration::from_secs(5))
                .await
                .expect("scrape");
            assert_eq!(m.wal_fsync_p99, Some(Duration::from_millis(4)));
        }
        let (heads, reconnected) = server.await.expect("server");
        assert!(!reconnected, "each scrape opened a new connection");
        assert!(
            heads.iter().all(|h| h.starts_with("GET /metrics HTTP/1.1\r\n")),
            "{heads:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let endpoint = MetricsEndpoint::new(format!("http://{addr}/metrics"), None);
        let err = fetch(&endpoint, Duration::from_millis(300))
            .await
            .expect_err("silent");
        assert!(matches!(err, MetricsError::Timeout { .. }), "{err}");
        let closed = MetricsEndpoint::new(
            format!("http://{addr}/metrics").replace(&addr.port().to_string(), "1"),
            None,
        );
        let err = fetch(&closed, Duration::from_secs(5)).await.expect_err("refused");
        assert!(matches!(err, MetricsError::Request { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }

    #[tokio::test]
    async fn scrapes_over_http_and_refuses_https() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 1024];
            let n = s.read(&mut request).await.expect("read");
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            s.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{PAGE}").as_bytes())
                .await
                .expect("write");
            request
        });
        let endpoint = MetricsEndpoint::new(format!("http://{addr}/metrics"), None);
        let m = scrape(&endpoint, Duration::from_secs(5)).await.expect("scrape");
        assert_eq!(m.wal_fsync_p99, Some(Duration::from_millis(4)));
        assert!(
            server
                .await
                .expect("server")
                .starts_with("GET /metrics HTTP/1.1\r\n")
        );

        let https = MetricsEndpoint::new("https://127.0.0.1:2379/metrics", None);
        let err = scrape(&https, Duration::from_secs(1)).await.expect_err("https");
        assert!(matches!(err, MetricsError::Https { .. }), "{err}");
        assert!(err.to_string().contains("[etcd.tls]"), "{err}");
        let missing = TlsConfig {
            ca: "/nonexistent/ca.crt".into(),
            cert: "/nonexistent/c.crt".into(),
            key: "/nonexistent/c.key".into(),
        };
        let https = MetricsEndpoint::new("https://127.0.0.1:2379/metrics", Some(&missing));
        let err = scrape(&https, Duration::from_secs(1))
            .await
            .expect_err("no files");
        assert!(matches!(err, MetricsError::Tls { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
        let nohost = MetricsEndpoint::new("http://nohost/metrics", None);
        let err = scrape(&nohost, Duration::from_secs(1))
            .await
            .expect_err("no port");
        assert!(matches!(err, MetricsError::BadUrl { .. }), "{err}");
    }
}
