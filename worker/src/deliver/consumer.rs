//! Each endpoint's durable consumer of the report stream (`deliver-<name>`), and the loop that
//! pulls from it: at most `DELIVERY_CONCURRENCY` deliveries in flight per endpoint and replica,
//! each pulled only when there is room for it (so a report never waits in a buffer while its
//! ack wait runs). Replicas share each endpoint's consumer; endpoints share nothing, so a slow
//! or failing endpoint holds up its own reports only.
//!
//! The consumer reads the whole stream (`<prefix>.>`; a NATS server before 2.10 takes one
//! filter only) and the deliverer skips what is not its endpoint's. A new consumer starts with
//! the reports published from then on: an endpoint added to the file does not receive the
//! stream's history.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, Message};
use futures::StreamExt as _;
use shared::nats::StreamSettings;
use shared::nats::StreamSetupError;
use shared::runtime::trace;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::attempt::{Deliverer, Outcome};
use super::endpoints::Endpoint;

/// How long one pull waits for reports before asking again (and how long a stop can leave a
/// pull unanswered: reports it brings then come back after the ack wait).
const PULL_WAIT: Duration = Duration::from_secs(2);
/// Pause after a failed pull.
const PULL_FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// How an endpoint's consumer is configured.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Redelivery after a replica vanished mid-attempt: room for an attempt and its record.
    pub ack_wait: Duration,
    /// The schedule's attempts plus a margin, so that a replica dying during the last allowed
    /// attempt still gets the report back to dead-letter it.
    pub max_deliver: i64,
    /// Reports in flight or waiting for a retry, across replicas, per endpoint.
    pub max_ack_pending: i64,
}

/// The durable consumer's name for `endpoint`.
pub fn consumer_name(endpoint: &str) -> String {
    format!("deliver-{endpoint}")
}

/// Creates the endpoint's durable consumer, or updates it to `settings`.
pub async fn ensure_consumer(
    jetstream: &jetstream::Context,
    stream: &StreamSettings,
    endpoint: &str,
    settings: &ConsumerSettings,
) -> Result<PullConsumer, StreamSetupError> {
    let name = consumer_name(endpoint);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("worker deliver: meeting reports to endpoint {endpoint}")),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        max_ack_pending: settings.max_ack_pending,
        ..Default::default()
    };
    shared::nats::settings::durable_consumer(jetstream, stream, config).await
}

/// One endpoint's pull loop on this replica.
pub struct EndpointLoop {
    pub consumer: PullConsumer,
    /// The endpoint as the file says now (a reload changes it between deliveries).
    pub endpoint: watch::Receiver<Arc<Endpoint>>,
    pub deliverer: Arc<Deliverer>,
    pub concurrency: usize,
    /// Cancelled to stop pulling: shutdown, the endpoint removed or disabled.
    pub stop: CancellationToken,
    /// Where deliveries run, so that shutdown waits for those in flight.
    pub tracker: TaskTracker,
}

impl EndpointLoop {
    /// Pulls and delivers until `stop`; deliveries in flight then finish on the tracker.
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let name = self.endpoint.borrow().name.clone();
        while !self.stop.is_cancelled() {
            let first = tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let mut free = vec![first];
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                free.push(slot);
            }
            let pull = self.consumer.fetch().max_messages(free.len()).expires(PULL_WAIT).messages();
            let mut batch = match tokio::select! { () = self.stop.cancelled() => break, batch = pull => batch } {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(endpoint = name, %error, "cannot pull reports; trying again");
                    self.pause().await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    () = self.stop.cancelled() => break,
                    next = batch.next() => next,
                };
                match next {
                    None => break,
                    Some(Err(error)) => {
                        tracing::warn!(endpoint = name, %error, "pulling reports failed; trying again");
                        self.pause().await;
                        break;
                    }
                    Some(Ok(message)) => {
                        let slot = free.pop().expect("a pull asks for as many reports as there are free slots");
                        let (endpoint, deliverer, stop) =
                            (self.endpoint.borrow().clone(), self.deliverer.clone(), self.stop.clone());
                        let span = delivery_span(&endpoint.name, &message);
                        self.tracker.spawn(
                            async move {
                                let outcome = deliverer.deliver(&endpoint, &message, &stop).await;
                                if outcome == Outcome::Gone {
                                    tracing::info!("endpoint disabled: its loop stops");
                                }
                                deliverer.settle(&endpoint, &message, outcome).await;
                                drop(slot);
                            }
                            .instrument(span),
                        );
                    }
                }
            }
        }
    }

    async fn pause(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(PULL_FAILURE_PAUSE) => {}
        }
    }
}

/// The span of one delivery: it continues the trace of the change that caused the report.
fn delivery_span(endpoint: &str, message: &Message) -> tracing::Span {
    let (stream_sequence, delivered) =
        message.info().map(|info| (info.stream_sequence, info.delivered)).unwrap_or_default();
    let span = tracing::info_span!(
        "deliver_report",
        endpoint,
        report_id = tracing::field::Empty,
        kind = tracing::field::Empty,
        stream_sequence,
        delivered,
    );
    trace::continue_from_nats(&span, message.headers.as_ref());
    span
}
