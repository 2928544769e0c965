//! LiveKit authentication: API keys, the HS256 access tokens LiveKit signs with them, and the
//! verification of webhook requests exactly as LiveKit's own receivers do it.

pub mod heartbeat;
pub mod keys;
pub mod token;
pub mod webhook;

pub use keys::{KeyError, KeySet};
pub use token::{Claims, TokenError, VideoGrant};
pub use webhook::{ReceiveError, VerifyError};
