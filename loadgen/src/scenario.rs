//! A realistic meeting workload, planned ahead and deterministic for a seed: rooms that start
//! and finish, participants who join, heartbeat, leave and reconnect with the same identity,
//! connections that abort, and lefts LiveKit never delivers (the client's heartbeats stop
//! then). Delivery faults are planned too: duplicates (LiveKit retrying) and late deliveries
//! (reordering).
//!
//! The plan knows the attendance it implies, computed from its own sessions (interval unions),
//! not with the attendance rule, so that comparing the database with it checks the whole
//! system. The one input only a run can give is when the gateway received each participant's
//! last heartbeat: a session whose left never came ends there.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

/// The shape of the workload; every rate is a probability in [0, 1].
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub rooms: usize,
    /// Distinct participants (identities), spread over the rooms.
    pub participants: usize,
    /// The span in which meetings happen, in milliseconds.
    pub duration_ms: i64,
    pub heartbeat_interval_ms: i64,
    /// The sweeper's timeout: rooms finish at least this long after their last heartbeat, so
    /// that a session whose left is lost ends at its last heartbeat whatever comes first.
    pub heartbeat_timeout_ms: i64,
    /// After each session, the chance that the participant reconnects (same identity, new sid).
    pub reconnect_rate: f64,
    /// The chance that a participant's final participant_left is never delivered.
    pub lost_left_rate: f64,
    /// The chance that a connection attempt aborts before a session.
    pub abort_rate: f64,
    /// The chance that a room finishes (room_finished) within the run.
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

#[derive(Debug, Clone)]
pub struct Participant {
    pub room: usize,
    pub identity: String,
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone)]
pub struct Room {
    pub name: String,
    pub sid: String,
    pub finished_at_ms: Option<i64>,
}

/// A webhook body as LiveKit would send it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub event_type: &'static str,
    pub body: Bytes,
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
    pub participants: Vec<Participant>,
    pub webhooks: Vec<Webhook>,
    /// Sorted by time.
    pub sends: Vec<Send>,
    pub reordered: usize,
}

/// A participant's expected attendance in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub attended_ms: i64,
    pub join_count: i64,
    pub leave_count: i64,
    pub first_joined_at_ms: Option<i64>,
    pub last_left_at_ms: Option<i64>,
    pub present: bool,
}

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

