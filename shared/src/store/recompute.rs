//! Recomputing attendance, per meeting: a participant's rows in a meeting
//! (`meeting_participants`, `cycles`) are the attendance rule applied to its facts in the log (its
//! events of that meeting, the meeting's room_finished, the sweeper's estimates in
//! `cycle_closures` and the sessions LiveKit listed in `participant_listings`), and a meeting's span (`meetings`) is the meeting rule applied to its
//! room_started and room_finished, its participants' activity and the sweeper's inferred end. The cost of a recompute depends on the meeting only, never on
//! how many meetings the room name had before.
//!
//! Invariant: after every commit, a participant's row and cycles in a meeting equal the rule
//! applied to the log; [`recompute_participants`] is their only writer. That makes applying an
//! event idempotent and order-independent, whichever replica applies it. The caller holds the
//! meetings' locks ([`super::meetings::lock_meetings`]). When "present now" flips, the change goes
//! to the presence outbox in the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::event_log;
use super::meetings;
use super::presence_outbox::{self, Cause, PresenceChange};
use crate::domain::attendance::{self, Attendance, ClosedBy, Fact, FactKind, PARTICIPANT_EVENT_TYPES, ParticipantInfo};
use crate::domain::event::WebhookEvent;
use crate::domain::meeting::{self, Activity, MeetingSpan, RoomTimeouts};
use crate::domain::time::{timestamp, unix_ms};

/// A participant of a meeting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantKey {
    pub room_sid: String,
    pub identity: String,
}

impl ParticipantKey {
    pub fn new(room_sid: impl Into<String>, identity: impl Into<String>) -> Self {
        ParticipantKey { room_sid: room_sid.into(), identity: identity.into() }
    }
}

/// Parses a logged payload; one that no longer parses is a bug, not bad input (only events that
/// parsed are logged), so it is logged and skipped.
fn parse_logged(payload: &str) -> Option<WebhookEvent> {
    let parsed = WebhookEvent::parse(payload.as_bytes()).ok();
    if parsed.is_none() {
        tracing::error!("a logged event no longer parses; ignored");
    }
    parsed
}

/// The fact a logged payload states, if attendance interprets it.
fn facts_of_payload(payload: &str) -> Option<Fact> {
    match Fact::from_event(&parse_logged(payload)?) {
        Ok(fact) => fact,
        Err(error) => {
            tracing::error!(%error, "a logged event is no longer a valid fact; ignored");
            None
        }
    }
}

/// What a recompute reads of a participant of a meeting: the facts the rule needs (its own
/// events, the meeting's room_finished, the sweeper's closures) and what is stored of it.
#[derive(Debug)]
struct Loaded {
    facts: Vec<Fact>,
    /// Whether it was present, if it has a row.
    was_present: Option<bool>,
    /// The participant sids of its stored cycles.
    stored_cycles: Vec<String>,
}

