//! Choosing a backend for one attempt: the narrow interface every strategy sits behind
//! (candidates and per-backend views in, one [`Choice`] out) and the [`Balancer`] enum that
//! dispatches to the strategy modules.
//!
//! Everything here is pure and deterministic given its inputs: no clock (time enters only
//! through the values in [`BackendView`] and the `now` arguments of `smart_ai`, `ewma`,
//! `tracker`), no I/O, no global state, and no allocation in [`Balancer::pick`] (state that
//! needs memory is sized in [`Balancer::new`]). Strategy state that is a matter of local
//! fairness lives in the `Balancer` (one per model per shard: round-robin counters, the hash
//! ring). Inputs that must agree across shards (latency estimates, confidence, health) arrive
//! in `BackendView`, so a shared snapshot can fill them later without touching a strategy.
//!
//! Availability gate (every strategy): choose among candidates with `available == true`; if
//! there are none, choose among all candidates and set `Choice::degraded`.

pub mod ewma;
pub mod failover;
pub mod filter;
pub mod health_ramp;
pub mod least_latency;
pub mod least_request;
pub mod local;
pub mod outcome;
mod pool;
pub mod prefix_affinity;
pub mod random;
pub mod round_robin;
pub mod smart_ai;
pub mod smart_weighted_failover;
pub mod tracker;
pub mod weighted_failover;
pub mod weighted_random;

#[cfg(test)]
mod tests;

pub use filter::{collect, has_candidate, Filter};
pub use outcome::{classify, OutcomeClass, TransportError};
pub use tracker::BackendStats;

use crate::config::{Model, Settings, SmartAi, Strategy};
use pool::Pool;

/// Per-backend inputs, indexed like `Model.backends`. The shard fills it from local state and,
/// later, from the shared snapshot ([`BackendStats::view`] does it from shard-local state).
#[derive(Clone, Debug)]
pub struct BackendView {
    /// The configured weight (strategies treat a non-positive or non-finite weight as 0).
    pub weight: f64,
    /// Lower is preferred (`failover`).
    pub priority: u8,
    /// Tagged `premium`: no SmartAI stability bonus.
    pub premium: bool,
    /// Health / circuit allow traffic now.
    pub available: bool,
    /// Recovery-ramp multiplier, [`health_ramp::Stage::factor`]: 0.1 / 0.3 / 0.5 / 1.0.
    pub health_factor: f64,
    /// EWMA of recent latencies; `None` = no (fresh) measurement.
    pub latency_ewma_ms: Option<f64>,
    /// Peak-EWMA latency, already decayed to now; `None` = no measurement.
    pub peak_ewma_ms: Option<f64>,
    /// SmartAI effective confidence (already decayed to now, [`smart_ai::effective`]).
    pub confidence: f64,
    /// Requests this shard has in flight to the backend.
    pub inflight: u32,
}

impl BackendView {
    /// A backend nothing is known about yet: available, fully healthy, unmeasured, at
    /// `initial_confidence`, idle.
    pub fn fresh(weight: f64, knobs: &SmartAi) -> BackendView {
        BackendView {
            weight,
            priority: 0,
            premium: false,
            available: true,
            health_factor: health_ramp::Stage::Healthy.factor(),
            latency_ewma_ms: None,
            peak_ewma_ms: None,
            confidence: knobs.initial_confidence,
            inflight: 0,
        }
    }
}

/// A backend's weight while its circuit breaker ramps traffic back (`factor` 0.1 → 1.0 after a
/// recovery). `smart_weighted_failover` already scales by its own recovery stage, so the ramp
/// is not applied twice there. Shards and admin views both use this, so they agree.
pub fn ramped_weight(strategy: Strategy, weight: f64, factor: f64) -> f64 {
    if strategy == Strategy::SmartWeightedFailover {
        weight
    } else {
        weight * factor
    }
}

