//! Distributions of the static strategies, the availability gate and candidate exclusion,
//! each over 100 000 seeded picks with the tolerance stated on `TOL`.

use super::*;

const ALL: [&str; 10] = [
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

#[test]
fn weighted_random_follows_weights() {
    let config = fleet("weighted_random", &[3.0, 1.0], &[]);
    let v = views(&config);
    let s = shares(&mut balancer(&config), &all(&v), &v, PICKS, 1);
    assert_shares(&s, &[0.75, 0.25], TOL);
}

#[test]
fn random_ignores_weights() {
    let config = fleet("random", &[3.0, 1.0, 1.0, 1.0], &[]);
    let v = views(&config);
    let s = shares(&mut balancer(&config), &all(&v), &v, PICKS, 2);
    assert_shares(&s, &[0.25; 4], TOL);
}

#[test]
fn round_robin_is_smooth_and_exact() {
    let config = fleet("round_robin", &[5.0, 1.0, 1.0], &[]);
    let v = views(&config);
    let mut bal = balancer(&config);
    let mut rng = fastrand::Rng::with_seed(0);
    let mut pick = |c: &[usize]| {
        bal.pick(c, &v, &PickRequest::default(), &mut rng)
            .unwrap()
            .backend
    };
    // nginx's sequence for 5:1:1: the heavy backend's turns are spread out, not bunched.
    let seq: Vec<usize> = (0..7).map(|_| pick(&[0, 1, 2])).collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    // Deterministic, so exact: every 7 picks hold 5, 1, 1.
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, 70_000, 0);
    assert_shares(&s, &[5.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0], 1e-9);
    let config = fleet("round_robin", &[3.0, 1.0], &[]);
    let v = views(&config);
    let s = shares(&mut balancer(&config), &[0, 1], &v, PICKS, 0);
    assert_shares(&s, &[0.75, 0.25], 1e-9);
}

#[test]
fn failover_uses_the_first_tier_with_an_available_backend() {
    let config = fleet(
        "failover",
        &[3.0, 1.0, 5.0],
        &["priority = 0", "priority = 0", "priority = 1"],
    );
    let mut v = views(&config);
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 3);
    assert_shares(&s, &[0.75, 0.25, 0.0], TOL);
    // Tier 0 has one available backend left: it takes everything.
    v[0].available = false;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 3);
    assert_shares(&s, &[0.0, 1.0, 0.0], 0.0);
    // Tier 0 is down: tier 1.
    v[1].available = false;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 3);
    assert_shares(&s, &[0.0, 0.0, 1.0], 0.0);
    // Everything is down: tier 0 by weight, and the choice says it is degraded.
    v[2].available = false;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 3);
    assert_shares(&s, &[0.75, 0.25, 0.0], TOL);
    let mut rng = fastrand::Rng::with_seed(3);
    let c = balancer(&config).pick(&[0, 1, 2], &v, &PickRequest::default(), &mut rng);
    assert!(c.unwrap().degraded);
}

#[test]
fn weighted_failover_falls_back_to_all_and_says_so() {
    let config = fleet("weighted_failover", &[3.0, 1.0, 4.0], &[]);
    let mut v = views(&config);
    v[2].available = false;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 4);
    assert_shares(&s, &[0.75, 0.25, 0.0], TOL);
    for view in &mut v {
        view.available = false;
    }
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 4);
    assert_shares(&s, &[0.375, 0.125, 0.5], TOL);
}

#[test]
fn smart_weighted_failover_scales_by_the_recovery_ramp() {
    use health_ramp::Stage;
    let config = fleet("smart_weighted_failover", &[1.0, 1.0], &[]);
    let mut v = views(&config);
    // Unhealthy (10 %), then 1, 3 and 5 consecutive successes: 30 %, 50 %, 100 %.
    let mut stage = Stage::Healthy.step(OutcomeClass::ServerError);
    for (successes, factor) in [(0, 0.1), (1, 0.3), (2, 0.5), (2, 1.0)] {
        for _ in 0..successes {
            stage = stage.step(OutcomeClass::Success);
        }
        v[0].health_factor = stage.factor();
        assert_eq!(v[0].health_factor, factor);
        let s = shares(&mut balancer(&config), &[0, 1], &v, PICKS, 5);
        let expected = factor / (factor + 1.0);
        assert_shares(&s, &[expected, 1.0 - expected], TOL);
    }
}

