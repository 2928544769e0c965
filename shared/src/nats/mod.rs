//! NATS: the connection every binary makes ([`connection`]), and JetStream: the streams' settings (one type for all), publishing with an acknowledgement, and
//! each stream's message format, written and read in one module:
//!
//! - [`webhooks`]: verified LiveKit events and client heartbeats, from the gateway to the workers;
//! - [`dead_letters`]: what the workers could not apply, for operators to inspect and replay;
//! - [`presence`]: presence changes, from the sweeper to the gateway's live streams;
//! - [`reports`]: meeting reports, from the outbox to `worker deliver` and internal consumers.

pub mod connection;
pub mod dead_letters;
pub mod presence;
pub mod publish;
pub mod reports;
pub mod settings;
pub mod webhooks;

pub use connection::{NatsArgs, NatsConfigError, NatsHealth};
pub use publish::{PublishAck, PublishError};
pub use settings::{DeadLetterArgs, PresenceArgs, ReportArgs, StreamSettings, StreamSetupError, WebhookStreamArgs};
