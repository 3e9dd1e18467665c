//! The upstream side: connections (plain or TLS), per-shard pools, and one request/response
//! exchange with connect and first-byte deadlines.

pub mod conn;
pub mod exchange;
pub mod pool;
