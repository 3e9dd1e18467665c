//! Backend health across shards: shards report outcomes ([`report`]), the control thread folds
//! them into a [`book::HealthBook`] (circuit breakers, SmartAI confidence, recovery ramp,
//! latency estimates, a sliding window) and publishes an immutable [`snapshot::Snapshot`] that
//! every shard routes by. The breaker is a pure state machine ([`breaker`]).

pub mod book;
pub mod breaker;
pub mod probe;
pub mod report;
pub mod snapshot;

#[cfg(test)]
mod tests;
