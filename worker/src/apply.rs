//! Applying a batch of webhook messages to PostgreSQL in one transaction.
//!
//! The batch's events go into the event log in one statement; when PostgreSQL refuses one's data,
//! the batch is rolled back and applied again with one savepoint per event, so a bad message is
//! rejected alone while its neighbours commit (and a good batch pays no savepoint). Meetings are locked first; each affected participant of a meeting is then
//! recomputed once from the log. A transient failure (connection, deadlock, serialization) fails the whole batch,
//! which is then redelivered; applying it again changes nothing that was already committed.
//!
//! Replicas do not queue behind each other: a batch takes the meetings no other transaction holds
//! and puts off the messages of the others ([`Applied::Deferred`]) to the consumer's next batch,
//! by when the other replica has committed. Only a message put off several times waits for its
//! meeting (`Input::wait_for_room`), so none is put off for ever. Order does not matter to the
//! attendance rule, so applying a message a batch later changes nothing but its latency.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use shared::domain::attendance::{Fact, FactKind};
use shared::domain::event::WebhookEvent;
use shared::domain::heartbeat::Heartbeat;
use shared::domain::policy::Policy;
use shared::domain::time::now_unix_ms;
use shared::nats::webhooks::WebhookMessage;
use shared::store::event_log::{self, LoggedEvent};
use shared::store::meetings::{HeartbeatAt, Locked};
use shared::store::presence_outbox::Cause;
use shared::store::recompute::ParticipantKey;
use shared::store::{self, heartbeats, lifecycle, meetings, recompute, report_outbox};
use sqlx::{PgConnection, PgPool};

/// One message to apply.
#[derive(Debug, Clone)]
pub struct Input {
    pub payload: Bytes,
    pub received_at_ms: Option<i64>,
    pub stream_sequence: u64,
    /// Trace context of the message's processing, carried into the presence outbox.
    pub traceparent: Option<String>,
    /// Wait for the message's meeting if another transaction holds it, rather than put it off.
    pub wait_for_room: bool,
}

/// Why a message can never be applied (it goes to the dead-letter stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code: `invalid_event`, `unstorable_event`.
    pub reason: &'static str,
    pub message: String,
}

/// What happened to one message of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Logged (a LiveKit event) or recorded (a heartbeat).
    Stored {
        event_type: String,
    },
    /// Its event id was already in the log: nothing changed.
    Duplicate,
    Rejected(Rejection),
    /// Never to be stored (acknowledged): `meeting_sealed` (its meeting's events were deleted
    /// after the retention), `identity_erased` (its person's data was erased) or, for a
    /// heartbeat, `no_meeting` (no meeting of its room was running at its time).
    Refused {
        reason: &'static str,
    },
    /// Another transaction held its meeting: nothing done, to be applied in a later batch.
    Deferred,
}

/// The event type heartbeats are counted under in metrics and traces.
const HEARTBEAT: &str = "client_heartbeat";

/// A message, read and checked.
#[expect(clippy::large_enum_variant, reason = "one short-lived value per message of a batch")]
enum Decoded {
    LiveKit { event: WebhookEvent, json: String, fact: Option<Fact> },
    Heartbeat(Heartbeat),
}

fn decode(input: &Input) -> Result<Decoded, Rejection> {
    let invalid = |message: String| Rejection { reason: "invalid_event", message };
    match WebhookMessage::decode(&input.payload, input.received_at_ms).map_err(|e| invalid(e.to_string()))? {
        WebhookMessage::Heartbeat(heartbeat) => Ok(Decoded::Heartbeat(heartbeat)),
        WebhookMessage::LiveKit { event, json } => {
            let fact = Fact::from_event(&event).map_err(|e| invalid(e.to_string()))?;
            Ok(Decoded::LiveKit { event, json, fact })
        }
    }
}

