//! Choosing a backend for one attempt: the candidate set, then a weighted random pick.
//!
//! The full strategy set (round robin, least latency, SmartAI, …) is its own piece of work;
//! until it lands every model uses weighted random over the candidates.

use crate::config::{Backend, Config, Model};

/// Who may be picked for this attempt.
pub struct Filter<'a> {
    /// The caller's tags; empty means no tag restriction.
    pub user_tags: &'a [String],
    /// Backend indices already tried in this request.
    pub tried: &'a [usize],
    /// Only backends of this provider (forced backend).
    pub provider: Option<usize>,
}

impl Filter<'_> {
    fn admits(&self, config: &Config, i: usize, b: &Backend) -> bool {
        b.enabled
            && b.weight > 0.0
            && config.providers[b.provider].enabled
            && !self.tried.contains(&i)
            && self.provider.is_none_or(|p| p == b.provider)
            && (self.user_tags.is_empty()
                || b.tags.is_empty()
                || b.tags.iter().any(|t| self.user_tags.contains(t)))
    }
}

/// Is there any backend left to try?
pub fn has_candidate(config: &Config, model: &Model, filter: &Filter<'_>) -> bool {
    model
        .backends
        .iter()
        .enumerate()
        .any(|(i, b)| filter.admits(config, i, b))
}

/// Weighted random pick among the candidates; `None` when there are none.
pub fn pick(
    config: &Config,
    model: &Model,
    filter: &Filter<'_>,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let total: f64 = model
        .backends
        .iter()
        .enumerate()
        .filter(|(i, b)| filter.admits(config, *i, b))
        .map(|(_, b)| b.weight)
        .sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = rng.f64() * total;
    let mut last = None;
    for (i, b) in model.backends.iter().enumerate() {
        if !filter.admits(config, i, b) {
            continue;
        }
        last = Some(i);
        if point < b.weight {
            return Some(i);
        }
        point -= b.weight;
    }
    // Rounding can leave `point` a hair above the last weight.
    last
}
