//! One trace from the gateway's request through NATS to the worker and on to the sweeper: the
//! span the gateway creates for a webhook is the parent of the span the worker opens for that
//! message, which is the parent of the sweeper's publish of the presence change it caused.

mod common;

use std::time::Duration;

use common::System;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use testkit::livekit::{admin_token, participant_joined, sign_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_links_the_webhook_the_worker_and_the_presence_publish() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let _telemetry = shared::runtime::telemetry::init_with(provider.clone());
    let system = System::start().await;

    // The caller's own trace continues through the gateway.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = participant_joined("EV_traced", "algebra", "ada");
    let response = system
        .gateway
        .http
        .post(system.url("/webhooks/livekit"))
        .header("Authorization", sign_now(&body))
        .header("traceparent", format!("00-{caller_trace}-00f067aa0ba902b7-01"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    testkit::eventually(Duration::from_secs(20), "the event to be applied", || async {
        let response = system.get("/v1/rooms/algebra/attendance/ada", Some(&admin_token("algebra"))).await;
        response.status().is_success().then_some(())
    })
    .await;

    let find = |name: &str| -> Option<SpanData> {
        let _ = provider.force_flush();
        exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .find(|s| s.name == name && s.span_context.trace_id().to_string() == caller_trace)
    };
    let gateway =
        testkit::eventually(Duration::from_secs(10), "the gateway's span", || async { find("webhook") }).await;
    let worker =
        testkit::eventually(Duration::from_secs(10), "the worker's span", || async { find("apply_event") }).await;

    assert_eq!(gateway.span_context.trace_id(), TraceId::from_hex(caller_trace).unwrap());
    assert_eq!(gateway.parent_span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap(), "continues the caller's span");
    assert_eq!(worker.span_context.trace_id(), gateway.span_context.trace_id(), "one trace");
    assert_eq!(worker.parent_span_id, gateway.span_context.span_id(), "the gateway's span is the worker's parent");
    let sweeper =
        testkit::eventually(Duration::from_secs(10), "the sweeper's span", || async { find("publish_presence") }).await;
    assert_eq!(sweeper.parent_span_id, worker.span_context.span_id(), "the worker's span is the publish's parent");
    system.stop().await;
}
