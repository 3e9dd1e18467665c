//! Berry: a thread-per-core, OpenAI-compatible load-balancing gateway on monoio.
//!
//! Start at `proxy.rs` (the request path) and `shard.rs` (what one core owns);
//! `docs/architecture.md` has the map.

pub mod api;
pub mod auth;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod cors;
pub mod demo;
pub mod error;
pub mod health;
pub mod http;
pub mod loadgen;
pub mod logging;
pub mod mock;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod telemetry;
pub mod timer;
pub mod upstream;
