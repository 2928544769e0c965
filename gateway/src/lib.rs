//! The gateway: LiveKit's webhook receiver. It verifies each request as LiveKit's own receivers
//! do, stores the event in JetStream and answers 2xx only once JetStream acknowledged it. It also
//! takes client heartbeats and serves the attendance read API and live presence stream.
//!
//! - [`webhook`]: `POST /webhooks/livekit` (verification is `shared::livekit::webhook`);
//! - [`heartbeat`]: `POST /v1/heartbeats`;
//! - [`read_api`]: attendance reads, the presence stream ([`presence_stream`]) and the live
//!   page, with [`read_access`] deciding who may read what;
//! - [`meetings_api`]: a room's meetings, and one meeting with the attendance policy applied, as
//!   JSON or CSV ([`csv_export`]);
//! - [`routes`]: every route; [`error`]: every error, mapped to a status and a stable code;
//! - [`view_links`]: read-only links to the live page, for a room's admin to hand out;
//! - [`server`]: connections (count, header timeout); [`limits`]: requests in flight and body
//!   memory.

pub mod config;
pub mod csv_export;
pub mod error;
pub mod heartbeat;
pub mod limits;
pub mod meetings_api;
pub mod metrics;
pub mod presence_stream;
pub mod read_access;
pub mod read_api;
pub mod routes;
pub mod server;
pub mod startup;
pub mod view_links;
pub mod webhook;

pub use config::GatewayConfig;
pub use startup::Application;
