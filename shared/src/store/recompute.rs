//! Recomputing attendance: a participant's rows (`participants`, `cycles`) are the attendance
//! rule applied to its facts in the log (its events, the room_finished events of its room
//! instances, and the sweeper's estimates in `cycle_closures`).
//!
//! Invariant: after every commit, a participant's row and cycles equal the rule applied to the
//! log; [`recompute_participants`] is their only writer. That makes applying an event idempotent
//! and order-independent, whichever replica applies it. The caller holds the rooms' locks
//! ([`super::rooms::lock_rooms`]). When "present now" flips, the change goes to the presence
//! outbox in the same transaction.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::presence_outbox::{self, Cause, PresenceChange};
use crate::domain::attendance::{self, Attendance, ClosedBy, Fact, FactKind};
use crate::domain::event::WebhookEvent;
use crate::domain::time::{timestamp, unix_ms};

/// The facts the rule needs for each participant (room name, identity): its own events, the
/// room_finished events of the room instances it was in, and the sweeper's closures. Two
/// statements for any number of participants.
pub async fn load_facts_of(
    conn: &mut PgConnection,
    participants: &[(String, String)],
) -> Result<BTreeMap<(String, String), Vec<Fact>>, sqlx::Error> {
    let rooms: Vec<&str> = participants.iter().map(|p| p.0.as_str()).collect();
    let identities: Vec<&str> = participants.iter().map(|p| p.1.as_str()).collect();
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "WITH p AS (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS p (room_name, identity))
         SELECT p.room_name, p.identity, e.payload::text FROM p
         JOIN webhook_events e ON e.room_name = p.room_name AND e.identity = p.identity
         UNION ALL
         SELECT p.room_name, p.identity, f.payload::text FROM p
         JOIN webhook_events f ON f.room_name = p.room_name AND f.event_type = 'room_finished'
         WHERE f.room_sid IN (SELECT e.room_sid FROM webhook_events e
                              WHERE e.room_name = p.room_name AND e.identity = p.identity)",
    )
    .bind(&rooms)
    .bind(&identities)
    .fetch_all(&mut *conn)
    .await?;
    let closures: Vec<(String, String, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT c.room_name, c.identity, c.participant_sid, c.closed_by, c.closed_at FROM cycle_closures c
         JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS p (room_name, identity)) p
           USING (room_name, identity)",
    )
    .bind(&rooms)
    .bind(&identities)
    .fetch_all(&mut *conn)
    .await?;

    let mut facts: BTreeMap<(String, String), Vec<Fact>> =
        participants.iter().map(|participant| (participant.clone(), Vec::new())).collect();
    for (room_name, identity, payload) in events {
        // Only events that parsed are logged; a failure here would be a bug, not bad input.
        match WebhookEvent::parse(payload.as_bytes()).ok().map(|e| Fact::from_event(&e)) {
            Some(Ok(Some(fact))) => facts.entry((room_name, identity)).or_default().push(fact),
            Some(Ok(None)) => {}
            _ => tracing::error!(room_name, identity, "a logged event no longer parses; ignored"),
        }
    }
    for (room_name, identity, participant_sid, closed_by, closed_at) in closures {
        let Some(closed_by) = ClosedBy::parse(&closed_by) else { continue };
        let fact = Fact {
            event_id: format!("closure:{participant_sid}:{}", closed_by.as_str()),
            created_at_ms: unix_ms(closed_at),
            room_name: room_name.clone(),
            room_sid: String::new(),
            kind: FactKind::Closure { identity: identity.clone(), participant_sid, closed_by },
        };
        facts.entry((room_name, identity)).or_default().push(fact);
    }
    Ok(facts)
}

/// Recomputes participants, (room name, identity) → what caused it, from the log and stores the
/// results; writes a presence change to the outbox for each whose "present now" flipped. A fixed
/// number of statements whatever their number. The rooms must be locked by the caller's
/// transaction.
pub async fn recompute_participants(
    conn: &mut PgConnection,
    participants: &BTreeMap<(String, String), Cause>,
) -> Result<(), sqlx::Error> {
    if participants.is_empty() {
        return Ok(());
    }
    let keys: Vec<(String, String)> = participants.keys().cloned().collect();
    let facts = load_facts_of(conn, &keys).await?;
    let computed: Vec<(&str, Attendance)> = facts
        .iter()
        .filter_map(|((room_name, identity), facts)| {
            Some((room_name.as_str(), attendance::participant_attendance(identity, facts)?))
        })
        .collect();
    if computed.is_empty() {
        return Ok(());
    }
    let rooms: Vec<&str> = computed.iter().map(|(room, _)| *room).collect();
    let identities: Vec<&str> = computed.iter().map(|(_, a)| a.identity.as_str()).collect();
    let was_present: BTreeMap<(String, String), bool> = sqlx::query_as::<_, (String, String, bool)>(
        "SELECT room_name, identity, present FROM participants
         JOIN unnest($1::text[], $2::text[]) AS p (room_name, identity) USING (room_name, identity)",
    )
    .bind(&rooms)
    .bind(&identities)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(room_name, identity, present)| ((room_name, identity), present))
    .collect();
    write_attendance(conn, &computed).await?;

    let changes: Vec<(PresenceChange, &Cause)> = computed
        .iter()
        .filter_map(|(room_name, attendance)| {
            let key = ((*room_name).to_owned(), attendance.identity.clone());
            if was_present.get(&key).copied().unwrap_or(false) == attendance.present {
                return None;
            }
            let change = PresenceChange {
                room_name: key.0.clone(),
                identity: key.1.clone(),
                present: attendance.present,
                changed_at_ms: presence_changed_at(attendance),
            };
            Some((change, &participants[&key]))
        })
        .collect();
    presence_outbox::append(conn, &changes).await
}

