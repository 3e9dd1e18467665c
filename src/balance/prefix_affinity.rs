//! `prefix_affinity`: for self-hosted vLLM / SGLang fleets, send requests that share a prompt
//! prefix to the same backend so its KV (prefix) cache is warm, without letting a popular
//! prefix overload that backend.
//!
//! * **Ring.** Consistent hashing with virtual nodes: each enabled backend gets points on a
//!   64-bit ring, as many as [`VNODES_PER_MEAN_WEIGHT`] × its weight / the mean weight (at least
//!   one). Points hash the backend's identity (provider index, upstream model), not its position,
//!   so every shard builds the same ring and reordering a model's backends moves no key (adding
//!   a provider renumbers providers and does move keys).
//! * **Bounded load** (Mirrokni, Thorup, Zadimoghaddam 2018). The key's point is found by binary
//!   search; walking clockwise, the first candidate that can take one more request without
//!   exceeding its bound wins. The bound is `ceil((1 + ε) × (Σ inflight + 1) × wᵢ / Σ w)` over the
//!   pool, i.e. `ceil((1 + ε) × mean)` with the request counted, for equal weights, and
//!   proportionally larger for heavier backends (they also own more of the ring). Some
//!   candidate always fits, so the walk ends; ε is [`LOAD_EPSILON`].
//! * Without a `prefix_key` the request has nothing to be affine to, and `least_request`
//!   decides.
//!
//! State: the ring (built in [`Ring::new`], never rebuilt by `pick`) and a membership scratch
//! buffer; `pick` never allocates. In-flight counts are the shard's own, so the load bound holds
//! per shard. It never sees prompt bytes: the caller hashes a bounded prefix ([`key_of`]).

use super::least_request;
use super::pool::{clean, Pool};
use crate::config::Model;

/// ε: a backend may carry up to 25 % more than its fair share of in-flight requests before
/// affine requests spill over to the next backend on the ring. The paper's trade-off: a larger
/// ε keeps more requests on their warm backend, a smaller one bounds the hottest backend
/// tighter. The bound is relative, so spills depend on the shard's in-flight count per backend:
/// a hot prefix stays home ~63 % / 88 % / 96 % / 99.9 % of the time at 2 / 10 / 40 / 100 in
/// flight (tests/affinity.rs).
pub const LOAD_EPSILON: f64 = 0.25;

/// Virtual nodes for a backend of average weight. A backend's share of the ring then deviates
/// from its weight share by roughly 1/√100 = 10 %, while 64 backends still make only ~6,400
/// points (100 KiB), which a binary search crosses in 13 steps.
pub const VNODES_PER_MEAN_WEIGHT: f64 = 100.0;

/// Membership marks in the scratch buffer.
const OUT: u8 = 0;
const IN_POOL: u8 = 1;
const FULL: u8 = 2;

#[derive(Clone, Debug)]
pub struct Ring {
    /// (point, backend index), sorted by point.
    points: Vec<(u64, u32)>,
    /// Indexed like `Model.backends`; all `OUT` between picks.
    marks: Vec<u8>,
}

impl Ring {
    pub fn new(model: &Model) -> Ring {
        let live = |b: &crate::config::Backend| b.enabled && clean(b.weight) > 0.0;
        let (count, sum) = model
            .backends
            .iter()
            .filter(|b| live(b))
            .fold((0usize, 0.0), |(n, s), b| (n + 1, s + b.weight));
        let mut points = Vec::new();
        if count > 0 {
            let mean = sum / count as f64;
            for (i, b) in model.backends.iter().enumerate() {
                if !live(b) {
                    continue;
                }
                let vnodes = (VNODES_PER_MEAN_WEIGHT * b.weight / mean).round().max(1.0) as u64;
                // The same provider and upstream model listed twice still needs its own points.
                let twin = model.backends[..i]
                    .iter()
                    .filter(|o| live(o) && o.provider == b.provider && o.model == b.model)
                    .count() as u64;
                // One byte stream per point, hashed as a whole: XOR-combining separately mixed
                // parts lets distinct (backend, vnode) pairs collide on a point.
                let mut identity = fnv1a(FNV_OFFSET, b.model.as_bytes());
                identity = fnv1a(identity, &(b.provider as u64).to_le_bytes());
                identity = fnv1a(identity, &twin.to_le_bytes());
                for v in 0..vnodes {
                    points.push((mix64(fnv1a(identity, &v.to_le_bytes())), i as u32));
                }
            }
        }
        points.sort_unstable();
        Ring {
            points,
            marks: vec![OUT; model.backends.len()],
        }
    }

    pub(crate) fn pick(
        &mut self,
        pool: &Pool<'_>,
        prefix_key: Option<u64>,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let Some(key) = prefix_key else {
            return least_request::pick(pool, rng);
        };
        if self.points.is_empty() {
            return least_request::pick(pool, rng);
        }
        let mut inflight = 0u64;
        let mut weight = 0.0;
        let mut members = 0usize;
        for i in pool.iter() {
            if let Some(mark) = self.marks.get_mut(i) {
                *mark = IN_POOL;
                members += 1;
            }
            inflight += u64::from(pool.view(i).inflight);
            weight += clean(pool.view(i).weight);
        }
        let demand = (1.0 + LOAD_EPSILON) * (inflight + 1) as f64;
        let n = pool.len() as f64;
        let fits = |i: usize| {
            let share = if weight > 0.0 {
                clean(pool.view(i).weight) / weight
            } else {
                1.0 / n
            };
            f64::from(pool.view(i).inflight) + 1.0 <= (demand * share).ceil()
        };

        let start = self.points.partition_point(|&(p, _)| p < mix64(key));
        let mut chosen = None;
        let mut rejected = 0usize;
        let len = self.points.len();
        for k in 0..len {
            let b = self.points[(start + k) % len].1 as usize;
            match self.marks.get(b) {
                Some(&IN_POOL) if fits(b) => {
                    chosen = Some(b);
                    break;
                }
                Some(&IN_POOL) => {
                    self.marks[b] = FULL;
                    rejected += 1;
                    if rejected == members {
                        break;
                    }
                }
                _ => {}
            }
        }
        for i in pool.iter() {
            if let Some(mark) = self.marks.get_mut(i) {
                *mark = OUT;
            }
        }
        // Unreachable with consistent inputs (some candidate always fits, and every enabled
        // backend is on the ring); kept so odd inputs still get an answer.
        chosen.or_else(|| least_request::pick(pool, rng))
    }
}

/// Hash of a prompt prefix for `PickRequest::prefix_key`: FNV-1a, unseeded, so every shard and
/// every restart map the same prefix to the same key. The caller bounds the prefix (e.g. the
/// first few KiB of the messages: long enough to cover a shared system prompt, short enough to
/// stay cheap); requests agreeing on those bytes land on the same backend.
pub fn key_of(prefix: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, prefix)
}

/// FNV-1a's standard 64-bit offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a continuing from state `h` (start from [`FNV_OFFSET`]).
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// SplitMix64's finalizer: spreads FNV's and small integers' clustered bits over the ring.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
