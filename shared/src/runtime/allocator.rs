//! The memory allocator of every binary of the workspace (each links this crate): mimalloc,
//! not glibc's malloc.
//!
//! Why: a webhook allocates and frees many small blocks, often freed on another thread than the
//! one that allocated them (hyper's buffers, async-nats's messages), which glibc's arenas do
//! slowly. Measured with `scripts/profile-gateway.sh` and the capacity bench: glibc's malloc and
//! free were 16 % of the gateway's CPU, and the gateway's CPU per 1 000 webhooks fell from about
//! 49 ms to 37 ms with mimalloc (README, Benchmark). Set here, once, so that the services and the
//! ceilings they are measured against (`loadgen`) always run on the same allocator.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
