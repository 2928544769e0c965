//! A realistic meeting workload, planned ahead and deterministic for a seed: rooms (weekly
//! classes) that hold several consecutive meetings, each a LiveKit room session with its own
//! room sid that starts and finishes, participants who join, heartbeat, leave and reconnect with
//! the same identity, connections that abort, and lefts LiveKit never delivers (the client's
//! heartbeats stop then). Delivery faults are planned too: duplicates (LiveKit retrying) and
//! late deliveries (reordering).
//!
//! The plan knows the attendance it implies, per meeting and identity, computed from its own
//! sessions (interval unions), not with the attendance rule, so that comparing the database with
//! it checks the whole system. The one input only a run can give is when the gateway received
//! each participant's last heartbeat: a session whose left never came ends there.
//!
//! Invariants that keep the expectation unambiguous: the meetings of a room never overlap, and
//! more than the late-delivery delay separates one meeting's end from the next one's start;
//! nobody joins a meeting until more than that delay after its room_started, so a heartbeat
//! (which names a room, not a meeting) never arrives while its meeting is still unknown and the
//! previous one still running.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

/// The shape of the workload; every rate is a probability in [0, 1].
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub rooms: usize,
    /// Distinct participants (identities), spread over the rooms; each attends most meetings of
    /// its room.
    pub participants: usize,
    /// Consecutive meetings per room.
    pub meetings_per_room: usize,
    /// The span in which a room's meetings happen, in milliseconds (longer when each meeting
    /// needs more than its share, see [`MIN_ACTIVE_MS`]).
    pub duration_ms: i64,
    pub heartbeat_interval_ms: i64,
    /// The sweeper's timeout: meetings finish at least this long after their last heartbeat, so
    /// that a session whose left is lost ends at its last heartbeat whatever comes first.
    pub heartbeat_timeout_ms: i64,
    /// After each session, the chance that the participant reconnects (same identity, new sid).
    pub reconnect_rate: f64,
    /// The chance that a participant's final participant_left is never delivered.
    pub lost_left_rate: f64,
    /// The chance that a connection attempt aborts before a session.
    pub abort_rate: f64,
    /// The chance that a meeting finishes (room_finished) within the run.
    pub finish_rate: f64,
    /// The chance that a webhook is delivered twice.
    pub duplicate_rate: f64,
    /// The chance that a webhook is delivered late, by up to `reorder_delay_ms`.
    pub reorder_rate: f64,
    pub reorder_delay_ms: i64,
}

/// One connection session (one participant sid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub joined_at_ms: i64,
    /// When the participant left (a whole second: LiveKit's `createdAt` has second precision).
    pub left_at_ms: i64,
    /// False when the participant_left is never delivered.
    pub left_delivered: bool,
}

/// One identity's sessions in one meeting.
#[derive(Debug, Clone)]
pub struct Participant {
    /// Index in [`Plan::meetings`].
    pub meeting: usize,
    pub identity: String,
    pub sessions: Vec<Session>,
}

/// A room name: a weekly class, home of several meetings.
#[derive(Debug, Clone)]
pub struct Room {
    pub name: String,
}

/// One meeting: a LiveKit room session of a room name, with its own room sid.
#[derive(Debug, Clone)]
pub struct Meeting {
    /// Index in [`Plan::rooms`].
    pub room: usize,
    /// Its place among its room's meetings, from 0.
    pub order: usize,
    pub sid: String,
    /// When the room was created (room_started).
    pub started_at_ms: i64,
    /// When LiveKit closes the room, whether or not its room_finished is delivered.
    pub ends_at_ms: i64,
    /// When room_finished is sent; `None` when LiveKit never sends it.
    pub finished_at_ms: Option<i64>,
}

/// A webhook body as LiveKit would send it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub event_type: &'static str,
    pub body: Bytes,
    /// Index in [`Plan::meetings`] of the meeting it belongs to.
    pub meeting: usize,
}

/// One request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `webhooks[index]`; `duplicate` when LiveKit sends it again.
    Webhook { index: usize, duplicate: bool },
    /// A heartbeat of `participants[index]`.
    Heartbeat { index: usize },
}

