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
