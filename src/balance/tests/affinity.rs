//! `prefix_affinity`: affinity of a repeated prefix, the load bound, ring shares, fallbacks.

use super::*;

struct Run {
    /// Picks of the hot prefix per backend (after warm-up).
    hot: Vec<usize>,
    /// Assignments that left the chosen backend above its bound.
    violations: usize,
}

/// Closed loop: each tick `arrivals` requests arrive and each stays in flight `duration` ticks,
/// so the shard's total in-flight settles at `arrivals × duration`. Every `hot_every`-th request
/// carries the same prefix; the others carry random prefixes (distinct users). After each
/// assignment the chosen backend is checked against `ceil((1 + ε) × mean)`, the mean counting
/// the request being placed.
fn simulate(n: usize, arrivals: usize, duration: usize, hot_every: usize, ticks: usize) -> Run {
    let config = fleet("prefix_affinity", &vec![1.0; n], &[]);
    let mut bal = balancer(&config);
    let mut views = views(&config);
    let cands = all(&views);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut keys = fastrand::Rng::with_seed(11);
    let hot_key = prefix_affinity::key_of(b"You are a support agent for ACME. Policies: ...");
    let mut finishing: Vec<Vec<usize>> = vec![Vec::new(); duration];
    let mut run = Run {
        hot: vec![0; n],
        violations: 0,
    };
    let mut seq = 0usize;
    for t in 0..ticks {
        for b in std::mem::take(&mut finishing[t % duration]) {
            views[b].inflight -= 1;
        }
        for _ in 0..arrivals {
            seq += 1;
            let is_hot = seq.is_multiple_of(hot_every);
            let key = if is_hot { hot_key } else { keys.u64(..) };
            let total: u32 = views.iter().map(|v| v.inflight).sum();
            let mean = f64::from(total + 1) / n as f64;
            let bound = ((1.0 + prefix_affinity::LOAD_EPSILON) * mean).ceil() as u32;
            let req = PickRequest {
                prefix_key: Some(key),
            };
            let c = bal.pick(&cands, &views, &req, &mut rng).unwrap();
            views[c.backend].inflight += 1;
            run.violations += usize::from(views[c.backend].inflight > bound);
            if is_hot && t >= duration {
                run.hot[c.backend] += 1;
            }
            finishing[t % duration].push(c.backend);
        }
    }
    run
}

/// Share of the hot prefix on its busiest backend, and on its two busiest.
fn affinity(run: &Run) -> (f64, f64) {
    let mut hot = run.hot.clone();
    hot.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = hot.iter().sum();
    (
        hot[0] as f64 / total as f64,
        (hot[0] + hot[1]) as f64 / total as f64,
    )
}

/// 8 backends, 1 % of requests share one prefix, the rest are random, and the fleet carries 100
/// in-flight requests per backend on this shard. ≥ 95 % of the prefix stays on one backend
/// (measured: 99.9 %) and no assignment breaks the bound. The bound is relative, so affinity
/// depends on the per-backend in-flight count, not on utilisation: the home is full whenever
/// random traffic puts it 25 % over the mean. Measured home share at 2 / 10 / 40 in flight per
/// backend on the shard: 63 % / 88 % / 96 % (the next test covers where the rest goes).
#[test]
fn repeated_prefix_stays_on_one_backend_within_the_load_bound() {
    let run = simulate(8, 8, 100, 100, 20_000);
    let (home, _) = affinity(&run);
    assert!(home >= 0.95, "home share {home}");
    assert_eq!(run.violations, 0);
}

/// When the home is full, the walk continues to the same next backend on the ring, so the
/// spill-over warms one second cache rather than all of them: at 10 in flight per backend the
/// home keeps ≥ 75 % (measured 88 %) and the two busiest ≥ 95 % (measured 98.3 %).
#[test]
fn spill_over_lands_on_a_consistent_second_backend() {
    let run = simulate(8, 8, 10, 100, 20_000);
    let (home, top2) = affinity(&run);
    assert!(home >= 0.75, "home share {home}");
    assert!(top2 >= 0.95, "top-2 share {top2}");
    assert_eq!(run.violations, 0);
}

