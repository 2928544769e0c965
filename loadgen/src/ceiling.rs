//! Ceilings the services are measured against, in the same run: what the machine gives without
//! the work that makes each service what it is.
//!
//! - The gateway's: `loadgen ceiling-gateway`, an axum handler that takes the webhook's body and
//!   publishes it to JetStream with a unique `Nats-Msg-Id`, answering 200 after the ack; no
//!   verification, parsing, redaction, body limits, tracing or metrics. It runs on the gateway's
//!   own HTTP server loop ([`gateway::server::serve`], with the gateway's connection settings:
//!   `TCP_NODELAY`, the connection cap, the header timer), as a process of its own, on the same
//!   stream as the gateway it is compared with: the gateway's path without the gateway's work.
//! - Raw JetStream publishing from the load generator itself, with the same number of publishes
//!   in flight: the cost of the ack path alone, without HTTP.
//! - The workers': `loadgen ceiling-workers`, the cheapest correct write of the same events into
//!   PostgreSQL: the workers' consumers read as the workers read them, each batch's event rows
//!   inserted by the event log's own batched statement in one transaction, acknowledged after
//!   the commit (so it is durable and idempotent, as the workers are); no attendance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, message::PublishMessage};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use shared::nats::NatsArgs;

use crate::capacity::{self, LevelResult};

#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// Where the ceiling listens.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8090")]
    pub listen_addr: SocketAddr,
    /// The subject every body is published on (a subject of the stream under test).
    #[arg(long, env = "CEILING_SUBJECT")]
    pub subject: String,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The gateway's own connection settings (and their defaults).
    #[command(flatten)]
    pub connections: gateway::server::ConnectionArgs,
}

struct Ceiling {
    jetstream: jetstream::Context,
    subject: String,
    /// Makes each message id unique: this process's start and a counter.
    prefix: String,
    next: AtomicU64,
}

/// Serves the gateway's ceiling until SIGTERM or Ctrl-C.
pub async fn serve_gateway_ceiling(args: CeilingArgs) -> anyhow::Result<()> {
    let (client, _) = args.nats.connect("loadgen-ceiling").await?;
    let ceiling = Arc::new(Ceiling {
        jetstream: jetstream::new(client),
        subject: args.subject,
        prefix: format!("ceiling-{:016x}", fastrand::u64(..)),
        next: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/webhooks/livekit", axum::routing::post(publish))
        .route("/readyz", axum::routing::get(|| async { StatusCode::OK }))
        .with_state(ceiling);
    let listener = tokio::net::TcpListener::bind(args.listen_addr).await?;
    gateway::server::serve(listener, app, &args.connections, shared::runtime::shutdown::on_signal()).await?;
    Ok(())
}

async fn publish(State(ceiling): State<Arc<Ceiling>>, body: Bytes) -> StatusCode {
    let id = format!("{}-{}", ceiling.prefix, ceiling.next.fetch_add(1, Ordering::Relaxed));
    let message = PublishMessage::build().payload(body).message_id(id);
    match ceiling.jetstream.send_publish(ceiling.subject.clone(), message).await {
        Ok(ack) => match ack.await {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Publishes `bodies` to `subject` from here, `in_flight` at a time, each with a unique message
/// id, each waiting for its ack: messages per second, and each publish's latency.
pub async fn raw_publish(
    jetstream: &jetstream::Context,
    subject: &str,
    bodies: Arc<Vec<Bytes>>,
    in_flight: usize,
) -> anyhow::Result<LevelResult> {
    let run = format!("raw-{:016x}", fastrand::u64(..));
    let (jetstream, subject) = (jetstream.clone(), subject.to_owned());
    capacity::drive(bodies.len(), in_flight, move |index| {
        let (jetstream, subject, bodies, id) =
            (jetstream.clone(), subject.clone(), bodies.clone(), format!("{run}-{index}"));
        async move {
            let message = PublishMessage::build().payload(bodies[index].clone()).message_id(id);
            match jetstream.send_publish(subject, message).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

/// Runs the workers' ceiling until `shutdown`, configured as a worker is (the same variables):
/// the workers' consumers (webhooks and heartbeats, the workers' settings) read in batches as the
/// workers read them, each batch's event rows written with the event log's one batched insert in one
/// transaction, then every message acknowledged. Nothing else: no meeting lookup or lock, no
/// attendance rule, no outbox, no tracing or metrics.
pub async fn serve_workers_ceiling(
    config: worker::config::WorkerConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let (client, _) = config.nats.connect("loadgen-ceiling-workers").await?;
    let pool = config.database.background_pool()?;
    shared::store::MIGRATOR.run(&pool).await?;
    let stream = shared::nats::webhooks::WebhookStream::new(client, &config.stream);
    stream.ensure().await?;
    let batch_size = usize::from(config.batch_size);
    let consumer_config = worker::startup::consumer_config(&config);
    let webhooks = stream.durable_consumer(consumer_config.clone()).await?;
    let heartbeats = stream.heartbeat_consumer(consumer_config).await?;
    let (written, heartbeats_written) = tokio::join!(
        write_event_rows(webhooks, &pool, batch_size, &shutdown),
        write_event_rows(heartbeats, &pool, batch_size, &shutdown)
    );
    pool.close().await;
    written.and(heartbeats_written)
}

/// Writes the consumer's messages as event rows, batch by batch, until `shutdown`.
async fn write_event_rows(
    consumer: jetstream::consumer::PullConsumer,
    pool: &sqlx::PgPool,
    batch_size: usize,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use futures::{FutureExt as _, StreamExt as _};
    use shared::domain::event::WebhookEvent;
    use shared::store::event_log::{self, LoggedEvent};

    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch_size * 2)
        .heartbeat(std::time::Duration::from_secs(5))
        .messages()
        .await?;
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let mut batch = match first {
            None => anyhow::bail!("the consumer's message stream ended"),
            Some(Err(error)) => {
                eprintln!("[ceiling-workers] pulling failed ({error}); the client retries");
                continue;
            }
            Some(Ok(message)) => vec![message],
        };
        while batch.len() < batch_size {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                _ => break,
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        for message in &batch {
            let payload = std::str::from_utf8(&message.payload)?;
            let sequence = message.info().map_err(|error| anyhow::anyhow!("{error}"))?.stream_sequence;
            events.push((WebhookEvent::parse(payload.as_bytes())?, payload, sequence, message));
        }
        // The insert takes each id once (a redelivered event's id is already in the log).
        let mut seen = std::collections::HashSet::new();
        let logged: Vec<LoggedEvent<'_>> = events
            .iter()
            .filter(|(event, ..)| seen.insert(event.id.as_str()))
            .map(|(event, payload, sequence, message)| LoggedEvent {
                event,
                payload,
                received_at_ms: shared::nats::webhooks::received_at_ms(message.headers.as_ref()),
                stream_sequence: Some(*sequence),
            })
            .collect();
        let mut transaction = pool.begin().await?;
        event_log::insert_events(&mut transaction, &logged).await?;
        transaction.commit().await?;
        for message in &batch {
            if let Err(error) = message.ack().await {
                eprintln!("[ceiling-workers] ack failed ({error}); the message comes back, and its row is there");
            }
        }
    }
}
