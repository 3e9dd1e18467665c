//! `smart_ai`: per-backend confidence learned from outcomes, and an epsilon-greedy pick on it.
//!
//! It owns three pure pieces, each honouring every `[settings.smart_ai]` knob with no hidden
//! floor or constant:
//!
//! 1. The confidence state machine [`apply`]: `(state, outcome, now, knobs) -> state`.
//!    Success adds `success_boost` (capped at [`CONFIDENCE_MAX`]); a backend failure subtracts
//!    the penalty of its class (floored at `min_confidence`, exactly); a client error changes
//!    nothing, not even the timestamp. The class comes from the HTTP status or transport error
//!    (`outcome::classify`), never from message text.
//! 2. Time decay [`effective`]: with `enable_time_decay`, confidence relaxes toward
//!    `initial_confidence` with half-life [`CONFIDENCE_HALF_LIFE`] since the last event.
//! 3. The weight [`effective_weight`] = `weight × confidence × stability bonus`, the very number
//!    the selector ranks by, exposed so admin views show it.
//!
//! Selection ([`pick`]): the "best" is drawn among the candidates whose effective weight is
//! within [`BEST_BAND`] of the highest (weighted by effective weight, so equally good backends
//! share the load instead of one taking it all). Then, with probability `exploration_ratio`, the
//! pick goes uniformly to one of the *other* candidates instead. With one clear best among `n`
//! candidates, each non-best backend therefore receives `exploration_ratio / (n − 1)` of the
//! picks (6.7 % for n = 4 with the default 0.2; 20 % for n = 2, where the circuit breaker's
//! `available = false` is what takes a dead backend out entirely).
//!
//! It never reads a clock (callers pass `now`) and keeps no state of its own: the confidence
//! state lives with the caller (`tracker.rs`, later the shared snapshot) and reaches the
//! selector already decayed, as `BackendView::confidence`.

use std::time::{Duration, Instant};

use super::outcome::OutcomeClass;
use super::pool::{clean, Pool};
use super::BackendView;
use crate::config::{ConfidenceAdjustments, SmartAi};

/// Confidence is a degree of trust in [0, 1]; a success can raise it to 1 and no further.
pub const CONFIDENCE_MAX: f64 = 1.0;

/// Half-life of the pull toward `initial_confidence` while no event arrives. A backend that an
/// outage drove to `min_confidence` recovers half the gap to the initial value in 5 minutes
/// (defaults: 0.05 → 0.43 → 0.61 → 0.71 after 5/10/15 min), so it is retried within minutes
/// even where exploration rarely reaches it; a backend idle at 1.0 fades toward 0.8 on the same
/// scale, because an unobserved record says less every minute. Berry API worked in hours and
/// only ever downward, which kept a recovered backend shunned.
pub const CONFIDENCE_HALF_LIFE: Duration = Duration::from_secs(300);

/// Confidence from which a non-`premium` backend earns `non_premium_stability_bonus`. It is one
/// default `success_boost` above the default `initial_confidence` (0.8): a fresh backend has to
/// show at least one success before it is called stable, and a single failure from full
/// confidence (smallest default penalty 0.1 leaves 0.9, anything else less) only keeps the bonus
/// for a rate limit.
pub const STABILITY_CONFIDENCE_MIN: f64 = 0.9;

/// Effective weights within 5 % of the highest count as tied for "best". Time decay makes two
/// equally good backends differ by a hair depending on which answered last (1.0 vs 0.99 after
/// 30 s); without a band the most recent one would take the whole exploit share and the split
/// would flap. One default success step (0.1, i.e. 10 % or more of a healthy confidence) is
/// outside the band, so real differences still decide.
pub const BEST_BAND: f64 = 0.05;

/// One backend's confidence record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Confidence {
    /// As of `at`, before time decay.
    pub value: f64,
    /// Time of the last event that moved it; `None` = no event yet (no decay).
    pub at: Option<Instant>,
}

