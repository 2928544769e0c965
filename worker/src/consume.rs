//! The pull loop: take what the consumer has (up to a batch), apply it, then tell JetStream.
//!
//! - Applied (or already applied): ack, only after the commit.
//! - Can never be applied: publish to the dead-letter stream, await its ack, then terminate the
//!   original. A worker dying in between leaves the original to be redelivered (and the dead
//!   letter's message id makes the second copy a duplicate).
//! - Transient failure: NAK with a delay from the delivery count; on the last allowed delivery,
//!   dead-letter instead. While PostgreSQL is unreachable, stop pulling until it answers.
//! - Its room was held by another replica: kept (not acknowledged) and applied in the next
//!   batch; after [`MAX_DEFERRALS`] such turns the batch waits for the room.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt as _, StreamExt as _};
use shared::domain::policy::Policy;
use shared::domain::time::now_unix_ms;
use shared::nats::dead_letters::{DeadLetter, DeadLetterStream};
use shared::nats::webhooks::{WebhookStream, received_at_ms};
use shared::runtime::shutdown::Ticks;
use shared::runtime::{startup_retry, trace};
use shared::store;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info_span};

use crate::apply::{self, Applied, Input, Rejection};
use crate::metrics::{EventTypeLabel, ReasonLabel, WorkerMetrics};
use crate::nak_delay::nak_delay;

/// Deliveries the server allows beyond `max_deliver`, so that a worker that dies during the last
/// allowed attempt still gets the message back, and dead-letters it instead of losing it.
pub const CRASH_MARGIN: i64 = 3;

const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Batches a message may be put off because another replica held its room, before its batch
/// waits for the room instead.
pub const MAX_DEFERRALS: u32 = 3;

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_deliver: i64,
    pub batch_size: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    /// The attendance policy of the meeting reports.
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot pull from the consumer: {0}")]
    Pull(String),
    #[error("the consumer's message stream ended")]
    Ended,
}

/// Where a consumer stands with respect to the webhooks: heartbeats are read from a stream of
/// their own, and a heartbeat applied before the join it follows would find no meeting (after a
/// backlog, the heartbeat consumer would race far ahead of the webhook consumer). So the
/// webhook consumer records how far it got, and the heartbeat consumer applies a heartbeat only
/// once the webhooks received before it are applied (or every webhook is).
pub enum Order {
    /// This consumer reads the webhooks and records its progress.
    Webhooks(Arc<WebhookProgress>),
    /// This consumer reads heartbeats and waits for the webhooks' progress.
    AfterWebhooks(Arc<WebhookProgress>),
}

/// How far the webhooks are applied: the gateway's receipt time (unix ms) up to which this
/// process's webhook consumer has applied them, or up to which the shared consumer has had
/// every webhook acknowledged (whichever replica applied them).
pub struct WebhookProgress {
    frontier_ms: AtomicI64,
    /// The webhook consumer, asked when the frontier stalls how far all replicas got.
    consumer: tokio::sync::Mutex<PullConsumer>,
    stream: WebhookStream,
}

/// The longest a batch of heartbeats waits for the webhooks; past it, it is applied (what
/// finds no meeting yet is put off as before).
const MAX_WAIT_FOR_WEBHOOKS: Duration = Duration::from_secs(60);

impl WebhookProgress {
    pub fn new(webhook_consumer: PullConsumer, stream: WebhookStream) -> Arc<Self> {
        Arc::new(WebhookProgress {
            frontier_ms: AtomicI64::new(0),
            consumer: tokio::sync::Mutex::new(webhook_consumer),
            stream,
        })
    }

    fn advance(&self, received_at_ms: i64) {
        self.frontier_ms.fetch_max(received_at_ms, AtomicOrdering::Relaxed);
    }

