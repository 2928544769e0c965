//! Applying a batch of webhook messages to PostgreSQL in one transaction.
//!
//! The batch's events go into the event log in one statement; when PostgreSQL refuses one's data,
//! they are inserted again one savepoint each, so a bad message is rejected alone while its
//! neighbours commit. Rooms are locked first; each affected participant is then recomputed once
//! from the log. A transient failure (connection, deadlock, serialization) fails the whole batch,
//! which is then redelivered; applying it again changes nothing that was already committed.
//!
//! Replicas do not queue behind each other: a batch takes the rooms no other transaction holds
//! and puts off the messages of the others ([`Applied::Deferred`]) to the consumer's next batch,
//! by when the other replica has committed. Only a message put off several times waits for its
//! room (`Input::wait_for_room`), so none is put off for ever. Order does not matter to the
//! attendance rule, so applying a message a batch later changes nothing but its latency.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use shared::domain::attendance::{Fact, FactKind};
use shared::domain::event::WebhookEvent;
use shared::domain::heartbeat::Heartbeat;
use shared::nats::webhooks::WebhookMessage;
use shared::store::event_log::{self, LoggedEvent};
use shared::store::presence_outbox::Cause;
use shared::store::{self, heartbeats, recompute, rooms};
use sqlx::{PgConnection, PgPool};

/// One message to apply.
#[derive(Debug, Clone)]
pub struct Input {
    pub payload: Bytes,
    pub received_at_ms: Option<i64>,
    pub stream_sequence: u64,
    /// Trace context of the message's processing, carried into the presence outbox.
    pub traceparent: Option<String>,
    /// Wait for the message's room if another transaction holds it, rather than put it off.
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
    /// Another transaction held its room: nothing done, to be applied in a later batch.
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

impl Decoded {
    /// The room whose lock applying this message needs.
    fn room_to_lock(&self) -> Option<&str> {
        match self {
            Decoded::LiveKit { fact, .. } => fact.as_ref().map(|f| f.room_name.as_str()),
            Decoded::Heartbeat(heartbeat) => Some(&heartbeat.room_name),
        }
    }
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

/// Applies the messages in one transaction and returns one outcome per message, in order.
/// `Err` means nothing was committed and every message should be retried.
pub async fn apply_batch(pool: &PgPool, inputs: &[Input]) -> Result<Vec<Applied>, sqlx::Error> {
    let decoded: Vec<Result<Decoded, Rejection>> = inputs.iter().map(decode).collect();
    let rooms_of = |waiting: bool| -> BTreeSet<String> {
        inputs
            .iter()
            .zip(&decoded)
            .filter(|(input, _)| input.wait_for_room == waiting)
            .filter_map(|(_, decoded)| decoded.as_ref().ok()?.room_to_lock())
            .map(str::to_owned)
            .collect()
    };
    let (wait_for, if_free) = (rooms_of(true), rooms_of(false));
    rooms::create_rooms(pool, &wait_for.union(&if_free).cloned().collect()).await?;

    let mut tx = pool.begin().await?;
    let locked = rooms::lock_rooms(&mut tx, &wait_for, &if_free).await?;

    let mut outcomes = Vec::with_capacity(inputs.len());
    // (room, identity) → what caused the recompute (for the presence outbox)
    let mut affected: BTreeMap<(String, String), Cause> = BTreeMap::new();
    let mut finished_instances: Vec<(String, String, Cause)> = Vec::new();
    // (room, identity) → the latest heartbeat of the batch, and its cause
    let mut latest_heartbeats: BTreeMap<(String, String), (Heartbeat, Cause)> = BTreeMap::new();
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
        if decoded.room_to_lock().is_some_and(|room| !locked.contains(room)) {
            outcomes.push(Applied::Deferred);
            continue;
        }
        match decoded {
            Decoded::Heartbeat(heartbeat) => {
                // Heartbeats update the participant, not the log. All of the batch's are recorded
                // at once, below; the latest of a participant is its cause.
                let cause = Cause { event_id: heartbeat.id.clone(), traceparent: input.traceparent.clone() };
                let key = (heartbeat.room_name.clone(), heartbeat.identity.clone());
                match latest_heartbeats.get(&key) {
                    Some((latest, _)) if latest.received_at_ms > heartbeat.received_at_ms => {}
                    _ => {
                        latest_heartbeats.insert(key, (heartbeat, cause));
                    }
                }
                outcomes.push(Applied::Stored { event_type: HEARTBEAT.to_owned() });
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
    let inserted = insert_logged(&mut tx, &logged).await?;
    for (one, inserted) in to_log.iter().zip(inserted) {
        outcomes[one.outcome] = match inserted {
            Err(rejection) => Applied::Rejected(rejection),
            Ok(false) => Applied::Duplicate,
            Ok(true) => {
                if let Some(fact) = &one.fact {
                    match (&fact.kind, fact.participant()) {
                        (FactKind::RoomFinished, _) => {
                            finished_instances.push((fact.room_name.clone(), fact.room_sid.clone(), one.cause.clone()))
                        }
                        (_, Some(participant)) => {
                            affected.insert((fact.room_name.clone(), participant.identity.clone()), one.cause.clone());
                        }
                        (_, None) => {}
                    }
                }
                Applied::Stored { event_type: one.event.event.clone() }
            }
        };
    }

    let latest: Vec<&Heartbeat> = latest_heartbeats.values().map(|(heartbeat, _)| heartbeat).collect();
    for participant in heartbeats::record_heartbeats(&mut tx, &latest).await? {
        let cause = latest_heartbeats[&participant].1.clone();
        affected.entry(participant).or_insert(cause);
    }
    for (room_name, room_sid, cause) in finished_instances {
        for identity in event_log::identities_in_room_instance(&mut tx, &room_name, &room_sid).await? {
            affected.entry((room_name.clone(), identity)).or_insert_with(|| cause.clone());
        }
    }
    recompute::recompute_participants(&mut tx, &affected).await?;
    tx.commit().await?;
    Ok(outcomes)
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

/// Logs the events in one statement. If PostgreSQL refuses the data of one of them, finds which,
/// one savepoint each, so that a bad event is rejected alone while the others are logged.
/// Per event: whether it was new (`false`: its id was already logged), or why it was refused.
async fn insert_logged(
    tx: &mut PgConnection,
    logged: &[LoggedEvent<'_>],
) -> Result<Vec<Result<bool, Rejection>>, sqlx::Error> {
    if logged.is_empty() {
        return Ok(Vec::new());
    }
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
    match event_log::insert_events(&mut savepoint, logged).await {
        Ok(inserted) => {
            savepoint.commit().await?;
            return Ok(logged.iter().map(|one| Ok(inserted.contains(&one.event.id))).collect());
        }
        Err(error) if store::is_permanent(&error) => savepoint.rollback().await?,
        Err(error) => return Err(error),
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
            Err(error) => return Err(error),
        }
    }
    Ok(results)
}
