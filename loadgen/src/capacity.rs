//! The gateway's capacity: a fixed number of distinct `participant_joined` webhooks at each of
//! several concurrency levels, as fast as the gateway answers. Requests are signed before the
//! clock starts, so the figures measure the gateway, not signing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use shared::livekit::KeySet;

use crate::sign::webhook_authorization;

/// One concurrency level's outcome.
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub elapsed: Duration,
    pub latencies_us: Histogram<u64>,
    pub failures: usize,
}

impl LevelResult {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.latencies_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Markdown table header for [`LevelResult::row`].
pub const TABLE_HEADER: &str = "| concurrency | requests | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | failures |\n\
                                |---:|---:|---:|---:|---:|---:|---:|---:|";

impl LevelResult {
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            self.concurrency,
            self.requests,
            self.requests_per_second(),
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.latencies_us.max() as f64 / 1000.0,
            self.failures,
        )
    }
}

/// Measures each concurrency level in turn against the gateway at `base_url`.
pub async fn measure(
    http: &reqwest::Client,
    base_url: &str,
    keys: &KeySet,
    requests: usize,
    levels: &[usize],
) -> anyhow::Result<Vec<LevelResult>> {
    let mut results = Vec::new();
    for &concurrency in levels {
        results.push(measure_level(http, base_url, &sign_requests(keys, requests), concurrency).await?);
    }
    Ok(results)
}

/// `requests` distinct signed participant_joined webhooks (signed before any clock starts).
pub fn sign_requests(keys: &KeySet, requests: usize) -> Arc<Vec<(Bytes, String)>> {
    let run_id = format!("{:016x}", fastrand::u64(..));
    Arc::new((0..requests).map(|i| joined(keys, &format!("EV_{run_id}_{i}"), i)).collect())
}

/// Sends `signed` to the webhook endpoint at `base_url`, `concurrency` at a time; every one must
/// be answered 200.
pub async fn measure_level(
    http: &reqwest::Client,
    base_url: &str,
    signed: &Arc<Vec<(Bytes, String)>>,
    concurrency: usize,
) -> anyhow::Result<LevelResult> {
    let endpoint = format!("{}/webhooks/livekit", base_url.trim_end_matches('/'));
    let result = run_level(http, &endpoint, signed.clone(), concurrency).await?;
    if result.failures > 0 {
        bail!(
            "{} of {} requests at concurrency {concurrency} to {base_url} were not answered 200",
            result.failures,
            signed.len()
        );
    }
    Ok(result)
}

async fn run_level(
    http: &reqwest::Client,
    endpoint: &str,
    signed: Arc<Vec<(Bytes, String)>>,
    concurrency: usize,
) -> anyhow::Result<LevelResult> {
    let (http, endpoint) = (http.clone(), endpoint.to_owned());
    drive(signed.len(), concurrency, move |index| {
        let (http, endpoint, signed) = (http.clone(), endpoint.clone(), signed.clone());
        async move {
            let (body, authorization) = &signed[index];
            let answer = http
                .post(&endpoint)
                .header("Content-Type", "application/webhook+json")
                .header("Authorization", authorization)
                .body(body.clone())
                .send()
                .await;
            answer.is_ok_and(|response| response.status() == 200)
        }
    })
    .await
}

/// Runs `operation` on the indexes `0..count`, `concurrency` at a time, each as soon as one
/// finishes: how long it all took, each operation's latency, and how many failed (`false`).
pub async fn drive<F, Fut>(count: usize, concurrency: usize, operation: F) -> anyhow::Result<LevelResult>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, operation) = (next.clone(), operation.clone());
        workers.spawn(async move {
            let mut latencies = latency_histogram();
            let mut failures = 0;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let sent = Instant::now();
                let succeeded = operation(index).await;
                latencies.saturating_record(sent.elapsed().as_micros() as u64);
                if !succeeded {
                    failures += 1;
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies_us = latency_histogram();
    let mut failures = 0;
    while let Some(joined) = workers.join_next().await {
        let (histogram, failed) = joined?;
        latencies_us.add(&histogram)?;
        failures += failed;
    }
    Ok(LevelResult { concurrency, requests: count, elapsed: started.elapsed(), latencies_us, failures })
}

/// Microseconds from 1 µs to 10 min at 3 significant digits. Fixed bounds: an auto-resizing
/// histogram would clamp `saturating_record` to its current (tiny) maximum.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A `participant_joined` body of realistic size and its LiveKit signature.
fn joined(keys: &KeySet, event_id: &str, n: usize) -> (Bytes, String) {
    let now = shared::domain::time::now_unix_ms() / 1000;
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
    let authorization = webhook_authorization(keys, &body);
    (body, authorization)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drive_runs_every_index_once_and_counts_the_failures() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let result = drive(100, 7, move |index| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(index);
                index % 10 != 0
            }
        })
        .await
        .unwrap();
        assert_eq!(
            (result.concurrency, result.requests, result.failures, result.latencies_us.len()),
            (7, 100, 10, 100)
        );
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
