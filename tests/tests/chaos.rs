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

use testkit::exactness::{self, Verdict};
use testkit::fleet::Fleet;
use testkit::nats::PrivateNats;
use testkit::postgres::{PrivatePostgres, TestDatabase};
use testkit::webhook_load::{LoadShape, WebhookLoad};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_each_fault_exactly_once() {
    let rooms: usize = std::env::var("CHAOS_ROOMS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let people: usize = std::env::var("CHAOS_PEOPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    // The servers the services run against are private: the faults stop them.
    let mut nats = PrivateNats::start().await;
    let mut postgres = PrivatePostgres::start().await;
    let database = TestDatabase::create(&postgres.url("postgres")).await;
    let fleet = Fleet::new(nats.url(), database.url.clone());
    let mut gateway = fleet.start("gateway");
    let mut workers = [fleet.start("worker"), fleet.start("worker")];
    let mut sweeper = fleet.start("sweeper");
    fleet.wait_gateway_ready().await;

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
    let mut report = vec![exactness::TABLE_HEADER.to_owned()];
    for (round, fault) in faults.into_iter().enumerate() {
        let mut events = workload::meetings(0xC4A05 + round as u64, rooms, people, 1_790_000_000_000);
        fastrand::shuffle(&mut events);
        eprintln!("[chaos] {fault:?} under a load of {} events", events.len());
        // One event at a time, each retried until a 2xx, as fast as the gateway answers.
        let shape = LoadShape { senders: 1, rate: None };
        let load = WebhookLoad::start(&fleet.base_url(), events.clone().into_iter(), shape, accepted.clone());
        // Let the load run, then strike.
        testkit::eventually(Duration::from_secs(60), "the load to be under way", || {
            let under_way = load.taken() > events.len() / 4;
            async move { under_way.then_some(()) }
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
                nats.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                nats.restart().await;
            }
            Fault::RestartPostgres => {
                postgres.stop();
                tokio::time::sleep(Duration::from_secs(2)).await;
                postgres.restart().await;
            }
            Fault::PausePostgres => {
                postgres.signal_all("STOP");
                tokio::time::sleep(Duration::from_secs(4)).await; // past the pool's 1 s timeout
                postgres.signal_all("CONT");
            }
            Fault::SlowConnections => {
                let mut attackers = Vec::new();
                for _ in 0..400 {
                    if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", fleet.gateway_port)).await {
                        let _ = stream.write_all(b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\n").await;
                        attackers.push(stream);
                    }
                }
                // Held past two header timeouts: the gateway closes them while the load goes on.
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(attackers);
            }
        }
        let outcome = load.finish().await;
        sent.extend(outcome.sent);
        fleet.wait_drained().await;

        let accepted_now = accepted.lock().unwrap().clone();
        let verdict = Verdict::check(&fleet, &sent, &accepted_now).await;
        report.push(verdict.row(&format!("{fault:?}"), &outcome.failures));
        verdict.assert_exact(&format!("{fault:?}"));
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
