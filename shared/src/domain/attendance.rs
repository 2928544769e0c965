//! The attendance rule: a pure function from a set of LiveKit events to attendance cycles and
//! totals. No clock, no I/O: storage calls it with the events it holds.
//!
//! - Attendance belongs to a meeting (a room session: room `sid`) and a participant identity, and
//!   is made of cycles, one per participant `sid` (a LiveKit connection session; a rejoin is a
//!   new sid). Meetings of one room name never influence each other: each is computed from its
//!   own facts only. A room name's total over its meetings is [`course_total`].
//! - `participant_joined` opens its sid's cycle at `joinedAtMs` (else `joinedAt`, else the
//!   event's `createdAt`); `participant_left` closes it at the left event's `createdAt`. A left
//!   whose joined never arrived still gives the whole cycle from its own `joinedAt[Ms]`.
//! - A sid with `participant_connection_aborted` never became active: no cycle, no time.
//! - `room_finished` closes every cycle still open in that room instance (room `sid`) at its
//!   `createdAt`; a participant_left for the cycle, whenever it arrives, takes precedence.
//! - The sweeper's estimates (`Closure`: the heartbeats stopped, the cycle ran past the
//!   maximum duration, or the LiveKit server no longer listed the session) close a cycle too; the
//!   earliest of them and room_finished wins, and a participant_left always takes precedence.
//! - A session the LiveKit server listed as active (`Listed`: its participant_joined was lost)
//!   opens its cycle at LiveKit's `joinedAtMs` when no joined or left event gives the start; a
//!   real event for the sid always takes precedence.
//! - Attended time is the union of the closed cycles: two tabs at once count once.
//!
//! Invariant: the result depends only on the *set* of events. Every aggregate is a minimum, a
//! maximum or a count of distinct sids, with ties broken by event id, so duplicates and arrival
//! order cannot change it.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::event::{EventError, WebhookEvent};

/// Participant kinds LiveKit marks as automated (reports usually leave them out). SIP
/// participants are people on the phone and count as attendees.
pub const BOT_KINDS: [&str; 3] = ["AGENT", "EGRESS", "INGRESS"];

/// An event that attendance interprets, reduced to what the rule needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub event_id: String,
    /// The event's `createdAt`, in unix milliseconds.
    pub created_at_ms: i64,
    pub room_name: String,
    pub room_sid: String,
    pub kind: FactKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactKind {
    Joined {
        participant: ParticipantInfo,
        joined_at_ms: i64,
    },
    /// Closes the cycle at the fact's `created_at_ms`.
    Left {
        participant: ParticipantInfo,
        joined_at_ms: Option<i64>,
    },
    Aborted {
        participant: ParticipantInfo,
    },
    /// The LiveKit server listed the session as active (the reconciler's estimate of a lost
    /// participant_joined), at the fact's `created_at_ms`; `joined_at_ms` is LiveKit's own.
    Listed {
        participant: ParticipantInfo,
        joined_at_ms: i64,
    },
    /// The meeting began (the room was created), at the fact's `created_at_ms`.
    RoomStarted,
    RoomFinished,
    /// An estimated end decided by the sweeper, at the fact's `created_at_ms`.
    Closure {
        identity: String,
        participant_sid: String,
        closed_by: ClosedBy,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    /// STANDARD, AGENT, EGRESS, INGRESS, SIP…
    pub kind: String,
}

/// How a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClosedBy {
    ParticipantLeft,
    RoomFinished,
    /// The client's heartbeats stopped: closed at the last one.
    HeartbeatTimeout,
    /// Open longer than the maximum a cycle may last: closed at that maximum.
    MaxDuration,
    /// The LiveKit server no longer listed the session: closed at the last moment it was known
    /// present.
    Reconciled,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::ParticipantLeft => "participant_left",
            ClosedBy::RoomFinished => "room_finished",
            ClosedBy::HeartbeatTimeout => "heartbeat_timeout",
            ClosedBy::MaxDuration => "max_duration",
            ClosedBy::Reconciled => "reconciled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ClosedBy::ParticipantLeft,
            ClosedBy::RoomFinished,
            ClosedBy::HeartbeatTimeout,
            ClosedBy::MaxDuration,
            ClosedBy::Reconciled,
        ]
        .into_iter()
        .find(|by| by.as_str() == text)
    }
}