/// Reads each participant, one statement for any number of them. Every part is a subquery per
/// participant, so each is an index probe on its table: the cost follows the participants read,
/// never the size of the tables (a join against the list would let the planner scan a table
/// it believes small). (Each event's fact names its room.) Only the events attendance interprets
/// are read: a participant's other events (tracks published, …) are as many as its facts, and
/// would be turned into text, sent and parsed at every recompute for nothing.
async fn load_participants(
    conn: &mut PgConnection,
    participants: &[ParticipantKey],
) -> Result<BTreeMap<ParticipantKey, Loaded>, sqlx::Error> {
    type Row = (
        String,
        String,
        Vec<String>,
        Option<bool>,
        Vec<String>,
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<OffsetDateTime>>,
        Vec<String>,
    );
    let room_sids: Vec<&str> = participants.iter().map(|p| p.room_sid.as_str()).collect();
    let identities: Vec<&str> = participants.iter().map(|p| p.identity.as_str()).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.room_sid, p.identity,
                ARRAY(SELECT e.payload::text FROM webhook_events e
                      WHERE e.room_sid = p.room_sid AND e.identity = p.identity AND e.event_type = ANY($3)
                      UNION ALL
                      SELECT f.payload::text FROM webhook_events f
                      WHERE f.room_sid = p.room_sid AND f.event_type = 'room_finished'),
                (SELECT s.present FROM meeting_participants s WHERE s.room_sid = p.room_sid AND s.identity = p.identity),
                ARRAY(SELECT c.participant_sid FROM cycles c WHERE c.room_sid = p.room_sid AND c.identity = p.identity),
                x.sids, x.closed_by, x.closed_at,
                ARRAY(SELECT json_build_object('sid', l.participant_sid, 'room_name', l.room_name, 'name', l.name,
                                               'metadata', l.metadata, 'kind', l.kind,
                                               'joined_at_ms', (extract(epoch FROM l.joined_at) * 1000)::int8,
                                               'listed_at_ms', (extract(epoch FROM l.listed_at) * 1000)::int8)::text
                      FROM participant_listings l WHERE l.room_sid = p.room_sid AND l.identity = p.identity)
         FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS p (room_sid, identity)) p
         -- The sweeper's closures in one probe, as three arrays in the same order.
         CROSS JOIN LATERAL (
             SELECT array_agg(c.participant_sid ORDER BY c.participant_sid, c.closed_by) AS sids,
                    array_agg(c.closed_by ORDER BY c.participant_sid, c.closed_by) AS closed_by,
                    array_agg(c.closed_at ORDER BY c.participant_sid, c.closed_by) AS closed_at
             FROM cycle_closures c WHERE c.room_sid = p.room_sid AND c.identity = p.identity
         ) x",
    )
    .bind(&room_sids)
    .bind(&identities)
    .bind(PARTICIPANT_EVENT_TYPES.as_slice())
    .fetch_all(&mut *conn)
    .await?;

    let mut loaded: BTreeMap<ParticipantKey, Loaded> = BTreeMap::new();
    for (room_sid, identity, payloads, was_present, stored_cycles, closed_sids, closed_by, closed_at, listings) in rows
    {
        let mut facts: Vec<Fact> = payloads.iter().filter_map(|payload| facts_of_payload(payload)).collect();
        facts.extend(listings.iter().filter_map(|listing| listing_fact(listing, &room_sid, &identity)));
        let closures = closed_sids
            .unwrap_or_default()
            .into_iter()
            .zip(closed_by.unwrap_or_default())
            .zip(closed_at.unwrap_or_default());
        for ((participant_sid, closed_by), closed_at) in closures {
            let Some(closed_by) = ClosedBy::parse(&closed_by) else { continue };
            facts.push(Fact {
                event_id: format!("closure:{participant_sid}:{}", closed_by.as_str()),
                created_at_ms: unix_ms(closed_at),
                room_name: String::new(),
                room_sid: room_sid.clone(),
                kind: FactKind::Closure { identity: identity.clone(), participant_sid, closed_by },
            });
        }
        loaded.insert(ParticipantKey { room_sid, identity }, Loaded { facts, was_present, stored_cycles });
    }
    Ok(loaded)
}

/// A session the reconciler found listed by LiveKit with no event ([`super::reconciliation`]).
#[derive(serde::Deserialize)]
struct Listing {
    sid: String,
    room_name: String,
    name: String,
    metadata: String,
    kind: String,
    joined_at_ms: i64,
    listed_at_ms: i64,
}

/// The fact a stored listing states.
fn listing_fact(listing: &str, room_sid: &str, identity: &str) -> Option<Fact> {
    let listing: Listing = serde_json::from_str(listing).ok()?;
    Some(Fact {
        event_id: format!("listing:{}", listing.sid),
        created_at_ms: listing.listed_at_ms,
        room_name: listing.room_name,
        room_sid: room_sid.to_owned(),
        kind: FactKind::Listed {
            participant: ParticipantInfo {
                sid: listing.sid,
                identity: identity.to_owned(),
                name: listing.name,
                metadata: listing.metadata,
                kind: listing.kind,
            },
            joined_at_ms: listing.joined_at_ms,
        },
    })
}

/// A participant's computed attendance in a meeting, with where it is stored.
struct Computed<'a> {
    key: &'a ParticipantKey,
    room_name: &'a str,
    attendance: Attendance,
    /// Stored cycles the rule no longer gives (participant sids).
    stale_cycles: Vec<&'a str>,
}

