//! The recovery ramp: how much of its weight a backend gets while it proves itself after a
//! failure. A pure state machine ([`Stage::step`]) and its multiplier ([`Stage::factor`]); it
//! never reads a clock, never decides availability (that is the circuit breaker's job, reported
//! as `BackendView::available`), and ignores client errors.
//!
//! Berry API's documented ramp, kept because users know it:
//!
//! | stage | consecutive successes | factor |
//! |---|---|---|
//! | healthy | — | 100 % |
//! | unhealthy | 0 | 10 % |
//! | recovering | 1–2 | 30 % |
//! | recovering | 3–4 | 50 % |
//! | healthy again | 5 | 100 % |
//!
//! Any backend failure (every class but `Success` and `ClientError`) sends the backend back to
//! "unhealthy, 0 successes", from any stage.

use super::outcome::OutcomeClass;

/// Share of its weight an unhealthy backend keeps: enough trickle to notice recovery (each
/// success moves it up the ramp), little enough to spare most requests a failing backend.
pub const UNHEALTHY_FACTOR: f64 = 0.1;
/// After the first success, and until [`LATE_RAMP_FROM`].
pub const EARLY_RAMP_FACTOR: f64 = 0.3;
/// Consecutive successes that move the ramp from 30 % to 50 %.
pub const LATE_RAMP_FROM: u8 = 3;
pub const LATE_RAMP_FACTOR: f64 = 0.5;
/// Consecutive successes that make the backend healthy (100 %) again.
pub const SUCCESSES_TO_HEALTHY: u8 = 5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    #[default]
    Healthy,
    /// Failed; `successes` consecutive successes since the last failure
    /// (`0..SUCCESSES_TO_HEALTHY`).
    Unhealthy { successes: u8 },
}

impl Stage {
    /// The stage after one outcome.
    #[must_use]
    pub fn step(self, outcome: OutcomeClass) -> Stage {
        match outcome {
            OutcomeClass::ClientError => self,
            OutcomeClass::Success => match self {
                Stage::Healthy => Stage::Healthy,
                Stage::Unhealthy { successes } => {
                    let successes = successes.saturating_add(1);
                    if successes >= SUCCESSES_TO_HEALTHY {
                        Stage::Healthy
                    } else {
                        Stage::Unhealthy { successes }
                    }
                }
            },
            _ => Stage::Unhealthy { successes: 0 },
        }
    }

    /// The weight multiplier for this stage (`BackendView::health_factor`).
    pub fn factor(self) -> f64 {
        match self {
            Stage::Healthy => 1.0,
            Stage::Unhealthy { successes: 0 } => UNHEALTHY_FACTOR,
            Stage::Unhealthy { successes } if successes < LATE_RAMP_FROM => EARLY_RAMP_FACTOR,
            Stage::Unhealthy { .. } => LATE_RAMP_FACTOR,
        }
    }

    pub fn is_healthy(self) -> bool {
        self == Stage::Healthy
    }
}
