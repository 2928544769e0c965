//! Load generator: sends webhooks signed the way LiveKit signs them and measures the answers.
//!
//! `loadgen gateway` posts a fixed number of distinct `participant_joined` events at each of
//! several concurrency levels and prints requests/s and latency percentiles as a Markdown table.
//! Requests are signed before the clock starts, so the figures measure the gateway, not signing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use shared::config::LiveKitKeyArgs;
use shared::livekit::token::{self, Claims};
use shared::livekit::{KeySet, webhook};

#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
enum Command {
    /// Measure the gateway's webhook endpoint.
    Gateway(GatewayArgs),
    /// Publish a realistic workload straight into the webhook stream (no consumer running).
    Publish(PublishArgs),
    /// Wait until the workers' consumer has applied everything; print events/s.
    Drain(DrainArgs),
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    #[arg(long, default_value_t = 50)]
    participants_per_room: usize,
    #[command(flatten)]
    nats: shared::config::NatsArgs,
    #[command(flatten)]
    stream: shared::config::WebhookStreamArgs,
}

#[derive(Debug, clap::Args)]
struct DrainArgs {
    /// The workers' durable consumer.
    #[arg(long, env = "CONSUMER_NAME", default_value = "attendance-worker")]
    consumer: String,
    /// Messages expected in the stream (for events/s).
    #[arg(long)]
    events: u64,
    #[command(flatten)]
    nats: shared::config::NatsArgs,
    #[command(flatten)]
    stream: shared::config::WebhookStreamArgs,
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrency levels (requests in flight at once), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    #[command(flatten)]
    keys: LiveKitKeyArgs,
}

/// One signed request, ready to send.
struct Signed {
    body: Bytes,
    authorization: String,
}

struct LevelResult {
    concurrency: usize,
    elapsed: Duration,
    latencies_us: Histogram<u64>,
    failures: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Gateway(args) => gateway(args).await,
        Command::Publish(args) => publish(args).await,
        Command::Drain(args) => drain(args).await,
    }
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let keys = args.keys.key_set().context("LiveKit keys")?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    let base_url = args.url.trim_end_matches('/');
    wait_ready(&http, base_url).await?;
    let endpoint = format!("{base_url}/webhooks/livekit");
    let run_id = format!("{:08x}", fastrand::u32(..));

    println!("| concurrency | requests | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | failures |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (level, &concurrency) in args.concurrency.iter().enumerate() {
        let requests: Arc<Vec<Signed>> =
            Arc::new((0..args.requests).map(|i| sign(&keys, &format!("EV_{run_id}_{level}_{i}"), i)).collect());
        let result = run_level(&http, &endpoint, requests, concurrency).await?;
        let ms = |q: f64| result.latencies_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            result.concurrency,
            args.requests,
            args.requests as f64 / result.elapsed.as_secs_f64(),
            ms(0.50),
            ms(0.99),
            ms(0.999),
            result.latencies_us.max() as f64 / 1000.0,
            result.failures,
        );
        if result.failures > 0 {
            bail!("{} requests were not answered 200", result.failures);
        }
    }
    Ok(())
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let client = args.nats.connect("loadgen").await?;
    let stream = shared::stream::WebhookStream::new(client.clone(), args.stream.clone());
    stream.ensure().await?;
    let jetstream = async_nats::jetstream::new(client);
    let events =
        testkit::workload::meetings(fastrand::u64(..), args.rooms, args.participants_per_room, 1_790_000_000_000);
    let started = Instant::now();
    // Awaited chunk by chunk: the context caps the acknowledgements in flight.
    for chunk in events.chunks(1_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for event in chunk {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(event.body.clone().into())
                .message_id(&event.id);
            acks.push(jetstream.send_publish(stream.subject(event.event_type), message).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    println!("published {} events in {:.2} s", events.len(), started.elapsed().as_secs_f64());
    Ok(())
}

async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let client = args.nats.connect("loadgen").await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream(&args.stream.stream).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Ok(info) = stream.consumer_info(&args.consumer).await
            && info.delivered.stream_sequence >= args.events
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("not drained after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("applied {} events in {elapsed:.2} s: {:.0} events/s", args.events, args.events as f64 / elapsed);
    Ok(())
}

/// Waits up to 30 s for the gateway's `/readyz`.
async fn wait_ready(http: &reqwest::Client, base_url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("{base_url}/readyz")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the gateway at {base_url} did not become ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_level(
    http: &reqwest::Client,
    endpoint: &str,
    requests: Arc<Vec<Signed>>,
    concurrency: usize,
) -> anyhow::Result<LevelResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, endpoint, requests, next) = (http.clone(), endpoint.to_owned(), requests.clone(), next.clone());
        senders.spawn(async move {
            let mut latencies = latency_histogram();
            let mut failures = 0;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(index) else { break };
                let sent = Instant::now();
                let answer = http
                    .post(&endpoint)
                    .header("Content-Type", "application/webhook+json")
                    .header("Authorization", &request.authorization)
                    .body(request.body.clone())
                    .send()
                    .await;
                latencies.saturating_record(sent.elapsed().as_micros() as u64);
                if !answer.is_ok_and(|response| response.status() == 200) {
                    failures += 1;
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies_us = latency_histogram();
    let mut failures = 0;
    while let Some(joined) = senders.join_next().await {
        let (histogram, failed) = joined?;
        latencies_us.add(&histogram)?;
        failures += failed;
    }
    Ok(LevelResult { concurrency, elapsed: started.elapsed(), latencies_us, failures })
}

/// Microseconds from 1 µs to 10 min at 3 significant digits. Fixed bounds: an auto-resizing
/// histogram would clamp `saturating_record` to its current (tiny) maximum.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A `participant_joined` body of realistic size, signed as LiveKit signs it (5 min validity).
fn sign(keys: &KeySet, event_id: &str, n: usize) -> Signed {
    let now = shared::now_unix_ms() / 1000;
    let room = format!("bench-room-{}", n % 500);
    let body = serde_json::json!({
        "event": "participant_joined",
        "id": event_id,
        "createdAt": now.to_string(),
        "room": {"sid": format!("RM_{room}"), "name": room, "emptyTimeout": 300, "creationTime": now.to_string(),
                 "turnPassword": "bench-turn-password", "numParticipants": 20},
        "participant": {"sid": format!("PA_{event_id}"), "identity": format!("user-{}", n % 10_000),
                        "state": "ACTIVE", "joinedAt": now.to_string(), "joinedAtMs": (now * 1000).to_string(),
                        "name": "Bench User", "metadata": "{\"user_id\":42}",
                        "permission": {"canSubscribe": true, "canPublish": true, "canPublishData": true}},
    });
    let body = Bytes::from(serde_json::to_vec(&body).expect("JSON serializes"));
    let (api_key, secret) = keys.first();
    let claims = Claims {
        iss: api_key.to_owned(),
        nbf: Some(now),
        exp: Some(now + 5 * 60),
        sha256: Some(webhook::body_hash(&body)),
        ..Default::default()
    };
    Signed { authorization: token::sign(&claims, secret), body }
}