/// What the caller knows about the request beyond the candidate set.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickRequest {
    /// Hash of the bounded prompt prefix, computed by the caller
    /// ([`prefix_affinity::key_of`]); only `prefix_affinity` reads it.
    pub prefix_key: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Index into `Model.backends` (and `views`).
    pub backend: usize,
    /// No candidate was available, so the choice was made among unavailable ones. The caller
    /// should log / count it; the attempt may well fail.
    pub degraded: bool,
}

/// One model's strategy with its shard-local state. Build one per model per shard (and again
/// on config reload); `pick` is then called once per attempt.
#[derive(Clone, Debug)]
pub enum Balancer {
    WeightedRandom,
    RoundRobin(round_robin::RoundRobin),
    Random,
    LeastLatency,
    Failover,
    WeightedFailover,
    SmartWeightedFailover,
    SmartAi(Box<SmartAi>),
    LeastRequest,
    PrefixAffinity(prefix_affinity::Ring),
}

impl Balancer {
    pub fn new(strategy: Strategy, model: &Model, settings: &Settings) -> Balancer {
        match strategy {
            Strategy::WeightedRandom => Balancer::WeightedRandom,
            Strategy::RoundRobin => Balancer::RoundRobin(round_robin::RoundRobin::new(model)),
            Strategy::Random => Balancer::Random,
            Strategy::LeastLatency => Balancer::LeastLatency,
            Strategy::Failover => Balancer::Failover,
            Strategy::WeightedFailover => Balancer::WeightedFailover,
            Strategy::SmartWeightedFailover => Balancer::SmartWeightedFailover,
            Strategy::SmartAi => Balancer::SmartAi(Box::new(settings.smart_ai.clone())),
            Strategy::LeastRequest => Balancer::LeastRequest,
            Strategy::PrefixAffinity => Balancer::PrefixAffinity(prefix_affinity::Ring::new(model)),
        }
    }

    pub fn strategy(&self) -> Strategy {
        match self {
            Balancer::WeightedRandom => Strategy::WeightedRandom,
            Balancer::RoundRobin(_) => Strategy::RoundRobin,
            Balancer::Random => Strategy::Random,
            Balancer::LeastLatency => Strategy::LeastLatency,
            Balancer::Failover => Strategy::Failover,
            Balancer::WeightedFailover => Strategy::WeightedFailover,
            Balancer::SmartWeightedFailover => Strategy::SmartWeightedFailover,
            Balancer::SmartAi(_) => Strategy::SmartAi,
            Balancer::LeastRequest => Strategy::LeastRequest,
            Balancer::PrefixAffinity(_) => Strategy::PrefixAffinity,
        }
    }

    /// `candidates`: backend indices admitted by the filter (enabled, tags, not tried, forced).
    /// `None` only when `candidates` is empty (or indexes nothing in `views`).
    pub fn pick(
        &mut self,
        candidates: &[usize],
        views: &[BackendView],
        req: &PickRequest,
        rng: &mut fastrand::Rng,
    ) -> Option<Choice> {
        let pool = Pool::new(candidates, views)?;
        let backend = match self {
            Balancer::WeightedRandom => weighted_random::pick(&pool, rng),
            Balancer::RoundRobin(state) => state.pick(&pool),
            Balancer::Random => random::pick(&pool, rng),
            Balancer::LeastLatency => least_latency::pick(&pool, rng),
            Balancer::Failover => failover::pick(&pool, rng),
            Balancer::WeightedFailover => weighted_failover::pick(&pool, rng),
            Balancer::SmartWeightedFailover => smart_weighted_failover::pick(&pool, rng),
            Balancer::SmartAi(knobs) => smart_ai::pick(&pool, knobs, rng),
            Balancer::LeastRequest => least_request::pick(&pool, rng),
            Balancer::PrefixAffinity(ring) => ring.pick(&pool, req.prefix_key, rng),
        }?;
        Some(Choice {
            backend,
            degraded: pool.degraded(),
        })
    }
}