/// The planned send time of a request, in unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub at_ms: i64,
    pub request: Request,
}

/// The workload: who does what when, and the requests in the order to send them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub start_ms: i64,
    pub rooms: Vec<Room>,
    /// Each room's meetings in order, room after room.
    pub meetings: Vec<Meeting>,
    pub participants: Vec<Participant>,
    pub webhooks: Vec<Webhook>,
    /// Sorted by time.
    pub sends: Vec<Send>,
    pub reordered: usize,
}

/// A participant's expected attendance in a meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub attended_ms: i64,
    pub join_count: i64,
    pub leave_count: i64,
    pub first_joined_at_ms: Option<i64>,
    pub last_left_at_ms: Option<i64>,
    pub present: bool,
}

/// The attendance a plan implies: by meeting (room sid), then identity. Every planned meeting
/// is a key, even one nobody attended.
pub type MeetingExpectations = BTreeMap<String, BTreeMap<String, Expected>>;

impl From<&shared::domain::attendance::Attendance> for Expected {
    fn from(stored: &shared::domain::attendance::Attendance) -> Self {
        Expected {
            attended_ms: stored.attended_ms,
            join_count: stored.join_count,
            leave_count: stored.leave_count,
            first_joined_at_ms: stored.first_joined_at_ms,
            last_left_at_ms: stored.last_left_at_ms,
            present: stored.present,
        }
    }
}

const MIN_SESSION_MS: i64 = 2_000;
const MAX_SESSIONS: usize = 4;
/// The least time in which a meeting's participants come and go, whatever the duration: long
/// enough for some of them to reconnect.
pub const MIN_ACTIVE_MS: i64 = 15_000;
/// Beyond the late-delivery delay, between a meeting's end and the next one's start, and between
/// a meeting's start and its first join: the time the workers need to apply the earlier event
/// (its commit p99 is tens of milliseconds; a replay at saturation runs a few batches ahead).
const ORDER_MARGIN_MS: i64 = 2_000;
/// The chance that an identity misses one meeting of its room (a week off).
const SKIPS_A_MEETING: f64 = 0.1;

/// When a meeting's participants come and go: from their first possible join to when the last
/// of them have left (some reconnects run a little over).
#[derive(Debug, Clone, Copy)]
struct MeetingWindow {
    joins_from_ms: i64,
    closes_ms: i64,
}

impl ScenarioConfig {
    /// After room_started, how long before anyone joins (see the module's invariants).
    fn join_lead_ms(&self) -> i64 {
        self.reorder_delay_ms.max(0) + ORDER_MARGIN_MS
    }

    /// Between a meeting's end and the next one's start.
    fn meeting_gap_ms(&self) -> i64 {
        self.reorder_delay_ms.max(0) + ORDER_MARGIN_MS
    }

    /// After a meeting's last session, when LiveKit closes it: as after its empty timeout, and
    /// here also past the heartbeat timeout.
    fn finish_after_ms(&self) -> i64 {
        self.heartbeat_timeout_ms + 5_000
    }

    /// How long each meeting's participants come and go: the duration's share once every
    /// meeting's lead, finishing and gap are set aside, and at least [`MIN_ACTIVE_MS`].
    pub fn active_ms(&self) -> i64 {
        let meetings = self.meetings_per_room.max(1) as i64;
        let set_aside =
            meetings * (self.join_lead_ms() + self.finish_after_ms()) + (meetings - 1) * self.meeting_gap_ms();
        ((self.duration_ms - set_aside) / meetings).max(MIN_ACTIVE_MS)
    }
}

