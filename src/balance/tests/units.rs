//! The building blocks: EWMA, peak EWMA, the recovery ramp and `BackendStats`.

use std::time::{Duration, Instant};

use super::*;
use ewma::{Ewma, PeakEwma, LATENCY_MAX_AGE, LATENCY_TAU, MIN_SAMPLE_WEIGHT};
use health_ramp::Stage;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn ewma_weighs_samples_by_elapsed_time() {
    let t0 = Instant::now();
    let mut e = Ewma::new(LATENCY_TAU, LATENCY_MAX_AGE);
    assert_eq!(e.get(t0), None);
    e.observe(100.0, t0);
    assert_eq!(e.get(t0), Some(100.0));
    // One tau later the old value keeps 1/e.
    e.observe(200.0, t0 + LATENCY_TAU);
    let w = (-1.0f64).exp();
    assert!((e.get(t0 + LATENCY_TAU).unwrap() - (100.0 * w + 200.0 * (1.0 - w))).abs() < 1e-9);
    // A sample at the same instant still counts, with MIN_SAMPLE_WEIGHT.
    let before = e.get(t0 + LATENCY_TAU).unwrap();
    e.observe(0.0, t0 + LATENCY_TAU);
    let after = e.get(t0 + LATENCY_TAU).unwrap();
    assert!((after - before * (1.0 - MIN_SAMPLE_WEIGHT)).abs() < 1e-9);
    // Stale reads as unmeasured; garbage samples are ignored.
    assert_eq!(e.get(t0 + LATENCY_TAU + LATENCY_MAX_AGE + SEC), None);
    e.observe(f64::NAN, t0 + LATENCY_TAU);
    e.observe(-1.0, t0 + LATENCY_TAU);
    assert_eq!(e.get(t0 + LATENCY_TAU), Some(after));
}

#[test]
fn peak_ewma_jumps_up_and_decays_down() {
    let t0 = Instant::now();
    let mut p = PeakEwma::new(LATENCY_TAU);
    assert_eq!(p.get(t0), None);
    p.observe(100.0, t0);
    p.observe(900.0, t0 + SEC);
    assert_eq!(p.get(t0 + SEC), Some(900.0));
    // Reading decays toward 0 while idle: an idle backend looks cheap again.
    let idle = p.get(t0 + SEC + LATENCY_TAU).unwrap();
    assert!((idle - 900.0 * (-1.0f64).exp()).abs() < 1e-9);
    // A lower sample is averaged in, not adopted.
    p.observe(100.0, t0 + 2 * SEC);
    let v = p.get(t0 + 2 * SEC).unwrap();
    assert!(v > 100.0 && v < 900.0, "{v}");
}

#[test]
fn recovery_ramp_follows_berry() {
    let mut s = Stage::Healthy;
    assert_eq!(s.factor(), 1.0);
    s = s.step(OutcomeClass::Timeout);
    let mut factors = vec![s.factor()];
    for _ in 0..5 {
        s = s.step(OutcomeClass::Success);
        factors.push(s.factor());
    }
    assert_eq!(factors, [0.1, 0.3, 0.3, 0.5, 0.5, 1.0]);
    assert!(s.is_healthy());
    // A failure mid-ramp starts over; a client error changes nothing.
    let s = Stage::Unhealthy { successes: 3 };
    assert_eq!(s.step(OutcomeClass::ClientError), s);
    assert_eq!(
        s.step(OutcomeClass::RateLimited),
        Stage::Unhealthy { successes: 0 }
    );
}

#[test]
fn backend_stats_record_what_strategies_read() {
    let config = fleet(
        "least_request",
        &[2.0],
        &["priority = 3\ntags = [\"premium\"]"],
    );
    let k = &config.settings.smart_ai;
    let b = &config.models[0].backends[0];
    let t0 = Instant::now();
    let mut s = BackendStats::new(k);
    s.begin();
    s.begin();
    assert_eq!(s.view(b, true, t0, k).inflight, 2);
    s.end(OutcomeClass::Success, Duration::from_millis(250), t0, k);
    // A fast failure is not a latency sample (a dead backend must not look fast).
    s.end(OutcomeClass::Connect, Duration::from_millis(2), t0, k);
    let v = s.view(b, false, t0, k);
    assert_eq!(
        (v.inflight, v.weight, v.priority, v.premium, v.available),
        (0, 2.0, 3, true, false)
    );
    assert_eq!(v.latency_ewma_ms, Some(250.0));
    assert_eq!(v.peak_ewma_ms, Some(250.0));
    assert_eq!(v.health_factor, 0.1);
    assert!((v.confidence - 0.6).abs() < 1e-12);
    // Unbalanced `end` saturates instead of wrapping.
    s.end(OutcomeClass::Success, Duration::ZERO, t0, k);
    assert_eq!(s.inflight, 0);
}
