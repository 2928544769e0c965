//! What every service runs on: the allocator, configuration, the database pool, the ops server (probes and
//! metrics), the start-up retry, shutdown, the outgoing HTTP client, telemetry and trace propagation across HTTP and NATS.

mod allocator;
pub mod config;
pub mod database;
pub mod http_client;
pub mod ops;
pub mod shutdown;
pub mod startup_retry;
pub mod telemetry;
pub mod trace;
