//! `random`: uniform among the available candidates, ignoring `weight`. Stateless.

use super::pool::Pool;

pub(crate) fn pick(pool: &Pool<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
    pool.uniform(rng)
}