/// Recomputes participants of meetings, each → what caused it, from the log and stores the
/// results; writes a presence change to the outbox for each whose "present now" flipped. A fixed
/// number of statements whatever their number. The meetings must be locked by the caller's
/// transaction. (Their spans are [`recompute_spans`].)
pub async fn recompute_participants(
    conn: &mut PgConnection,
    participants: &BTreeMap<ParticipantKey, Cause>,
) -> Result<(), sqlx::Error> {
    if participants.is_empty() {
        return Ok(());
    }
    let keys: Vec<ParticipantKey> = participants.keys().cloned().collect();
    let loaded = load_participants(conn, &keys).await?;
    let computed: Vec<Computed> = loaded
        .iter()
        .filter_map(|(key, loaded)| {
            // A participant with attendance has an event of its own, which names the room.
            let room_name = loaded.facts.iter().map(|f| f.room_name.as_str()).find(|name| !name.is_empty())?;
            let attendance = attendance::participant_attendance(&key.identity, &loaded.facts)?;
            let stale_cycles = loaded
                .stored_cycles
                .iter()
                .filter(|sid| !attendance.cycles.iter().any(|c| c.participant_sid == **sid))
                .map(String::as_str)
                .collect();
            Some(Computed { key, room_name, attendance, stale_cycles })
        })
        .collect();
    if computed.is_empty() {
        return Ok(());
    }
    write_attendance(conn, &computed).await?;

    let changes: Vec<(PresenceChange, &Cause)> = computed
        .iter()
        .filter(|c| loaded[c.key].was_present.unwrap_or(false) != c.attendance.present)
        .map(|c| {
            let change = PresenceChange {
                room_name: c.room_name.to_owned(),
                room_sid: c.key.room_sid.clone(),
                identity: c.key.identity.clone(),
                present: c.attendance.present,
                changed_at_ms: presence_changed_at(&c.attendance),
            };
            (change, &participants[c.key])
        })
        .collect();
    presence_outbox::append(conn, &changes).await
}

/// Recomputes the spans of meetings (locked by the caller's transaction) from their
/// room_started and room_finished, their participants' activity and the sweeper's inferred end;
/// keeps the room's idle timeouts from its room_started. Two statements.
pub async fn recompute_spans(conn: &mut PgConnection, room_sids: &BTreeSet<String>) -> Result<(), sqlx::Error> {
    if room_sids.is_empty() {
        return Ok(());
    }
    let sids: Vec<&str> = room_sids.iter().map(String::as_str).collect();
    // Everything a span depends on, in one round trip: room events, inferred end, and the
    // participants' activity, read only where it matters (no room_started to start the meeting,
    // or an inferred end to check): it is the one part that grows with the meeting.
    type SpanInputs = (
        String,
        Option<Vec<String>>,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
        Option<bool>,
        Option<OffsetDateTime>,
    );
    let rows: Vec<SpanInputs> = sqlx::query_as(
        "SELECT m.room_sid, ev.payloads, a.earliest_join, a.latest_left, a.open, x.ended_at
         FROM unnest($1::text[]) AS m (room_sid)
         CROSS JOIN LATERAL (
             SELECT array_agg(e.payload::text) AS payloads, bool_or(e.event_type = 'room_started') AS started
             FROM webhook_events e
             WHERE e.room_sid = m.room_sid AND e.event_type IN ('room_started', 'room_finished')
         ) ev
         LEFT JOIN meeting_end_estimates x ON x.room_sid = m.room_sid
         CROSS JOIN LATERAL (
             SELECT min(p.first_joined_at) AS earliest_join, max(p.last_left_at) AS latest_left,
                    bool_or(p.present) AS open
             FROM meeting_participants p
             WHERE p.room_sid = m.room_sid AND (ev.started IS NOT TRUE OR x.ended_at IS NOT NULL)
         ) a",
    )
    .bind(&sids)
    .fetch_all(&mut *conn)
    .await?;
    let mut events: Vec<(String, String)> = Vec::new();
    let mut activity: BTreeMap<String, Activity> = BTreeMap::new();
    let mut inferred_ends: BTreeMap<String, i64> = BTreeMap::new();
    for (room_sid, payloads, earliest_join, latest_left, open, inferred_end) in rows {
        events.extend(payloads.unwrap_or_default().into_iter().map(|payload| (room_sid.clone(), payload)));
        let meeting_activity = Activity {
            earliest_join_ms: earliest_join.map(unix_ms),
            latest_left_ms: latest_left.map(unix_ms),
            open: open.unwrap_or(false),
        };
        activity.insert(room_sid.clone(), meeting_activity);
        if let Some(ended_at) = inferred_end {
            inferred_ends.insert(room_sid, unix_ms(ended_at));
        }
    }
    let mut facts: BTreeMap<&str, Vec<Fact>> = BTreeMap::new();
    let mut timeouts: BTreeMap<&str, RoomTimeouts> = BTreeMap::new();
    for (room_sid, payload) in &events {
        let Some(event) = parse_logged(payload) else { continue };
        if let Some(room) = event.room.as_ref().filter(|_| event.event == "room_started") {
            timeouts
                .insert(room_sid, RoomTimeouts { empty_s: room.empty_timeout, departure_s: room.departure_timeout });
        }
        if let Ok(Some(fact)) = Fact::from_event(&event) {
            facts.entry(room_sid.as_str()).or_default().push(fact);
        }
    }
    let spans: BTreeMap<String, (MeetingSpan, RoomTimeouts)> = room_sids
        .iter()
        .map(|room_sid| {
            let facts = facts.get(room_sid.as_str()).map(Vec::as_slice).unwrap_or_default();
            let activity = activity.get(room_sid).copied().unwrap_or_default();
            let span = meeting::span(facts, activity, inferred_ends.get(room_sid).copied());
            (room_sid.clone(), (span, timeouts.get(room_sid.as_str()).copied().unwrap_or_default()))
        })
        .collect();
    meetings::write_spans(conn, &spans).await
}