/// The meetings a batch must lock (created if new), split by whether the batch waits for them. A heartbeat names no meeting, so its candidates are locked: the meeting of its room
/// running at its time as stored, every meeting of its room in the batch (which may change which
/// one that is), and, for a heartbeat that waits, the meetings of its room another transaction
/// may be starting.
struct MeetingsToLock {
    wait_for: BTreeSet<String>,
    if_free: BTreeSet<String>,
}

async fn meetings_to_lock(
    pool: &PgPool,
    inputs: &[Input],
    decoded: &[Result<Decoded, Rejection>],
) -> Result<MeetingsToLock, sqlx::Error> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for decoded in decoded.iter().flatten() {
        if let Decoded::LiveKit { fact: Some(fact), .. } = decoded {
            names.insert(fact.room_sid.clone(), fact.room_name.clone());
        }
    }
    let heartbeats: Vec<(usize, &Heartbeat)> = decoded
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Ok(Decoded::Heartbeat(heartbeat)) => Some((i, heartbeat)),
            _ => None,
        })
        .collect();
    // The batch's meetings are created first, in their own statement, so that locking them
    // never waits on another transaction's uncommitted insert of the same meeting.
    let moments: Vec<HeartbeatAt> = heartbeats.iter().map(|(_, h)| heartbeat_at(h)).collect();
    let stored = meetings::create_meetings_and_find_heartbeats(pool, &names, &moments).await?;
    let mut locks = MeetingsToLock { wait_for: BTreeSet::new(), if_free: BTreeSet::new() };
    let mut lock = |room_sid: &str, waiting: bool| {
        if waiting { &mut locks.wait_for } else { &mut locks.if_free }.insert(room_sid.to_owned());
    };
    for (input, decoded) in inputs.iter().zip(decoded) {
        if let Ok(Decoded::LiveKit { fact: Some(fact), .. }) = decoded {
            lock(&fact.room_sid, input.wait_for_room);
        }
    }
    for ((i, heartbeat), stored) in heartbeats.into_iter().zip(stored) {
        let waiting = inputs[i].wait_for_room;
        if let Some(room_sid) = &stored.running {
            lock(room_sid, waiting);
        }
        if waiting {
            for room_sid in &stored.in_flight {
                lock(room_sid, true);
            }
        }
        for (room_sid, room_name) in &names {
            if *room_name == heartbeat.room_name {
                lock(room_sid, waiting);
            }
        }
    }
    Ok(locks)
}

fn heartbeat_at(heartbeat: &Heartbeat) -> HeartbeatAt<'_> {
    HeartbeatAt { room_name: &heartbeat.room_name, identity: &heartbeat.identity, at_ms: heartbeat.received_at_ms }
}

/// Applies the messages in one transaction and returns one outcome per message, in order.
/// `Err` means nothing was committed and every message should be retried.
///
/// Order inside the transaction: the events are logged and their participants and meetings
/// recomputed; only then is each heartbeat's meeting found (the batch may have started or ended
/// it), its heartbeat recorded, and the participants whose estimates it refuted recomputed.
pub async fn apply_batch(pool: &PgPool, inputs: &[Input], policy: &Policy) -> Result<Vec<Applied>, sqlx::Error> {
    let attempt = match apply_batch_logging(pool, inputs, policy, Logging::AllAtOnce).await {
        Err(Attempt::DataRefused) => apply_batch_logging(pool, inputs, policy, Logging::OneSavepointEach).await,
        attempt => attempt,
    };
    attempt.map_err(|failed| match failed {
        Attempt::Database(error) => error,
        // Not produced with a savepoint each; a failed batch (retried later) if it ever were.
        Attempt::DataRefused => sqlx::Error::Protocol("an event refused outside its savepoint".into()),
    })
}

/// How a batch logs its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logging {
    /// In one statement; if PostgreSQL refuses the data of one, the whole transaction is rolled
    /// back and the batch applied again with [`Logging::OneSavepointEach`]. Bad data is rare: the
    /// common batch pays no savepoint.
    AllAtOnce,
    /// One savepoint each, so that a bad event is rejected alone while the others are logged.
    OneSavepointEach,
}