/// One prefix for every request: the load bound, not the hash, decides, so the prefix spreads
/// over the fleet and still no assignment exceeds the bound.
#[test]
fn a_single_overwhelming_prefix_spreads_within_the_bound() {
    let run = simulate(8, 8, 10, 1, 2_000);
    assert_eq!(run.violations, 0);
    // Seven backends at the bound (ceil(1.25 × 10.1) = 13 each) already hold all 80, so the
    // walk needs at least seven of the eight.
    let used = run.hot.iter().filter(|&&n| n > 0).count();
    assert!(used >= 7, "{:?}", run.hot);
}

/// Virtual nodes are proportional to weight, so idle backends receive keys by weight.
#[test]
fn idle_ring_shares_follow_weights() {
    let config = fleet("prefix_affinity", &[3.0, 1.0], &[]);
    let mut bal = balancer(&config);
    let views = views(&config);
    let mut rng = fastrand::Rng::with_seed(1);
    let mut keys = fastrand::Rng::with_seed(2);
    let mut heavy = 0;
    for _ in 0..PICKS {
        let req = PickRequest {
            prefix_key: Some(keys.u64(..)),
        };
        heavy += usize::from(bal.pick(&[0, 1], &views, &req, &mut rng).unwrap().backend == 0);
    }
    // ±5 %: a backend's arc deviates from its weight share by ~1/√vnodes (10 % relative).
    let share = heavy as f64 / PICKS as f64;
    assert!((share - 0.75).abs() <= 0.05, "{share}");
}

/// The ring hashes backend identities, so listing the same backends in another order sends
/// every key to the same provider.
#[test]
fn ring_is_independent_of_backend_order() {
    let a = fleet("prefix_affinity", &[1.0, 1.0, 1.0], &[]);
    let mut b = a.clone();
    b.models[0].backends.reverse();
    let (mut ra, mut rb) = (balancer(&a), balancer(&b));
    let (va, vb) = (views(&a), views(&b));
    let mut rng = fastrand::Rng::with_seed(3);
    for k in 0..1_000u64 {
        let req = PickRequest {
            prefix_key: Some(k),
        };
        let ia = ra.pick(&[0, 1, 2], &va, &req, &mut rng).unwrap().backend;
        let ib = rb.pick(&[0, 1, 2], &vb, &req, &mut rng).unwrap().backend;
        assert_eq!(
            a.models[0].backends[ia].provider, b.models[0].backends[ib].provider,
            "key {k}: {ia} {ib}"
        );
    }
}

/// A key whose home is not a candidate (tried, filtered) goes to the next backend on the ring,
/// the same one every time.
#[test]
fn excluded_home_moves_the_key_to_one_consistent_neighbour() {
    let config = fleet("prefix_affinity", &[1.0; 4], &[]);
    let mut bal = balancer(&config);
    let views = views(&config);
    let mut rng = fastrand::Rng::with_seed(4);
    let req = PickRequest {
        prefix_key: Some(prefix_affinity::key_of(b"shared prefix")),
    };
    let home = bal
        .pick(&[0, 1, 2, 3], &views, &req, &mut rng)
        .unwrap()
        .backend;
    let rest: Vec<usize> = (0..4).filter(|&i| i != home).collect();
    let next = bal.pick(&rest, &views, &req, &mut rng).unwrap().backend;
    assert_ne!(next, home);
    for _ in 0..100 {
        assert_eq!(
            bal.pick(&rest, &views, &req, &mut rng).unwrap().backend,
            next
        );
    }
}

/// Without a prefix key the pick is `least_request`'s: the busy backend is avoided.
#[test]
fn no_prefix_key_falls_back_to_least_request() {
    let config = fleet("prefix_affinity", &[1.0, 1.0], &[]);
    let mut bal = balancer(&config);
    let mut views = views(&config);
    views[0].inflight = 10;
    let s = shares(&mut bal, &[0, 1], &views, 10_000, 5);
    assert_eq!(s, vec![0.0, 1.0]);
}
