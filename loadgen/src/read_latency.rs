//! The read latency phase: one meeting of `--read-participants` participants, planned like the
//! live workload and applied by a worker into a database of its own, then read with `--read-requests`
//! sequential `GET /v1/meetings/{room_sid}` as JSON, then as CSV (`?format=csv`), through a
//! gateway of the run. Each latency is to the last byte of the body; every answer must be a 200
//! holding every participant.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bench::{Run, converge};
use crate::capacity::latency_histogram;
use crate::results::{ReadFormat, ReadLatency};
use crate::scenario::{Plan, ScenarioConfig};
use crate::system::{self, BenchDatabase, LoadedStream, with_env};
use crate::{preload, sign};

/// Reads of each format before the measured ones: the gateway's pool and PostgreSQL's caches
/// warm, as they are for a meeting people are looking at.
const WARM_UP_READS: usize = 5;

pub(crate) async fn read_latency_phase(run: &Run<'_>, seed: u64) -> anyhow::Result<ReadLatency> {
    let (args, names) = (run.args, &run.names);
    // One room, one meeting, everyone in it; every left is delivered, so the stored meeting is
    // complete without a sweeper.
    let config = ScenarioConfig {
        rooms: 1,
        participants: args.read_participants,
        meetings_per_room: 1,
        duration_ms: 0,
        lost_left_rate: 0.0,
        ..args.scenario(seed ^ 0x5eed_0001)
    };
    let plan = Plan::build(&config, shared::domain::time::now_unix_ms() - 3_600_000);
    let meeting = plan.meetings[0].sid.clone();
    let source = names.loaded_source(LoadedStream::ReadLatency, "bench-read-load");
    preload::publish(&run.client, &source, &run.keys, &plan, |_| true).await?;
    let database = BenchDatabase::create(&args.database_url, &format!("bench_{}_read", names.suffix)).await?;
    let result = async {
        run.apply_stream(&database.url, &source, 1, "read").await?;
        let pool = sqlx::PgPool::connect(&database.url).await?;
        let expected = plan.expected(|_| None);
        let differences = converge(&pool, &expected, Instant::now() + Duration::from_secs(10)).await?;
        pool.close().await;

        let port = system::free_port()?;
        let env = with_env(run.env(&database.url), "LISTEN_ADDR", format!("127.0.0.1:{port}"));
        let env = with_env(env, "METRICS_ADDR", "127.0.0.1:0".to_owned());
        let mut gateway = run.start("gateway", "gateway-read", &env)?;
        let http = reqwest::Client::new();
        let base_url = format!("http://127.0.0.1:{port}");
        system::wait_ready(&http, &base_url, &mut gateway).await?;
        let reader = sign::reader_token(&run.keys, 3_600);
        let people = expected[&meeting].len();
        let mut formats = Vec::new();
        for format in ["json", "csv"] {
            let url = format!("{base_url}/v1/meetings/{meeting}?format={format}");
            for _ in 0..WARM_UP_READS {
                read_meeting(&http, &url, &reader, format, people).await?;
            }
            let mut latencies_us = latency_histogram();
            let mut response_bytes = 0;
            for _ in 0..args.read_requests {
                let sent = Instant::now();
                response_bytes = read_meeting(&http, &url, &reader, format, people).await?;
                latencies_us.saturating_record(sent.elapsed().as_micros() as u64);
            }
            formats.push(ReadFormat { format, latencies_us, response_bytes });
        }
        gateway.stop().await?;
        anyhow::Ok(ReadLatency { participants: people, formats, differences })
    }
    .await;
    database.drop_database().await;
    result
}

/// One read of the meeting at `url`; returns the body's size once it checked that the body holds
/// all `people` participants (a JSON `participants` list, or a CSV row each under the header).
async fn read_meeting(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    format: &str,
    people: usize,
) -> anyhow::Result<usize> {
    let response = http.get(url).bearer_auth(token).send().await.context("read the meeting")?;
    let status = response.status();
    let body = response.bytes().await.context("read the meeting's body")?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    let rows = match format {
        "json" => serde_json::from_slice::<serde_json::Value>(&body)?["participants"].as_array().map_or(0, Vec::len),
        _ => body.split(|&b| b == b'\n').filter(|line| !line.is_empty()).count().saturating_sub(1),
    };
    if rows != people {
        bail!("GET {url}: {rows} participants, expected {people}");
    }
    Ok(body.len())
}