/// One connection session of a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub participant_sid: String,
    pub room_sid: String,
    pub joined_at_ms: i64,
    pub left_at_ms: Option<i64>,
    pub closed_by: Option<ClosedBy>,
}

impl Cycle {
    pub fn duration_ms(&self) -> Option<i64> {
        self.left_at_ms.map(|left| left - self.joined_at_ms)
    }
}

/// A participant's attendance in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub kind: String,
    /// Sorted by join time, then sid.
    pub cycles: Vec<Cycle>,
    /// Union of the closed cycles, in milliseconds.
    pub attended_ms: i64,
    /// Connection sessions that became active (joined, left, or listed by the LiveKit server).
    pub join_count: i64,
    /// Sessions whose participant_left arrived.
    pub leave_count: i64,
    pub first_joined_at_ms: Option<i64>,
    pub last_left_at_ms: Option<i64>,
    /// Some cycle is still open.
    pub present: bool,
}

impl Attendance {
    pub fn is_bot(&self) -> bool {
        BOT_KINDS.contains(&self.kind.as_str())
    }
}

/// Why an event of an interpreted type cannot be applied. Such an event can never succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("{0} has no room name")]
    MissingRoom(String),
    #[error("{0} has no room sid")]
    MissingRoomSid(String),
    #[error("{0} has no participant identity or sid")]
    MissingParticipant(String),
    #[error("{0} has no createdAt")]
    MissingTime(String),
}

/// The event types about a participant that attendance interprets; the others (tracks
/// published, …) state no fact, so a recompute need not read them.
pub const PARTICIPANT_EVENT_TYPES: [&str; 3] =
    ["participant_joined", "participant_left", "participant_connection_aborted"];

impl Fact {
    /// The fact an event states, `None` for event types attendance does not interpret.
    pub fn from_event(event: &WebhookEvent) -> Result<Option<Fact>, FactError> {
        let event_type = event.event.as_str();
        let interpreted = PARTICIPANT_EVENT_TYPES.contains(&event_type) || event_type == "room_finished";
        // A room_started without a time says nothing the meeting's joins do not: not interpreted.
        let room_started = event_type == "room_started" && event.created_at.is_some();
        if !interpreted && !room_started {
            return Ok(None);
        }
        let room =
            event.room.as_ref().filter(|r| !r.name.is_empty()).ok_or(FactError::MissingRoom(event.event.clone()))?;
        if room.sid.is_empty() {
            return Err(FactError::MissingRoomSid(event.event.clone()));
        }
        let created_at_ms = event.created_at.map(|s| s.saturating_mul(1000));
        let participant = || {
            let p = event
                .participant
                .as_ref()
                .filter(|p| !p.identity.is_empty() && !p.sid.is_empty())
                .ok_or(FactError::MissingParticipant(event.event.clone()))?;
            let joined_at_ms = p.joined_at_ms.or(p.joined_at.map(|s| s.saturating_mul(1000)));
            let info = ParticipantInfo {
                sid: p.sid.clone(),
                identity: p.identity.clone(),
                name: p.name.clone(),
                metadata: p.metadata.clone(),
                kind: p.kind.clone().filter(|k| !k.is_empty()).unwrap_or_else(|| "STANDARD".into()),
            };
            Ok::<_, FactError>((info, joined_at_ms))
        };
        let missing_time = || FactError::MissingTime(event.event.clone());
        let (kind, created_at_ms) = match event_type {
            "participant_joined" => {
                let (participant, joined_at_ms) = participant()?;
                let joined_at_ms = joined_at_ms.or(created_at_ms).ok_or_else(missing_time)?;
                (FactKind::Joined { participant, joined_at_ms }, created_at_ms.unwrap_or(joined_at_ms))
            }
            "participant_left" => {
                let (participant, joined_at_ms) = participant()?;
                (FactKind::Left { participant, joined_at_ms }, created_at_ms.ok_or_else(missing_time)?)
            }
            "participant_connection_aborted" => {
                let (participant, _) = participant()?;
                (FactKind::Aborted { participant }, created_at_ms.unwrap_or(0))
            }
            "room_started" => (FactKind::RoomStarted, created_at_ms.ok_or_else(missing_time)?),
            _ => (FactKind::RoomFinished, created_at_ms.ok_or_else(missing_time)?),
        };
        Ok(Some(Fact {
            event_id: event.id.clone(),
            created_at_ms,
            room_name: room.name.clone(),
            room_sid: room.sid.clone(),
            kind,
        }))
    }

