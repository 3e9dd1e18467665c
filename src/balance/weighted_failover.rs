//! `weighted_failover`: weighted by `weight` among the available candidates; when none is
//! available, weighted among all of them with `Choice::degraded` set. That fallback is the
//! availability gate every strategy shares (`pool.rs`), so this strategy now picks exactly
//! like `weighted_random`; the name stays because Berry API configs use it, and because here
//! the fallback is the point of the strategy rather than a safety net. Stateless.

use super::pool::Pool;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    pool.weighted(|i| pool.view(i).weight, rng)
}