impl Confidence {
    pub fn initial(knobs: &SmartAi) -> Confidence {
        Confidence {
            value: knobs.initial_confidence,
            at: None,
        }
    }
}

/// The signed change one outcome makes: `+success_boost`, `−<class>_penalty`, or 0 for a client
/// error.
pub fn adjustment(outcome: OutcomeClass, a: &ConfidenceAdjustments) -> f64 {
    match outcome {
        OutcomeClass::Success => a.success_boost,
        OutcomeClass::Timeout => -a.timeout_penalty,
        OutcomeClass::Connect => -a.network_error_penalty,
        OutcomeClass::RateLimited => -a.rate_limit_penalty,
        OutcomeClass::ServerError => -a.server_error_penalty,
        OutcomeClass::AuthError => -a.auth_error_penalty,
        OutcomeClass::ModelError => -a.model_error_penalty,
        OutcomeClass::ClientError => 0.0,
    }
}

/// The state machine: the record after `outcome` at `now`. Decay up to `now` is applied first,
/// then the adjustment, then the bounds `[min_confidence, CONFIDENCE_MAX]`.
#[must_use]
pub fn apply(
    state: Confidence,
    outcome: OutcomeClass,
    now: Instant,
    knobs: &SmartAi,
) -> Confidence {
    if outcome == OutcomeClass::ClientError {
        // The client's mistake says nothing about the backend: not even "recently observed".
        return state;
    }
    let value = effective(&state, now, knobs) + adjustment(outcome, &knobs.adjustments);
    Confidence {
        // max/min rather than clamp: no panic even if a reload produced min > max.
        value: value.max(knobs.min_confidence).min(CONFIDENCE_MAX),
        at: Some(now),
    }
}

/// Confidence as of `now`: with `enable_time_decay`, the distance to `initial_confidence` halves
/// every [`CONFIDENCE_HALF_LIFE`] since the last event. This is what goes into
/// `BackendView::confidence`.
pub fn effective(state: &Confidence, now: Instant, knobs: &SmartAi) -> f64 {
    let Some(at) = state.at else {
        return state.value;
    };
    if !knobs.enable_time_decay {
        return state.value;
    }
    let halvings =
        now.saturating_duration_since(at).as_secs_f64() / CONFIDENCE_HALF_LIFE.as_secs_f64();
    // Written as "value plus the part of the gap already closed" so that no time elapsed
    // returns `value` bit for bit (min_confidence stays exactly min_confidence).
    let closed = 1.0 - 0.5f64.powf(halvings);
    state.value + (knobs.initial_confidence - state.value) * closed
}

/// `non_premium_stability_bonus` for a non-premium backend at or above
/// [`STABILITY_CONFIDENCE_MIN`], else 1.
pub fn stability_bonus(view: &BackendView, knobs: &SmartAi) -> f64 {
    if !view.premium && view.confidence >= STABILITY_CONFIDENCE_MIN {
        knobs.non_premium_stability_bonus
    } else {
        1.0
    }
}

/// `weight × confidence × stability bonus`: the number the selector ranks backends by, and the
/// one admin views must show.
pub fn effective_weight(view: &BackendView, knobs: &SmartAi) -> f64 {
    clean(view.weight) * clean(view.confidence) * stability_bonus(view, knobs)
}

pub(crate) fn pick(pool: &Pool<'_>, knobs: &SmartAi, rng: &mut fastrand::Rng) -> Option<usize> {
    let eff = |i: usize| effective_weight(pool.view(i), knobs);
    let top = pool.iter().map(eff).fold(0.0, f64::max);
    let floor = top * (1.0 - BEST_BAND);
    let best = pool.weighted_where(|i| eff(i) >= floor, eff, rng)?;
    if pool.len() > 1 && rng.f64() < knobs.exploration_ratio {
        return pool.uniform_where(|i| i != best, rng);
    }
    Some(best)
}
