//! Realistic LiveKit event sets for tests: rooms, participants reconnecting with the same
//! identity, two tabs, lost joined or left events, aborted connections, rooms finishing, and
//! events attendance does not interpret. Deterministic for a seed.

use serde_json::{Value, json};

/// One webhook event body and its id.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    pub room: String,
    pub body: Vec<u8>,
}

/// Events of `rooms` rooms with `participants` identities each, starting at `start_ms`.
pub fn meetings(seed: u64, rooms: usize, participants: usize, start_ms: i64) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut events = Vec::new();
    for r in 0..rooms {
        let room = format!("room-{seed:x}-{r}");
        let room_sid = format!("RM_{seed:x}_{r}");
        let mut room_end = start_ms;
        for p in 0..participants {
            let identity = format!("user-{p}");
            for k in 0..rng.usize(1..=3) {
                let sid = format!("PA_{seed:x}_{r}_{p}_{k}");
                let joined_ms = start_ms + rng.i64(0..3_600_000);
                let left_ms = joined_ms + rng.i64(1_000..3_600_000);
                room_end = room_end.max(left_ms);
                let participant = |state: &str| {
                    json!({"sid": sid, "identity": identity, "name": format!("User {p}"), "state": state,
                           "joinedAt": (joined_ms / 1000).to_string(), "joinedAtMs": joined_ms.to_string(),
                           "kind": if p == 0 { "AGENT" } else { "STANDARD" }})
                };
                let id = |what: &str| format!("EV_{seed:x}_{r}_{p}_{k}_{what}");
                let mut push = |event_type: &'static str, what: &str, created_ms: i64, participant: Value| {
                    let body = json!({"event": event_type, "id": id(what), "createdAt": (created_ms / 1000).to_string(),
                                      "room": {"sid": room_sid, "name": room}, "participant": participant});
                    events.push(Event {
                        id: id(what),
                        event_type,
                        room: room.clone(),
                        body: serde_json::to_vec(&body).expect("JSON"),
                    });
                };
                match rng.u8(0..10) {
                    0 => push("participant_connection_aborted", "aborted", joined_ms, participant("ACTIVE")),
                    1 => push("participant_left", "left", left_ms, participant("DISCONNECTED")), // joined lost
                    2 => push("participant_joined", "joined", joined_ms, participant("ACTIVE")), // left lost
                    3 => {
                        push("participant_joined", "joined", joined_ms, participant("ACTIVE"));
                        push("track_published", "track", joined_ms + 500, participant("ACTIVE"));
                        push("participant_left", "left", left_ms, participant("DISCONNECTED"));
                    }
                    _ => {
                        push("participant_joined", "joined", joined_ms, participant("ACTIVE"));
                        push("participant_left", "left", left_ms, participant("DISCONNECTED"));
                    }
                }
            }
        }
        if rng.bool() {
            let id = format!("EV_{seed:x}_{r}_finished");
            let body = json!({"event": "room_finished", "id": id, "createdAt": ((room_end - 600_000) / 1000).to_string(),
                              "room": {"sid": room_sid, "name": room}});
            events.push(Event {
                id,
                event_type: "room_finished",
                room: room.clone(),
                body: serde_json::to_vec(&body).expect("JSON"),
            });
        }
    }
    events
}

/// The attendance the rule gives for these events, by room then identity.
pub fn expected(
    events: &[Event],
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, shared::domain::attendance::Attendance>> {
    let mut facts_by_room: std::collections::BTreeMap<String, Vec<shared::domain::attendance::Fact>> =
        Default::default();
    for event in events {
        let parsed = shared::domain::event::WebhookEvent::parse(&event.body).expect("a valid event");
        if let Some(fact) = shared::domain::attendance::Fact::from_event(&parsed).expect("a valid fact") {
            facts_by_room.entry(fact.room_name.clone()).or_default().push(fact);
        }
    }
    facts_by_room.into_iter().map(|(room, facts)| (room, shared::domain::attendance::room_attendance(&facts))).collect()
}
