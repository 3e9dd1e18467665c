//! Cost of one `Balancer::pick` per strategy with 2, 8 and 64 candidates, on views that look
//! like a busy shard's (measured latencies, some requests in flight, mixed confidence), so the
//! latency- and load-aware strategies do their full work. Configs are built from TOML so the
//! real validated types are used; building them is outside the timed loop.
//!
//! Run: `cargo bench --bench balance -- --warm-up-time 1 --measurement-time 2` (name the bench:
//! the lib's libtest harness rejects criterion's flags).

use berry::balance::{BackendView, Balancer, PickRequest};
use berry::config::{load_str_with_env, Config};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

const STRATEGIES: [&str; 10] = [
    "weighted_random",
    "round_robin",
    "random",
    "least_latency",
    "failover",
    "weighted_failover",
    "smart_weighted_failover",
    "smart_ai",
    "least_request",
    "prefix_affinity",
];

const SIZES: [usize; 3] = [2, 8, 64];

/// `n` providers and one model `m` with `n` backends of weights 1..=4 and priorities 0..=2.
fn config(strategy: &str, n: usize) -> Config {
    let mut t = String::new();
    for i in 0..n {
        t.push_str(&format!(
            "[providers.p{i}]\nname = \"P{i}\"\nbase_url = \"https://p{i}.example\"\n\
             api_key = \"sk-p{i}-0123456789\"\nmodels = [\"up\"]\n\n"
        ));
    }
    t.push_str(&format!(
        "[models.m]\nname = \"m\"\nstrategy = \"{strategy}\"\n"
    ));
    for i in 0..n {
        t.push_str(&format!(
            "[[models.m.backends]]\nprovider = \"p{i}\"\nmodel = \"up\"\nweight = {}.0\n\
             priority = {}\n\n",
            1 + i % 4,
            i % 3
        ));
    }
    t.push_str("[users.u]\nname = \"U\"\ntoken = \"tok-u-0123456789abcdef\"\n");
    load_str_with_env(&t, "bench.toml", &|_| None).expect("bench config")
}

fn views(config: &Config) -> Vec<BackendView> {
    let knobs = &config.settings.smart_ai;
    config.models[0]
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut v = BackendView::fresh(b.weight, knobs);
            v.priority = b.priority;
            v.premium = i % 5 == 0;
            v.health_factor = [1.0, 1.0, 0.5, 1.0, 0.1][i % 5];
            v.latency_ewma_ms = (i % 7 != 3).then_some(200.0 + 15.0 * (i % 11) as f64);
            v.peak_ewma_ms = v.latency_ewma_ms.map(|l| l * 1.2);
            v.confidence = [1.0, 0.95, 0.8, 0.6, 0.3][i % 5];
            v.inflight = (i % 6) as u32;
            v
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for strategy in STRATEGIES {
        for n in SIZES {
            let config = config(strategy, n);
            let model = &config.models[0];
            let mut balancer = Balancer::new(model.strategy, model, &config.settings);
            let views = views(&config);
            let candidates: Vec<usize> = (0..n).collect();
            let mut rng = fastrand::Rng::with_seed(42);
            let mut key = 0u64;
            group.bench_function(BenchmarkId::new(strategy, n), |b| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let req = PickRequest {
                        prefix_key: Some(key),
                    };
                    black_box(balancer.pick(
                        black_box(&candidates),
                        black_box(&views),
                        &req,
                        &mut rng,
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