    /// Waits until the webhooks received up to `received_at_ms` are applied, keeping `held`
    /// messages from being redelivered meanwhile.
    async fn wait_for(&self, received_at_ms: i64, held: &[Delivery], shutdown: &CancellationToken) {
        let started = Instant::now();
        let mut last_check = None::<Instant>;
        let mut last_progress_ack = Instant::now();
        while self.frontier_ms.load(AtomicOrdering::Relaxed) < received_at_ms {
            if shutdown.is_cancelled() || started.elapsed() > MAX_WAIT_FOR_WEBHOOKS {
                return;
            }
            // Stalled: how far did all replicas get? Nothing left undelivered or unacknowledged
            // means every webhook received before this check is applied; else every webhook up
            // to the consumer's acknowledgement floor is.
            if last_check.is_none_or(|at| at.elapsed() > Duration::from_millis(250)) {
                last_check = Some(Instant::now());
                let checked_at_ms = now_unix_ms();
                let info = self.consumer.lock().await.info().await.cloned();
                if let Ok(info) = info {
                    if info.num_pending == 0 && info.num_ack_pending == 0 {
                        self.advance(checked_at_ms);
                        continue;
                    }
                    if let Some(floor_ms) = self.stream.received_at_ms_of(info.ack_floor.stream_sequence).await
                        && floor_ms > self.frontier_ms.load(AtomicOrdering::Relaxed)
                    {
                        self.advance(floor_ms);
                        continue;
                    }
                }
            }
            if last_progress_ack.elapsed() > Duration::from_secs(5) {
                last_progress_ack = Instant::now();
                for delivery in held {
                    let _ = delivery.message.ack_with(AckKind::Progress).await;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

pub struct Consumer {
    consumer: PullConsumer,
    order: Order,
    pool: PgPool,
    dead_letters: DeadLetterStream,
    metrics: WorkerMetrics,
    settings: Settings,
    failures: FailureClock,
    /// Messages put off because another replica held their room.
    deferred: Vec<Pulled>,
}

impl Consumer {
    pub fn new(
        consumer: PullConsumer,
        order: Order,
        pool: PgPool,
        dead_letters: DeadLetterStream,
        metrics: WorkerMetrics,
        settings: Settings,
    ) -> Self {
        Consumer {
            consumer,
            order,
            pool,
            dead_letters,
            metrics,
            settings,
            failures: FailureClock::default(),
            deferred: Vec::new(),
        }
    }

    /// Pulls and applies until `shutdown` is cancelled. Messages already pulled but not started
    /// are handed back (NAK) before returning.
    ///
    /// When PostgreSQL becomes unreachable, pulling stops until it answers again: JetStream
    /// counts a delivery only when it hands a message out, so an outage does not use up the
    /// messages' allowed deliveries and send them to the dead-letter stream.
    pub async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        while !shutdown.is_cancelled() {
            let mut messages = self
                .consumer
                .stream()
                .max_messages_per_batch(self.settings.batch_size * 2)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| ConsumeError::Pull(e.to_string()))?;
            let stop = self.pull_and_apply(&mut messages, shutdown).await?;
            let (delay, why) = match stop {
                Stop::Shutdown => (None, "shutting down"),
                Stop::DatabaseUnavailable => (Some(self.settings.retry_min_delay), "PostgreSQL unavailable"),
            };
            let mut handed_back = 0;
            for pulled in std::mem::take(&mut self.deferred) {
                let _ = pulled.message.ack_with(AckKind::Nak(delay)).await;
                handed_back += 1;
            }
            while let Some(Some(Ok(message))) = messages.next().now_or_never() {
                let _ = message.ack_with(AckKind::Nak(delay)).await;
                handed_back += 1;
            }
            drop(messages);
            tracing::info!(handed_back, why, "stopped pulling");
            if stop == Stop::DatabaseUnavailable {
                self.wait_for_database(shutdown).await;
            }
        }
        Ok(())
    }

    /// Applies batches until shutdown or until PostgreSQL is unreachable.
    async fn pull_and_apply(
        &mut self,
        messages: &mut async_nats::jetstream::consumer::pull::Stream,
        shutdown: &CancellationToken,
    ) -> Result<Stop, ConsumeError> {
        loop {
            // Messages put off last time go first, without waiting for new ones.
            let mut batch = std::mem::take(&mut self.deferred);
            if shutdown.is_cancelled() {
                self.deferred = batch;
                return Ok(Stop::Shutdown);
            }
            if batch.is_empty() {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(Stop::Shutdown),
                    next = messages.next() => next,
                };
                match next {
                    None => return Err(ConsumeError::Ended),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "pulling messages failed; the client retries");
                        continue;
                    }
                    Some(Ok(message)) => batch.push(Pulled::new(message)),
                }
            }
            while batch.len() < self.settings.batch_size {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(Pulled::new(message)),
                    _ => break,
                }
            }
            if let ControlFlow::Break(stop) = self.process(batch, shutdown).await {
                return Ok(stop);
            }
        }
    }

    /// Applies one batch and acknowledges each message as its outcome says. Breaks when pulling
    /// must stop (PostgreSQL is unreachable).
    pub async fn process(&mut self, batch: Vec<Pulled>, shutdown: &CancellationToken) -> ControlFlow<Stop> {
        let mut deliveries = Vec::with_capacity(batch.len());
        for Pulled { message, times_deferred } in batch {
            let Ok(info) = message.info() else {
                tracing::error!(subject = %message.subject, "not a JetStream message; terminated");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            self.metrics.pending.set(i64::try_from(info.pending).unwrap_or(i64::MAX));
            let (delivered, sequence) = (info.delivered, info.stream_sequence);
            if delivered > self.settings.max_deliver {
                let error = format!("delivered {delivered} times; the earlier attempts did not finish");
                self.dead_letter(&message, "delivery_limit", &error).await;
                continue;
            }
            // The message's own span, a child of the gateway's request span (context in the headers).
            let span =
                info_span!("apply_event", stream_sequence = sequence, delivered, event_type = tracing::field::Empty);
            trace::continue_from_nats(&span, message.headers.as_ref());
            let input = Input {
                payload: message.payload.clone(),
                received_at_ms: received_at_ms(message.headers.as_ref()),
                stream_sequence: sequence,
                traceparent: trace::traceparent_of(&span),
                wait_for_room: times_deferred >= MAX_DEFERRALS,
            };
            deliveries.push(Delivery { message, input, delivered, span, times_deferred });
        }
        if deliveries.is_empty() {
            return ControlFlow::Continue(());
        }

        if let Order::AfterWebhooks(progress) = &self.order {
            let newest = deliveries.iter().filter_map(|d| d.input.received_at_ms).max().unwrap_or(0);
            progress.wait_for(newest, &deliveries, shutdown).await;
        }
        let inputs: Vec<Input> = deliveries.iter().map(|delivery| delivery.input.clone()).collect();
        let span = info_span!("apply_batch", messages = inputs.len(), first_sequence = inputs[0].stream_sequence);
        // The transaction serves every message of the batch: linked to each message's span.
        for delivery in &deliveries {
            span.follows_from(&delivery.span);
        }
        let started = Instant::now();
        let result = apply::apply_batch(&self.pool, &inputs, &self.settings.policy).instrument(span).await;
        self.metrics.batch_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(inputs.len() as f64);

        match result {
            Ok(outcomes) => {
                if let Order::Webhooks(progress) = &self.order {
                    let applied =
                        deliveries.iter().zip(&outcomes).filter(|(_, outcome)| **outcome != Applied::Deferred);
                    if let Some(newest) = applied.filter_map(|(d, _)| d.input.received_at_ms).max() {
                        progress.advance(newest);
                    }
                }
                for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
                    let span = delivery.span.clone();
                    self.settle(delivery, outcome).instrument(span).await;
                }
                ControlFlow::Continue(())
            }
            Err(error) => {
                let unavailable = store::is_unavailable(&error);
                tracing::warn!(%error, unavailable, messages = deliveries.len(), "batch not applied; will retry");
                let error = error.to_string();
                for delivery in deliveries {
                    self.failures.record(delivery.input.stream_sequence);
                    let handled = async {
                        if delivery.delivered >= self.settings.max_deliver {
                            self.dead_letter(&delivery.message, "retries_exhausted", &error).await;
                        } else {
                            self.retry(&delivery.message, delivery.delivered, "database").await;
                        }
                    };
                    handled.instrument(delivery.span).await;
                }
                if unavailable { ControlFlow::Break(Stop::DatabaseUnavailable) } else { ControlFlow::Continue(()) }
            }
        }
    }

    /// Tells JetStream what became of a message of a committed batch.
    async fn settle(&mut self, delivery: Delivery, outcome: Applied) {
        match outcome {
            Applied::Stored { event_type } => {
                tracing::Span::current().record("event_type", event_type.as_str());
                self.metrics.applied.get_or_create(&EventTypeLabel { event_type }).inc();
                self.acknowledge(&delivery.message, delivery.input.stream_sequence).await;
            }
            Applied::Duplicate => {
                self.metrics.duplicates.inc();
                self.acknowledge(&delivery.message, delivery.input.stream_sequence).await;
            }
            Applied::Refused { reason } => {
                // Heartbeats after their meeting's end are common: not worth a line each.
                if reason == "no_meeting" {
                    tracing::debug!(reason, "heartbeat refused for good");
                } else {
                    tracing::info!(reason, "event refused for good");
                }
                self.metrics.refused.get_or_create(&ReasonLabel { reason }).inc();
                self.acknowledge(&delivery.message, delivery.input.stream_sequence).await;
            }
            Applied::Rejected(Rejection { reason, message: error }) => {
                self.dead_letter(&delivery.message, reason, &error).await;
            }
            Applied::Deferred => {
                self.metrics.deferred.inc();
                self.deferred.push(Pulled { message: delivery.message, times_deferred: delivery.times_deferred + 1 });
            }
        }
    }

    async fn acknowledge(&mut self, message: &Message, sequence: u64) {
        self.failures.forget(sequence);
        // A lost ack means a redelivery, which the event log turns into a no-op.
        if let Err(error) = message.ack().await {
            tracing::warn!(%error, sequence, "ack failed; the message will be redelivered");
        }
    }

    async fn retry(&self, message: &Message, delivered: i64, reason: &'static str) {
        let delay = nak_delay(delivered, self.settings.retry_min_delay, self.settings.retry_max_delay);
        self.metrics.retries.get_or_create(&ReasonLabel { reason }).inc();
        if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(%error, "NAK failed; the message comes back after the ack wait");
        }
    }

    /// Publishes the message to the dead-letter stream and, once stored there, terminates it.
    async fn dead_letter(&mut self, message: &Message, reason: &'static str, error: &str) {
        let Ok(info) = message.info() else { return };
        let (sequence, delivered, stream) = (info.stream_sequence, info.delivered, info.stream.to_owned());
        let now = now_unix_ms();
        let first_failure_at_ms = self.failures.first_failure(sequence).unwrap_or(now);
        let event_type = message.subject.rsplit('.').next().unwrap_or("unknown");
        let letter = DeadLetter {
            event_type,
            payload: message.payload.clone(),
            original_headers: message.headers.as_ref(),
            original_subject: &message.subject,
            original_stream: &stream,
            original_sequence: sequence,
            delivery_count: delivered,
            reason,
            error,
            first_failure_at_ms,
            last_failure_at_ms: now,
        };
        match self.dead_letters.publish(&letter, DEAD_LETTER_TIMEOUT).await {
            Ok(_) => {
                self.failures.forget(sequence);
                self.metrics.dead_lettered.get_or_create(&ReasonLabel { reason }).inc();
                tracing::warn!(sequence, reason, error, "event dead-lettered");
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, sequence, "terminating a dead-lettered message failed; it will be redelivered");
                }
            }
            Err(publish_error) => {
                self.failures.record(sequence);
                tracing::error!(%publish_error, sequence, "cannot dead-letter; will retry");
                self.retry(message, delivered, "dead_letter_unavailable").await;
            }
        }
    }

    /// Keeps the dead-letter depth gauge fresh (every 15 s) until `shutdown`.
    pub fn watch_dead_letter_depth(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (dead_letters, gauge) = (self.dead_letters.clone(), self.metrics.dead_letters.clone());
        tokio::spawn(async move {
            let mut ticks = Ticks::every(Duration::from_secs(15), &shutdown);
            while ticks.next().await {
                match dead_letters.depth().await {
                    Ok(depth) => {
                        gauge.set(i64::try_from(depth).unwrap_or(i64::MAX));
                    }
                    Err(error) => tracing::debug!(%error, "cannot read the dead-letter depth"),
                }
            }
        })
    }

    /// Waits until PostgreSQL takes writes again, so that the stream is not spun through (and
    /// the messages' deliveries spent) meanwhile.
    async fn wait_for_database(&self, shutdown: &CancellationToken) {
        tracing::warn!("PostgreSQL unavailable: pulling paused");
        let pool = self.pool.clone();
        let back = startup_retry::until_ok(shutdown, "waiting for PostgreSQL", || {
            let pool = pool.clone();
            async move { store::ping_writable(&pool).await }
        })
        .await;
        if back.is_some() {
            tracing::info!("PostgreSQL is back: pulling resumed");
        }
    }
}

