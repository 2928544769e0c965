//! The cluster chaos: the system on a local 3-node JetStream cluster, every stream with 3
//! replicas and every service given all three URLs, under a steady load of signed webhooks
//! (each retried until a 2xx, as LiveKit retries). One fault at a time: SIGKILL the webhook
//! stream's leader, then start it again; SIGKILL a follower, then start it again; restart every
//! node in turn with SIGTERM (a rolling upgrade), each back and caught up before the next.
//! After each, once the load stopped and the workers drained: every event that got a 2xx is in
//! the event log exactly once, attendance equals what the rule gives for the events sent, and
//! nothing was dead-lettered (as the stream says and as `worker dlq list --json` says). The
//! longest time an event spent failing (503s, refused connections) is printed per fault.
//!
//! `make test` runs a short version; `make chaos` a larger one (`CHAOS_ROOMS`, `CHAOS_PEOPLE`
//! size each fault's workload, `CHAOS_RATE` is the load's events per second).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use testkit::exactness::{self, Verdict};
use testkit::fleet::Fleet;
use testkit::nats_cluster::NatsCluster;
use testkit::postgres::TestDatabase;
use testkit::webhook_load::{LoadShape, WebhookLoad};
use testkit::workload::{self, Event};

const WEBHOOKS: &str = "LIVEKIT_WEBHOOKS";
/// The streams the gateway, workers and sweeper create as they start (any other stream they
/// create must have 3 replicas too).
const STREAMS: [&str; 4] = [WEBHOOKS, "LIVEKIT_WEBHOOKS_HEARTBEATS", "LIVEKIT_DLQ", "LIVEKIT_PRESENCE"];
/// The workers' durable consumers (of the webhook stream and of the heartbeat stream).
const CONSUMERS: [(&str, &str); 2] =
    [(WEBHOOKS, "attendance-worker"), ("LIVEKIT_WEBHOOKS_HEARTBEATS", "attendance-worker-heartbeats")];
/// How long the load goes on after the cluster is whole again, to show it serves as before.
const TAIL: Duration = Duration::from_secs(2);
/// Time enough for an election (nats-server waits 4 to 9 s without a leader's heartbeat) and a
/// node's catching up, on a busy 2-core machine.
const RECOVERY: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the webhook stream's leader; start it again once another node leads.
    KillStreamLeader,
    /// SIGKILL a node that follows the webhook stream's leader; start it again.
    KillFollower,
    /// Each node in turn: SIGTERM, start again, wait until it is current.
    RollingRestart,
}