    /// The participant this fact is about, if any.
    pub fn participant(&self) -> Option<&ParticipantInfo> {
        match &self.kind {
            FactKind::Joined { participant, .. }
            | FactKind::Left { participant, .. }
            | FactKind::Listed { participant, .. }
            | FactKind::Aborted { participant } => Some(participant),
            FactKind::RoomStarted | FactKind::RoomFinished | FactKind::Closure { .. } => None,
        }
    }
}

/// Attendance of every participant in the facts, by identity (facts of one meeting; given the
/// facts of several meetings, the same as their [`course_total`]s).
pub fn room_attendance(facts: &[Fact]) -> BTreeMap<String, Attendance> {
    let identities: BTreeSet<&str> =
        facts.iter().filter_map(|f| f.participant()).map(|p| p.identity.as_str()).collect();
    identities
        .into_iter()
        .filter_map(|identity| participant_attendance(identity, facts).map(|a| (identity.to_owned(), a)))
        .collect()
}

/// Attendance of `identity` in a meeting from the meeting's facts: its own facts, the
/// room_finished fact and the sweeper's estimates (other facts are ignored). `None` if no fact is
/// about it. (Given facts of several meetings, each cycle is still closed only by its own
/// meeting's room_finished.)
pub fn participant_attendance(identity: &str, facts: &[Fact]) -> Option<Attendance> {
    #[derive(Default)]
    struct Session<'a> {
        room_sid: Option<&'a str>,
        joined_from_joined: Option<i64>,
        joined_from_left: Option<i64>,
        joined_from_listing: Option<i64>,
        left_at: Option<i64>,
        estimated_end: Option<(i64, ClosedBy)>,
        aborted: bool,
        seen_joined_or_left: bool,
    }

    let own = |f: &&Fact| f.participant().is_some_and(|p| p.identity == identity);
    let latest =
        facts.iter().filter(own).max_by(|a, b| (a.created_at_ms, &a.event_id).cmp(&(b.created_at_ms, &b.event_id)))?;
    let info = latest.participant().expect("own facts are about a participant");

    let mut sessions: BTreeMap<&str, Session> = BTreeMap::new();
    for fact in facts.iter().filter(own) {
        let participant = fact.participant().expect("own facts are about a participant");
        let session = sessions.entry(participant.sid.as_str()).or_default();
        // A sid belongs to one room instance; take the smallest if events disagree.
        session.room_sid = Some(session.room_sid.map_or(fact.room_sid.as_str(), |s| s.min(fact.room_sid.as_str())));
        match &fact.kind {
            FactKind::Joined { joined_at_ms, .. } => {
                session.seen_joined_or_left = true;
                session.joined_from_joined = min_some(session.joined_from_joined, Some(*joined_at_ms));
            }
            FactKind::Left { joined_at_ms, .. } => {
                session.seen_joined_or_left = true;
                session.joined_from_left = min_some(session.joined_from_left, *joined_at_ms);
                session.left_at = min_some(session.left_at, Some(fact.created_at_ms));
            }
            FactKind::Listed { joined_at_ms, .. } => {
                session.seen_joined_or_left = true;
                session.joined_from_listing = min_some(session.joined_from_listing, Some(*joined_at_ms));
            }
            FactKind::Aborted { .. } => session.aborted = true,
            FactKind::RoomStarted | FactKind::RoomFinished | FactKind::Closure { .. } => {}
        }
    }
    // Closures only ever close a known session of this identity.
    for fact in facts {
        if let FactKind::Closure { identity: of, participant_sid, closed_by } = &fact.kind
            && of == identity
            && let Some(session) = sessions.get_mut(participant_sid.as_str())
        {
            let candidate = (fact.created_at_ms, *closed_by);
            session.estimated_end = Some(session.estimated_end.map_or(candidate, |current| current.min(candidate)));
        }
    }

    let mut room_finished: BTreeMap<&str, i64> = BTreeMap::new();
    for fact in facts.iter().filter(|f| f.kind == FactKind::RoomFinished) {
        let at = room_finished.entry(fact.room_sid.as_str()).or_insert(fact.created_at_ms);
        *at = (*at).min(fact.created_at_ms);
    }

    let mut cycles = Vec::new();
    let mut leave_count = 0;
    for (sid, session) in &sessions {
        if session.aborted || !session.seen_joined_or_left {
            continue;
        }
        if session.left_at.is_some() {
            leave_count += 1;
        }
        let Some(joined_at_ms) =
            session.joined_from_joined.or(session.joined_from_left).or(session.joined_from_listing)
        else {
            continue; // a left with no start time at all: counted, but no time can be derived
        };
        let room_sid = session.room_sid.unwrap_or_default();
        // An authoritative left wins; otherwise the earliest estimate.
        let estimate = [room_finished.get(room_sid).map(|&at| (at, ClosedBy::RoomFinished)), session.estimated_end]
            .into_iter()
            .flatten()
            .min();
        let (left_at_ms, closed_by) = match (session.left_at, estimate) {
            (Some(left), _) => (Some(left.max(joined_at_ms)), Some(ClosedBy::ParticipantLeft)),
            (None, Some((at, by))) => (Some(at.max(joined_at_ms)), Some(by)),
            (None, None) => (None, None),
        };
        cycles.push(Cycle {
            participant_sid: (*sid).to_owned(),
            room_sid: room_sid.to_owned(),
            joined_at_ms,
            left_at_ms,
            closed_by,
        });
    }
    cycles.sort_by(|a, b| (a.joined_at_ms, &a.participant_sid).cmp(&(b.joined_at_ms, &b.participant_sid)));

    Some(Attendance {
        identity: identity.to_owned(),
        name: info.name.clone(),
        metadata: info.metadata.clone(),
        kind: info.kind.clone(),
        attended_ms: union_ms(cycles.iter().filter_map(|c| Some((c.joined_at_ms, c.left_at_ms?)))),
        join_count: sessions.values().filter(|s| !s.aborted && s.seen_joined_or_left).count() as i64,
        leave_count,
        first_joined_at_ms: cycles.iter().map(|c| c.joined_at_ms).min(),
        last_left_at_ms: cycles.iter().filter_map(|c| c.left_at_ms).max(),
        present: cycles.iter().any(|c| c.left_at_ms.is_none()),
        cycles,
    })
}

