//! The worker fleet: identical replicas share one durable JetStream consumer and apply the
//! webhook events to PostgreSQL, exactly and in any order (see `shared::storage`).
//!
//! - [`apply`]: one batch of messages, one transaction; a bad message cannot fail its neighbours.
//! - [`consume`]: the pull loop, acks after commit, NAKs with a delay on transient failures,
//!   dead letters for what can never be applied.
//! - [`retry`]: the redelivery delays.

pub mod apply;
pub mod config;
pub mod consume;
pub mod dlq;
pub mod metrics;
pub mod recompute;
pub mod retry;
pub mod startup;

pub use config::WorkerConfig;
pub use startup::Application;