impl Plan {
    /// Plans the workload to start at `start_ms` (unix milliseconds).
    pub fn build(config: &ScenarioConfig, start_ms: i64) -> Plan {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let run = format!("{:x}", config.seed & 0xffff_ffff);
        let active = config.active_ms();
        let mut plan = Plan {
            start_ms,
            rooms: Vec::new(),
            meetings: Vec::new(),
            participants: Vec::new(),
            webhooks: Vec::new(),
            sends: Vec::new(),
            reordered: 0,
        };
        let rooms = config.rooms.max(1);
        for r in 0..rooms {
            plan.rooms.push(Room { name: format!("bench-{run}-room-{r}") });
            let mut opens = start_ms + rng.i64(0..=active / 5);
            for m in 0..config.meetings_per_room.max(1) {
                let meeting = plan.meetings.len();
                let joins_from = opens + config.join_lead_ms();
                let closes = joins_from + rng.i64(active * 7 / 10..=active);
                let window = MeetingWindow { joins_from_ms: joins_from, closes_ms: closes };
                plan.meetings.push(Meeting {
                    room: r,
                    order: m,
                    sid: format!("RM_{run}_{r}_{m}"),
                    started_at_ms: opens,
                    ends_at_ms: 0,
                    finished_at_ms: None,
                });
                let started = json!({"event": "room_started", "id": format!("EV_{run}_{r}_{m}_started"),
                                     "createdAt": (opens / 1000).to_string(), "room": plan.room_json(meeting)});
                plan.push_webhook(&mut rng, config, meeting, "room_started", started, opens);
                let mut last_activity = joins_from;
                for p in (r..config.participants).step_by(rooms) {
                    if config.meetings_per_room > 1 && rng.f64() < SKIPS_A_MEETING {
                        continue;
                    }
                    last_activity = last_activity.max(plan.plan_participant(&mut rng, config, meeting, p, window));
                }
                let ends = ceil_to_second(window.closes_ms.max(last_activity) + config.finish_after_ms());
                plan.meetings[meeting].ends_at_ms = ends;
                if rng.f64() < config.finish_rate {
                    plan.meetings[meeting].finished_at_ms = Some(ends);
                    let event = json!({"event": "room_finished", "id": format!("EV_{run}_{r}_{m}_finished"),
                                       "createdAt": (ends / 1000).to_string(), "room": plan.room_json(meeting)});
                    plan.push_webhook(&mut rng, config, meeting, "room_finished", event, ends);
                }
                opens = ends + config.meeting_gap_ms() + rng.i64(0..=1_000);
            }
        }
        plan.sends.sort_by_key(|send| send.at_ms);
        plan
    }