/// Why an attempt at a batch committed nothing.
enum Attempt {
    Database(sqlx::Error),
    /// PostgreSQL refused the data of an event logged with [`Logging::AllAtOnce`].
    DataRefused,
}

impl From<sqlx::Error> for Attempt {
    fn from(error: sqlx::Error) -> Self {
        Attempt::Database(error)
    }
}

async fn apply_batch_logging(
    pool: &PgPool,
    inputs: &[Input],
    policy: &Policy,
    logging: Logging,
) -> Result<Vec<Applied>, Attempt> {
    let decoded: Vec<Result<Decoded, Rejection>> = inputs.iter().map(decode).collect();
    let to_lock = meetings_to_lock(pool, inputs, &decoded).await?;

    let mut tx = lifecycle::begin_holding_off_erasures(pool).await?;
    let locked = meetings::lock_meetings(&mut tx, &to_lock.wait_for, &to_lock.if_free).await?;
    let sealed = &locked.sealed;
    let erased = lifecycle::erased_among(&mut tx, &participants_of(&decoded)).await?;
    let is_erased = |room: &str, identity: &str| erased.contains(&(room.to_owned(), identity.to_owned()));

    let mut outcomes = Vec::with_capacity(inputs.len());
    // Participants to recompute → what caused it (for the presence outbox)
    let mut affected: BTreeMap<ParticipantKey, Cause> = BTreeMap::new();
    // Meetings whose room_started or room_finished was logged: their spans change
    let mut spans_changed: BTreeSet<String> = BTreeSet::new();
    let mut finished_meetings: Vec<(String, Cause)> = Vec::new();
    // Meetings the batch changes → the first cause, for their reports
    let mut changed_meetings: BTreeMap<String, Cause> = BTreeMap::new();
    // The batch's heartbeats: (index in `outcomes`, the heartbeat, its cause)
    let mut heartbeats_in_batch: Vec<(usize, Heartbeat, Cause)> = Vec::new();
    let mut to_log: Vec<ToLog> = Vec::new();
    let mut logged_ids: BTreeSet<String> = BTreeSet::new();
    for (input, decoded) in inputs.iter().zip(decoded) {
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(rejection) => {
                outcomes.push(Applied::Rejected(rejection));
                continue;
            }
        };
        match decoded {
            Decoded::Heartbeat(heartbeat) if is_erased(&heartbeat.room_name, &heartbeat.identity) => {
                outcomes.push(Applied::Refused { reason: "identity_erased" });
            }
            Decoded::Heartbeat(heartbeat) => {
                outcomes.push(Applied::Stored { event_type: HEARTBEAT.to_owned() });
                let cause = Cause { event_id: heartbeat.id.clone(), traceparent: input.traceparent.clone() };
                heartbeats_in_batch.push((outcomes.len() - 1, heartbeat, cause));
            }
            Decoded::LiveKit { fact: Some(fact), .. } if !locked.contains(&fact.room_sid) => {
                outcomes.push(Applied::Deferred);
            }
            Decoded::LiveKit { fact: Some(fact), .. } if sealed.contains(&fact.room_sid) => {
                outcomes.push(Applied::Refused { reason: "meeting_sealed" });
            }
            Decoded::LiveKit { event, .. } if participant_of(&event).is_some_and(|(r, i)| is_erased(r, i)) => {
                outcomes.push(Applied::Refused { reason: "identity_erased" });
            }
            Decoded::LiveKit { event, json, fact } => {
                if !logged_ids.insert(event.id.clone()) {
                    // The same event twice in one batch: the first one is logged.
                    outcomes.push(Applied::Duplicate);
                    continue;
                }
                outcomes.push(Applied::Duplicate); // until the insert says otherwise
                let cause = Cause { event_id: event.id.clone(), traceparent: input.traceparent.clone() };
                to_log.push(ToLog { outcome: outcomes.len() - 1, event, json, fact, cause, input });
            }
        }
    }

    let logged: Vec<LoggedEvent> = to_log
        .iter()
        .map(|one| LoggedEvent {
            event: &one.event,
            payload: &one.json,
            received_at_ms: one.input.received_at_ms,
            stream_sequence: Some(one.input.stream_sequence),
        })
        .collect();
    let inserted = insert_logged(&mut tx, &logged, logging).await?;
    for (one, inserted) in to_log.iter().zip(inserted) {
        outcomes[one.outcome] = match inserted {
            Err(rejection) => Applied::Rejected(rejection),
            Ok(false) => Applied::Duplicate,
            Ok(true) => {
                if let Some(fact) = &one.fact {
                    match (&fact.kind, fact.participant()) {
                        (FactKind::RoomFinished, _) => {
                            spans_changed.insert(fact.room_sid.clone());
                            changed_meetings.entry(fact.room_sid.clone()).or_insert_with(|| one.cause.clone());
                            finished_meetings.push((fact.room_sid.clone(), one.cause.clone()));
                        }
                        (FactKind::RoomStarted, _) => {
                            spans_changed.insert(fact.room_sid.clone());
                            changed_meetings.entry(fact.room_sid.clone()).or_insert_with(|| one.cause.clone());
                        }
                        (_, Some(participant)) => {
                            let key = ParticipantKey::new(fact.room_sid.as_str(), participant.identity.as_str());
                            affected.insert(key, one.cause.clone());
                        }
                        (_, None) => {}
                    }
                }
                Applied::Stored { event_type: one.event.event.clone() }
            }
        };
    }
    for (room_sid, cause) in finished_meetings {
        for identity in event_log::identities_in_meeting(&mut tx, &room_sid).await? {
            affected.entry(ParticipantKey::new(room_sid.as_str(), identity)).or_insert_with(|| cause.clone());
        }
    }
    recompute::recompute_participants(&mut tx, &affected).await?;
    // Their joins and leaves may have moved the spans of meetings that follow their participants.
    spans_changed.extend(
        affected.keys().map(|key| &key.room_sid).filter(|sid| locked.span_follows_participants.contains(*sid)).cloned(),
    );
    recompute::recompute_spans(&mut tx, &spans_changed).await?;

    let refuted = record_heartbeats(&mut tx, inputs, &locked, heartbeats_in_batch, &mut outcomes).await?;
    recompute::recompute_participants(&mut tx, &refuted).await?;
    for (key, cause) in affected.iter().chain(&refuted) {
        changed_meetings.entry(key.room_sid.clone()).or_insert_with(|| cause.clone());
    }
    report_outbox::record_changes(&mut tx, &changed_meetings, policy, now_unix_ms()).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The (room name, identity) an event is about, if any.