/// A participant's total over several meetings of a room name (a course total): every cycle,
/// attended time as their union, counts added, the earliest join and the latest leave; name,
/// metadata and kind of the last meeting given (pass them in meeting order). `None` for none.
pub fn course_total(per_meeting: &[Attendance]) -> Option<Attendance> {
    let last = per_meeting.last()?;
    let mut cycles: Vec<Cycle> = per_meeting.iter().flat_map(|a| a.cycles.iter().cloned()).collect();
    cycles.sort_by(|a, b| (a.joined_at_ms, &a.participant_sid).cmp(&(b.joined_at_ms, &b.participant_sid)));
    Some(Attendance {
        identity: last.identity.clone(),
        name: last.name.clone(),
        metadata: last.metadata.clone(),
        kind: last.kind.clone(),
        attended_ms: union_ms(cycles.iter().filter_map(|c| Some((c.joined_at_ms, c.left_at_ms?)))),
        join_count: per_meeting.iter().map(|a| a.join_count).sum(),
        leave_count: per_meeting.iter().map(|a| a.leave_count).sum(),
        first_joined_at_ms: per_meeting.iter().filter_map(|a| a.first_joined_at_ms).min(),
        last_left_at_ms: per_meeting.iter().filter_map(|a| a.last_left_at_ms).max(),
        present: per_meeting.iter().any(|a| a.present),
        cycles,
    })
}

/// Total length of the union of `[start, end]` intervals.
pub fn union_ms(intervals: impl IntoIterator<Item = (i64, i64)>) -> i64 {
    let mut intervals: Vec<(i64, i64)> = intervals.into_iter().filter(|(s, e)| e > s).collect();
    intervals.sort_unstable();
    let mut total = 0;
    let mut current: Option<(i64, i64)> = None;
    for (start, end) in intervals {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0, |(s, e)| e - s)
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
