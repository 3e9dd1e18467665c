//! Shard-local bookkeeping for one backend, and the [`BackendView`] it produces: the glue the
//! request path needs so that every input a strategy reads is recorded the same way. It owns
//! the in-flight count and feeds each finished attempt to the SmartAI state machine, the
//! recovery ramp and both latency estimators. It never decides availability (circuit breaker)
//! and never reads a clock: the caller passes `now`.
//!
//! When the shared snapshot lands, the cross-shard parts (confidence, stage, latencies) move
//! there and this keeps only `inflight`; `view` is the one place that changes.

use std::time::{Duration, Instant};

use super::ewma::{Ewma, PeakEwma, LATENCY_MAX_AGE, LATENCY_TAU};
use super::health_ramp::Stage;
use super::outcome::OutcomeClass;
use super::smart_ai::{self, Confidence};
use super::BackendView;
use crate::config::{Backend, SmartAi};

/// The backend tag that forgoes SmartAI's stability bonus (Berry API's rule).
pub const PREMIUM_TAG: &str = "premium";

pub fn is_premium(backend: &Backend) -> bool {
    backend.tags.iter().any(|t| t == PREMIUM_TAG)
}

#[derive(Clone, Debug)]
pub struct BackendStats {
    pub confidence: Confidence,
    pub stage: Stage,
    pub latency: Ewma,
    pub peak: PeakEwma,
    /// Attempts this shard has sent and not yet finished.
    pub inflight: u32,
}

impl BackendStats {
    pub fn new(knobs: &SmartAi) -> BackendStats {
        BackendStats {
            confidence: Confidence::initial(knobs),
            stage: Stage::Healthy,
            latency: Ewma::new(LATENCY_TAU, LATENCY_MAX_AGE),
            peak: PeakEwma::new(LATENCY_TAU),
            inflight: 0,
        }
    }

    /// Call when an attempt is sent to this backend.
    pub fn begin(&mut self) {
        self.inflight = self.inflight.saturating_add(1);
    }

    /// Call exactly once per `begin`, when the attempt's outcome is known (response head
    /// received, or the transport failed). `elapsed` runs from sending the request to the
    /// response head, so a long generation does not read as a slow backend.
    pub fn end(&mut self, outcome: OutcomeClass, elapsed: Duration, now: Instant, knobs: &SmartAi) {
        self.inflight = self.inflight.saturating_sub(1);
        self.record(outcome, Some(elapsed), now, knobs);
    }

    /// Folds in one outcome without touching `inflight` (health probes use this directly).
    pub fn record(
        &mut self,
        outcome: OutcomeClass,
        elapsed: Option<Duration>,
        now: Instant,
        knobs: &SmartAi,
    ) {
        self.confidence = smart_ai::apply(self.confidence, outcome, now, knobs);
        self.stage = self.stage.step(outcome);
        if let Some(elapsed) = elapsed.filter(|_| outcome.measures_latency()) {
            let ms = elapsed.as_secs_f64() * 1000.0;
            self.latency.observe(ms, now);
            self.peak.observe(ms, now);
        }
    }

    /// The strategy inputs as of `now`; `available` is the circuit breaker's verdict.
    pub fn view(
        &self,
        backend: &Backend,
        available: bool,
        now: Instant,
        knobs: &SmartAi,
    ) -> BackendView {
        BackendView {
            weight: backend.weight,
            priority: backend.priority,
            premium: is_premium(backend),
            available,
            health_factor: self.stage.factor(),
            latency_ewma_ms: self.latency.get(now),
            peak_ewma_ms: self.peak.get(now),
            confidence: smart_ai::effective(&self.confidence, now, knobs),
            inflight: self.inflight,
        }
    }
}
