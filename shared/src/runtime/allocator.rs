//! The memory allocator of every binary of the workspace (each links this crate): mimalloc,
//! not glibc's malloc.
//!
//! Why: a webhook allocates and frees many small blocks, often freed on another thread than the
//! one that allocated them (hyper's buffers, async-nats's messages), which glibc's arenas do
//! slowly: its malloc and free were 16 % of the gateway's CPU (`scripts/profile-gateway.sh`),
//! and with mimalloc the gateway spends about a fifth less CPU per webhook
//! (`scripts/compare-gateways.sh`; README, Benchmark). The price is memory: about 10 KiB more
//! per idle connection. Set here, once, so that the services and the ceilings they are measured
//! against (`loadgen`) always run on the same allocator.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
