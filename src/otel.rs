//! OpenTelemetry export (the `otel` feature): kiq's spans, sent over OTLP/HTTP.
//!
//! With the feature on, every dispatch opens a producer span (`send <queue>`) and every
//! execution a consumer span (`process <queue>`) that is its child, in another process if need
//! be: the message carries the producer span's W3C `traceparent`. A dispatch made inside a
//! running task, or inside any span with an OpenTelemetry context (an HTTP request's, say),
//! continues that trace; a chain's next step continues the step before it. The spans carry the
//! OpenTelemetry messaging attributes (`messaging.system` = `kiq`,
//! `messaging.destination.name`, `messaging.message.id`, `messaging.operation.type`) and
//! kiq's own (`kiq.task.name`, `kiq.task.attempt`, `kiq.task.outcome`); a failed attempt's
//! span has an error status.
//!
//! The spans are `tracing` spans: the [`tracing_opentelemetry`] layer turns them into
//! OpenTelemetry spans. [`layer_from_env`] builds that layer with an OTLP/HTTP exporter
//! configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, ...);
//! `kiq::cli` installs it whenever one of the endpoint variables is set. A program with an
//! OpenTelemetry pipeline of its own adds its own `tracing_opentelemetry` layer instead: kiq's
//! spans join it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::registry::LookupSpan;

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OpenTelemetry export: {0}")]
pub struct OtelError(String);

/// A running OTLP export: keep it for the life of the program and call [`Otel::shutdown`]
/// at its end, so the last spans are sent.
#[derive(Debug)]
pub struct Otel {
    provider: SdkTracerProvider,
}

impl Otel {
    /// Sends what is buffered and stops the exporter. It blocks (up to the exporter's
    /// timeout): call it from a thread that may block (`spawn_blocking` in async code).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("kiq: OpenTelemetry export did not shut down cleanly: {e}");
        }
    }
}

/// Whether the environment asks for OTLP export: an endpoint variable is set and
/// `OTEL_SDK_DISABLED` is not `true`.
pub fn enabled_by_env() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// A `tracing` layer exporting spans over OTLP/HTTP (protobuf) as the standard
/// `OTEL_EXPORTER_OTLP_*` variables say, with a batch processor; `default_service` names the
/// service unless `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) does.
/// It also makes the W3C trace-context propagator and this provider the global ones, for the
/// program's own OpenTelemetry instrumentation.
pub fn layer_from_env<S>(
    default_service: &str,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Otel,
    ),
    OtelError,
>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    // An https endpoint goes through rustls, which needs a process-wide crypto provider: kiq's
    // (ring), unless the program installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| OtelError(e.to_string()))?;
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(default_service.to_string());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("kiq");
    Ok((
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Busy and idle times per span are noise beside the span's own duration.
            .with_tracked_inactivity(false),
        Otel { provider },
    ))
}
