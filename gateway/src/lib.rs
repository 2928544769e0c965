//! The gateway: LiveKit's webhook receiver. It verifies each request as LiveKit's own receivers
//! do, stores the event in JetStream and answers 2xx only once JetStream acknowledged it. It also
//! takes client heartbeats and serves the attendance read API and live presence stream.

pub mod attendance;
pub mod auth;
pub mod config;
pub mod error;
pub mod heartbeat;
pub mod metrics;
pub mod startup;
pub mod webhook;

pub use config::GatewayConfig;
pub use startup::Application;