/// When the participant became present (its latest open cycle's start) or absent (its last left).
fn presence_changed_at(attendance: &Attendance) -> i64 {
    if attendance.present {
        attendance.cycles.iter().filter(|c| c.left_at_ms.is_none()).map(|c| c.joined_at_ms).max().unwrap_or_default()
    } else {
        attendance.last_left_at_ms.unwrap_or_default()
    }
}

/// Stores computed attendance, (room name, attendance) each: the participants' rows and cycles.
async fn write_attendance(conn: &mut PgConnection, computed: &[(&str, Attendance)]) -> Result<(), sqlx::Error> {
    let rooms: Vec<&str> = computed.iter().map(|(room, _)| *room).collect();
    let column = |f: fn(&Attendance) -> &str| computed.iter().map(|(_, a)| f(a)).collect::<Vec<&str>>();
    let present: Vec<bool> = computed.iter().map(|(_, a)| a.present).collect();
    let attended: Vec<i64> = computed.iter().map(|(_, a)| a.attended_ms).collect();
    let count = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    let joins: Vec<i32> = computed.iter().map(|(_, a)| count(a.join_count)).collect();
    let leaves: Vec<i32> = computed.iter().map(|(_, a)| count(a.leave_count)).collect();
    let first_joined: Vec<Option<OffsetDateTime>> =
        computed.iter().map(|(_, a)| a.first_joined_at_ms.map(timestamp)).collect();
    let last_left: Vec<Option<OffsetDateTime>> =
        computed.iter().map(|(_, a)| a.last_left_at_ms.map(timestamp)).collect();
    sqlx::query(
        "INSERT INTO participants
             (room_name, identity, name, metadata, kind, present, attended_ms, join_count, leave_count,
              first_joined_at, last_left_at, updated_at)
         SELECT *, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
                                     $7::int8[], $8::int4[], $9::int4[], $10::timestamptz[], $11::timestamptz[])
         ORDER BY 1, 2
         ON CONFLICT (room_name, identity) DO UPDATE SET
             name = excluded.name, metadata = excluded.metadata, kind = excluded.kind, present = excluded.present,
             attended_ms = excluded.attended_ms, join_count = excluded.join_count,
             leave_count = excluded.leave_count, first_joined_at = excluded.first_joined_at,
             last_left_at = excluded.last_left_at, updated_at = now()",
    )
    .bind(&rooms)
    .bind(column(|a| a.identity.as_str()))
    .bind(column(|a| a.name.as_str()))
    .bind(column(|a| a.metadata.as_str()))
    .bind(column(|a| a.kind.as_str()))
    .bind(&present)
    .bind(&attended)
    .bind(&joins)
    .bind(&leaves)
    .bind(&first_joined)
    .bind(&last_left)
    .execute(&mut *conn)
    .await?;

    sqlx::query(
        "DELETE FROM cycles USING unnest($1::text[], $2::text[]) AS p (room_name, identity)
         WHERE cycles.room_name = p.room_name AND cycles.identity = p.identity",
    )
    .bind(&rooms)
    .bind(column(|a| a.identity.as_str()))
    .execute(&mut *conn)
    .await?;
    let cycles: Vec<(&str, &str, &attendance::Cycle)> = computed
        .iter()
        .flat_map(|(room, a)| a.cycles.iter().map(move |cycle| (*room, a.identity.as_str(), cycle)))
        .collect();
    if cycles.is_empty() {
        return Ok(());
    }
    let cycle_rooms: Vec<&str> = cycles.iter().map(|c| c.0).collect();
    let cycle_identities: Vec<&str> = cycles.iter().map(|c| c.1).collect();
    let sids: Vec<&str> = cycles.iter().map(|c| c.2.participant_sid.as_str()).collect();
    let room_sids: Vec<&str> = cycles.iter().map(|c| c.2.room_sid.as_str()).collect();
    let joined: Vec<OffsetDateTime> = cycles.iter().map(|(_, _, c)| timestamp(c.joined_at_ms)).collect();
    let left: Vec<Option<OffsetDateTime>> = cycles.iter().map(|(_, _, c)| c.left_at_ms.map(timestamp)).collect();
    let closed_by: Vec<Option<&str>> = cycles.iter().map(|(_, _, c)| c.closed_by.map(|b| b.as_str())).collect();
    sqlx::query(
        "INSERT INTO cycles (room_name, identity, participant_sid, room_sid, joined_at, left_at, closed_by)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                              $6::timestamptz[], $7::text[])",
    )
    .bind(&cycle_rooms)
    .bind(&cycle_identities)
    .bind(&sids)
    .bind(&room_sids)
    .bind(&joined)
    .bind(&left)
    .bind(&closed_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
