//! LiveKit authentication: API keys, the HS256 access tokens LiveKit signs with them, the
//! verification of webhook requests exactly as LiveKit's own receivers do it (the only way to
//! make a [`VerifiedEvent`]), participants' own tokens, and the RoomService client that asks the LiveKit server who is in a
//! room. Each has its own error type.

pub mod keys;
pub mod participant;
pub mod room_service;
pub mod token;
pub mod webhook;

pub use keys::{KeyError, KeySet};
pub use participant::{ParticipantGrant, ParticipantTokenError};
pub use token::{AttendanceGrant, Claims, TokenError, VideoGrant};
pub use webhook::{ReceiveError, VerifiedEvent, VerifyError};