/// Rebuilds a whole meeting from the log (locked by the caller's transaction): every
/// participant, its span, and marks it rebuilt. Returns how many participants it has, or `None`
/// for a sealed meeting: its events are gone, its stored attendance is all there is, and it is
/// never recomputed.
pub async fn recompute_meeting(
    conn: &mut PgConnection,
    room_sid: &str,
    cause: &Cause,
) -> Result<Option<usize>, sqlx::Error> {
    if !super::lifecycle::sealed_among(conn, &BTreeSet::from([room_sid.to_owned()])).await?.is_empty() {
        return Ok(None);
    }
    let identities = event_log::identities_in_meeting(conn, room_sid).await?;
    let participants: BTreeMap<ParticipantKey, Cause> =
        identities.iter().map(|identity| (ParticipantKey::new(room_sid, identity.as_str()), cause.clone())).collect();
    recompute_participants(conn, &participants).await?;
    recompute_spans(conn, &BTreeSet::from([room_sid.to_owned()])).await?;
    meetings::mark_rebuilt(conn, room_sid).await?;
    Ok(Some(identities.len()))
}

/// When the participant became present (its latest open cycle's start) or absent (its last left).
fn presence_changed_at(attendance: &Attendance) -> i64 {
    if attendance.present {
        attendance.cycles.iter().filter(|c| c.left_at_ms.is_none()).map(|c| c.joined_at_ms).max().unwrap_or_default()
    } else {
        attendance.last_left_at_ms.unwrap_or_default()
    }
}

