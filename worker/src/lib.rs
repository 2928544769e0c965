//! The worker fleet: identical replicas share one durable JetStream consumer and apply the
//! webhook events to PostgreSQL, exactly and in any order (what is stored, and how attendance
//! is computed, is `shared::store` and `shared::domain`).
//!
//! - [`apply`]: one batch of messages, one transaction; a bad message cannot fail its neighbours.
//! - [`consume`]: the pull loop, where retries are decided: acks after commit, NAKs with a delay
//!   on transient failures, dead letters for what can never be applied.
//! - [`nak_delay`]: the redelivery delay of a NAK, from the delivery count.
//! - [`dlq`]: the operators' `worker dlq` commands; [`recompute`]: `worker recompute`;
//!   [`erase`]: `worker erase`.
//! - [`deliver`]: `worker deliver`, the meeting reports delivered to the platform's endpoints.

pub mod apply;
pub mod config;
pub mod consume;
pub mod deliver;
pub mod dlq;
pub mod erase;
pub mod metrics;
pub mod nak_delay;
pub mod recompute;
pub mod startup;

pub use config::WorkerConfig;
pub use startup::Application;
