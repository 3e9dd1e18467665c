//! `weighted_random` (the default): each pick draws a backend with probability proportional to
//! its `weight`, among the available candidates. Stateless; never looks at latency, load or
//! confidence.

use super::pool::Pool;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    pool.weighted(|i| pool.view(i).weight, rng)
}