impl Plan {
    /// Plans the workload to start at `start_ms` (unix milliseconds).
    pub fn build(config: &ScenarioConfig, start_ms: i64) -> Plan {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let run = format!("{:x}", config.seed & 0xffff_ffff);
        let duration = config.duration_ms.max(10 * MIN_SESSION_MS);
        let mut plan = Plan {
            start_ms,
            rooms: Vec::new(),
            participants: Vec::new(),
            webhooks: Vec::new(),
            sends: Vec::new(),
            reordered: 0,
        };
        let mut room_windows = Vec::new();
        for r in 0..config.rooms.max(1) {
            let opens = start_ms + rng.i64(0..=duration / 5);
            let closes = start_ms + rng.i64(duration * 7 / 10..=duration);
            plan.rooms.push(Room {
                name: format!("bench-{run}-room-{r}"),
                sid: format!("RM_{run}_{r}"),
                finished_at_ms: None,
            });
            room_windows.push((opens, closes));
            let started = json!({"event": "room_started", "id": format!("EV_{run}_{r}_started"),
                                 "createdAt": (opens / 1000).to_string(), "room": room_json(&plan.rooms[r], opens)});
            plan.push_webhook(&mut rng, config, "room_started", started, opens);
        }
        let mut room_last_activity: Vec<i64> = room_windows.iter().map(|&(opens, _)| opens).collect();
        for p in 0..config.participants {
            let room = p % plan.rooms.len();
            let (opens, closes) = room_windows[room];
            let identity = format!("user-{p}");
            let arrives = opens + rng.i64(0..=(closes - opens) * 2 / 5);
            let departs = (arrives + ((closes - arrives) as f64 * (0.3 + 0.7 * rng.f64())) as i64)
                .max(arrives + MIN_SESSION_MS + 1_000);
            let mut count = 1;
            while count < MAX_SESSIONS && rng.f64() < config.reconnect_rate {
                count += 1;
            }
            let sessions = plan_sessions(&mut rng, &format!("PA_{run}_{p}"), arrives, departs, count);
            let lost_left = rng.f64() < config.lost_left_rate;
            let last = sessions.len() - 1;
            let mut participant = Participant { room, identity, sessions };
            for (k, session) in participant.sessions.iter_mut().enumerate() {
                session.left_delivered = !(lost_left && k == last);
            }
            for (k, session) in participant.sessions.iter().enumerate() {
                if rng.f64() < config.abort_rate {
                    let at = session.joined_at_ms - 500;
                    let info =
                        participant_json(&participant.identity, &format!("{}_aborted", session.sid), at, "JOINING");
                    let event = json!({"event": "participant_connection_aborted", "id": format!("EV_{run}_{p}_{k}_aborted"),
                                       "createdAt": (at / 1000).to_string(), "room": room_json(&plan.rooms[room], opens),
                                       "participant": info});
                    plan.push_webhook(&mut rng, config, "participant_connection_aborted", event, at);
                }
                let info = |state| participant_json(&participant.identity, &session.sid, session.joined_at_ms, state);
                let joined = json!({"event": "participant_joined", "id": format!("EV_{run}_{p}_{k}_joined"),
                                    "createdAt": (session.joined_at_ms / 1000).to_string(),
                                    "room": room_json(&plan.rooms[room], opens), "participant": info("ACTIVE")});
                plan.push_webhook(&mut rng, config, "participant_joined", joined, session.joined_at_ms);
                if rng.bool() && session.joined_at_ms + 1_000 < session.left_at_ms {
                    let at = session.joined_at_ms + 1_000;
                    let published = json!({"event": "track_published", "id": format!("EV_{run}_{p}_{k}_track"),
                                           "createdAt": (at / 1000).to_string(), "room": room_json(&plan.rooms[room], opens),
                                           "participant": info("ACTIVE"),
                                           "track": {"sid": format!("TR_{run}_{p}_{k}"), "type": "AUDIO", "source": "MICROPHONE"}});
                    plan.push_webhook(&mut rng, config, "track_published", published, at);
                }
                if session.left_delivered {
                    let mut left_info = info("DISCONNECTED");
                    left_info["disconnectReason"] = json!("CLIENT_INITIATED");
                    let left = json!({"event": "participant_left", "id": format!("EV_{run}_{p}_{k}_left"),
                                      "createdAt": (session.left_at_ms / 1000).to_string(),
                                      "room": room_json(&plan.rooms[room], opens), "participant": left_info});
                    plan.push_webhook(&mut rng, config, "participant_left", left, session.left_at_ms);
                }
                // The client beats once it is connected, then every interval until it leaves.
                let mut beat =
                    session.joined_at_ms + rng.i64(0..=((session.left_at_ms - session.joined_at_ms) / 2).min(1_000));
                while beat < session.left_at_ms {
                    plan.sends.push(Send { at_ms: beat, request: Request::Heartbeat { index: p } });
                    let jitter = config.heartbeat_interval_ms / 10;
                    beat += config.heartbeat_interval_ms + rng.i64(-jitter..=jitter);
                }
                room_last_activity[room] = room_last_activity[room].max(session.left_at_ms);
            }
            plan.participants.push(participant);
        }
        for (r, &(opens, closes)) in room_windows.iter().enumerate() {
            if rng.f64() >= config.finish_rate {
                continue;
            }
            // As LiveKit does after the empty timeout; here also past the heartbeat timeout.
            let finished = ceil_to_second(closes.max(room_last_activity[r]) + config.heartbeat_timeout_ms + 5_000);
            plan.rooms[r].finished_at_ms = Some(finished);
            let event = json!({"event": "room_finished", "id": format!("EV_{run}_{r}_finished"),
                               "createdAt": (finished / 1000).to_string(), "room": room_json(&plan.rooms[r], opens)});
            plan.push_webhook(&mut rng, config, "room_finished", event, finished);
        }
        plan.sends.sort_by_key(|send| send.at_ms);
        plan
    }