/// Why the consumer stopped pulling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The service is shutting down.
    Shutdown,
    /// PostgreSQL is unreachable or read-only: pulling resumes once it takes writes.
    DatabaseUnavailable,
}

/// A message pulled from the consumer, not yet applied.
pub struct Pulled {
    pub message: Message,
    /// Batches it was put off because another replica held its room.
    pub times_deferred: u32,
}

impl Pulled {
    fn new(message: Message) -> Self {
        Pulled { message, times_deferred: 0 }
    }
}

/// A message of the batch being applied, with what its outcome is reported against.
struct Delivery {
    message: Message,
    input: Input,
    /// JetStream's delivery count for it (1 on the first delivery).
    delivered: i64,
    /// The message's own span (`apply_event`).
    span: tracing::Span,
    times_deferred: u32,
}

/// When each failing message (by stream sequence) first failed on this worker, for the dead
/// letter's `first failure` header. Bounded: the oldest entries are forgotten first.
#[derive(Default)]
struct FailureClock {
    first_failure_ms: HashMap<u64, i64>,
    order: VecDeque<u64>,
}

impl FailureClock {
    const CAPACITY: usize = 100_000;

    fn record(&mut self, sequence: u64) {
        if self.first_failure_ms.contains_key(&sequence) {
            return;
        }
        if self.order.len() >= Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.first_failure_ms.remove(&oldest);
        }
        self.first_failure_ms.insert(sequence, now_unix_ms());
        self.order.push_back(sequence);
    }

    fn first_failure(&self, sequence: u64) -> Option<i64> {
        self.first_failure_ms.get(&sequence).copied()
    }

    fn forget(&mut self, sequence: u64) {
        if self.first_failure_ms.remove(&sequence).is_some() {
            self.order.retain(|&s| s != sequence);
        }
    }
}
