//! The domain, without I/O: what LiveKit's events say, the attendance rule that turns a set of
//! them into cycles and totals, client heartbeats, reconciliation with the LiveKit server's own list, the identifiers that may enter, and time. Every other layer calls into this
//! one; it calls none of them.

pub mod attendance;
pub mod document;
pub mod event;
pub mod heartbeat;
pub mod identifiers;
pub mod meeting;
pub mod policy;
pub mod reconciliation;
pub mod report;
pub mod time;
