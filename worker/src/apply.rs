//! Applying a batch of webhook messages to PostgreSQL in one transaction.
//!
//! The batch's events go into the event log in one statement; when PostgreSQL refuses one's data,
//! they are inserted again one savepoint each, so a bad message is rejected alone while its
//! neighbours commit. Rooms are locked first; each affected participant is then recomputed once from the log. A
//! transient failure (connection, deadlock, serialization) fails the whole batch, which is then
//! redelivered; applying it again changes nothing that was already committed.
//!
//! Replicas do not queue behind each other: a batch takes the rooms no other transaction holds
//! and puts off the messages of the others ([`Applied::Deferred`]) to the consumer's next batch,
//! by when the other replica has committed. Only a message put off several times waits for its
//! room (`Input::wait_for_room`), so none is put off for ever. Order does not matter to the
//! attendance rule, so applying a message a batch later changes nothing but its latency.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use shared::attendance::{Fact, FactKind};
use shared::event::{HEARTBEAT_EVENT, WebhookEvent};
use shared::storage::{self, LoggedEvent};
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
    Stored {
        event_type: String,
    },
    /// Its event id was already in the log: nothing changed.
    Duplicate,
    Rejected(Rejection),
    /// Another transaction held its room: nothing done, to be applied in a later batch.
    Deferred,
}

struct Decoded {
    event: WebhookEvent,
    fact: Option<Fact>,
    payload: String,
}

impl Decoded {
    /// A client heartbeat (from the gateway, not LiveKit): (room, identity).
    fn heartbeat(&self) -> Option<(&str, &str)> {
        if self.event.event != HEARTBEAT_EVENT {
            return None;
        }
        Some((self.event.room.as_ref()?.name.as_str(), self.event.participant.as_ref()?.identity.as_str()))
    }

    /// The room whose lock applying this message needs.
    fn room_to_lock(&self) -> Option<&str> {
        self.fact.as_ref().map(|f| f.room_name.as_str()).or_else(|| self.heartbeat().map(|(room, _)| room))
    }
}

fn decode(payload: &[u8]) -> Result<Decoded, Rejection> {
    let invalid = |message: String| Rejection { reason: "invalid_event", message };
    let text = std::str::from_utf8(payload).map_err(|_| invalid("the payload is not UTF-8".into()))?;
    let event = WebhookEvent::parse(payload).map_err(|e| invalid(e.to_string()))?;
    let fact = Fact::from_event(&event).map_err(|e| invalid(e.to_string()))?;
    let decoded = Decoded { fact, payload: text.to_owned(), event };
    if decoded.event.event == HEARTBEAT_EVENT && decoded.heartbeat().is_none_or(|(r, i)| r.is_empty() || i.is_empty()) {
        return Err(invalid("a heartbeat needs a room name and an identity".into()));
    }
    Ok(decoded)
}

