//! The layers every service is built from. Each layer only calls the ones above it in this list:
//!
//! - [`domain`]: LiveKit's events, the attendance rule (a pure function from a set of events to
//!   cycles and totals), client heartbeats, time. No I/O.
//! - [`livekit`]: API keys and access tokens; webhook verification (the only way to make a
//!   [`livekit::VerifiedEvent`]); participants' own tokens.
//! - [`store`]: PostgreSQL, every SQL statement of the project: the event log, room locks,
//!   recompute, heartbeats, the sweeper's estimates, the presence outbox and the read model.
//! - [`runtime`]: configuration, the database pool, the ops server, start-up retries, shutdown,
//!   telemetry and trace propagation.
//! - [`nats`]: the JetStream streams (one settings type), publishing with an acknowledgement,
//!   and each stream's message format, written and read in one module.
//!
//! The service crates (gateway, worker, sweeper) decide what happens when; what is stored and
//! how attendance is computed is here, testable without a socket.

pub mod domain;
pub mod livekit;
pub mod nats;
pub mod runtime;
pub mod store;
