//! The immutable health snapshot the control thread publishes to every shard: per (model,
//! backend), the numbers the selector uses and the admin views show.

use std::time::{Duration, Instant};

use super::breaker::{Admission, Breaker};
use crate::balance::BackendView;

#[derive(Clone, Debug)]
pub struct BackendSnap {
    /// Strategy inputs (confidence, ramp factor, latency estimates); `inflight` is filled in
    /// by each shard from its own count.
    pub view: BackendView,
    pub breaker: Breaker,
    /// The shard allowed to send the half-open probe, when the circuit is half-open.
    pub probe_shard: Option<usize>,
    pub requests_window: u64,
    pub failures_window: u64,
    /// Time to the response head over the window.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Time to the first byte sent to clients (a stream's first event) over the window.
    pub ttfb_p50_ms: Option<f64>,
    pub ttfb_p99_ms: Option<f64>,
    pub inflight_total: u32,
    pub consecutive_failures: u32,
    pub last_failure_age: Option<Duration>,
}

impl BackendSnap {
    /// May shard `shard` send traffic now?
    pub fn admits(&self, shard: usize, now: Instant) -> bool {
        match self.breaker.admission(now) {
            Admission::Allow => true,
            Admission::Probe => self.probe_shard == Some(shard),
            Admission::Deny => false,
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests_window == 0 {
            0.0
        } else {
            self.failures_window as f64 / self.requests_window as f64
        }
    }

    /// Healthy for the `/health` views and `berry_backend_healthy`: the circuit closed (and no
    /// `Retry-After` cooling), so the backend takes traffic. A backend still on its recovery
    /// ramp is healthy: the ramp is a weighting that only live successes complete, and an idle
    /// gateway must not report a recovered fleet as down (a readiness probe reading `/health`
    /// would then keep the traffic away that the ramp waits for). The admin views show the ramp.
    pub fn healthy(&self, now: Instant) -> bool {
        self.breaker.admission(now) == Admission::Allow
    }

    /// Is this shard, on the snapshot's word, the one to probe the backend now?
    pub fn is_probe_for(&self, shard: usize, now: Instant) -> bool {
        self.breaker.admission(now) == Admission::Probe && self.probe_shard == Some(shard)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub taken: Option<Instant>,
    /// Indexed like `Config.models`, then like `Model.backends`.
    pub models: Vec<Vec<BackendSnap>>,
    pub dropped_events: u64,
    pub dropped_reports: u64,
}

impl Snapshot {
    pub fn backend(&self, model: usize, backend: usize) -> Option<&BackendSnap> {
        self.models.get(model)?.get(backend)
    }
}
