//! Logging and tracing set-up shared by every binary.
//!
//! - Logs: human-readable by default, JSON with `LOG_FORMAT=json`, level from `RUST_LOG`
//!   (default `info`).
//! - Traces: OpenTelemetry spans exported over OTLP (HTTP/protobuf) when the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set, with `OTEL_SERVICE_NAME` (default: the binary's name);
//!   nothing is exported otherwise. Spans still get W3C ids either way, so the trace context is
//!   carried through NATS headers ([`super::trace`]) and one trace links a webhook's request to
//!   the worker's transaction and the sweeper's publish.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes what is left to export.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered. Call once, at the end of `main`.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// Installs logging and tracing for a service. Call once, first thing in `main`.
pub fn init(service_name: &str) -> Telemetry {
    let mut builder = SdkTracerProvider::builder();
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty()) {
        let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_owned());
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => {
                builder = builder
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service_name).build());
            }
            Err(error) => eprintln!("OTLP export disabled: {error}"),
        }
    }
    init_with(builder.build())
}

/// Installs logging and tracing with the given tracer provider (tests pass one that records).
pub fn init_with(provider: SdkTracerProvider) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("livekit-attendance"));
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    // `try_init`: tests may call this more than once per process.
    let _ = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init()
    };
    Telemetry { provider }
}
