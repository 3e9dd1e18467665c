//! `failover`: `priority` tiers, lower number first. The first tier that has an available
//! candidate takes the pick, by `weight` within the tier. With no available candidate at all,
//! the lowest tier among all candidates is used and the choice is marked degraded. Stateless.

use super::pool::Pool;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    // The pool is already gated to available candidates, so its lowest tier is "the first tier
    // that has an available backend".
    let tier = pool.iter().map(|i| pool.view(i).priority).min()?;
    pool.weighted_where(
        |i| pool.view(i).priority == tier,
        |i| pool.view(i).weight,
        rng,
    )
}
