//! SmartAI: classification, the confidence state machine, time decay, the weight formula and
//! how fast traffic moves off a failing backend and back.

use std::time::{Duration, Instant};

use super::*;
use outcome::refine_with_error_code;
use smart_ai::{apply, effective, effective_weight, Confidence};
use OutcomeClass::*;

#[test]
fn classify_by_status_and_transport() {
    let cases = [
        (Some(200), None, Success),
        (Some(204), None, Success),
        (Some(400), None, ClientError),
        (Some(404), None, ClientError),
        (Some(413), None, ClientError),
        (Some(422), None, ClientError),
        (Some(401), None, AuthError),
        (Some(402), None, AuthError),
        (Some(403), None, AuthError),
        (Some(408), None, Timeout),
        (Some(429), None, RateLimited),
        (Some(500), None, ServerError),
        (Some(502), None, ServerError),
        (Some(503), None, ServerError),
        (Some(504), None, Timeout),
        (Some(302), None, ServerError),
        (None, Some(TransportError::Connect), Connect),
        (None, Some(TransportError::Io), Connect),
        (None, Some(TransportError::Timeout), Timeout),
        (None, Some(TransportError::Protocol), ServerError),
        (Some(200), Some(TransportError::Io), Connect),
        (None, None, Connect),
    ];
    for (status, transport, class) in cases {
        assert_eq!(
            classify(status, transport),
            class,
            "{status:?} {transport:?}"
        );
    }
    assert_eq!(
        refine_with_error_code(ClientError, Some("model_not_found")),
        ModelError
    );
    assert_eq!(
        refine_with_error_code(ClientError, Some("invalid_request_error")),
        ClientError
    );
    assert_eq!(
        refine_with_error_code(ServerError, Some("model_not_found")),
        ServerError
    );
}

fn knobs() -> crate::config::SmartAi {
    fleet("smart_ai", &[1.0], &[]).settings.smart_ai
}

#[test]
fn each_class_moves_confidence_by_its_knob() {
    let k = knobs();
    let now = Instant::now();
    let start = Confidence::initial(&k);
    let after = |class| apply(start, class, now, &k).value;
    let expected = [
        (Success, 0.9),
        (Timeout, 0.6),
        (Connect, 0.5),
        (RateLimited, 0.7),
        (ServerError, 0.6),
        (ModelError, 0.5),
        // 0.8 − 0.8 = 0 is below min_confidence: exactly min_confidence.
        (AuthError, 0.05),
    ];
    for (class, value) in expected {
        assert!(
            (after(class) - value).abs() < 1e-12,
            "{class:?}: {}",
            after(class)
        );
    }
    // Capped at 1.
    let mut c = start;
    for _ in 0..5 {
        c = apply(c, Success, now, &k);
    }
    assert_eq!(c.value, smart_ai::CONFIDENCE_MAX);
}

#[test]
fn client_errors_never_move_confidence() {
    let k = knobs();
    let t0 = Instant::now();
    let c = apply(Confidence::initial(&k), ServerError, t0, &k);
    for status in [400, 404, 405, 409, 413, 415, 422] {
        let class = classify(Some(status), None);
        assert_eq!(class, ClientError);
        // Unchanged, timestamp included, so decay continues as if nothing happened.
        assert_eq!(apply(c, class, t0 + Duration::from_secs(10), &k), c);
    }
}

/// Berry API floored effective confidence at 0.5; here `min_confidence` is the floor, exactly.
#[test]
fn min_confidence_is_the_only_floor() {
    let mut config = fleet("smart_ai", &[2.0], &[]);
    let now = Instant::now();
    for min in [0.05, 0.01, 0.0] {
        config.settings.smart_ai.min_confidence = min;
        let k = &config.settings.smart_ai;
        let mut c = Confidence::initial(k);
        for _ in 0..25 {
            c = apply(c, ServerError, now, k);
        }
        assert_eq!(c.value, min);
        let mut v = BackendView::fresh(2.0, k);
        v.confidence = effective(&c, now, k);
        assert_eq!(effective_weight(&v, k), 2.0 * min);
    }
}

#[test]
fn confidence_decays_toward_initial_with_the_stated_half_life() {
    let mut k = knobs();
    let t0 = Instant::now();
    let low = Confidence {
        value: 0.05,
        at: Some(t0),
    };
    let half = smart_ai::CONFIDENCE_HALF_LIFE;
    assert!((effective(&low, t0 + half, &k) - 0.425).abs() < 1e-12);
    assert!((effective(&low, t0 + 2 * half, &k) - 0.6125).abs() < 1e-12);
    let high = Confidence {
        value: 1.0,
        at: Some(t0),
    };
    assert!((effective(&high, t0 + half, &k) - 0.9).abs() < 1e-12);
    // An event first materialises the decay, then adjusts.
    assert!((apply(low, Success, t0 + half, &k).value - 0.525).abs() < 1e-12);
    k.enable_time_decay = false;
    assert_eq!(effective(&low, t0 + 10 * half, &k), 0.05);
}