    fn push_webhook(
        &mut self,
        rng: &mut fastrand::Rng,
        config: &ScenarioConfig,
        event_type: &'static str,
        body: Value,
        at_ms: i64,
    ) {
        let index = self.webhooks.len();
        self.webhooks.push(Webhook {
            id: body["id"].as_str().expect("an id").to_owned(),
            event_type,
            body: Bytes::from(serde_json::to_vec(&body).expect("JSON serializes")),
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

    /// When the last request is due.
    pub fn end_ms(&self) -> i64 {
        self.sends.last().map_or(self.start_ms, |send| send.at_ms)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.participants.iter().flat_map(|p| p.sessions.iter())
    }

    /// The attendance the plan implies, by (room name, identity). `last_heartbeat_ms(index)` is
    /// when the gateway received participant `index`'s last heartbeat (its answer says so).
    pub fn expected(&self, last_heartbeat_ms: impl Fn(usize) -> Option<i64>) -> BTreeMap<(String, String), Expected> {
        let mut expected = BTreeMap::new();
        for (index, participant) in self.participants.iter().enumerate() {
            let room = &self.rooms[participant.room];
            let mut intervals = Vec::new();
            let mut present = false;
            for session in &participant.sessions {
                let end = if session.left_delivered {
                    Some(session.left_at_ms)
                } else {
                    // Closed by the sweeper at the last heartbeat, else by room_finished.
                    last_heartbeat_ms(index).filter(|&hb| hb >= session.joined_at_ms).or(room.finished_at_ms)
                };
                match end {
                    Some(end) => intervals.push((session.joined_at_ms, end)),
                    None => present = true,
                }
            }
            let attended_ms = union_ms(&mut intervals);
            expected.insert(
                (room.name.clone(), participant.identity.clone()),
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

fn room_json(room: &Room, opens_ms: i64) -> Value {
    json!({"sid": room.sid, "name": room.name, "emptyTimeout": 300, "departureTimeout": 20,
           "creationTime": (opens_ms / 1000).to_string(), "creationTimeMs": opens_ms.to_string(),
           "turnPassword": "bench-turn-password", "enabledCodecs": [{"mime": "audio/opus"}, {"mime": "video/VP8"}]})
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
            duration_ms: 120_000,
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
    /// over its webhooks plus the sweeper's closures agree, duplicates and all.
    #[test]
    fn the_expectation_agrees_with_the_attendance_rule() {
        for seed in 0..30 {
            let plan = Plan::build(&config(seed), START);
            let last_heartbeats = planned_last_heartbeats(&plan);
            let mut facts: BTreeMap<String, Vec<Fact>> = BTreeMap::new();
            for webhook in &plan.webhooks {
                let event = WebhookEvent::parse(&webhook.body).unwrap();
                if let Some(fact) = Fact::from_event(&event).unwrap() {
                    facts.entry(fact.room_name.clone()).or_default().push(fact);
                }
            }
            for (index, participant) in plan.participants.iter().enumerate() {
                let room = &plan.rooms[participant.room];
                for session in participant.sessions.iter().filter(|s| !s.left_delivered) {
                    facts.entry(room.name.clone()).or_default().push(Fact {
                        event_id: format!("closure-{}", session.sid),
                        created_at_ms: last_heartbeats[&index],
                        room_name: room.name.clone(),
                        room_sid: room.sid.clone(),
                        kind: FactKind::Closure {
                            identity: participant.identity.clone(),
                            participant_sid: session.sid.clone(),
                            closed_by: ClosedBy::HeartbeatTimeout,
                        },
                    });
                }
            }
            let by_rule: BTreeMap<(String, String), Expected> = facts
                .iter()
                .flat_map(|(room, facts)| {
                    room_attendance(facts)
                        .into_iter()
                        .map(move |(identity, attendance)| ((room.clone(), identity), Expected::from(&attendance)))
                })
                .collect();
            let planned = plan.expected(|index| last_heartbeats.get(&index).copied());
            assert_eq!(by_rule, planned, "seed {seed}");
        }
    }

    #[test]
    fn rooms_finish_past_the_heartbeat_timeout_after_their_last_session() {
        let plan = Plan::build(&config(3), START);
        for participant in &plan.participants {
            if let Some(finished) = plan.rooms[participant.room].finished_at_ms {
                let last_left = participant.sessions.last().unwrap().left_at_ms;
                assert!(finished >= last_left + 15_000, "{finished} {last_left}");
            }
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
