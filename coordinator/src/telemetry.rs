//! Logs and distributed traces of the `etcdops` CLI: its tracing subscriber,
//! its OpenTelemetry exporter, and the W3C trace context every agent RPC carries.
//!
//! Logs go to stderr (`-v` / `RUST_LOG`, default warnings). Traces are
//! exported over OTLP/gRPC (opentelemetry-otlp on our tonic) only when the
//! standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (with the other `OTEL_*` variables: `OTEL_SERVICE_NAME`, default
//! `etcdops`; `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, ...);
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off. With
//! none set there is no exporter and no OpenTelemetry layer at all.
//!
//! What is traced: a span per command (`cli`), per operation and per step
//! (`exec`), and per agent call (`agents`); [`TraceContext`], the interceptor
//! on every agent client, puts the current span's `traceparent` in the
//! call's metadata, so the agents' spans join the same trace. A step's trace
//! ID goes in its journal record.
//!
//! The exporter is started once per process ([`init`]) and its spans are
//! flushed at the end of every run ([`flush`]) and at exit ([`shutdown`],
//! also on the second Ctrl-C). The batch exporter's thread has no tokio
//! reactor, which tonic needs: each export runs on a one-thread runtime of
//! the exporter's own, independent of the command's.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `service.name` unless `OTEL_SERVICE_NAME` (or `OTEL_RESOURCE_ATTRIBUTES`) names one.
pub const SERVICE_NAME: &str = "etcdops";

/// The instrumentation scope of the coordinator's spans.
const SCOPE: &str = "etcdops";

/// How long the final flush may take at most (the exporter's own timeout,
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, bounds each export too).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's trace export, when one runs.
static EXPORT: Mutex<Option<Export>> = Mutex::new(None);

#[derive(Debug)]
struct Export {
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
}

/// Where traces go (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` when unset or turned off.
pub fn endpoint() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return None;
    }
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Installs the process's subscriber once: logs on stderr filtered by
/// `log_filter`, and the coordinator's spans to OpenTelemetry when an
/// endpoint is set. A second call (another run in the same process) keeps
/// the first subscriber.
pub fn init(log_filter: EnvFilter) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(log_filter);
    let mut export = EXPORT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tracer = if export.is_none()
        && let Some(endpoint) = endpoint()
    {
        match start() {
            Ok(started) => {
                let tracer = started.provider.tracer(SCOPE);
                *export = Some(started);
                Some(tracer)
            }
            Err(reason) => {
                eprintln!("warning: cannot export traces to {endpoint}: {reason}; going on without");
                None
            }
        }
    } else {
        None
    };
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(
            Targets::new()
                .with_target("etcdops_coordinator", tracing::Level::INFO)
                .with_target("etcdops_certs", tracing::Level::INFO),
        )
    });
    // Without an exporter the subscriber is the logs alone (no layer at all).
    let installed = match traces {
        Some(traces) => tracing_subscriber::registry().with(logs).with(traces).try_init(),
        None => tracing_subscriber::registry().with(logs).try_init(),
    };
    if installed.is_err()
        && let Some(started) = export.take()
    {
        // Another subscriber was first: this exporter would get nothing.
        let _ = started.provider.shutdown();
        started.runtime.shutdown_background();
    }
}

/// Starts the OTLP exporter (endpoint and options from `OTEL_*`).
fn start() -> Result<Export, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start its runtime: {e}"))?;
    let exporter = {
        // tonic's channel is made (lazily connected) on this runtime.
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| e.to_string())?
    };
    let exporter = OnOwnRuntime {
        inner: exporter,
        runtime: runtime.handle().clone(),
    };
    let mut resource = Resource::builder();
    if !named_by_env(&Resource::builder().build()) {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Export { provider, runtime })
}

/// Whether the environment named the service (`service.name` is not the SDK's `unknown_service...`).
fn named_by_env(resource: &Resource) -> bool {
    resource
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"))
}

/// Exports the spans ended so far (the end of a run); nothing without an exporter.
pub fn flush() {
    let export = EXPORT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(export) = export.as_ref()
        && let Err(e) = export.provider.force_flush()
    {
        eprintln!("warning: flushing trace spans: {e}");
    }
}

/// Exports what is left and stops the exporter (before the process exits).
pub fn shutdown() {
    let taken = EXPORT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(export) = taken {
        if let Err(e) = export.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("warning: flushing trace spans at exit: {e}");
        }
        export.runtime.shutdown_background();
    }
}

/// The trace ID of `span` (32 hex digits) when it is traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The client interceptor on every agent call: the current span's W3C
/// `traceparent` (and `tracestate`) into the call's metadata. Nothing when
/// the span is not traced (no exporter).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContext;

impl tonic::service::Interceptor for TraceContext {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject(request.metadata_mut());
        Ok(request)
    }
}

/// Puts the current span's trace context into `metadata`.
pub fn inject(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Metadata(metadata));
    }
}

struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The OTLP exporter, each export driven on the exporter's own runtime.
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

    #[test]
    fn untraced_calls_carry_no_trace_context() {
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.get("traceparent").is_none());
        assert_eq!(trace_id(&tracing::Span::current()), None);
        use tonic::service::Interceptor;
        let request = TraceContext.call(tonic::Request::new(())).expect("passes");
        assert!(request.metadata().is_empty());
    }

    #[test]
    fn a_traced_span_puts_its_traceparent_in_the_metadata() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("step");
            let _entered = span.enter();
            let id = trace_id(&span).expect("traced");
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            let traceparent = metadata
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent");
            assert!(
                traceparent.starts_with(&format!("00-{id}-")),
                "{traceparent} for {id}"
            );
        });
    }
}