#[test]
fn stability_bonus_goes_to_stable_non_premium_backends() {
    let config = fleet("smart_ai", &[1.0, 1.0], &["", "tags = [\"premium\"]"]);
    let k = &config.settings.smart_ai;
    let mut v = views(&config);
    v[0].confidence = 1.0;
    v[1].confidence = 1.0;
    assert!((effective_weight(&v[0], k) - 1.1).abs() < 1e-12);
    assert_eq!(effective_weight(&v[1], k), 1.0);
    // 1.1 vs 1.0 is outside the 5 % band: the non-premium one is the best (80 %), the premium
    // one gets the exploration share (20 %).
    let s = shares(&mut balancer(&config), &[0, 1], &v, PICKS, 20);
    assert_shares(&s, &[0.8, 0.2], TOL);
    // Below STABILITY_CONFIDENCE_MIN there is no bonus: tied, so they share.
    v[0].confidence = 0.85;
    v[1].confidence = 0.85;
    assert_eq!(effective_weight(&v[0], k), 0.85);
    let s = shares(&mut balancer(&config), &[0, 1], &v, PICKS, 20);
    assert_shares(&s, &[0.5, 0.5], TOL);
}

#[test]
fn exploration_ratio_is_the_share_spent_on_non_best_backends() {
    let mut config = fleet("smart_ai", &[1.0, 1.0, 1.0], &[]);
    let mut v = views(&config);
    v[0].confidence = 1.0;
    v[1].confidence = 0.5;
    v[2].confidence = 0.5;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 21);
    assert_shares(&s, &[0.8, 0.1, 0.1], TOL);
    config.settings.smart_ai.exploration_ratio = 0.0;
    let s = shares(&mut balancer(&config), &[0, 1, 2], &v, PICKS, 21);
    assert_shares(&s, &[1.0, 0.0, 0.0], 0.0);
}

/// How fast, with default knobs and 4 equal backends at the initial confidence (25 % each):
/// ONE failure of any class but rate limiting (≥ 0.2 off 0.8, i.e. outside the 5 % band) makes
/// the backend non-best, and its share drops to exploration_ratio / 3 = 6.7 % (< 10 %). A rate
/// limit (0.1 off) does the same. Two successes (+0.1 each) bring it back to 0.8, tied again:
/// 25 %.
#[test]
fn one_failure_moves_traffic_off_and_two_successes_bring_it_back() {
    let config = fleet("smart_ai", &[1.0; 4], &[]);
    let k = &config.settings.smart_ai;
    let mut v = views(&config);
    let cands = all(&v);
    let now = Instant::now();
    let s = shares(&mut balancer(&config), &cands, &v, PICKS, 22);
    assert_shares(&s, &[0.25; 4], TOL);

    let mut c = apply(Confidence::initial(k), ServerError, now, k);
    v[0].confidence = effective(&c, now, k);
    let s = shares(&mut balancer(&config), &cands, &v, PICKS, 22);
    assert!(s[0] < 0.10);
    assert_shares(&s, &[0.2 / 3.0, 0.8 / 3.0 + 0.2 / 3.0 * 2.0 / 3.0], TOL);

    for _ in 0..2 {
        c = apply(c, Success, now, k);
    }
    v[0].confidence = effective(&c, now, k);
    let s = shares(&mut balancer(&config), &cands, &v, PICKS, 22);
    assert_shares(&s, &[0.25; 4], TOL);
}

/// Closed loop through `BackendStats`, 10 requests/s: backend 0 of 4 answers 500 for 1000 s,
/// then recovers. While failing it is held at min_confidence and gets only the exploration
/// share (< 10 %); after recovery the explored requests succeed, 10 successes (0.05 → 1.0, about
/// 15 s at this rate) make it tied-best again, and it is back to its 25 % (± 2 %).
#[test]
fn traffic_leaves_a_failing_backend_and_returns_after_recovery() {
    let config = fleet("smart_ai", &[1.0; 4], &[]);
    let k = &config.settings.smart_ai;
    let model = &config.models[0];
    let mut stats: Vec<BackendStats> = model
        .backends
        .iter()
        .map(|_| BackendStats::new(k))
        .collect();
    let mut bal = balancer(&config);
    let mut rng = fastrand::Rng::with_seed(23);
    let cands = [0, 1, 2, 3];
    let t0 = Instant::now();
    let step = Duration::from_millis(100);
    let mut share = |from: usize, to: usize, failing: bool| {
        let mut hits = 0;
        for n in from..to {
            let now = t0 + step * n as u32;
            let v: Vec<BackendView> = stats
                .iter()
                .zip(&model.backends)
                .map(|(s, b)| s.view(b, true, now, k))
                .collect();
            let c = bal
                .pick(&cands, &v, &PickRequest::default(), &mut rng)
                .unwrap();
            let status = if c.backend == 0 && failing { 500 } else { 200 };
            stats[c.backend].begin();
            stats[c.backend].end(classify(Some(status), None), step, now, k);
            hits += usize::from(c.backend == 0);
        }
        hits as f64 / (to - from) as f64
    };
    let healthy = share(0, 10_000, false);
    assert!((healthy - 0.25).abs() <= 0.02, "{healthy}");
    let failing = share(10_000, 20_000, true);
    assert!(failing < 0.10, "{failing}");
    let first_recovery = share(20_000, 21_000, false);
    let recovered = share(21_000, 31_000, false);
    assert!(first_recovery > failing, "{first_recovery}");
    assert!((recovered - 0.25).abs() <= 0.02, "{recovered}");
}
