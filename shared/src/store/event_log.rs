//! The event log (`webhook_events`): every LiveKit event applied, whatever its type, stored once
//! by its id (within its participant of its meeting: the index entries of a meeting's events lie
//! together, see migration 0009). It is the source of truth: attendance is the rule applied to
//! it, so a redelivered event finds its id already there and changes nothing.

use std::collections::BTreeSet;

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::domain::event::WebhookEvent;
use crate::domain::time::timestamp;

/// What the event log keeps of one event.
#[derive(Debug, Clone)]
pub struct LoggedEvent<'a> {
    pub event: &'a WebhookEvent,
    pub payload: &'a str,
    pub received_at_ms: Option<i64>,
    pub stream_sequence: Option<u64>,
}

fn non_empty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

/// Inserts events into the log, one statement for all; an event whose id is already there is
/// left as it is. Returns the ids inserted. Ids must be distinct. Fails as a whole if PostgreSQL
/// refuses any event's data (the caller then finds which, one at a time).
pub async fn insert_events(
    conn: &mut PgConnection,
    events: &[LoggedEvent<'_>],
) -> Result<BTreeSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ids: Vec<&str> = events.iter().map(|l| l.event.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|l| l.event.event.as_str()).collect();
    let created: Vec<Option<OffsetDateTime>> =
        events.iter().map(|l| l.event.created_at.map(|s| timestamp(s.saturating_mul(1000)))).collect();
    let received: Vec<Option<OffsetDateTime>> = events.iter().map(|l| l.received_at_ms.map(timestamp)).collect();
    let room_names: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.room.as_ref().map(|r| &r.name))).collect();
    let room_sids: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.room.as_ref().map(|r| &r.sid))).collect();
    let identities: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.participant.as_ref().map(|p| &p.identity))).collect();
    let participant_sids: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.participant.as_ref().map(|p| &p.sid))).collect();
    let sequences: Vec<Option<i64>> =
        events.iter().map(|l| l.stream_sequence.and_then(|s| i64::try_from(s).ok())).collect();
    let payloads: Vec<&str> = events.iter().map(|l| l.payload).collect();
    sqlx::query_scalar(
        "INSERT INTO webhook_events
             (event_id, event_type, created_at, received_at, room_name, room_sid, identity, participant_sid,
              stream_sequence, payload)
         SELECT event_id, event_type, created_at, received_at, room_name, room_sid, identity, participant_sid,
                stream_sequence, payload::jsonb
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::int8[], $10::text[])
              AS e (event_id, event_type, created_at, received_at, room_name, room_sid, identity, participant_sid,
                    stream_sequence, payload)
         ON CONFLICT DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&created)
    .bind(&received)
    .bind(&room_names)
    .bind(&room_sids)
    .bind(&identities)
    .bind(&participant_sids)
    .bind(&sequences)
    .bind(&payloads)
    .fetch_all(&mut *conn)
    .await
    .map(|inserted: Vec<String>| inserted.into_iter().collect())
}

/// Identities with events, or sessions LiveKit listed, in a meeting (those its room_finished
/// may close).
pub async fn identities_in_meeting(conn: &mut PgConnection, room_sid: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT identity FROM webhook_events WHERE room_sid = $1 AND identity IS NOT NULL
         UNION SELECT identity FROM participant_listings WHERE room_sid = $1 ORDER BY identity",
    )
    .bind(room_sid)
    .fetch_all(&mut *conn)
    .await
}
