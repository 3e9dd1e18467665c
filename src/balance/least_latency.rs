//! `least_latency`: the lowest latency estimate wins, with two corrections to Berry API's
//! version (which used one raw sample and starved unknown backends):
//!
//! * **Tolerance band.** Every candidate whose EWMA is within [`LATENCY_TOLERANCE`] of the best
//!   counts as equally fast, and the pick is weighted by `weight` inside that band, so
//!   near-equal backends share load instead of flapping on noise.
//! * **Exploration.** A candidate without a measurement (never measured, or stale: see
//!   `ewma::LATENCY_MAX_AGE`) is assumed to be as fast as the best one, so it is in the band and
//!   gets its weighted share until its first sample arrives. No separate exploration rate is
//!   needed, and a slow backend is re-measured once its estimate goes stale.
//!
//! Stateless: the estimates come in `BackendView::latency_ewma_ms`.

use super::pool::Pool;

/// Latencies up to 10 % above the best count as equal: TTFB noise between healthy replicas of
/// the same model is of that order, while a backend 10 % slower is a real difference.
pub const LATENCY_TOLERANCE: f64 = 0.10;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    let latency = |i: usize| {
        pool.view(i)
            .latency_ewma_ms
            .filter(|l| *l >= 0.0 && l.is_finite())
    };
    let best = pool
        .iter()
        .filter_map(latency)
        .fold(f64::INFINITY, f64::min);
    let weight = |i: usize| pool.view(i).weight;
    if !best.is_finite() {
        // Nothing measured yet: all candidates are equal, so this is weighted random.
        return pool.weighted(weight, rng);
    }
    let limit = best * (1.0 + LATENCY_TOLERANCE);
    pool.weighted_where(|i| latency(i).is_none_or(|l| l <= limit), weight, rng)
}
