//! `round_robin`: smooth weighted round robin, as nginx does it. Each pick adds every eligible
//! candidate's weight to its running `current`, takes the candidate with the largest `current`,
//! and subtracts the round's total weight from the winner. Over any window the picks follow the
//! weights exactly (weights 5:1:1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c), with no
//! randomness at all.
//!
//! State: one `current` per backend of the model, on the shard. Candidates left out of a pick
//! (tried, unavailable, tag-filtered) keep their `current` untouched, so they neither gain nor
//! lose turns while absent. Never allocates after `new`.

use super::pool::{clean, Pool};
use crate::config::Model;

#[derive(Clone, Debug)]
pub struct RoundRobin {
    /// Indexed like `Model.backends`.
    current: Vec<f64>,
}

impl RoundRobin {
    pub fn new(model: &Model) -> RoundRobin {
        RoundRobin {
            current: vec![0.0; model.backends.len()],
        }
    }

    pub(crate) fn pick(&mut self, pool: &Pool<'_>) -> Option<usize> {
        let chosen = self.round(pool, |i| clean(pool.view(i).weight));
        match chosen {
            Some(_) => chosen,
            // Every weight was 0 (or the views outgrew the state): plain round robin.
            None => self.round(pool, |_| 1.0),
        }
    }

    /// One smooth-WRR round; `None` if the total weight is 0.
    fn round(&mut self, pool: &Pool<'_>, weight: impl Fn(usize) -> f64) -> Option<usize> {
        let mut total = 0.0;
        let mut best: Option<(usize, f64)> = None;
        for i in pool.iter() {
            let Some(current) = self.current.get_mut(i) else {
                continue;
            };
            let w = weight(i);
            *current += w;
            total += w;
            // Strictly greater: ties go to the earlier candidate, as in nginx.
            if best.is_none_or(|(_, c)| *current > c) {
                best = Some((i, *current));
            }
        }
        if total <= 0.0 {
            return None;
        }
        let (chosen, _) = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}
