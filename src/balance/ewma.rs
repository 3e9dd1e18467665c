//! Latency estimators with time-based decay; the clock is always the caller's `now`.
//!
//! * [`Ewma`]: an exponentially weighted moving average whose memory is a time constant `tau`
//!   rather than a sample count, so a backend that answers 100 times a second and one that
//!   answers once a minute forget at the same rate. Feeds `least_latency`.
//! * [`PeakEwma`]: the same average, except that a sample above the estimate replaces it at once
//!   (react to trouble immediately, forget it gradually), and reading decays the estimate toward
//!   0 while no sample arrives, so an idle backend looks cheap again and gets probed. Feeds
//!   `least_request` and `prefix_affinity`.
//!
//! Values are milliseconds as `f64`. These types never read a clock, never allocate, and know
//! nothing about backends.

use std::time::{Duration, Instant};

/// Memory of the latency estimators: a sample's influence falls to 1/e after 10 s. That spans a
/// handful of LLM requests at low traffic and is Finagle's default for its peak EWMA.
pub const LATENCY_TAU: Duration = Duration::from_secs(10);

/// A latency EWMA older than this reads as "unmeasured", so `least_latency` explores the backend
/// again instead of trusting a number from before it (or its neighbours) changed. A minute is
/// long against `LATENCY_TAU` yet short enough that a recovered backend is not shunned for long.
pub const LATENCY_MAX_AGE: Duration = Duration::from_secs(60);

/// The least weight a new sample gets, however close it follows the previous one. Pure time
/// decay would give a sample arriving at the same instant weight 0 (a burst of completions would
/// be ignored); this makes every sample count at least like a 10-sample moving average.
pub const MIN_SAMPLE_WEIGHT: f64 = 0.1;

/// Weight kept by the old estimate after `dt`: `exp(-dt / tau)`, capped so the new sample gets
/// at least [`MIN_SAMPLE_WEIGHT`].
fn keep_weight(dt: Duration, tau: Duration) -> f64 {
    decay(dt, tau).min(1.0 - MIN_SAMPLE_WEIGHT)
}

/// Pure time decay `exp(-dt / tau)`; a zero `tau` forgets at once.
fn decay(dt: Duration, tau: Duration) -> f64 {
    if tau.is_zero() {
        return 0.0;
    }
    (-dt.as_secs_f64() / tau.as_secs_f64()).exp()
}

fn usable(sample: f64) -> bool {
    sample >= 0.0 && sample.is_finite()
}

#[derive(Clone, Copy, Debug)]
pub struct Ewma {
    value: f64,
    /// Time of the last sample; `None` = never measured.
    at: Option<Instant>,
    tau: Duration,
    max_age: Duration,
}

impl Ewma {
    pub const fn new(tau: Duration, max_age: Duration) -> Ewma {
        Ewma {
            value: 0.0,
            at: None,
            tau,
            max_age,
        }
    }

    /// Folds in one sample (negative or non-finite samples are ignored).
    pub fn observe(&mut self, sample: f64, now: Instant) {
        if !usable(sample) {
            return;
        }
        self.value = match self.at {
            None => sample,
            Some(at) => {
                let w = keep_weight(now.saturating_duration_since(at), self.tau);
                self.value * w + sample * (1.0 - w)
            }
        };
        self.at = Some(now);
    }

    /// The estimate, or `None` if there is none or it is older than `max_age`.
    pub fn get(&self, now: Instant) -> Option<f64> {
        let at = self.at?;
        (now.saturating_duration_since(at) <= self.max_age).then_some(self.value)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PeakEwma {
    value: f64,
    at: Option<Instant>,
    tau: Duration,
}

impl PeakEwma {
    pub const fn new(tau: Duration) -> PeakEwma {
        PeakEwma {
            value: 0.0,
            at: None,
            tau,
        }
    }

    /// Folds in one sample: above the estimate it becomes the estimate; below, it is averaged
    /// in.
    pub fn observe(&mut self, sample: f64, now: Instant) {
        if !usable(sample) {
            return;
        }
        self.value = match self.at {
            None => sample,
            // Compared with the stored peak, not the read-decayed one: the decay toward 0 in
            // `get` is an invitation to probe an idle backend, not evidence that it got faster.
            Some(_) if sample > self.value => sample,
            Some(at) => {
                let w = keep_weight(now.saturating_duration_since(at), self.tau);
                self.value * w + sample * (1.0 - w)
            }
        };
        self.at = Some(now);
    }

    /// The estimate decayed toward 0 for the time since the last sample; `None` if never
    /// measured.
    pub fn get(&self, now: Instant) -> Option<f64> {
        let at = self.at?;
        Some(self.value * decay(now.saturating_duration_since(at), self.tau))
    }
}