/// Applies the messages in one transaction and returns one outcome per message, in order.
/// `Err` means nothing was committed and every message should be retried.
pub async fn apply_batch(pool: &PgPool, inputs: &[Input]) -> Result<Vec<Applied>, sqlx::Error> {
    let decoded: Vec<Result<Decoded, Rejection>> = inputs.iter().map(|input| decode(&input.payload)).collect();
    let rooms = |waiting: bool| -> BTreeSet<String> {
        inputs
            .iter()
            .zip(&decoded)
            .filter(|(input, _)| input.wait_for_room == waiting)
            .filter_map(|(_, decoded)| decoded.as_ref().ok()?.room_to_lock())
            .map(str::to_owned)
            .collect()
    };
    let (wait_for, if_free) = (rooms(true), rooms(false));
    storage::create_rooms(pool, &wait_for.union(&if_free).cloned().collect()).await?;

    let mut tx = pool.begin().await?;
    let locked = storage::lock_free_rooms(&mut tx, &wait_for, &if_free).await?;

    let mut outcomes = Vec::with_capacity(inputs.len());
    // (room, identity) → what caused the recompute (for the presence outbox)
    let mut affected: BTreeMap<(String, String), storage::Cause> = BTreeMap::new();
    let mut finished_instances: Vec<(String, String, storage::Cause)> = Vec::new();
    // (room, identity) → the latest heartbeat of the batch: (received at, its cause)
    let mut heartbeats: BTreeMap<(String, String), (i64, storage::Cause)> = BTreeMap::new();
    // The events to log: (index in `outcomes`, the event, its cause, its input)
    let mut to_log: Vec<(usize, Decoded, storage::Cause, &Input)> = Vec::new();
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
        let cause = storage::Cause { event_id: decoded.event.id.clone(), traceparent: input.traceparent.clone() };
        if let Some((room, identity)) = decoded.heartbeat() {
            // Heartbeats are not LiveKit events: they update the participant, not the log. All of
            // the batch's are recorded at once, below; the latest of a participant is its cause.
            let at_ms = input.received_at_ms.unwrap_or_else(shared::now_unix_ms);
            let latest = heartbeats.entry((room.to_owned(), identity.to_owned())).or_insert((at_ms, cause.clone()));
            if at_ms >= latest.0 {
                *latest = (at_ms, cause);
            }
            outcomes.push(Applied::Stored { event_type: HEARTBEAT_EVENT.to_owned() });
            continue;
        }
        if !logged_ids.insert(decoded.event.id.clone()) {
            // The same event twice in one batch: the first one is logged.
            outcomes.push(Applied::Duplicate);
            continue;
        }
        outcomes.push(Applied::Duplicate); // until the insert says otherwise
        to_log.push((outcomes.len() - 1, decoded, cause, input));
    }

    let logged: Vec<LoggedEvent> = to_log
        .iter()
        .map(|(_, decoded, _, input)| LoggedEvent {
            event: &decoded.event,
            payload: &decoded.payload,
            received_at_ms: input.received_at_ms,
            stream_sequence: Some(input.stream_sequence),
        })
        .collect();
    let inserted = insert_logged(&mut tx, &logged).await?;
    for ((index, decoded, cause, _), inserted) in to_log.iter().zip(inserted) {
        match inserted {
            Err(rejection) => outcomes[*index] = Applied::Rejected(rejection),
            Ok(false) => outcomes[*index] = Applied::Duplicate,
            Ok(true) => {
                if let Some(fact) = &decoded.fact {
                    match (&fact.kind, fact.participant()) {
                        (FactKind::RoomFinished, _) => {
                            finished_instances.push((fact.room_name.clone(), fact.room_sid.clone(), cause.clone()))
                        }
                        (_, Some(participant)) => {
                            affected.insert((fact.room_name.clone(), participant.identity.clone()), cause.clone());
                        }
                        (_, None) => {}
                    }
                }
                outcomes[*index] = Applied::Stored { event_type: decoded.event.event.clone() };
            }
        }
    }

    let latest: Vec<(&str, &str, i64)> =
        heartbeats.iter().map(|((room, identity), (at_ms, _))| (room.as_str(), identity.as_str(), *at_ms)).collect();
    for participant in storage::record_heartbeats(&mut tx, &latest).await? {
        let cause = heartbeats[&participant].1.clone();
        affected.entry(participant).or_insert(cause);
    }
    for (room_name, room_sid, cause) in finished_instances {
        for identity in storage::identities_in_room_instance(&mut tx, &room_name, &room_sid).await? {
            affected.entry((room_name.clone(), identity)).or_insert_with(|| cause.clone());
        }
    }
    storage::recompute_participants(&mut tx, &affected).await?;
    tx.commit().await?;
    Ok(outcomes)
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
    match storage::insert_events(&mut savepoint, logged).await {
        Ok(inserted) => {
            savepoint.commit().await?;
            return Ok(logged.iter().map(|one| Ok(inserted.contains(&one.event.id))).collect());
        }
        Err(error) if is_permanent(&error) => savepoint.rollback().await?,
        Err(error) => return Err(error),
    }
    let mut results = Vec::with_capacity(logged.len());
    for one in logged {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        match storage::insert_events(&mut savepoint, std::slice::from_ref(one)).await {
            Ok(inserted) => {
                savepoint.commit().await?;
                results.push(Ok(!inserted.is_empty()));
            }
            Err(error) if is_permanent(&error) => {
                savepoint.rollback().await?;
                results.push(Err(Rejection { reason: "unstorable_event", message: error.to_string() }));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(results)
}

/// A failure that retrying cannot fix: PostgreSQL refused this message's data (SQLSTATE class
/// 22, data exception, e.g. a `\u0000` in JSON; class 23, integrity constraint).
pub fn is_permanent(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

/// A failure that means PostgreSQL is unreachable or going away: stop pulling until it is back.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P") || code.starts_with("53"))
        }
        _ => false,
    }
}
