//! Logs and distributed traces: the agent's tracing subscriber, its
//! OpenTelemetry exporter, and the span every RPC runs in.
//!
//! Logs go to stderr (`RUST_LOG`, default `info`). Traces are exported over
//! OTLP/gRPC (opentelemetry-otlp on our tonic) only when an endpoint is set:
//! the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (with the other `OTEL_*` variables: `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*` ...),
//! else `[telemetry] otlp_endpoint` in the agent config; `OTEL_SDK_DISABLED=true`
//! or `OTEL_TRACES_EXPORTER=none` turn it off. With none set there is no
//! exporter and no OpenTelemetry layer at all.
//!
//! The resource says who exported a span: `service.name` `etcdops-agent`
//! (unless `OTEL_SERVICE_NAME` says otherwise) and `service.instance.id`, the
//! agent's name from its certificate.
//!
//! Every RPC runs in a span made by [`rpc_span`] (tonic's `trace_fn`): the
//! caller's W3C `traceparent` (gRPC metadata) is its parent, set before the
//! span is entered, and its `trace_id` field carries the trace ID, so every
//! log line inside an RPC names the trace (also with no exporter running:
//! the ID comes from the caller's metadata). Spans for the agent's own work
//! (unit jobs, etcd calls, staging, restore, defragment) sit under it.
//!
//! The batch exporter runs on a thread of the SDK's; the OTLP client needs a
//! tokio reactor, so each export runs on a one-thread runtime of its own
//! ([`Telemetry`] owns it), independent of the agent's. [`Telemetry::shutdown`]
//! flushes what is left (bounded by `OTEL_EXPORTER_OTLP_TIMEOUT`).

use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tonic::codegen::http;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `service.name` unless `OTEL_SERVICE_NAME` (or `OTEL_RESOURCE_ATTRIBUTES`) names one.
pub const SERVICE_NAME: &str = "etcdops-agent";

/// The instrumentation scope of the agent's spans.
const SCOPE: &str = "etcdops-agent";

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot start the trace exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(
        "cannot set up the OTLP trace exporter to {endpoint}: {reason} (see OTEL_EXPORTER_OTLP_*ENDPOINT or [telemetry] otlp_endpoint)"
    )]
    Exporter { endpoint: String, reason: String },
}

/// The running trace export: shut it down before the process exits.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
    endpoint: String,
}

/// Where traces go: the environment's endpoint, else the config's; `None`
/// when neither is set or the SDK is turned off by `OTEL_*`.
pub fn endpoint(configured: Option<&str>) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return None;
    }
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .or_else(|| configured.map(str::to_string))
}

impl Telemetry {
    /// Starts the exporter when an endpoint is set (see [`endpoint`]; the
    /// config's `otlp_endpoint` is `configured`) for the agent named
    /// `instance`; `None` when none is.
    pub fn start(configured: Option<&str>, instance: &str) -> Result<Option<Telemetry>, TelemetryError> {
        let Some(endpoint) = endpoint(configured) else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(TelemetryError::Runtime)?;
        let exporter = {
            // tonic's channel is made (lazily connected) on this runtime.
            let _entered = runtime.enter();
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            // The environment wins over the file; the file counts only without it.
            if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
                && std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
                && let Some(url) = configured
            {
                use opentelemetry_otlp::WithExportConfig;
                builder = builder.with_endpoint(url);
            }
            builder.build().map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?
        };
        let exporter = OnOwnRuntime {
            inner: exporter,
            runtime: runtime.handle().clone(),
        };
        let mut resource = Resource::builder();
        if !named_by_env(&Resource::builder().build()) {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.instance.id",
                instance.to_string(),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Some(Telemetry {
            provider,
            runtime,
            endpoint,
        }))
    }

    /// Where the spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Exports what is left and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, endpoint = %self.endpoint, "flushing trace spans at shutdown");
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }

    fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer(SCOPE)
    }
}

/// Whether the environment named the service (`service.name` is not the SDK's `unknown_service...`).
fn named_by_env(resource: &Resource) -> bool {
    resource
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"))
}

/// Installs the process's subscriber: logs on stderr (`RUST_LOG`, default
/// `info`) and, with `telemetry`, the agent's spans to OpenTelemetry.
pub fn init(telemetry: Option<&Telemetry>) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let traces = telemetry.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer())
            .with_filter(Targets::new().with_target("etcdops_agent", tracing::Level::INFO))
    });
    // Already set (tests running several agents in one process) is fine.
    // Without an exporter the subscriber is the logs alone (no layer at all).
    let _ = match traces {
        Some(traces) => tracing_subscriber::registry().with(logs).with(traces).try_init(),
        None => tracing_subscriber::registry().with(logs).try_init(),
    };
}

/// The span an RPC runs in (tonic's `Server::trace_fn`): named after the
/// method, a child of the caller's `traceparent`, its `trace_id` field set.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let method = request.uri().path().rsplit('/').next().unwrap_or_default();
    let span = tracing::info_span!(
        "rpc",
        otel.name = method,
        otel.kind = "server",
        trace_id = tracing::field::Empty
    );
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let remote = parent.span().span_context().trace_id();
    if parent.span().span_context().is_valid() {
        // Before the span is entered (tonic enters it next): else AlreadyStarted.
        // No OpenTelemetry layer (no exporter) is fine: the ID still goes in the logs.
        let _ = span.set_parent(parent);
        span.record("trace_id", tracing::field::display(remote));
    } else {
        let own = span.context().span().span_context().clone();
        if own.is_valid() {
            span.record("trace_id", tracing::field::display(own.trace_id()));
        }
    }
    span
}

/// Reads W3C trace context from HTTP/2 headers (gRPC metadata).
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The OTLP exporter, each export driven on the exporter's own runtime: the
/// SDK's batch thread has no tokio reactor, which tonic needs.
#[derive(Debug)]
struct OnOwnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnOwnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner.export(batch).await
        } else {
            self.runtime.block_on(self.inner.export(batch))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(traceparent: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri("/etcdops.agent.v1.Agent/Defragment");
        if let Some(value) = traceparent {
            builder = builder.header("traceparent", value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn the_callers_trace_id_is_read_from_its_metadata() {
        let headers = request(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let cx = TraceContextPropagator::new().extract(&Headers(headers.headers()));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let none = request(None);
        let cx = TraceContextPropagator::new().extract(&Headers(none.headers()));
        assert!(!cx.span().span_context().is_valid());
        // No subscriber: a span, never a panic.
        let _ = rpc_span(&headers);
        let _ = rpc_span(&request(Some("garbage")));
    }

    #[test]
    fn no_endpoint_no_exporter() {
        // The test environment sets no OTEL_* variable.
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            assert_eq!(endpoint(None), None);
            assert_eq!(endpoint(Some("http://c:4317")).as_deref(), Some("http://c:4317"));
        }
    }
}
