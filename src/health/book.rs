//! The control thread's record of every (model, backend): the one place where outcomes from all
//! shards meet. It drives the circuit breaker, SmartAI confidence, the recovery ramp and the
//! latency estimates from the merged event stream, keeps a sliding window of counts and
//! latencies, and renders the immutable [`Snapshot`] that every shard routes by.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::breaker::{Breaker, BreakerConfig, Circuit, Event};
use super::report::{OutcomeEvent, ShardReport};
use super::snapshot::{BackendSnap, Snapshot};
use crate::balance::outcome::OutcomeClass;
use crate::balance::tracker::BackendStats;
use crate::config::Config;

/// Width of one slot of the sliding window, and the number of slots (10 × 1 s).
const SLOT: Duration = Duration::from_secs(1);
const SLOTS: usize = 10;
/// Snapshots between two refreshes of the window percentiles.
const QUANTILES_EVERY: u64 = 10;
/// Snapshots between two rotations of the shard allowed to probe a half-open circuit.
const PROBE_ROTATE: u64 = 10;
/// Latencies above this are recorded as this (1 h, in µs): the histogram needs a bound.
const LATENCY_US_MAX: u64 = 3_600_000_000;

struct Slot {
    start: Instant,
    requests: u64,
    failures: u64,
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
}

struct Entry {
    breaker: Breaker,
    stats: BackendStats,
    slots: Vec<Slot>,
    /// Shard chosen for the half-open probe, so that exactly one probe goes out.
    inflight: Vec<u32>,
    last_failure: Option<Instant>,
    consecutive_failures: u32,
    /// p50 and p99 over the window, ms, as of the last refresh.
    quantiles_ms: Quantiles,
}

pub struct HealthBook {
    config: Arc<Config>,
    entries: Vec<Vec<Entry>>,
    breaker_cfg: BreakerConfig,
    shards: usize,
    pub dropped_events: u64,
    pub dropped_reports: u64,
    seq: u64,
    /// Reused to merge a window's histograms.
    scratch: Histogram<u64>,
}

impl HealthBook {
    pub fn new(config: Arc<Config>, shards: usize, now: Instant) -> HealthBook {
        let knobs = &config.settings.smart_ai;
        let entries = config
            .models
            .iter()
            .map(|m| {
                m.backends
                    .iter()
                    .map(|_| Entry {
                        breaker: Breaker::default(),
                        stats: BackendStats::new(knobs),
                        slots: (0..SLOTS).map(|_| new_slot(now)).collect(),
                        inflight: vec![0; shards],
                        last_failure: None,
                        consecutive_failures: 0,
                        quantiles_ms: Quantiles::default(),
                    })
                    .collect()
            })
            .collect();
        let breaker_cfg = BreakerConfig {
            failure_threshold: config.settings.circuit_breaker_failure_threshold,
            open_for: config.settings.circuit_breaker_timeout,
        };
        HealthBook {
            config,
            entries,
            breaker_cfg,
            shards,
            dropped_events: 0,
            dropped_reports: 0,
            seq: 0,
            scratch: new_slot(now).latency,
        }
    }

    /// Folds one shard report in, event by event, in the order the shard saw them.
    pub fn apply(&mut self, report: &ShardReport, now: Instant) {
        self.dropped_events += report.dropped_events;
        self.dropped_reports += report.dropped_reports;
        for e in &report.events {
            self.apply_event(e, now);
        }
        for (m, per_backend) in report.inflight.iter().enumerate() {
            for (b, &n) in per_backend.iter().enumerate() {
                if let Some(entry) = self.entries.get_mut(m).and_then(|v| v.get_mut(b)) {
                    if let Some(slot) = entry.inflight.get_mut(report.shard) {
                        *slot = n;
                    }
                }
            }
        }
    }

