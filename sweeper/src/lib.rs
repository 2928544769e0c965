//! The sweeper: closes the attendance cycles whose client heartbeats stopped (LiveKit never
//! sends `participant_left` for a crashed node), ends meetings whose `room_finished` never came,
//! and publishes the presence and meeting-report outboxes to NATS.
//!
//! - [`sweep`]: closing stale cycles, ending meetings whose end never came;
//! - [`publish_presence`], [`publish_reports`]: the presence and report outboxes to NATS;
//! - [`reconcile`]: checking running meetings against the LiveKit server (`LIVEKIT_URL`).
//!
//! Any number of replicas may run: a room is swept under its row lock taken with
//! `FOR UPDATE SKIP LOCKED` (a room busy elsewhere is left for the next round), and the outbox is
//! published by one replica at a time under a transaction-scoped advisory lock, in id order.
//! Both kinds of lock live and die with a transaction, so they work behind a
//! transaction-pooling PgBouncer.

pub mod config;
pub mod metrics;
pub mod publish_presence;
pub mod publish_reports;
pub mod reconcile;
pub mod startup;
pub mod sweep;

pub use config::SweeperConfig;
pub use startup::Application;