/// Stores computed attendance: the participants' rows and cycles in their meetings.
async fn write_attendance(conn: &mut PgConnection, computed: &[Computed<'_>]) -> Result<(), sqlx::Error> {
    let room_sids: Vec<&str> = computed.iter().map(|c| c.key.room_sid.as_str()).collect();
    let identities: Vec<&str> = computed.iter().map(|c| c.key.identity.as_str()).collect();
    let room_names: Vec<&str> = computed.iter().map(|c| c.room_name).collect();
    let column = |f: fn(&Attendance) -> &str| computed.iter().map(|c| f(&c.attendance)).collect::<Vec<&str>>();
    let present: Vec<bool> = computed.iter().map(|c| c.attendance.present).collect();
    let attended: Vec<i64> = computed.iter().map(|c| c.attendance.attended_ms).collect();
    let count = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    let joins: Vec<i32> = computed.iter().map(|c| count(c.attendance.join_count)).collect();
    let leaves: Vec<i32> = computed.iter().map(|c| count(c.attendance.leave_count)).collect();
    let first_joined: Vec<Option<OffsetDateTime>> =
        computed.iter().map(|c| c.attendance.first_joined_at_ms.map(timestamp)).collect();
    let last_left: Vec<Option<OffsetDateTime>> =
        computed.iter().map(|c| c.attendance.last_left_at_ms.map(timestamp)).collect();
    // Cycles keep their rows: each is written only if it changed, and removed only if the rule
    // no longer gives it.
    let stale: Vec<(&ParticipantKey, &str)> =
        computed.iter().flat_map(|c| c.stale_cycles.iter().map(move |sid| (c.key, *sid))).collect();
    if !stale.is_empty() {
        sqlx::query(
            "DELETE FROM cycles c USING unnest($1::text[], $2::text[], $3::text[]) AS s (room_sid, identity, sid)
             WHERE c.room_sid = s.room_sid AND c.identity = s.identity AND c.participant_sid = s.sid",
        )
        .bind(stale.iter().map(|(key, _)| key.room_sid.as_str()).collect::<Vec<_>>())
        .bind(stale.iter().map(|(key, _)| key.identity.as_str()).collect::<Vec<_>>())
        .bind(stale.iter().map(|(_, sid)| *sid).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let cycles: Vec<(&ParticipantKey, &attendance::Cycle)> =
        computed.iter().flat_map(|c| c.attendance.cycles.iter().map(move |cycle| (c.key, cycle))).collect();
    let cycle_room_sids: Vec<&str> = cycles.iter().map(|(key, _)| key.room_sid.as_str()).collect();
    let cycle_identities: Vec<&str> = cycles.iter().map(|(key, _)| key.identity.as_str()).collect();
    let sids: Vec<&str> = cycles.iter().map(|(_, c)| c.participant_sid.as_str()).collect();
    let joined: Vec<OffsetDateTime> = cycles.iter().map(|(_, c)| timestamp(c.joined_at_ms)).collect();
    let left: Vec<Option<OffsetDateTime>> = cycles.iter().map(|(_, c)| c.left_at_ms.map(timestamp)).collect();
    let closed_by: Vec<Option<&str>> = cycles.iter().map(|(_, c)| c.closed_by.map(|b| b.as_str())).collect();
    // The participants' rows and their cycles in one statement.
    sqlx::query(
        "WITH participants AS (
         INSERT INTO meeting_participants
             (room_sid, identity, room_name, name, metadata, kind, present, attended_ms, join_count, leave_count,
              first_joined_at, last_left_at, updated_at)
         SELECT *, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                     $7::bool[], $8::int8[], $9::int4[], $10::int4[], $11::timestamptz[],
                                     $12::timestamptz[])
         ORDER BY 1, 2
         ON CONFLICT (room_sid, identity) DO UPDATE SET
             name = excluded.name, metadata = excluded.metadata, kind = excluded.kind, present = excluded.present,
             attended_ms = excluded.attended_ms, join_count = excluded.join_count,
             leave_count = excluded.leave_count, first_joined_at = excluded.first_joined_at,
             last_left_at = excluded.last_left_at, updated_at = now()
         -- A recompute that changes nothing (a room_finished for those who had left) writes nothing.
         WHERE (meeting_participants.name, meeting_participants.metadata, meeting_participants.kind,
                meeting_participants.present, meeting_participants.attended_ms, meeting_participants.join_count,
                meeting_participants.leave_count, meeting_participants.first_joined_at,
                meeting_participants.last_left_at)
               IS DISTINCT FROM (excluded.name, excluded.metadata, excluded.kind, excluded.present,
                                 excluded.attended_ms, excluded.join_count, excluded.leave_count,
                                 excluded.first_joined_at, excluded.last_left_at)
         )
         INSERT INTO cycles (room_sid, identity, participant_sid, joined_at, left_at, closed_by)
         SELECT * FROM unnest($13::text[], $14::text[], $15::text[], $16::timestamptz[], $17::timestamptz[],
                              $18::text[])
         ORDER BY 1, 2, 3
         ON CONFLICT (room_sid, identity, participant_sid) DO UPDATE SET
             joined_at = excluded.joined_at, left_at = excluded.left_at, closed_by = excluded.closed_by
         WHERE (cycles.joined_at, cycles.left_at, cycles.closed_by)
               IS DISTINCT FROM (excluded.joined_at, excluded.left_at, excluded.closed_by)",
    )
    .bind(&room_sids)
    .bind(&identities)
    .bind(&room_names)
    .bind(column(|a| a.name.as_str()))
    .bind(column(|a| a.metadata.as_str()))
    .bind(column(|a| a.kind.as_str()))
    .bind(&present)
    .bind(&attended)
    .bind(&joins)
    .bind(&leaves)
    .bind(&first_joined)
    .bind(&last_left)
    .bind(&cycle_room_sids)
    .bind(&cycle_identities)
    .bind(&sids)
    .bind(&joined)
    .bind(&left)
    .bind(&closed_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