    /// Plans identity `p`'s sessions in `meeting` and their webhooks and heartbeats; returns when
    /// its last session ends.
    fn plan_participant(
        &mut self,
        rng: &mut fastrand::Rng,
        config: &ScenarioConfig,
        meeting: usize,
        p: usize,
        window: MeetingWindow,
    ) -> i64 {
        let run = format!("{:x}", config.seed & 0xffff_ffff);
        let (joins_from, closes) = (window.joins_from_ms, window.closes_ms);
        let identity = format!("user-{p}");
        let arrives = joins_from + rng.i64(0..=(closes - joins_from) * 2 / 5);
        let departs = (arrives + ((closes - arrives) as f64 * (0.3 + 0.7 * rng.f64())) as i64)
            .max(arrives + MIN_SESSION_MS + 1_000);
        let mut count = 1;
        while count < MAX_SESSIONS && rng.f64() < config.reconnect_rate {
            count += 1;
        }
        let sessions = plan_sessions(rng, &format!("PA_{run}_{meeting}_{p}"), arrives, departs, count);
        let lost_left = rng.f64() < config.lost_left_rate;
        let last = sessions.len() - 1;
        let mut participant = Participant { meeting, identity, sessions };
        for (k, session) in participant.sessions.iter_mut().enumerate() {
            session.left_delivered = !(lost_left && k == last);
        }
        let index = self.participants.len();
        let room = self.room_json(meeting);
        let event_id = |k: usize, what: &str| format!("EV_{run}_{meeting}_{p}_{k}_{what}");
        for (k, session) in participant.sessions.iter().enumerate() {
            if rng.f64() < config.abort_rate {
                let at = session.joined_at_ms - 500;
                let info = participant_json(&participant.identity, &format!("{}_aborted", session.sid), at, "JOINING");
                let event = json!({"event": "participant_connection_aborted", "id": event_id(k, "aborted"),
                                   "createdAt": (at / 1000).to_string(), "room": room, "participant": info});
                self.push_webhook(rng, config, meeting, "participant_connection_aborted", event, at);
            }
            let info = |state| participant_json(&participant.identity, &session.sid, session.joined_at_ms, state);
            let joined = json!({"event": "participant_joined", "id": event_id(k, "joined"),
                                "createdAt": (session.joined_at_ms / 1000).to_string(),
                                "room": room, "participant": info("ACTIVE")});
            self.push_webhook(rng, config, meeting, "participant_joined", joined, session.joined_at_ms);
            if rng.bool() && session.joined_at_ms + 1_000 < session.left_at_ms {
                let at = session.joined_at_ms + 1_000;
                let published = json!({"event": "track_published", "id": event_id(k, "track"),
                                       "createdAt": (at / 1000).to_string(), "room": room,
                                       "participant": info("ACTIVE"),
                                       "track": {"sid": format!("TR_{run}_{meeting}_{p}_{k}"), "type": "AUDIO", "source": "MICROPHONE"}});
                self.push_webhook(rng, config, meeting, "track_published", published, at);
            }
            if session.left_delivered {
                let mut left_info = info("DISCONNECTED");
                left_info["disconnectReason"] = json!("CLIENT_INITIATED");
                let left = json!({"event": "participant_left", "id": event_id(k, "left"),
                                  "createdAt": (session.left_at_ms / 1000).to_string(),
                                  "room": room, "participant": left_info});
                self.push_webhook(rng, config, meeting, "participant_left", left, session.left_at_ms);
            }
            // The client beats once it is connected, then every interval until it leaves.
            let mut beat =
                session.joined_at_ms + rng.i64(0..=((session.left_at_ms - session.joined_at_ms) / 2).min(1_000));
            while beat < session.left_at_ms {
                self.sends.push(Send { at_ms: beat, request: Request::Heartbeat { index } });
                let jitter = config.heartbeat_interval_ms / 10;
                beat += config.heartbeat_interval_ms + rng.i64(-jitter..=jitter);
            }
        }
        let last_left = participant.sessions.iter().map(|s| s.left_at_ms).max().unwrap_or(joins_from);
        self.participants.push(participant);
        last_left
    }

    fn push_webhook(
        &mut self,
        rng: &mut fastrand::Rng,
        config: &ScenarioConfig,
        meeting: usize,
        event_type: &'static str,
        body: Value,
        at_ms: i64,
    ) {
        let index = self.webhooks.len();
        self.webhooks.push(Webhook {
            id: body["id"].as_str().expect("an id").to_owned(),
            event_type,
            body: Bytes::from(serde_json::to_vec(&body).expect("JSON serializes")),
            meeting,
        });
        let late = |rng: &mut fastrand::Rng| rng.i64(0..=config.reorder_delay_ms.max(0));
        let mut first = at_ms;
        if rng.f64() < config.reorder_rate {
            first += late(rng);
            self.reordered += 1;
        }
        self.sends.push(Send { at_ms: first, request: Request::Webhook { index, duplicate: false } });
        if rng.f64() < config.duplicate_rate {
            let again = first + 1 + late(rng);
            self.sends.push(Send { at_ms: again, request: Request::Webhook { index, duplicate: true } });
        }
    }

    /// The room object of `meeting`'s events, as LiveKit sends it.
    fn room_json(&self, meeting: usize) -> Value {
        let meeting = &self.meetings[meeting];
        let opens_ms = meeting.started_at_ms;
        json!({"sid": meeting.sid, "name": self.rooms[meeting.room].name, "emptyTimeout": 300, "departureTimeout": 20,
               "creationTime": (opens_ms / 1000).to_string(), "creationTimeMs": opens_ms.to_string(),
               "turnPassword": "bench-turn-password", "enabledCodecs": [{"mime": "audio/opus"}, {"mime": "video/VP8"}]})
    }

