//! A plan's requests stored straight into a stream of the run's own, as the gateway would have
//! stored them (webhooks verified and redacted by the same code, heartbeats received at their
//! planned time), for the phases that need a database loaded rather than a live run.
//!
//! Invariant: messages go into the stream in the plan's order (publishes overlap only within a
//! small window), so a heartbeat still follows its meeting's room_started by the plan's lead.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared::domain::heartbeat::Heartbeat;
use shared::livekit::{KeySet, webhook};
use shared::nats::settings::WebhookStreamArgs;
use shared::nats::webhooks::WebhookStream;
use shared::nats::{PublishAck, PublishError};
use tokio::sync::Semaphore;

use crate::scenario::{Meeting, Plan, Request};
use crate::sign;
use crate::system::StreamSource;

/// Publishes in flight at once: enough to keep NATS busy, few enough to keep the plan's order.
const PUBLISHES_IN_FLIGHT: usize = 32;
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// Publishes JetStream refused, retried as the gateway's clients retry its 503: a replicated
/// stream refuses a message whose id is still being stored (a planned duplicate published
/// beside its original) until the original is; the retry is then acknowledged as a duplicate.
const REFUSED_RETRIES: usize = 50;
const REFUSED_PAUSE: Duration = Duration::from_millis(20);

/// Stores every request of `plan` whose meeting `include` accepts into `source`'s stream
/// (created if missing, with the settings the run's workers expect); returns how many.
pub async fn publish(
    client: &async_nats::Client,
    source: &StreamSource,
    keys: &KeySet,
    plan: &Plan,
    include: impl Fn(&Meeting) -> bool,
) -> anyhow::Result<usize> {
    let stream = Arc::new(WebhookStream::new(
        client.clone(),
        &WebhookStreamArgs {
            // The run's heartbeats must outlive it (replays read them again).
            heartbeat_max_age: Duration::from_secs(2 * 3600),
            replicas: source.replicas,
            ..WebhookStreamArgs::new(
                source.stream.clone(),
                source.subject_prefix.clone(),
                Duration::from_secs(6 * 60),
                Duration::from_secs(2 * 3600),
            )
        },
    ));
    stream.ensure().await?;
    let in_flight = Arc::new(Semaphore::new(PUBLISHES_IN_FLIGHT));
    let mut publishes = tokio::task::JoinSet::new();
    let mut published = 0;
    for send in plan.sends.iter().filter(|send| include(&plan.meetings[plan.meeting_of(send.request)])) {
        let permit = in_flight.clone().acquire_owned().await?;
        let stream = stream.clone();
        match send.request {
            Request::Webhook { index, .. } => {
                let body = plan.webhooks[index].body.clone();
                let authorization = sign::webhook_authorization(keys, &body);
                let now = shared::domain::time::now_unix_ms() / 1000;
                let event = webhook::receive(Some(authorization.as_bytes()), body, keys, now, send.at_ms)
                    .context("verify a planned webhook")?;
                publishes.spawn(async move {
                    let stored = retrying(|| stream.publish(&event, PUBLISH_DEADLINE)).await;
                    drop(permit);
                    stored.map(|_| ())
                });
            }
            Request::Heartbeat { index } => {
                let identity = plan.participants[index].identity.clone();
                let heartbeat = Heartbeat::new(plan.room_name_of(index).to_owned(), identity, send.at_ms);
                publishes.spawn(async move {
                    let stored = retrying(|| stream.publish_heartbeat(&heartbeat, PUBLISH_DEADLINE)).await;
                    drop(permit);
                    stored.map(|_| ())
                });
            }
        }
        published += 1;
        // Collect the finished ones as we go, so an error stops the loop early.
        while let Some(done) = publishes.try_join_next() {
            done?.context("store a planned message")?;
        }
    }
    while let Some(done) = publishes.join_next().await {
        done?.context("store a planned message")?;
    }
    Ok(published)
}

/// Runs `publish` until JetStream takes it, at most [`REFUSED_RETRIES`] more times after a
/// refusal (a timeout is not retried: the deadline is long).
async fn retrying<F, Fut>(mut publish: F) -> Result<PublishAck, PublishError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<PublishAck, PublishError>>,
{
    let mut refusals = 0;
    loop {
        match publish().await {
            Err(PublishError::Unavailable(_)) if refusals < REFUSED_RETRIES => {
                refusals += 1;
                tokio::time::sleep(REFUSED_PAUSE).await;
            }
            outcome => return outcome,
        }
    }
}