/// What a fault took, as measured.
struct Timing {
    fault: Fault,
    /// From the SIGKILL of the leader to another node leading the webhook stream.
    election: Option<Duration>,
    /// From the first signal until every node was back and current.
    whole_again: Duration,
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Events of `rooms` × `people` meetings, shuffled, then more of the same (other rooms), for as
/// long as the load is asked for: the load outlasts a fault however long the fault takes.
fn endless_workload(round: u64, rooms: usize, people: usize) -> impl Iterator<Item = Event> + Send + 'static {
    (0u64..).flat_map(move |chunk| {
        let mut events = workload::meetings(0xC1_0000 + (round << 8) + chunk, rooms, people, 1_790_000_000_000);
        fastrand::shuffle(&mut events);
        events
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_losing_cluster_nodes_exactly_once() {
    let (rooms, people) = (knob("CHAOS_ROOMS", 3), knob("CHAOS_PEOPLE", 4));
    let rate = knob("CHAOS_RATE", 50) as f64;
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    let database = TestDatabase::create_shared().await;
    let mut fleet = Fleet::new(cluster.urls(), database.url.clone());
    fleet.extra_env = vec![
        ("WEBHOOK_STREAM_REPLICAS", "3".into()),
        ("DLQ_STREAM_REPLICAS", "3".into()),
        ("PRESENCE_STREAM_REPLICAS", "3".into()),
        ("REPORT_STREAM_REPLICAS", "3".into()),
    ];
    let gateway = fleet.start("gateway");
    let workers = [fleet.start("worker"), fleet.start("worker")];
    let sweeper = fleet.start("sweeper");
    fleet.wait_gateway_ready().await;
    assert_replicated(&cluster).await;
    eprintln!("[cluster-chaos] cluster and fleet up after {:.1} s", started.elapsed().as_secs_f64());

    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut sent: Vec<Event> = Vec::new();
    let mut report = vec![exactness::TABLE_HEADER.to_owned()];
    let mut timings = Vec::new();
    let chunk = workload::meetings(0, rooms, people, 0).len();
    for (round, fault) in [Fault::KillStreamLeader, Fault::KillFollower, Fault::RollingRestart].into_iter().enumerate()
    {
        let round_started = Instant::now();
        eprintln!("[cluster-chaos] {fault:?} under a load of {rate} events/s");
        let shape = LoadShape { senders: 4, rate: Some(rate) };
        let load = WebhookLoad::start(
            &fleet.base_url(),
            endless_workload(round as u64, rooms, people),
            shape,
            accepted.clone(),
        );
        testkit::eventually(Duration::from_secs(60), "the load to be under way", || {
            let under_way = load.taken() > chunk / 4;
            async move { under_way.then_some(()) }
        })
        .await;
        let timing = strike(&mut cluster, fault).await;
        eprintln!(
            "[cluster-chaos] {fault:?}: election {}, whole again after {:.1} s",
            timing.election.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            timing.whole_again.as_secs_f64()
        );
        timings.push(timing);
        // Some load on the whole cluster again, and the first workload complete.
        tokio::time::sleep(TAIL).await;
        testkit::eventually(Duration::from_secs(300), "the load to send its first workload", || {
            let done = load.taken() >= chunk;
            async move { done.then_some(()) }
        })
        .await;
        let outcome = load.stop().await;
        eprintln!("[cluster-chaos] {fault:?}: {}", outcome.failures.summary());
        sent.extend(outcome.sent);
        fleet.wait_drained().await;

        let accepted_now = accepted.lock().unwrap().clone();
        let verdict = Verdict::check(&fleet, &sent, &accepted_now).await;
        let listed = fleet.dead_letters_listed();
        report.push(verdict.row(&format!("{fault:?}"), &outcome.failures));
        eprintln!("[cluster-chaos] {fault:?} done in {:.1} s", round_started.elapsed().as_secs_f64());
        verdict.assert_exact(&format!("{fault:?}"));
        assert!(listed.is_empty(), "{fault:?}: `worker dlq list --json` lists dead letters: {listed:?}");
    }
    let mut report = report.join("\n");
    report.push_str("\n\n| fault | stream leader elected after | cluster whole again after |\n|---|---:|---:|\n");
    for timing in &timings {
        let election = timing.election.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        report.push_str(&format!("| {:?} | {election} | {:.1} s |\n", timing.fault, timing.whole_again.as_secs_f64()));
    }
    println!("{report}");
    eprintln!("[cluster-chaos] all faults in {:.1} s", started.elapsed().as_secs_f64());
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    let _ = std::fs::create_dir_all(&results);
    let _ = std::fs::write(results.join("cluster-chaos.md"), &report);

    for service in workers.iter().chain([&gateway, &sweeper]) {
        service.signal("TERM");
    }
    drop((gateway, workers, sweeper));
    database.drop_database().await;
}

/// Every stream has 3 replicas, and the workers' consumers the same (they follow their stream).
async fn assert_replicated(cluster: &NatsCluster) {
    let js = cluster.jetstream();
    for stream in STREAMS {
        // The sweeper creates the presence stream as it starts: give it time.
        testkit::eventually(Duration::from_secs(30), &format!("stream {stream}"), || async {
            js.get_stream(stream).await.ok().map(|_| ())
        })
        .await;
    }
    for stream in cluster.stream_names().await {
        // A stream the meta leader lists may have no leader of its own for a moment after its
        // creation, and be "not found" meanwhile.
        let replicas = testkit::eventually(Duration::from_secs(30), &format!("stream {stream}'s info"), || async {
            js.get_stream(&stream).await.ok().map(|stream| stream.cached_info().config.num_replicas)
        })
        .await;
        assert_eq!(replicas, 3, "stream {stream} has {replicas} replicas");
    }
    for (stream, consumer) in CONSUMERS {
        let peers = testkit::eventually(Duration::from_secs(30), &format!("consumer {consumer}"), || async {
            let info = js.get_stream(stream).await.ok()?.consumer_info(consumer).await.ok()?;
            // The peers: the leader and the others (which, while a peer joins, may list the
            // leader too).
            let cluster = info.cluster?;
            let leader = cluster.leader?;
            Some(cluster.replicas.into_iter().map(|peer| peer.name).chain([leader]).collect::<BTreeSet<_>>().len())
        })
        .await;
        assert_eq!(peers, 3, "consumer {consumer} of {stream} has {peers} replicas");
    }
}

/// Waits until every node is up and healthy and every stream led and current.
async fn wait_whole(cluster: &NatsCluster) {
    for node in 0..cluster.size() {
        cluster.wait_healthy(node, RECOVERY).await;
    }
    for stream in cluster.stream_names().await {
        cluster.wait_stream_current(&stream, RECOVERY).await;
    }
}

async fn strike(cluster: &mut NatsCluster, fault: Fault) -> Timing {
    let leader = cluster.wait_stream_current(WEBHOOKS, RECOVERY).await;
    let meta_leader = cluster.meta_leader().await;
    let struck = Instant::now();
    let mut election = None;
    match fault {
        Fault::KillStreamLeader => {
            eprintln!(
                "[cluster-chaos] SIGKILL {} (leads {WEBHOOKS}; meta leader: {})",
                cluster.name(leader),
                meta_leader.map_or("?", |n| cluster.name(n))
            );
            let killed_at = SystemTime::now();
            cluster.kill(leader);
            let elected = cluster.wait_new_stream_leader(WEBHOOKS, leader, RECOVERY).await;
            // The server's own time of the election; else when the kit saw it.
            election = Some(
                elected
                    .since
                    .and_then(|since| since.duration_since(killed_at).ok())
                    .unwrap_or_else(|| struck.elapsed()),
            );
            eprintln!("[cluster-chaos] {} leads {WEBHOOKS} now", cluster.name(elected.node));
            cluster.restart(leader).await;
        }
        Fault::KillFollower => {
            let follower = (0..cluster.size()).find(|&n| n != leader).expect("a follower");
            eprintln!(
                "[cluster-chaos] SIGKILL {} (follows {} on {WEBHOOKS}; meta leader: {})",
                cluster.name(follower),
                cluster.name(leader),
                meta_leader.map_or("?", |n| cluster.name(n))
            );
            cluster.kill(follower);
            // Down long enough for the leader to go on without it.
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.restart(follower).await;
        }
        Fault::RollingRestart => {
            for node in 0..cluster.size() {
                eprintln!("[cluster-chaos] SIGTERM {} (rolling restart)", cluster.name(node));
                let stopped = Instant::now();
                cluster.stop(node).await;
                cluster.restart(node).await;
                wait_whole(cluster).await;
                eprintln!(
                    "[cluster-chaos] {} back and current after {:.1} s",
                    cluster.name(node),
                    stopped.elapsed().as_secs_f64()
                );
            }
        }
    }
    wait_whole(cluster).await;
    Timing { fault, election, whole_again: struck.elapsed() }
}
