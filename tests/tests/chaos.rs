//! The chaos suite: under a steady load of signed webhooks (retried until a 2xx, as LiveKit
//! retries), one fault at a time: SIGKILL the gateway, a worker, the sweeper; restart NATS;
//! restart PostgreSQL; pause PostgreSQL past the timeouts. After each, once the load stops and
//! the system drains, every event that got a 2xx is in the event log exactly once, attendance
//! equals what the rule gives for the events sent, and nothing was dead-lettered.
//!
//! `make test` runs a short version; `make chaos` a longer one (`CHAOS_ROOMS`, `CHAOS_PEOPLE`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use testkit::binaries::Service;
use testkit::livekit::{TEST_KEYS, sign_now};
use testkit::nats::{PrivateNats, free_port};
use testkit::postgres::{PrivatePostgres, TestDatabase};
use testkit::workload::{self, Event};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillGateway,
    KillWorker,
    KillSweeper,
    RestartNats,
    RestartPostgres,
    PausePostgres,
    /// Hundreds of connections that send half a request head and wait (a slowloris attack).
    SlowConnections,
}

/// The servers the services run against (private: the faults stop them).
struct Infrastructure {
    nats: PrivateNats,
    postgres: PrivatePostgres,
    database_url: String,
    gateway_port: u16,
}

impl Infrastructure {
    fn env(&self, metrics_port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.nats.url()),
            ("DATABASE_URL", self.database_url.clone()),
            ("LIVEKIT_KEYS", TEST_KEYS.into()),
            ("LISTEN_ADDR", format!("127.0.0.1:{}", self.gateway_port)),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("PUBLISH_TIMEOUT", "1s".into()),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s".into()),
            ("RETRY_MIN_DELAY", "100ms".into()),
            ("RETRY_MAX_DELAY", "1s".into()),
            ("CONSUMER_ACK_WAIT", "5s".into()),
            // Outages must not send events to the dead-letter stream.
            ("MAX_DELIVER", "100".into()),
            ("OUTBOX_POLL_INTERVAL", "100ms".into()),
            ("SWEEP_INTERVAL", "1s".into()),
            // The workload happened in the past: no 12 h cap on its open cycles here.
            ("MAX_CYCLE_DURATION", "87600h".into()),
            ("RUST_LOG", "warn".into()),
            // Few connection slots and a short header timeout, so that the slow-connection
            // attack fills them and is cut off within the round.
            ("HTTP_MAX_CONNECTIONS", "128".into()),
            ("HTTP_HEADER_TIMEOUT", "2s".into()),
        ]
    }

    fn start(&self, name: &'static str) -> Service {
        Service::start(name, &self.env(free_port()))
    }
}

