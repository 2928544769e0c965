//! The reconciliation phase: the sweeper checking `--reconcile-meetings` live meetings against a
//! stand-in LiveKit RoomService (`testkit::livekit_server`, which LiveKit's official Python SDK
//! proves right in the sweeper's tests), every `--reconcile-interval`.
//!
//! The meetings' joins are applied to a database of the run's own; half of the clients heartbeat
//! (every `--heartbeat-interval`), half never do. After every meeting has been checked once, a
//! steady window of two intervals measures the calls per second LiveKit gets and the sweeper's
//! and PostgreSQL's CPU. Then `--lost-left-rate` of the sessions leave at random moments of the
//! next interval without their `participant_left` (LiveKit stops listing them; their heartbeats
//! stop): each must be closed no later than it really left and no earlier than one interval (or
//! one heartbeat interval, for the heartbeating half) before, and every other session must stay
//! open. A session outside that is a difference (the run is then not exact).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shared::domain::attendance::ClosedBy;
use shared::domain::policy::Policy;
use shared::domain::time::{millis, now_unix_ms, unix_ms};
use testkit::livekit_server::{Participant, StandIn};
use worker::apply::{Input, apply_batch};

use crate::bench::Run;
use crate::procstat::GroupCpu;
use crate::results::Reconciliation;
use crate::system::{BenchDatabase, with_env};

/// One session of the phase.
struct Session {
    room: String,
    room_sid: String,
    identity: String,
    sid: String,
    joined_at_ms: i64,
    heartbeats: bool,
    /// When it left (its participant_left lost), if it does.
    left_at_ms: Option<i64>,
}

