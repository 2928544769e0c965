//! The identifiers that come from outside (LiveKit's event ids, room names and sids, identities,
//! participant sids): what may enter the system. They end up in NATS headers, PostgreSQL's
//! indexes, logs and CSV files, so they are checked once, at the edge (the gateway, and the
//! worker for whatever is already in the stream), instead of failing later where a refusal
//! would take other events with it:
//! - no control characters (NUL cannot be stored in PostgreSQL text; CR and LF cannot go into a
//!   header; none belongs in a name shown to people);
//! - a length bound, so that every index row stays far below PostgreSQL's btree limit (about
//!   2.7 KB) whatever the combination of fields.

/// Which identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    EventId,
    RoomName,
    RoomSid,
    Identity,
    ParticipantSid,
}

impl Field {
    /// The longest value accepted, in bytes (UTF-8). LiveKit's own ids are about 15 bytes.
    pub const fn max_bytes(self) -> usize {
        match self {
            Field::EventId | Field::RoomSid | Field::ParticipantSid => 128,
            Field::RoomName | Field::Identity => 512,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Field::EventId => "event id",
            Field::RoomName => "room name",
            Field::RoomSid => "room sid",
            Field::Identity => "identity",
            Field::ParticipantSid => "participant sid",
        }
    }

    /// The stable error code of a refusal.
    pub const fn code(self) -> &'static str {
        match self {
            Field::EventId => "invalid_event_id",
            Field::RoomName => "invalid_room_name",
            Field::RoomSid => "invalid_room_sid",
            Field::Identity => "invalid_identity",
            Field::ParticipantSid => "invalid_participant_sid",
        }
    }
}

/// An identifier that may not enter the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentifier {
    #[error("the {} is longer than {} bytes", .0.name(), .0.max_bytes())]
    TooLong(Field),
    #[error("the {} holds a control character", .0.name())]
    ControlCharacter(Field),
}

impl InvalidIdentifier {
    pub fn field(self) -> Field {
        match self {
            InvalidIdentifier::TooLong(field) | InvalidIdentifier::ControlCharacter(field) => field,
        }
    }

    pub fn code(self) -> &'static str {
        self.field().code()
    }
}

/// Checks one identifier (an empty one is "absent" and passes: whether it is required is the
/// caller's rule).
pub fn check(field: Field, value: &str) -> Result<(), InvalidIdentifier> {
    if value.len() > field.max_bytes() {
        return Err(InvalidIdentifier::TooLong(field));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidIdentifier::ControlCharacter(field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_control_characters_and_overlong_values_only() {
        for good in ["", "EV_3kxNVzPYTgVc", "Ada Lovelace", "algebra-7b", "名前 é ü", "=1+1", "a,b \"c\""] {
            assert_eq!(check(Field::Identity, good), Ok(()), "{good:?}");
        }
        for bad in ["a\0b", "a\rb", "a\nb", "\t", "a\u{7f}", "a\u{85}b", "\u{1b}[31m"] {
            assert_eq!(
                check(Field::RoomName, bad),
                Err(InvalidIdentifier::ControlCharacter(Field::RoomName)),
                "{bad:?}"
            );
        }
        assert_eq!(check(Field::EventId, &"e".repeat(128)), Ok(()));
        assert_eq!(check(Field::EventId, &"e".repeat(129)), Err(InvalidIdentifier::TooLong(Field::EventId)));
        // Bytes, not characters: 171 three-byte characters are 513 bytes.
        assert_eq!(check(Field::Identity, &"名".repeat(171)), Err(InvalidIdentifier::TooLong(Field::Identity)));
        assert_eq!(check(Field::Identity, &"名".repeat(170)), Ok(()));
    }
}
