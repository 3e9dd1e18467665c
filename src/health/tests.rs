//! Cross-module checks of the health pipeline without threads: shard-side balancers, the
//! report, the control thread's book, and the snapshot they all route by.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::book::HealthBook;
use super::report::{OutcomeEvent, ShardReport};
use crate::balance::filter::Filter;
use crate::balance::local::LocalBalance;
use crate::balance::outcome::OutcomeClass;
use crate::balance::PickRequest;
use crate::config::{self, Config};

fn config() -> Arc<Config> {
    let toml = r#"
[settings]
circuit_breaker_failure_threshold = 3
circuit_breaker_timeout_seconds = 10
[providers.a]
name = "A"
base_url = "http://127.0.0.1:1"
api_key = "sk-aaaaaaaaaaaa"
models = ["m"]
[providers.b]
name = "B"
base_url = "http://127.0.0.1:2"
api_key = "sk-bbbbbbbbbbbb"
models = ["m"]
[models.chat]
name = "chat"
[[models.chat.backends]]
provider = "a"
model = "m"
[[models.chat.backends]]
provider = "b"
model = "m"
"#;
    Arc::new(config::load_str(toml, "t.toml").expect("valid"))
}

fn failures(backend: u32, n: usize) -> ShardReport {
    let e = OutcomeEvent {
        model: 0,
        backend,
        class: OutcomeClass::ServerError,
        latency_us: 1000,
        ttfb_us: 1000,
        retry_after_s: None,
    };
    ShardReport {
        shard: 0,
        events: vec![e; n],
        inflight: vec![vec![0, 0]],
        ..ShardReport::default()
    }
}

fn picks(
    shard: &mut LocalBalance,
    cfg: &Config,
    snap: &super::snapshot::Snapshot,
    now: Instant,
    n: usize,
) -> [usize; 2] {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut counts = [0; 2];
    let filter = Filter {
        user_tags: &[],
        tried: &[],
        provider: None,
    };
    for _ in 0..n {
        let c = shard
            .pick(
                cfg,
                0,
                &filter,
                &PickRequest::default(),
                snap,
                1,
                now,
                &mut rng,
            )
            .expect("a candidate");
        counts[c.backend] += 1;
        // Finish as a success so in-flight counts stay flat and the local breaker stays closed.
        let outcome = crate::balance::local::Outcome {
            class: OutcomeClass::Success,
            elapsed: Duration::from_millis(1),
            retry_after: None,
        };
        shard.finish(cfg, 0, c.backend, outcome, now);
    }
    counts
}

#[test]
fn failures_seen_by_shard_0_stop_shard_1_within_one_snapshot() {
    let cfg = config();
    let t0 = Instant::now();
    let mut book = HealthBook::new(cfg.clone(), 2, t0);
    let mut shard1 = LocalBalance::new(&cfg);
    let before = book.snapshot(t0);
    let [a, b] = picks(&mut shard1, &cfg, &before, t0, 1000);
    assert!(a > 400 && b > 400, "both used before: {a}/{b}");

    // Shard 0 alone sees backend 0 fail three times (the threshold); its report reaches the book.
    let t1 = t0 + Duration::from_millis(100);
    book.apply(&failures(0, 3), t1);
    let after = book.snapshot(t1);
    let [a, b] = picks(&mut shard1, &cfg, &after, t1, 1000);
    assert_eq!(
        (a, b),
        (0, 1000),
        "shard 1 never chose the failing backend after one snapshot"
    );

    // After circuit_breaker_timeout_seconds exactly one shard may probe it.
    let t2 = t1 + Duration::from_secs(10);
    let half_open = book.snapshot(t2);
    let s = half_open.backend(0, 0).expect("backend");
    assert!(s.admits(s.probe_shard.expect("a probe shard"), t2));
    assert!(
        !s.admits(s.probe_shard.unwrap() + 1, t2),
        "only the designated shard probes"
    );
}

#[test]
fn client_errors_leave_health_untouched() {
    let cfg = config();
    let t0 = Instant::now();
    let mut book = HealthBook::new(cfg.clone(), 1, t0);
    let e = OutcomeEvent {
        model: 0,
        backend: 0,
        class: OutcomeClass::ClientError,
        latency_us: 1000,
        ttfb_us: 1000,
        retry_after_s: None,
    };
    let report = ShardReport {
        shard: 0,
        events: vec![e; 50],
        inflight: vec![vec![0, 0]],
        ..ShardReport::default()
    };
    book.apply(&report, t0);
    let snap = book.snapshot(t0);
    let s = snap.backend(0, 0).unwrap();
    assert!(s.healthy(t0));
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(
        s.requests_window, 0,
        "client errors are not the backend's traffic record"
    );
    assert_eq!(s.view.confidence, cfg.settings.smart_ai.initial_confidence);
}

#[test]
fn retry_after_cools_the_backend_for_exactly_that_long_across_shards() {
    let cfg = config();
    let t0 = Instant::now();
    let mut book = HealthBook::new(cfg.clone(), 2, t0);
    let e = OutcomeEvent {
        model: 0,
        backend: 1,
        class: OutcomeClass::RateLimited,
        latency_us: 500,
        ttfb_us: 500,
        retry_after_s: Some(7),
    };
    let report = ShardReport {
        shard: 0,
        events: vec![e],
        inflight: vec![vec![0, 0]],
        ..ShardReport::default()
    };
    book.apply(&report, t0);
    let snap = book.snapshot(t0);
    let s = snap.backend(0, 1).unwrap();
    assert!(!s.admits(1, t0 + Duration::from_millis(6_999)));
    assert!(s.admits(1, t0 + Duration::from_secs(7)));
}

#[test]
fn error_rate_over_the_window_opens_the_circuit_without_consecutive_failures() {
    let toml = "[settings]\ncircuit_breaker_error_rate = 0.5\ncircuit_breaker_min_requests = 10\n[providers.a]\nname = \"A\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"sk-aaaaaaaaaaaa\"\nmodels = [\"m\"]\n[models.chat]\nname = \"chat\"\n[[models.chat.backends]]\nprovider = \"a\"\nmodel = \"m\"\n";
    let cfg = Arc::new(config::load_str(toml, "t.toml").expect("valid"));
    let t0 = Instant::now();
    let mut book = HealthBook::new(cfg, 1, t0);
    let ev = |class| OutcomeEvent {
        model: 0,
        backend: 0,
        class,
        latency_us: 1000,
        ttfb_us: 1000,
        retry_after_s: None,
    };
    let events: Vec<_> = (0..20)
        .map(|i| {
            ev(if i % 2 == 0 {
                OutcomeClass::ServerError
            } else {
                OutcomeClass::Success
            })
        })
        .collect();
    let report = ShardReport {
        shard: 0,
        events: events[..8].to_vec(),
        inflight: vec![vec![0]],
        ..ShardReport::default()
    };
    book.apply(&report, t0);
    assert!(
        book.snapshot(t0).backend(0, 0).unwrap().admits(0, t0),
        "8 requests: below min_requests"
    );
    let report = ShardReport {
        shard: 0,
        events: events[8..].to_vec(),
        inflight: vec![vec![0]],
        ..ShardReport::default()
    };
    book.apply(&report, t0);
    let snap = book.snapshot(t0);
    let s = snap.backend(0, 0).unwrap();
    assert_eq!(s.consecutive_failures, 0, "never two failures in a row");
    assert!(!s.admits(0, t0), "50 % of 20 requests failed: open");
}