    /// When the last request is due.
    pub fn end_ms(&self) -> i64 {
        self.sends.last().map_or(self.start_ms, |send| send.at_ms)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.participants.iter().flat_map(|p| p.sessions.iter())
    }

    /// The meeting (index in [`Plan::meetings`]) a request belongs to.
    pub fn meeting_of(&self, request: Request) -> usize {
        match request {
            Request::Webhook { index, .. } => self.webhooks[index].meeting,
            Request::Heartbeat { index } => self.participants[index].meeting,
        }
    }

    /// The room name of participant `index`'s meeting (what its access token names).
    pub fn room_name_of(&self, index: usize) -> &str {
        &self.rooms[self.meetings[self.participants[index].meeting].room].name
    }

    /// Distinct identities over every meeting.
    pub fn identities(&self) -> usize {
        self.participants.iter().map(|p| p.identity.as_str()).collect::<std::collections::BTreeSet<_>>().len()
    }

    /// The attendance the plan implies, by meeting and identity. `last_heartbeat_ms(index)` is
    /// when the gateway received participant `index`'s last heartbeat (its answer says so).
    pub fn expected(&self, last_heartbeat_ms: impl Fn(usize) -> Option<i64>) -> MeetingExpectations {
        let mut expected: MeetingExpectations =
            self.meetings.iter().map(|meeting| (meeting.sid.clone(), BTreeMap::new())).collect();
        for (index, participant) in self.participants.iter().enumerate() {
            let meeting = &self.meetings[participant.meeting];
            let mut intervals = Vec::new();
            let mut present = false;
            for session in &participant.sessions {
                let end = if session.left_delivered {
                    Some(session.left_at_ms)
                } else {
                    // Closed by the sweeper at the last heartbeat, else by room_finished.
                    last_heartbeat_ms(index).filter(|&hb| hb >= session.joined_at_ms).or(meeting.finished_at_ms)
                };
                match end {
                    Some(end) => intervals.push((session.joined_at_ms, end)),
                    None => present = true,
                }
            }
            let attended_ms = union_ms(&mut intervals);
            expected.entry(meeting.sid.clone()).or_default().insert(
                participant.identity.clone(),
                Expected {
                    attended_ms,
                    join_count: participant.sessions.len() as i64,
                    leave_count: participant.sessions.iter().filter(|s| s.left_delivered).count() as i64,
                    first_joined_at_ms: participant.sessions.iter().map(|s| s.joined_at_ms).min(),
                    last_left_at_ms: intervals.iter().map(|&(_, end)| end).max(),
                    present,
                },
            );
        }
        expected
    }
}

/// `count` sessions from `arrives` to `departs`, with short gaps between them (a reconnect).
fn plan_sessions(rng: &mut fastrand::Rng, sid_prefix: &str, arrives: i64, departs: i64, count: usize) -> Vec<Session> {
    let span = departs - arrives;
    let count = count.min((span / (MIN_SESSION_MS + 3_000)).max(1) as usize);
    let mut cuts: Vec<i64> = (1..count).map(|_| arrives + rng.i64(0..=span)).collect();
    cuts.sort_unstable();
    let mut bounds = vec![arrives];
    bounds.extend(cuts);
    bounds.push(departs);
    let mut sessions = Vec::new();
    let mut earliest = arrives;
    for (k, window) in bounds.windows(2).enumerate() {
        let joined = window[0].max(earliest) + rng.i64(0..=300);
        // Lefts land on whole seconds; a session lasts at least MIN_SESSION_MS.
        let left = ceil_to_second(window[1].max(joined + MIN_SESSION_MS));
        sessions.push(Session {
            sid: format!("{sid_prefix}_{k}"),
            joined_at_ms: joined,
            left_at_ms: left,
            left_delivered: true,
        });
        earliest = left + rng.i64(0..=2_000);
    }
    sessions
}

fn ceil_to_second(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000) * 1000
}

