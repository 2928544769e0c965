//! A client heartbeat: a participant's client saying, with the participant's own access token,
//! "I am still in this room". The gateway makes one only from a verified token; the workers
//! record the latest per participant, and a heartbeat later than a `heartbeat_timeout` estimate
//! proves that estimate wrong. It is not a LiveKit event and never enters the event log.

/// One heartbeat, as received by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Unique per heartbeat (`HB_…`): names it in the stream, in traces and in the presence
    /// outbox as the cause of a change.
    pub id: String,
    pub room_name: String,
    pub identity: String,
    /// When the gateway received it, unix milliseconds: the time the participant was last known
    /// present.
    pub received_at_ms: i64,
}

impl Heartbeat {
    /// A heartbeat of `identity` in `room_name` received at `received_at_ms`, with a fresh id.
    pub fn new(room_name: String, identity: String, received_at_ms: i64) -> Self {
        let id = format!("HB_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        Heartbeat { id, room_name, identity, received_at_ms }
    }
}