pub(crate) async fn reconciliation_phase(run: &Run<'_>, seed: u64) -> anyhow::Result<Reconciliation> {
    let (args, names) = (run.args, &run.names);
    let database = BenchDatabase::create(&args.database_url, &format!("bench_{}_reconcile", names.suffix)).await?;
    let result = async {
        let pool = sqlx::PgPool::connect(&database.url).await?;
        let interval = args.reconcile_interval;
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_0003);
        let joined_at_ms = now_unix_ms() - 2 * 60_000;
        let mut sessions: Vec<Session> = Vec::new();
        for meeting in 0..args.reconcile_meetings {
            for person in 0..args.reconcile_participants {
                sessions.push(Session {
                    room: format!("reconcile-{meeting}"),
                    room_sid: format!("RM_reconcile_{meeting}"),
                    identity: format!("person-{meeting}-{person}"),
                    sid: format!("PA_reconcile_{meeting}_{person}"),
                    joined_at_ms: joined_at_ms + rng.i64(0..60_000),
                    heartbeats: person % 2 == 0,
                    left_at_ms: None,
                });
            }
        }
        let joins: Vec<Vec<u8>> = sessions.iter().map(joined_event).collect();
        apply_all(&pool, joins, now_unix_ms()).await?;
        apply_all(&pool, heartbeats(&sessions, now_unix_ms()), now_unix_ms()).await?;

        let standin = StandIn::start(run.keys.clone()).await;
        // The stand-in's rooms as they are at `now_ms`: only those where someone left since
        // `since_ms` are set again (all of them without it).
        let set_rooms = |sessions: &[Session], since_ms: Option<i64>, now_ms: i64| {
            let changed: std::collections::BTreeSet<&str> = sessions
                .iter()
                .filter(|s| {
                    s.left_at_ms.is_some_and(|left| since_ms.is_none_or(|since| left > since) && left <= now_ms)
                })
                .map(|s| s.room.as_str())
                .collect();
            let mut rooms: BTreeMap<(&str, &str), Vec<Participant>> = BTreeMap::new();
            for session in sessions.iter().filter(|s| since_ms.is_none() || changed.contains(s.room.as_str())) {
                let listed = rooms.entry((session.room.as_str(), session.room_sid.as_str())).or_default();
                if session.left_at_ms.is_none_or(|left| left > now_ms) {
                    listed.push(Participant::active(&session.sid, &session.identity, session.joined_at_ms));
                }
            }
            for ((room, sid), participants) in rooms {
                standin.set_room(room, sid, participants);
            }
        };
        set_rooms(&sessions, None, now_unix_ms());

        let env = run.env(&database.url);
        let env = with_env(env, "LIVEKIT_URL", standin.url());
        let env = with_env(env, "RECONCILE_INTERVAL", format!("{}ms", interval.as_millis()));
        let env = with_env(env, "RECONCILE_MAX_RPS", args.reconcile_max_rps.to_string());
        let env = with_env(env, "SWEEP_INTERVAL", "1s");
        let env = with_env(env, "HEARTBEAT_TIMEOUT", format!("{}ms", args.heartbeat_timeout().as_millis()));
        let sweeper = run.start("sweeper", "reconcile-sweeper", &env)?;

        // Every meeting checked once: the first checks are spread over an interval.
        let deadline = Instant::now() + interval * 3;
        let mut next_heartbeats = Instant::now() + args.heartbeat_interval;
        loop {
            let unchecked: i64 = sqlx::query_scalar("SELECT count(*) FROM meeting_checks WHERE listed_at IS NULL")
                .fetch_one(&pool)
                .await?;
            let watched: i64 = sqlx::query_scalar("SELECT count(*) FROM meeting_checks").fetch_one(&pool).await?;
            if unchecked == 0 && watched as usize == args.reconcile_meetings {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{unchecked} meetings never checked within {:?}", interval * 3);
            heartbeat_if_due(&pool, &sessions, &mut next_heartbeats, args.heartbeat_interval).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The steady window: two intervals, nobody leaving.
        let calls_before = standin.calls().len();
        let (sweeper_before, postgres_before) = (sweeper.cpu_seconds(), GroupCpu::read("postgres"));
        let window_start = Instant::now();
        while window_start.elapsed() < interval * 2 {
            heartbeat_if_due(&pool, &sessions, &mut next_heartbeats, args.heartbeat_interval).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let window = window_start.elapsed();
        let calls = standin.calls().len() - calls_before;
        let sweeper_cpu = sweeper.cpu_seconds() - sweeper_before;
        let postgres_cpu = GroupCpu::read("postgres").since(&postgres_before);

        // Lost lefts, at random moments of the next interval.
        let leave_start = now_unix_ms();
        for session in sessions.iter_mut() {
            if rng.f64() < args.lost_left_rate {
                session.left_at_ms = Some(leave_start + rng.i64(0..millis(interval)));
            }
        }
        let lost = sessions.iter().filter(|s| s.left_at_ms.is_some()).count();
        let last_leave = leave_start + millis(interval);
        let mut refreshed_ms = leave_start - 1;
        while now_unix_ms() < last_leave + millis(interval) + 2_000 {
            let now_ms = now_unix_ms();
            set_rooms(&sessions, Some(refreshed_ms), now_ms);
            refreshed_ms = now_ms;
            heartbeat_if_due(&pool, &sessions, &mut next_heartbeats, args.heartbeat_interval).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut sweeper = sweeper;
        sweeper.check_running()?;
        sweeper.stop().await?;

        let compared = compare(&pool, &sessions, interval, args.heartbeat_interval).await?;
        pool.close().await;
        anyhow::Ok(Reconciliation {
            meetings: args.reconcile_meetings,
            sessions: sessions.len(),
            interval,
            heartbeat_interval: args.heartbeat_interval,
            window,
            calls,
            sweeper_cpu_seconds: sweeper_cpu,
            postgres_cpu_seconds: postgres_cpu,
            lost_lefts: lost,
            closed_reconciled: compared.reconciled,
            closed_heartbeat: compared.heartbeat,
            early_ms: compared.early_ms,
            differences: compared.differences,
        })
    }
    .await;
    database.drop_database().await;
    result
}

fn joined_event(session: &Session) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "participant_joined", "id": format!("EV_{}", session.sid),
        "createdAt": (session.joined_at_ms / 1000).to_string(),
        "room": {"sid": session.room_sid, "name": session.room},
        "participant": {"sid": session.sid, "identity": session.identity, "state": "ACTIVE",
                        "joinedAtMs": session.joined_at_ms.to_string()},
    }))
    .expect("JSON serializes")
}