/// Posts every event until it gets a 2xx (LiveKit retries 5xx; here until it works).
async fn send_all(
    base_url: String,
    events: Vec<Event>,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    attempts: Arc<Mutex<u64>>,
) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for event in events {
        loop {
            *attempts.lock().unwrap() += 1;
            let response = http
                .post(format!("{base_url}/webhooks/livekit"))
                .header("Authorization", sign_now(&event.body))
                .body(event.body.clone())
                .send()
                .await;
            match response.map(|r| r.status().as_u16()) {
                Ok(200) => {
                    accepted.lock().unwrap().insert(event.id.clone());
                    break;
                }
                Ok(status) => assert!(status >= 500, "a 4xx for a valid event: {status}"),
                Err(_) => {} // the gateway is down: retry
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn wait_drained(nats_url: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    testkit::eventually(Duration::from_secs(180), "the workers to drain the stream", || async {
        let stream = js.get_stream("LIVEKIT_WEBHOOKS").await.ok()?;
        let info = stream.consumer_info("attendance-worker").await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_each_fault_exactly_once() {
    let rooms: usize = std::env::var("CHAOS_ROOMS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let people: usize = std::env::var("CHAOS_PEOPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let nats = PrivateNats::start().await;
    let postgres = PrivatePostgres::start().await;
    let database = TestDatabase::create(&postgres.url("postgres")).await;
    let gateway_port = free_port();
    let mut fleet = Infrastructure { database_url: database.url.clone(), nats, postgres, gateway_port };
    let mut gateway = fleet.start("gateway");
    let mut workers = [fleet.start("worker"), fleet.start("worker")];
    let mut sweeper = fleet.start("sweeper");
    let base_url = format!("http://127.0.0.1:{gateway_port}");
    let http = reqwest::Client::new();
    testkit::eventually(Duration::from_secs(30), "the gateway to be ready", || async {
        http.get(format!("{base_url}/readyz")).send().await.ok()?.status().is_success().then_some(())
    })
    .await;

    let faults = [
        Fault::KillGateway,
        Fault::KillWorker,
        Fault::KillSweeper,
        Fault::RestartNats,
        Fault::RestartPostgres,
        Fault::PausePostgres,
        Fault::SlowConnections,
    ];
    let mut sent: Vec<Event> = Vec::new();
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut report = vec![
        "| fault | events sent | 2xx | stored | lost | doubled | attendance |".to_owned(),
        "|---|---:|---:|---:|---:|---:|---|".to_owned(),
    ];
    for (round, fault) in faults.into_iter().enumerate() {
        let mut events = workload::meetings(0xC4A05 + round as u64, rooms, people, 1_790_000_000_000);
        fastrand::shuffle(&mut events);
        eprintln!("[chaos] {fault:?} under a load of {} events", events.len());
        let attempts = Arc::new(Mutex::new(0));
        let load = tokio::spawn(send_all(base_url.clone(), events.clone(), accepted.clone(), attempts.clone()));
        // Let the load run, then strike.
        let under_way = accepted.lock().unwrap().len() + events.len() / 4;
        testkit::eventually(Duration::from_secs(60), "the load to be under way", || {
            let accepted = accepted.clone();
            async move { (accepted.lock().unwrap().len() >= under_way).then_some(()) }
        })
        .await;
        match fault {
            Fault::KillGateway => {
                gateway.signal("KILL");
                gateway.wait_exit(Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                gateway = fleet.start("gateway");
            }
            Fault::KillWorker => {
                workers[0].signal("KILL");
                workers[0].wait_exit(Duration::from_secs(10)).await;
                workers[0] = fleet.start("worker");
            }
            Fault::KillSweeper => {
                sweeper.signal("KILL");
                sweeper.wait_exit(Duration::from_secs(10)).await;
                sweeper = fleet.start("sweeper");
            }
            Fault::RestartNats => {
                fleet.nats.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.nats.restart().await;
            }
            Fault::RestartPostgres => {
                fleet.postgres.stop();
                tokio::time::sleep(Duration::from_secs(2)).await;
                fleet.postgres.restart().await;
            }
            Fault::PausePostgres => {
                fleet.postgres.signal_all("STOP");
                tokio::time::sleep(Duration::from_secs(4)).await; // past the pool's 1 s timeout
                fleet.postgres.signal_all("CONT");
            }
            Fault::SlowConnections => {
                let mut attackers = Vec::new();
                for _ in 0..400 {
                    if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port)).await {
                        let _ = stream.write_all(b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\n").await;
                        attackers.push(stream);
                    }
                }
                // Held past two header timeouts: the gateway closes them while the load goes on.
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(attackers);
            }
        }
        load.await.unwrap();
        sent.extend(events);
        wait_drained(&fleet.nats.url()).await;

        // Every 2xx is in the log (once: the event id is the key) and nothing else is.
        let pool = sqlx::PgPool::connect(&fleet.database_url).await.unwrap();
        let logged: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM webhook_events").fetch_all(&pool).await.unwrap();
        let logged: BTreeSet<String> = logged.into_iter().collect();
        let accepted_now = accepted.lock().unwrap().clone();
        let lost = accepted_now.difference(&logged).count();
        let unexpected = logged.difference(&accepted_now).count();
        // Attendance equals the rule over everything sent.
        let expected = workload::expected(&sent);
        let mut connection = pool.acquire().await.unwrap();
        let (mut mismatched, mut counted, mut expected_count) = (0, 0, 0);
        for (room, participants) in &expected {
            let stored = shared::store::read_model::load_room(&mut connection, room).await.unwrap();
            mismatched += participants.iter().filter(|(identity, a)| stored.get(*identity) != Some(*a)).count();
            mismatched += stored.keys().filter(|identity| !participants.contains_key(*identity)).count();
            counted += stored.values().map(|a| a.join_count + a.leave_count).sum::<i64>();
            expected_count += participants.values().map(|a| a.join_count + a.leave_count).sum::<i64>();
        }
        // Joins and leaves counted more than once.
        let doubled = (counted - expected_count).max(0);
        drop(connection);
        let dead_letters: i64 = {
            let js = async_nats::jetstream::new(async_nats::connect(fleet.nats.url()).await.unwrap());
            let mut dlq = js.get_stream("LIVEKIT_DLQ").await.unwrap();
            dlq.info().await.unwrap().state.messages as i64
        };
        report.push(format!(
            "| {fault:?} | {} | {} | {} | {lost} | {doubled} | {} |",
            sent.len(),
            accepted_now.len(),
            logged.len(),
            if mismatched == 0 { "exact".to_owned() } else { format!("{mismatched} participants differ") }
        ));
        assert_eq!(lost, 0, "{fault:?}: acknowledged events missing from the log");
        assert_eq!(unexpected, 0, "{fault:?}: events in the log that were never sent");
        assert_eq!(doubled, 0, "{fault:?}: joins or leaves counted twice");
        assert_eq!(mismatched, 0, "{fault:?}: attendance differs from the rule");
        assert_eq!(dead_letters, 0, "{fault:?}: faults must not dead-letter events");
        pool.close().await;
    }
    let report = report.join("\n");
    println!("{report}");
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    let _ = std::fs::create_dir_all(&results);
    let _ = std::fs::write(results.join("chaos.md"), format!("{report}\n"));

    for service in workers.iter().chain([&gateway, &sweeper]) {
        service.signal("TERM");
    }
}