fn participant_of(event: &WebhookEvent) -> Option<(&str, &str)> {
    let room = event.room.as_ref().filter(|r| !r.name.is_empty())?;
    let participant = event.participant.as_ref().filter(|p| !p.identity.is_empty())?;
    Some((room.name.as_str(), participant.identity.as_str()))
}

/// Every (room name, identity) the batch's messages are about.
fn participants_of(decoded: &[Result<Decoded, Rejection>]) -> BTreeSet<(String, String)> {
    decoded
        .iter()
        .flatten()
        .filter_map(|d| match d {
            Decoded::LiveKit { event, .. } => participant_of(event),
            Decoded::Heartbeat(h) => Some((h.room_name.as_str(), h.identity.as_str())),
        })
        .map(|(room, identity)| (room.to_owned(), identity.to_owned()))
        .collect()
}

/// Records the batch's heartbeats, each in the meeting running at its time (found now, under
/// the locks and after the batch's events), the latest of each participant. A heartbeat whose
/// meeting another transaction holds is put off; so is one whose meeting is not certain yet
/// ([`meetings::HeartbeatMeeting::is_certain`]: its join or the next meeting's start may be on its way),
/// until it has been put off enough times to wait for its room: then it counts for the meeting
/// running, if any, and one that falls in no meeting is refused (`no_meeting`). Returns the
/// participants whose estimates the heartbeats refuted, each with its heartbeat as the cause.
async fn record_heartbeats(
    tx: &mut PgConnection,
    inputs: &[Input],
    locked: &Locked,
    batch: Vec<(usize, Heartbeat, Cause)>,
    outcomes: &mut [Applied],
) -> Result<BTreeMap<ParticipantKey, Cause>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(BTreeMap::new());
    }
    let moments: Vec<HeartbeatAt> = batch.iter().map(|(_, h, _)| heartbeat_at(h)).collect();
    let found = meetings::heartbeat_meetings(&mut *tx, &moments).await?;
    let mut latest: BTreeMap<ParticipantKey, (Heartbeat, Cause)> = BTreeMap::new();
    for ((outcome, heartbeat, cause), meeting) in batch.into_iter().zip(found) {
        let waited = inputs[outcome].wait_for_room;
        if !meeting.is_certain() && !waited {
            outcomes[outcome] = Applied::Deferred;
            continue;
        }
        let Some(room_sid) = meeting.running else {
            outcomes[outcome] = Applied::Refused { reason: "no_meeting" };
            continue;
        };
        if locked.sealed.contains(&room_sid) {
            continue;
        }
        if !locked.contains(&room_sid) {
            outcomes[outcome] = Applied::Deferred;
            continue;
        }
        let key = ParticipantKey::new(room_sid, heartbeat.identity.as_str());
        match latest.get(&key) {
            Some((kept, _)) if kept.received_at_ms > heartbeat.received_at_ms => {}
            _ => {
                latest.insert(key, (heartbeat, cause));
            }
        }
    }
    let to_record: Vec<(&str, &Heartbeat)> =
        latest.iter().map(|(key, (heartbeat, _))| (key.room_sid.as_str(), heartbeat)).collect();
    let refuted = heartbeats::record_heartbeats(&mut *tx, &to_record).await?;
    Ok(refuted
        .into_iter()
        .map(|key| {
            let cause = latest[&key].1.clone();
            (key, cause)
        })
        .collect())
}

