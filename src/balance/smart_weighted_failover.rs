//! `smart_weighted_failover`: weighted random over `weight × health_factor`, where the health
//! factor is the recovery ramp's multiplier (`health_ramp.rs`: unhealthy 10 %, then 30 %, 50 %,
//! 100 % as consecutive successes come back). Unhealthy backends keep a trickle of traffic,
//! which is what lets them earn their way back. Stateless: the ramp lives with the caller.

use super::pool::Pool;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    pool.weighted(
        |i| {
            let v = pool.view(i);
            v.weight * v.health_factor
        },
        rng,
    )
}