/// A heartbeat of every heartbeating session still there at `now_ms`.
fn heartbeats(sessions: &[Session], now_ms: i64) -> Vec<Vec<u8>> {
    sessions
        .iter()
        .filter(|s| s.heartbeats && s.left_at_ms.is_none_or(|left| left > now_ms))
        .map(|s| {
            serde_json::to_vec(&serde_json::json!({
                "event": "client_heartbeat", "id": format!("HB_{}_{now_ms}", s.sid),
                "room": {"name": s.room}, "participant": {"identity": s.identity},
            }))
            .expect("JSON serializes")
        })
        .collect()
}

async fn heartbeat_if_due(
    pool: &sqlx::PgPool,
    sessions: &[Session],
    next: &mut Instant,
    every: Duration,
) -> anyhow::Result<()> {
    if Instant::now() >= *next {
        *next += every;
        let now_ms = now_unix_ms();
        apply_all(pool, heartbeats(sessions, now_ms), now_ms).await?;
    }
    Ok(())
}

/// Applies payloads as the workers would, in batches.
async fn apply_all(pool: &sqlx::PgPool, payloads: Vec<Vec<u8>>, received_at_ms: i64) -> anyhow::Result<()> {
    for chunk in payloads.chunks(500) {
        let inputs: Vec<Input> = chunk
            .iter()
            .enumerate()
            .map(|(n, payload)| Input {
                payload: payload.clone().into(),
                received_at_ms: Some(received_at_ms),
                stream_sequence: n as u64 + 1,
                traceparent: None,
                wait_for_room: false,
            })
            .collect();
        apply_batch(pool, &inputs, &Policy::default()).await?;
    }
    Ok(())
}

struct Compared {
    reconciled: usize,
    heartbeat: usize,
    /// How much earlier than the real leave each lost left was closed, in milliseconds.
    early_ms: Histogram<u64>,
    differences: Vec<String>,
}

/// Each session's stored cycle against what really happened.
async fn compare(
    pool: &sqlx::PgPool,
    sessions: &[Session],
    interval: Duration,
    heartbeat_interval: Duration,
) -> anyhow::Result<Compared> {
    type Row = (String, Option<time::OffsetDateTime>, Option<String>);
    let rows: Vec<Row> =
        sqlx::query_as("SELECT participant_sid, left_at, closed_by FROM cycles WHERE room_sid LIKE 'RM_reconcile_%'")
            .fetch_all(pool)
            .await?;
    let stored: BTreeMap<String, (Option<i64>, Option<String>)> =
        rows.into_iter().map(|(sid, left, by)| (sid, (left.map(unix_ms), by))).collect();
    let mut compared = Compared {
        reconciled: 0,
        heartbeat: 0,
        early_ms: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
        differences: Vec::new(),
    };
    for session in sessions {
        let Some((left_at, closed_by)) = stored.get(&session.sid) else {
            compared.differences.push(format!("{}: no cycle stored", session.sid));
            continue;
        };
        match (session.left_at_ms, left_at) {
            (None, None) => {}
            (None, Some(at)) => {
                compared.differences.push(format!("{}: still there, but closed at {at} ({closed_by:?})", session.sid))
            }
            (Some(left), None) => compared.differences.push(format!("{}: left at {left}, still open", session.sid)),
            (Some(left), Some(at)) => {
                let by = closed_by.as_deref().and_then(ClosedBy::parse);
                let tolerance = match by {
                    Some(ClosedBy::Reconciled) => {
                        compared.reconciled += 1;
                        millis(interval)
                    }
                    Some(ClosedBy::HeartbeatTimeout) => {
                        compared.heartbeat += 1;
                        millis(heartbeat_interval)
                    }
                    _ => 0,
                };
                // Clocks: LiveKit's listing time and the heartbeat's receipt are taken on this
                // machine, as the leaving is; a second of slack covers the stand-in's refresh.
                if *at > left + 1_000 || left - *at > tolerance + 1_000 {
                    compared.differences.push(format!(
                        "{}: left at {left}, closed at {at} ({closed_by:?}): outside the tolerance",
                        session.sid
                    ));
                }
                let _ = compared.early_ms.record(u64::try_from(left - *at).unwrap_or(0).max(1));
            }
        }
    }
    Ok(compared)
}
