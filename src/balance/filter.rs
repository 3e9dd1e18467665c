//! The candidate set for one attempt: which of a model's backends a strategy may choose from.
//! It owns the admission rules and nothing else: a backend is a candidate when it is enabled,
//! its provider is enabled, its weight is positive, it has not been tried in this request, it
//! belongs to the forced provider (if any), and it passes Berry API's tag rule (a caller with
//! tags sees untagged backends and backends sharing at least one tag; a caller without tags sees
//! every backend). Health and load are not its business: they reach the strategies through
//! `BackendView`.

use crate::config::{Backend, Config, Model};

/// Who may be picked for this attempt.
#[derive(Clone, Copy, Debug)]
pub struct Filter<'a> {
    /// The caller's tags; empty means no tag restriction.
    pub user_tags: &'a [String],
    /// Backend indices already tried in this request.
    pub tried: &'a [usize],
    /// Only backends of this provider (forced backend).
    pub provider: Option<usize>,
}

impl Filter<'_> {
    /// Is backend `i` (which is `b`) a candidate?
    pub fn admits(&self, config: &Config, i: usize, b: &Backend) -> bool {
        b.enabled
            && b.weight > 0.0
            && config.providers.get(b.provider).is_some_and(|p| p.enabled)
            && !self.tried.contains(&i)
            && self.provider.is_none_or(|p| p == b.provider)
            && b.admits_tags(self.user_tags)
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

/// Replaces `out` with the candidates' indices, in backend order. Pass a buffer kept across
/// requests (capacity = the largest model's backend count) and this never allocates.
pub fn collect(config: &Config, model: &Model, filter: &Filter<'_>, out: &mut Vec<usize>) {
    out.clear();
    out.extend(
        model
            .backends
            .iter()
            .enumerate()
            .filter(|(i, b)| filter.admits(config, *i, b))
            .map(|(i, _)| i),
    );
}