    /// One outcome of a live request.
    pub fn apply_event(&mut self, e: &OutcomeEvent, now: Instant) {
        let knobs = &self.config.settings.smart_ai;
        let Some(entry) = self
            .entries
            .get_mut(e.model as usize)
            .and_then(|v| v.get_mut(e.backend as usize))
        else {
            return;
        };
        if e.class == OutcomeClass::ClientError {
            // The client's mistake says nothing about the backend: no breaker, no counts.
            return;
        }
        entry.stats.record(e.class, Some(e.latency()), now, knobs);
        let cool_down = e.class == OutcomeClass::RateLimited && e.retry_after_s.is_some();
        let event = match e.class {
            OutcomeClass::Success => Event::Success,
            OutcomeClass::RateLimited => Event::RateLimited {
                retry_after: e.retry_after_s.map(|s| Duration::from_secs(u64::from(s))),
            },
            _ => Event::Failure,
        };
        note_failure(entry, matches!(event, Event::Failure), now);
        entry.breaker = entry.breaker.on(event, now, &self.breaker_cfg);
        let slot = current_slot(&mut entry.slots, now);
        slot.requests += 1;
        // A 429 with Retry-After is a cool-down the backend asked for, not a failure.
        slot.failures += u64::from(e.class.is_backend_failure() && !cool_down);
        if e.class.measures_latency() {
            let _ = slot
                .latency
                .record(u64::from(e.latency_us).clamp(1, LATENCY_US_MAX));
        }
        if e.class == OutcomeClass::Success {
            let _ = slot
                .ttfb
                .record(u64::from(e.ttfb_us).clamp(1, LATENCY_US_MAX));
        }
    }

    /// An active check's verdict. A failure counts toward opening the circuit like a live one;
    /// a success only decides a half-open circuit (a passing `/models` check must not reset a
    /// live failure streak). Checks are not traffic: no window counts, no SmartAI confidence.
    pub fn apply_probe(&mut self, model: usize, backend: usize, class: OutcomeClass, now: Instant) {
        let Some(entry) = self.entries.get_mut(model).and_then(|v| v.get_mut(backend)) else {
            return;
        };
        let half_open = matches!(entry.breaker.advance(now).circuit, Circuit::HalfOpen { .. });
        let event = if class.is_backend_failure() {
            Event::Failure
        } else if half_open {
            Event::Success
        } else {
            return;
        };
        note_failure(entry, matches!(event, Event::Failure), now);
        entry.breaker = entry.breaker.on(event, now, &self.breaker_cfg);
    }

