//! The history phase: does applying a meeting cost more when its room names already had many
//! meetings? One plan of `--history-rooms` rooms with `--history-meetings` + 1 meetings each;
//! the last meeting of every room is the measured one. Its events are applied at saturation
//! into a copy of an empty database (as if it were each room's first meeting), and the very
//! same events into a copy of a database already holding the earlier meetings (stored once, not
//! measured): both copies, so that both start alike, with nothing of them in PostgreSQL's cache.
//! Interleaved, first then last, for every count of `--replay-workers`, `--history-rounds`
//! times, so that the machine's drift affects both alike.
//!
//! Every left is delivered (no sweeper runs here), so each measurement is also checked against
//! the plan's expectation: the measured meetings alone, or every meeting with the history.

use std::time::{Duration, Instant};

use crate::bench::{Run, converge};
use crate::preload;
use crate::results::{History, HistorySample};
use crate::scenario::{MeetingExpectations, Plan, ScenarioConfig};
use crate::system::{BenchDatabase, LoadedStream};

pub(crate) async fn history_phase(run: &Run<'_>, seed: u64) -> anyhow::Result<History> {
    let (args, names) = (run.args, &run.names);
    let earlier = args.history_meetings;
    let config = ScenarioConfig {
        rooms: args.history_rooms,
        participants: args.history_participants,
        meetings_per_room: earlier + 1,
        duration_ms: 0,
        lost_left_rate: 0.0,
        ..args.scenario(seed ^ 0x5eed_0002)
    };
    // History is in the past: the plan ends about now.
    let span_ms = Plan::build(&config, 0).end_ms();
    let plan = Plan::build(&config, shared::domain::time::now_unix_ms() - span_ms - 60_000);
    let all_meetings = plan.expected(|_| None);
    let measured_meetings: MeetingExpectations = plan
        .meetings
        .iter()
        .filter(|meeting| meeting.order == earlier)
        .map(|meeting| (meeting.sid.clone(), all_meetings[&meeting.sid].clone()))
        .collect();

    let history_source = names.loaded_source(LoadedStream::History, "bench-history-load");
    let measured_source = names.loaded_source(LoadedStream::Measured, "");
    let history_messages =
        preload::publish(&run.client, &history_source, &run.keys, &plan, |meeting| meeting.order < earlier).await?;
    preload::publish(&run.client, &measured_source, &run.keys, &plan, |meeting| meeting.order == earlier).await?;

    let empty = BenchDatabase::create(&args.database_url, &format!("bench_{}_empty", names.suffix)).await?;
    let template = BenchDatabase::create(&args.database_url, &format!("bench_{}_history", names.suffix)).await?;
    let result = async {
        let loading_workers = args.replay_workers.iter().copied().max().unwrap_or(1);
        run.apply_stream(&template.url, &history_source, loading_workers, "history-load").await?;
        // A database with that history in production has been vacuumed many times since: measure
        // that, not the dead row versions of a load that just happened.
        template.vacuum_analyze().await?;
        let mut samples = Vec::new();
        for round in 1..=args.history_rounds.max(1) {
            for &workers in &args.replay_workers {
                for with_history in [false, true] {
                    let label = format!("history{round}-{workers}w-{}", if with_history { "last" } else { "first" });
                    eprintln!("[bench] history phase: {label}");
                    let name = format!("bench_{}_{}", names.suffix, label.replace('-', "_"));
                    let database = if with_history { template.copy(&name).await? } else { empty.copy(&name).await? };
                    database.prewarm().await;
                    database.checkpoint().await;
                    let expected = if with_history { &all_meetings } else { &measured_meetings };
                    let measured = async {
                        let source = measured_source.with_consumer(format!("bench-{label}"));
                        let applied = run.apply_stream(&database.url, &source, workers, &label).await?;
                        let pool = sqlx::PgPool::connect(&database.url).await?;
                        let differences = converge(&pool, expected, Instant::now() + Duration::from_secs(10)).await?;
                        pool.close().await;
                        anyhow::Ok(HistorySample { round, with_history, applied, differences })
                    }
                    .await;
                    database.drop_database().await;
                    samples.push(measured?);
                }
            }
        }
        anyhow::Ok(samples)
    }
    .await;
    template.drop_database().await;
    empty.drop_database().await;
    Ok(History {
        rooms: plan.rooms.len(),
        participants: args.history_participants,
        earlier_meetings: earlier,
        history_messages: history_messages as u64,
        samples: result?,
    })
}
