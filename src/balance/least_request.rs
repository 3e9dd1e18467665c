//! `least_request`: power of two choices on in-flight requests weighted by peak-EWMA latency
//! (the Finagle / Linkerd "P2C + PeakEWMA" balancer). Draw two distinct candidates with
//! probability proportional to `weight`, and send the request to the one with the lower cost
//! `(inflight + 1) × peak_ewma_ms`. Two random choices keep the pick O(n) with no sort and avoid
//! the herd effect of "always the global minimum", while the cost steers load away from slow
//! or busy backends. A candidate with no measurement is costed at the best measured peak, so a
//! new backend gets traffic (and thereby a measurement) instead of being starved.
//!
//! Stateless: `inflight` is the shard's own count and `peak_ewma_ms` comes (already decayed)
//! in the view. Also the fallback of `prefix_affinity` for requests without a prefix key.

use super::pool::Pool;

/// Stand-in peak when no candidate has a measurement: any positive constant works, since all
/// candidates then share it and the cost compares in-flight counts alone.
const UNMEASURED_PEAK_MS: f64 = 1.0;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    let weight = |i: usize| pool.view(i).weight;
    let a = pool.weighted(weight, rng)?;
    if pool.len() == 1 {
        return Some(a);
    }
    let Some(b) = pool.weighted_where(|i| i != a, weight, rng) else {
        return Some(a);
    };
    let peak = |i: usize| {
        pool.view(i)
            .peak_ewma_ms
            .filter(|p| *p >= 0.0 && p.is_finite())
    };
    let best_measured = pool.iter().filter_map(peak).reduce(f64::min);
    let stand_in = best_measured.unwrap_or(UNMEASURED_PEAK_MS);
    let cost = |i: usize| (f64::from(pool.view(i).inflight) + 1.0) * peak(i).unwrap_or(stand_in);
    // Ties go to the first draw, which is itself random, so ties do not bias toward an index.
    Some(if cost(b) < cost(a) { b } else { a })
}
