//! A load of signed webhooks through the gateway, sent the way LiveKit sends them: an event that
//! fails (a 5xx, a refused connection, a timeout) is sent again until it gets a 2xx. It records
//! which events were acknowledged (what the exactness checks compare the event log with) and how
//! the failures fell: the longest any event waited through failed attempts, which is how long
//! the system was unavailable as LiveKit saw it.
//!
//! Invariant: an event is in `accepted` only after the gateway answered it with a 2xx, and every
//! event the load took from its source is retried until it is (a 4xx fails the test: valid
//! events must never be refused).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::livekit::sign_now;
use crate::workload::Event;

/// LiveKit's pause before sending a failed webhook again (here: until it gets a 2xx).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How the load is sent.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Events in flight at once (each sender retries its event until a 2xx, then takes the next).
    pub senders: usize,
    /// At most this many new events a second (all senders together); `None` for as fast as the
    /// gateway answers.
    pub rate: Option<f64>,
}

/// What the load saw of the system's failures.
#[derive(Debug, Clone, Default)]
pub struct FailureStats {
    /// Requests sent, retries included.
    pub attempts: u64,
    /// Answers 503 (the gateway could not get JetStream's acknowledgement in time).
    pub unavailable: u64,
    /// Other 5xx answers.
    pub other_5xx: u64,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub no_answer: u64,
    /// The longest time one event spent failing: from its first failed attempt to its 2xx.
    pub longest_failure_window: Duration,
}

impl FailureStats {
    fn add(&mut self, other: &FailureStats) {
        self.attempts += other.attempts;
        self.unavailable += other.unavailable;
        self.other_5xx += other.other_5xx;
        self.no_answer += other.no_answer;
        self.longest_failure_window = self.longest_failure_window.max(other.longest_failure_window);
    }

    /// `attempts, 503s, other 5xx, no answer, longest window`, for a report's line.
    pub fn summary(&self) -> String {
        format!(
            "{} requests, {} × 503, {} × other 5xx, {} unanswered; longest failure window {:.2} s",
            self.attempts,
            self.unavailable,
            self.other_5xx,
            self.no_answer,
            self.longest_failure_window.as_secs_f64()
        )
    }
}

/// What a finished load sent and saw.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// Every event the load took from its source, each acknowledged in the end.
    pub sent: Vec<Event>,
    pub failures: FailureStats,
}

type EventSource = Box<dyn Iterator<Item = Event> + Send>;

/// A running load; see the module.
pub struct WebhookLoad {
    source: Arc<Mutex<EventSource>>,
    sent: Arc<Mutex<Vec<Event>>>,
    taken: Arc<AtomicUsize>,
    /// Set: senders take no new event (each finishes the one it has).
    stop: Arc<AtomicBool>,
    /// Set: the rate no longer applies.
    unpaced: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<FailureStats>>,
}

impl WebhookLoad {
    /// Starts sending `events` to the gateway at `base_url`, adding each acknowledged event's id
    /// to `accepted`.
    pub fn start(
        base_url: &str,
        events: impl Iterator<Item = Event> + Send + 'static,
        shape: LoadShape,
        accepted: Arc<Mutex<BTreeSet<String>>>,
    ) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        let source: Arc<Mutex<EventSource>> = Arc::new(Mutex::new(Box::new(events)));
        let (sent, taken) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
        let (stop, unpaced) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let pace = shape.rate.map(|rate| {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Arc::new(tokio::sync::Mutex::new(ticker))
        });
        let senders = (0..shape.senders.max(1))
            .map(|_| {
                let sender = Sender {
                    http: http.clone(),
                    url: format!("{base_url}/webhooks/livekit"),
                    source: source.clone(),
                    sent: sent.clone(),
                    taken: taken.clone(),
                    stop: stop.clone(),
                    unpaced: unpaced.clone(),
                    pace: pace.clone(),
                    accepted: accepted.clone(),
                };
                tokio::spawn(sender.run())
            })
            .collect();
        WebhookLoad { source, sent, taken, stop, unpaced, senders }
    }

    /// Events taken from the source so far (acknowledged or still being retried).
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }

    /// Whether every sender has finished (the source ran out).
    pub fn is_finished(&self) -> bool {
        self.senders.iter().all(|sender| sender.is_finished())
    }

    /// Takes no new event; returns once every event taken got its 2xx.
    pub async fn stop(self) -> LoadOutcome {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Sends the rest of the source as fast as the gateway answers; returns once every event got
    /// its 2xx. For a finite source.
    pub async fn finish(self) -> LoadOutcome {
        self.unpaced.store(true, Ordering::Relaxed);
        self.join().await
    }

    async fn join(self) -> LoadOutcome {
        let mut failures = FailureStats::default();
        for sender in self.senders {
            failures.add(&sender.await.expect("a sender panicked"));
        }
        drop(self.source);
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        LoadOutcome { sent, failures }
    }
}

/// One sender: takes an event, sends it until a 2xx, takes the next.
struct Sender {
    http: reqwest::Client,
    url: String,
    source: Arc<Mutex<EventSource>>,
    sent: Arc<Mutex<Vec<Event>>>,
    taken: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    unpaced: Arc<AtomicBool>,
    pace: Option<Arc<tokio::sync::Mutex<tokio::time::Interval>>>,
    accepted: Arc<Mutex<BTreeSet<String>>>,
}

impl Sender {
    async fn run(self) -> FailureStats {
        let mut stats = FailureStats::default();
        loop {
            if let Some(pace) = &self.pace
                && !self.unpaced.load(Ordering::Relaxed)
            {
                pace.lock().await.tick().await;
            }
            if self.stop.load(Ordering::Relaxed) {
                return stats;
            }
            let Some(event) = self.source.lock().unwrap().next() else { return stats };
            self.taken.fetch_add(1, Ordering::Relaxed);
            self.sent.lock().unwrap().push(event.clone());
            self.send_until_acknowledged(&event, &mut stats).await;
        }
    }

    async fn send_until_acknowledged(&self, event: &Event, stats: &mut FailureStats) {
        let mut first_failure: Option<Instant> = None;
        loop {
            stats.attempts += 1;
            let started = Instant::now();
            let response = self
                .http
                .post(&self.url)
                .header("Authorization", sign_now(&event.body))
                .body(event.body.clone())
                .send()
                .await;
            match response.map(|r| r.status().as_u16()) {
                Ok(200..=299) => {
                    self.accepted.lock().unwrap().insert(event.id.clone());
                    if let Some(first) = first_failure {
                        stats.longest_failure_window = stats.longest_failure_window.max(first.elapsed());
                    }
                    return;
                }
                Ok(503) => stats.unavailable += 1,
                Ok(status) => {
                    assert!(status >= 500, "a {status} for the valid event {}", event.id);
                    stats.other_5xx += 1;
                }
                Err(_) => stats.no_answer += 1,
            }
            first_failure.get_or_insert(started);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
