//! The load generator and benchmark report: a realistic meeting workload signed as LiveKit signs
//! it, driven through the whole system as separate processes, with CPU and memory read from
//! `/proc` and a Markdown + PNG report.
//!
//! - [`scenario`]: the workload, planned ahead from a seed, and the attendance it implies.
//! - [`sign`]: requests signed as LiveKit signs them.
//! - [`system`]: the system under test as processes, with streams and databases of the run's own.
//! - [`procstat`]: CPU time and peak memory of processes.
//! - [`capacity`]: the gateway's capacity at several concurrency levels; [`ceiling`]: what it is
//!   measured against (the same path without the gateway's own work, raw JetStream publishes).
//! - [`bench`]: the phases of `loadgen bench`; they fill in [`results`]. [`read_latency`] and
//!   [`history`] are two of them, on databases loaded by [`preload`] rather than by a live run.
//! - [`reconciliation`]: the sweeper checking live meetings against a stand-in LiveKit server.
//! - [`reports`]: meeting reports from the platform's side: a receiver, the comparison of what
//!   it got with the workload, deliveries at saturation.
//! - [`results`]: what a run measured, as plain data.
//! - [`report`]: the Markdown report, from [`results`]; [`plot`] draws its PNG.
//!
//! The dependencies point one way: bench → report → plot, and each of them → results.

pub mod bench;
pub mod capacity;
pub mod ceiling;
pub mod history;
pub mod plot;
pub mod preload;
pub mod procstat;
pub mod read_latency;
pub mod reconciliation;
pub mod report;
pub mod reports;
pub mod results;
pub mod scenario;
pub mod sign;
pub mod system;
