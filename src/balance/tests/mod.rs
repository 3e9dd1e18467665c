//! Shared fixtures for the strategy tests: configs built from TOML (so the real validated types
//! are used), fresh views, and share counting over many seeded picks.

mod affinity;
mod distribution;
mod filter;
mod smart;
mod units;

use super::*;
use crate::config::{load_str_with_env, Config};

/// A config with one provider per backend (`p0`, `p1`, …) and one model `m` with the given
/// strategy; `extra[i]` is appended to backend i's table (priority, tags, …).
pub(super) fn fleet(strategy: &str, weights: &[f64], extra: &[&str]) -> Config {
    let mut t = String::new();
    for i in 0..weights.len() {
        t.push_str(&format!(
            "[providers.p{i}]\nname = \"P{i}\"\nbase_url = \"https://p{i}.example\"\n\
             api_key = \"sk-p{i}-0123456789\"\nmodels = [\"up\"]\n\n"
        ));
    }
    t.push_str(&format!(
        "[models.m]\nname = \"m\"\nstrategy = \"{strategy}\"\n"
    ));
    for (i, w) in weights.iter().enumerate() {
        t.push_str(&format!(
            "[[models.m.backends]]\nprovider = \"p{i}\"\nmodel = \"up\"\nweight = {w:?}\n{}\n",
            extra.get(i).copied().unwrap_or("")
        ));
    }
    t.push_str("[users.u]\nname = \"U\"\ntoken = \"tok-u-0123456789abcdef\"\n");
    load_str_with_env(&t, "test.toml", &|_| None).unwrap_or_else(|e| panic!("{e}\n{t}"))
}

pub(super) fn balancer(config: &Config) -> Balancer {
    let model = &config.models[0];
    Balancer::new(model.strategy, model, &config.settings)
}

pub(super) fn views(config: &Config) -> Vec<BackendView> {
    let knobs = &config.settings.smart_ai;
    config.models[0]
        .backends
        .iter()
        .map(|b| {
            let mut v = BackendView::fresh(b.weight, knobs);
            v.priority = b.priority;
            v.premium = tracker::is_premium(b);
            v
        })
        .collect()
}

pub(super) fn all(views: &[BackendView]) -> Vec<usize> {
    (0..views.len()).collect()
}

/// Fraction of `picks` picks that went to each backend (static views).
pub(super) fn shares(
    b: &mut Balancer,
    candidates: &[usize],
    views: &[BackendView],
    picks: usize,
    seed: u64,
) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts = vec![0usize; views.len()];
    for _ in 0..picks {
        let c = b
            .pick(candidates, views, &PickRequest::default(), &mut rng)
            .unwrap();
        counts[c.backend] += 1;
    }
    counts.iter().map(|&n| n as f64 / picks as f64).collect()
}

/// Asserts `actual` is within `tol` of `expected`, elementwise.
pub(super) fn assert_shares(actual: &[f64], expected: &[f64], tol: f64) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol,
            "backend {i}: share {a:.4}, expected {e:.4} ± {tol} (all: {actual:?})"
        );
    }
}

pub(super) const PICKS: usize = 100_000;
/// ±1 %: at 100 000 picks a share's standard deviation is at most 0.16 %, so this is > 6σ.
pub(super) const TOL: f64 = 0.01;