/// The length of the union of `intervals`.
fn union_ms(intervals: &mut [(i64, i64)]) -> i64 {
    intervals.sort_unstable();
    let mut total = 0;
    let mut covered_to = i64::MIN;
    for &(start, end) in intervals.iter() {
        let start = start.max(covered_to);
        if end > start {
            total += end - start;
            covered_to = end;
        }
    }
    total
}

fn participant_json(identity: &str, sid: &str, joined_at_ms: i64, state: &str) -> Value {
    json!({"sid": sid, "identity": identity, "name": format!("Participant {identity}"), "state": state,
           "joinedAt": (joined_at_ms / 1000).to_string(), "joinedAtMs": joined_at_ms.to_string(),
           "metadata": "{\"role\":\"student\"}", "version": 3, "kind": "STANDARD",
           "permission": {"canSubscribe": true, "canPublish": true, "canPublishData": true}})
}

#[cfg(test)]
mod tests {
    use shared::domain::attendance::{ClosedBy, Fact, FactKind, room_attendance};
    use shared::domain::event::WebhookEvent;

    use super::*;

    const START: i64 = 1_800_000_000_000;

    fn config(seed: u64) -> ScenarioConfig {
        ScenarioConfig {
            seed,
            rooms: 7,
            participants: 60,
            meetings_per_room: 3,
            duration_ms: 300_000,
            heartbeat_interval_ms: 5_000,
            heartbeat_timeout_ms: 15_000,
            reconnect_rate: 0.5,
            lost_left_rate: 0.3,
            abort_rate: 0.2,
            finish_rate: 0.6,
            duplicate_rate: 0.2,
            reorder_rate: 0.3,
            reorder_delay_ms: 20_000,
        }
    }

    /// Each participant's last planned heartbeat (a run gives the gateway's receipt time).
    fn planned_last_heartbeats(plan: &Plan) -> BTreeMap<usize, i64> {
        let mut last = BTreeMap::new();
        for send in &plan.sends {
            if let Request::Heartbeat { index } = send.request {
                last.insert(index, send.at_ms);
            }
        }
        last
    }

    #[test]
    fn the_plan_is_deterministic_for_a_seed() {
        let (a, b) = (Plan::build(&config(7), START), Plan::build(&config(7), START));
        assert_eq!(a.sends, b.sends);
        assert!(a.webhooks.iter().zip(&b.webhooks).all(|(x, y)| x.body == y.body));
        assert_ne!(Plan::build(&config(8), START).sends, a.sends);
    }

    #[test]
    fn every_webhook_is_sent_and_sessions_are_well_formed() {
        for seed in 0..20 {
            let plan = Plan::build(&config(seed), START);
            let mut sent = vec![0; plan.webhooks.len()];
            for send in &plan.sends {
                if let Request::Webhook { index, .. } = send.request {
                    sent[index] += 1;
                }
            }
            assert!(sent.iter().all(|&n| n == 1 || n == 2), "each webhook once, or twice when duplicated");
            assert!(plan.sends.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "sorted by time");
            for participant in &plan.participants {
                for pair in participant.sessions.windows(2) {
                    assert!(pair[0].left_at_ms <= pair[1].joined_at_ms, "one session at a time per identity");
                    assert!(pair[0].left_delivered, "only the last left can be lost");
                }
                for session in &participant.sessions {
                    assert_eq!(session.left_at_ms % 1000, 0);
                    assert!(session.left_at_ms - session.joined_at_ms >= MIN_SESSION_MS);
                }
            }
        }
    }