/// A LiveKit event of the batch to log.
struct ToLog<'a> {
    /// Its index in the batch's outcomes.
    outcome: usize,
    event: WebhookEvent,
    json: String,
    fact: Option<Fact>,
    cause: Cause,
    input: &'a Input,
}

/// Logs the events: per event, whether it was new (`false`: its id was already logged), or why
/// PostgreSQL refused it ([`Logging`] says how).
async fn insert_logged(
    tx: &mut PgConnection,
    logged: &[LoggedEvent<'_>],
    logging: Logging,
) -> Result<Vec<Result<bool, Rejection>>, Attempt> {
    if logged.is_empty() {
        return Ok(Vec::new());
    }
    if logging == Logging::AllAtOnce {
        return match event_log::insert_events(&mut *tx, logged).await {
            Ok(inserted) => Ok(logged.iter().map(|one| Ok(inserted.contains(&one.event.id))).collect()),
            Err(error) if store::is_permanent(&error) => Err(Attempt::DataRefused),
            Err(error) => Err(Attempt::Database(error)),
        };
    }
    let mut results = Vec::with_capacity(logged.len());
    for one in logged {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        match event_log::insert_events(&mut savepoint, std::slice::from_ref(one)).await {
            Ok(inserted) => {
                savepoint.commit().await?;
                results.push(Ok(!inserted.is_empty()));
            }
            Err(error) if store::is_permanent(&error) => {
                savepoint.rollback().await?;
                results.push(Err(Rejection { reason: "unstorable_event", message: error.to_string() }));
            }
            Err(error) => return Err(Attempt::Database(error)),
        }
    }
    Ok(results)
}
