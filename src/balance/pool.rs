//! The set a strategy chooses from, and the two draws every strategy is built on (uniform and
//! weighted). It owns the availability gate shared by all strategies: choose among the
//! candidates whose `available` is true; if none is, choose among all of them and say so
//! (`degraded`). It never allocates: every operation is one or two passes over `candidates`.

use super::BackendView;

/// Candidates after the availability gate. Indices that do not index `views` are ignored (a
/// caller bug, but not worth a panic on the request path).
#[derive(Clone, Copy)]
pub(crate) struct Pool<'a> {
    candidates: &'a [usize],
    pub views: &'a [BackendView],
    /// No candidate was available: the pool holds all of them.
    degraded: bool,
    len: usize,
}

impl<'a> Pool<'a> {
    /// `None` when no candidate indexes `views`.
    pub fn new(candidates: &'a [usize], views: &'a [BackendView]) -> Option<Pool<'a>> {
        let any_available = candidates
            .iter()
            .any(|&i| views.get(i).is_some_and(|v| v.available));
        let mut pool = Pool {
            candidates,
            views,
            degraded: !any_available,
            len: 0,
        };
        pool.len = pool.iter().count();
        (pool.len > 0).then_some(pool)
    }

    pub fn degraded(&self) -> bool {
        self.degraded
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + 'a {
        let (views, all) = (self.views, self.degraded);
        self.candidates
            .iter()
            .copied()
            .filter(move |&i| views.get(i).is_some_and(|v| all || v.available))
    }

    pub fn view(&self, i: usize) -> &'a BackendView {
        &self.views[i]
    }

    /// Uniform among the members that satisfy `keep`.
    pub fn uniform_where(
        &self,
        keep: impl Fn(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let count = self.iter().filter(|&i| keep(i)).count();
        if count == 0 {
            return None;
        }
        self.iter().filter(|&i| keep(i)).nth(rng.usize(..count))
    }

    pub fn uniform(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        self.iter().nth(rng.usize(..self.len))
    }

    pub fn weighted(
        &self,
        weight: impl Fn(usize) -> f64,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        self.weighted_where(|_| true, weight, rng)
    }

    /// Weighted among the members that satisfy `keep`. Weights that are not positive and finite
    /// count as 0; if every kept weight is 0 the draw is uniform among the kept members, so a
    /// strategy whose weights all collapse still spreads load instead of refusing.
    pub fn weighted_where(
        &self,
        keep: impl Fn(usize) -> bool,
        weight: impl Fn(usize) -> f64,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let mut total = 0.0;
        let mut count = 0usize;
        for i in self.iter().filter(|&i| keep(i)) {
            total += clean(weight(i));
            count += 1;
        }
        if count == 0 {
            return None;
        }
        if !(total > 0.0 && total.is_finite()) {
            return self.iter().filter(|&i| keep(i)).nth(rng.usize(..count));
        }
        let mut point = rng.f64() * total;
        let mut last = None;
        for i in self.iter().filter(|&i| keep(i)) {
            let w = clean(weight(i));
            if w == 0.0 {
                continue;
            }
            if point < w {
                return Some(i);
            }
            point -= w;
            last = Some(i);
        }
        // Rounding can leave `point` a hair above the last weight.
        last
    }
}

/// A weight usable in a draw: positive and finite, else 0 (NaN included).
pub(crate) fn clean(w: f64) -> f64 {
    if w > 0.0 && w.is_finite() {
        w
    } else {
        0.0
    }
}