    /// Renders the snapshot every shard will route by.
    pub fn snapshot(&mut self, now: Instant) -> Snapshot {
        self.seq += 1;
        let knobs = &self.config.settings.smart_ai;
        let mut models = Vec::with_capacity(self.entries.len());
        for (m, per_backend) in self.entries.iter_mut().enumerate() {
            let mut backends = Vec::with_capacity(per_backend.len());
            for (b, entry) in per_backend.iter_mut().enumerate() {
                entry.breaker = entry.breaker.advance(now);
                // Exactly one shard may probe an open (soon half-open) circuit. It is known before
                // the open period ends, so no shard sees a half-open circuit without a designated
                // prober, and it rotates every PROBE_ROTATE snapshots so a shard without traffic
                // for this model cannot hold the probe forever.
                let probe_shard = match entry.breaker.circuit {
                    Circuit::Open { .. } | Circuit::HalfOpen { .. } => {
                        let turn = (self.seq / PROBE_ROTATE) as usize + m * 31 + b;
                        Some(turn % self.shards.max(1))
                    }
                    Circuit::Closed { .. } => None,
                };
                let backend = &self.config.models[m].backends[b];
                // Percentiles cost a merge of ten histograms: once a second is plenty for views.
                let refresh_quantiles = self.seq % QUANTILES_EVERY == 1;
                if refresh_quantiles {
                    self.scratch.reset();
                }
                let (mut requests, mut failures) = (0, 0);
                for slot in entry
                    .slots
                    .iter()
                    .filter(|s| now.duration_since(s.start) < SLOT * SLOTS as u32)
                {
                    requests += slot.requests;
                    failures += slot.failures;
                    if refresh_quantiles {
                        let _ = self.scratch.add(&slot.latency);
                    }
                }
                let rate_limit = self.config.settings.circuit_breaker_error_rate;
                let min_requests = u64::from(self.config.settings.circuit_breaker_min_requests);
                if rate_limit > 0.0
                    && matches!(entry.breaker.circuit, Circuit::Closed { .. })
                    && requests >= min_requests
                    && failures as f64 >= rate_limit * requests as f64
                {
                    // Too many failures over the window, even if never `threshold` in a row.
                    entry.breaker.circuit = Circuit::Open {
                        until: now + self.breaker_cfg.open_for,
                    };
                    entry.breaker.ramp = None;
                    // The window that opened it must not open it again right after recovery.
                    for slot in &mut entry.slots {
                        slot.requests = 0;
                        slot.failures = 0;
                    }
                }
                if refresh_quantiles {
                    let q = |w: &Histogram<u64>, p: f64| {
                        (!w.is_empty()).then(|| w.value_at_quantile(p) as f64 / 1000.0)
                    };
                    let (p50, p99) = (q(&self.scratch, 0.5), q(&self.scratch, 0.99));
                    self.scratch.reset();
                    for slot in entry
                        .slots
                        .iter()
                        .filter(|s| now.duration_since(s.start) < SLOT * SLOTS as u32)
                    {
                        let _ = self.scratch.add(&slot.ttfb);
                    }
                    let (ttfb_p50, ttfb_p99) = (q(&self.scratch, 0.5), q(&self.scratch, 0.99));
                    entry.quantiles_ms = Quantiles {
                        p50,
                        p99,
                        ttfb_p50,
                        ttfb_p99,
                    };
                }
                let view = entry.stats.view(backend, true, now, knobs);
                backends.push(BackendSnap {
                    view,
                    breaker: entry.breaker,
                    probe_shard,
                    requests_window: requests,
                    failures_window: failures,
                    p50_ms: entry.quantiles_ms.p50,
                    p99_ms: entry.quantiles_ms.p99,
                    ttfb_p50_ms: entry.quantiles_ms.ttfb_p50,
                    ttfb_p99_ms: entry.quantiles_ms.ttfb_p99,
                    inflight_total: entry.inflight.iter().sum(),
                    consecutive_failures: entry.consecutive_failures,
                    last_failure_age: entry.last_failure.map(|t| now.duration_since(t)),
                });
            }
            models.push(backends);
        }
        Snapshot {
            seq: self.seq,
            taken: Some(now),
            models,
            dropped_events: self.dropped_events,
            dropped_reports: self.dropped_reports,
        }
    }
}

/// Window percentiles, ms: time to the response head, and to the first byte a client got.
#[derive(Clone, Copy, Default)]
struct Quantiles {
    p50: Option<f64>,
    p99: Option<f64>,
    ttfb_p50: Option<f64>,
    ttfb_p99: Option<f64>,
}

/// Keeps the admin views' failure streak in step with what the breaker saw.
fn note_failure(entry: &mut Entry, failed: bool, now: Instant) {
    if failed {
        entry.last_failure = Some(now);
        entry.consecutive_failures += 1;
    } else {
        entry.consecutive_failures = 0;
    }
}

fn new_slot(start: Instant) -> Slot {
    Slot {
        start,
        requests: 0,
        failures: 0,
        // 2 significant digits: 1 % precision on latencies is plenty for routing and views.
        latency: Histogram::new_with_bounds(1, LATENCY_US_MAX, 2)
            .expect("static histogram bounds are valid"),
        ttfb: Histogram::new_with_bounds(1, LATENCY_US_MAX, 2)
            .expect("static histogram bounds are valid"),
    }
}

/// The slot for `now`, recycling the oldest one when a new second starts.
fn current_slot(slots: &mut [Slot], now: Instant) -> &mut Slot {
    // Ten timestamps to scan per event: cheaper than keeping an index in step.
    let newest = slots
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| s.start)
        .map_or(0, |(i, _)| i);
    if now.saturating_duration_since(slots[newest].start) < SLOT {
        return &mut slots[newest];
    }
    let oldest = slots
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| s.start)
        .map_or(0, |(i, _)| i);
    let slot = &mut slots[oldest];
    slot.start = now;
    slot.requests = 0;
    slot.failures = 0;
    slot.latency.reset();
    slot.ttfb.reset();
    slot
}
