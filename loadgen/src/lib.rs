//! The load generator and benchmark report: a realistic meeting workload signed as LiveKit signs
//! it ([`scenario`]), driven through the whole system as separate processes ([`bench`]), with
//! CPU and memory read from `/proc` and a Markdown + PNG report.

pub mod bench;
pub mod capacity;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod sign;
pub mod system;