#[test]
fn least_latency_shares_within_the_band_and_explores_unmeasured() {
    let config = fleet("least_latency", &[1.0, 1.0, 1.0], &[]);
    let mut v = views(&config);
    // 105 ms is within 10 % of 100 ms: the two share; 200 ms gets nothing.
    for (view, ms) in v.iter_mut().zip([100.0, 105.0, 200.0]) {
        view.latency_ewma_ms = Some(ms);
    }
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 6);
    assert_shares(&s, &[0.5, 0.5, 0.0], TOL);
    // 111 ms is outside the band.
    v[1].latency_ewma_ms = Some(111.0);
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 6);
    assert_shares(&s, &[1.0, 0.0, 0.0], 0.0);
    // An unmeasured backend counts as the best until its first sample.
    v[2].latency_ewma_ms = None;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 6);
    assert_shares(&s, &[0.5, 0.0, 0.5], TOL);
}

/// Closed loop: one request per tick; a request occupies its backend for the backend's latency
/// (10 ticks, or 100 for the slow one), and each backend's peak EWMA is its latency. The fast
/// backends carry ~3 in flight each, so the slow one would need 10× their queue to win a
/// comparison: it gets < 1 % of the picks and the fast three split the rest evenly (± 2 %).
#[test]
fn least_request_avoids_a_slow_backend() {
    let latency = [10usize, 10, 10, 100];
    let config = fleet("least_request", &[1.0; 4], &[]);
    let mut v = views(&config);
    for (view, &l) in v.iter_mut().zip(&latency) {
        view.peak_ewma_ms = Some(l as f64);
    }
    let mut bal = balancer(&config);
    let mut rng = fastrand::Rng::with_seed(8);
    let mut finishing: Vec<Vec<usize>> = vec![Vec::new(); 101];
    let mut counts = [0usize; 4];
    for t in 0..PICKS {
        for b in std::mem::take(&mut finishing[t % 101]) {
            v[b].inflight -= 1;
        }
        let c = bal
            .pick(&[0, 1, 2, 3], &v, &PickRequest::default(), &mut rng)
            .unwrap();
        v[c.backend].inflight += 1;
        counts[c.backend] += 1;
        finishing[(t + latency[c.backend]) % 101].push(c.backend);
    }
    let s: Vec<f64> = counts.iter().map(|&n| n as f64 / PICKS as f64).collect();
    assert!(s[3] < 0.01, "{s:?}");
    assert_shares(&s[..3], &[1.0 / 3.0; 3], 0.02);
}

#[test]
fn least_request_prefers_fewer_in_flight_and_tries_unmeasured() {
    let config = fleet("least_request", &[1.0, 1.0], &[]);
    let mut v = views(&config);
    v[0].peak_ewma_ms = Some(100.0);
    v[1].peak_ewma_ms = Some(100.0);
    v[0].inflight = 2;
    let s = shares(&mut balancer(&config), &[0, 1], &v, PICKS, 9);
    assert_shares(&s, &[0.0, 1.0], 0.0);
    // Unmeasured is costed as the best measured: equal cost, so the weighted draw decides.
    v[0].inflight = 0;
    v[1].peak_ewma_ms = None;
    let s = shares(&mut balancer(&config), &[0, 1], &v, PICKS, 9);
    assert_shares(&s, &[0.5, 0.5], TOL);
}

/// Every strategy: an unavailable backend is never chosen while another is available, and
/// when none is, the choice is marked degraded.
#[test]
fn every_strategy_honours_availability() {
    for name in ALL {
        let config = fleet(name, &[1.0, 1.0, 1.0], &[]);
        let mut v = views(&config);
        v[1].available = false;
        let mut bal = balancer(&config);
        let mut rng = fastrand::Rng::with_seed(10);
        for k in 0..2_000u64 {
            let req = PickRequest {
                prefix_key: Some(k),
            };
            let c = bal.pick(&[0, 1, 2], &v, &req, &mut rng).unwrap();
            assert!(c.backend != 1 && !c.degraded, "{name}");
        }
        for view in &mut v {
            view.available = false;
        }
        let c = bal.pick(&[0, 1, 2], &v, &PickRequest::default(), &mut rng);
        assert!(c.unwrap().degraded, "{name}");
    }
}

/// Every strategy: only candidates are chosen (tried, tag-filtered or forced-away backends
/// are simply absent from `candidates`), and no candidates means no choice.
#[test]
fn every_strategy_chooses_only_candidates() {
    for name in ALL {
        let config = fleet(name, &[1.0, 5.0, 1.0, 5.0], &[]);
        let v = views(&config);
        let mut bal = balancer(&config);
        let mut rng = fastrand::Rng::with_seed(12);
        for k in 0..2_000u64 {
            let req = PickRequest {
                prefix_key: Some(k),
            };
            let c = bal.pick(&[0, 2], &v, &req, &mut rng).unwrap();
            assert!(c.backend == 0 || c.backend == 2, "{name}");
        }
        assert_eq!(bal.pick(&[], &v, &PickRequest::default(), &mut rng), None);
        // An index outside `views` is ignored rather than a panic.
        assert_eq!(bal.pick(&[9], &v, &PickRequest::default(), &mut rng), None);
    }
}
