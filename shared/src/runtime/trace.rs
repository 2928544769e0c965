//! W3C trace context (`traceparent`) across HTTP and NATS: extracted from an incoming request or
//! message into the current span's parent, and injected from the current span into the headers
//! of what is published.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `traceparent` header name, in HTTP and in NATS message headers.
pub const TRACEPARENT: &str = "traceparent";

// A disabled span (filtered out by `RUST_LOG`) has no trace context: nothing to continue or
// inject, and the propagator (a global behind a lock) is not asked.

/// Makes the trace context in `headers` (if any) the parent of `span`.
pub fn continue_from_http(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaders(headers)));
    let _ = span.set_parent(parent);
}

/// Makes the trace context in NATS `headers` (if any) the parent of `span`.
pub fn continue_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(headers) = headers.filter(|_| !span.is_disabled()) {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&NatsHeaders(headers)));
        let _ = span.set_parent(parent);
    }
}

/// Writes the trace context of `span` into NATS headers.
pub fn inject_into_nats(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut NatsHeadersMut(headers)));
}

/// The `traceparent` of `span`, to store with work that continues later (the outbox).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut headers = async_nats::HeaderMap::new();
    inject_into_nats(span, &mut headers);
    headers.get(TRACEPARENT).map(|v| v.as_str().to_owned())
}

/// The hex trace id of `span`, for logs and answers.
pub fn trace_id(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

/// The hex span id of `span`.
pub fn span_id(span: &tracing::Span) -> String {
    span.context().span().span_context().span_id().to_string()
}

struct HttpHeaders<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct NatsHeaders<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

struct NatsHeadersMut<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}
