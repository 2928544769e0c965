//! The gateway: LiveKit's webhook receiver. It verifies each request as LiveKit's own receivers
//! do, stores the event in JetStream and answers 2xx only once JetStream acknowledged it.

pub mod config;
pub mod error;
pub mod metrics;
pub mod startup;
pub mod webhook;

pub use config::GatewayConfig;
pub use startup::Application;