    /// The plan's own expectation (interval unions over its sessions) and the attendance rule
    /// over each meeting's webhooks plus the sweeper's closures agree, duplicates and all.
    #[test]
    fn the_expectation_agrees_with_the_attendance_rule_per_meeting() {
        for seed in 0..30 {
            let plan = Plan::build(&config(seed), START);
            let last_heartbeats = planned_last_heartbeats(&plan);
            let mut facts: BTreeMap<String, Vec<Fact>> = BTreeMap::new();
            for webhook in &plan.webhooks {
                let event = WebhookEvent::parse(&webhook.body).unwrap();
                if let Some(fact) = Fact::from_event(&event).unwrap() {
                    facts.entry(fact.room_sid.clone()).or_default().push(fact);
                }
            }
            for (index, participant) in plan.participants.iter().enumerate() {
                let meeting = &plan.meetings[participant.meeting];
                for session in participant.sessions.iter().filter(|s| !s.left_delivered) {
                    facts.entry(meeting.sid.clone()).or_default().push(Fact {
                        event_id: format!("closure-{}", session.sid),
                        created_at_ms: last_heartbeats[&index],
                        room_name: plan.room_name_of(index).to_owned(),
                        room_sid: meeting.sid.clone(),
                        kind: FactKind::Closure {
                            identity: participant.identity.clone(),
                            participant_sid: session.sid.clone(),
                            closed_by: ClosedBy::HeartbeatTimeout,
                        },
                    });
                }
            }
            let by_rule: MeetingExpectations = facts
                .iter()
                .map(|(room_sid, facts)| {
                    let attendance =
                        room_attendance(facts).iter().map(|(identity, a)| (identity.clone(), a.into())).collect();
                    (room_sid.clone(), attendance)
                })
                .collect();
            let planned = plan.expected(|index| last_heartbeats.get(&index).copied());
            assert_eq!(by_rule, planned, "seed {seed}");
        }
    }

    /// A room's meetings follow one another with more than the late-delivery delay between
    /// them, and nobody joins before that delay has passed since room_started; every session
    /// ends past the heartbeat timeout before its meeting does.
    #[test]
    fn meetings_of_a_room_follow_one_another_and_hold_their_sessions() {
        for seed in 0..10 {
            let config = config(seed);
            let plan = Plan::build(&config, START);
            assert_eq!(plan.meetings.len(), config.rooms * config.meetings_per_room);
            for pair in plan.meetings.windows(2).filter(|pair| pair[0].room == pair[1].room) {
                assert!(pair[1].started_at_ms - pair[0].ends_at_ms > config.reorder_delay_ms, "{pair:?}");
            }
            for participant in &plan.participants {
                let meeting = &plan.meetings[participant.meeting];
                for session in &participant.sessions {
                    assert!(session.joined_at_ms - 500 - meeting.started_at_ms > config.reorder_delay_ms);
                    assert!(meeting.ends_at_ms - session.left_at_ms >= config.heartbeat_timeout_ms);
                }
                if let Some(finished) = meeting.finished_at_ms {
                    assert_eq!(finished, meeting.ends_at_ms);
                }
            }
            let identities_in_many = plan.identities() < plan.participants.len();
            assert!(identities_in_many, "identities come back to their room's next meetings");
        }
    }

    #[test]
    fn rates_shape_the_workload() {
        let mut quiet = config(1);
        (quiet.duplicate_rate, quiet.reorder_rate, quiet.lost_left_rate, quiet.abort_rate) = (0.0, 0.0, 0.0, 0.0);
        let plan = Plan::build(&quiet, START);
        assert_eq!(plan.reordered, 0);
        assert!(plan.sends.iter().all(|s| !matches!(s.request, Request::Webhook { duplicate: true, .. })));
        assert!(plan.sessions().all(|s| s.left_delivered));
        assert!(plan.webhooks.iter().all(|w| w.event_type != "participant_connection_aborted"));

        let busy = Plan::build(&config(1), START);
        let duplicates =
            busy.sends.iter().filter(|s| matches!(s.request, Request::Webhook { duplicate: true, .. })).count();
        let share = duplicates as f64 / busy.webhooks.len() as f64;
        assert!((0.1..0.3).contains(&share), "{share}");
        assert!(busy.sessions().any(|s| !s.left_delivered));
        assert!(busy.participants.iter().any(|p| p.sessions.len() > 1), "reconnects");
    }

    #[test]
    fn union_counts_overlaps_once() {
        assert_eq!(union_ms(&mut [(0, 10), (5, 20), (30, 40)]), 30);
        assert_eq!(union_ms(&mut [(0, 10), (10, 20)]), 20);
        assert_eq!(union_ms(&mut []), 0);
    }
}
