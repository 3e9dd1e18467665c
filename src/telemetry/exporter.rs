//! The control thread's side of metrics: the single writer of a `metrics-exporter-prometheus`
//! recorder. Shards never touch it; their reports (request, attempt, connect and failover
//! events, plus levels) are folded in here, and `GET /metrics` renders the recorder's handle.
//!
//! The recorder is not installed globally: each server owns its own, so tests can run many
//! servers in one process. Every series is registered once and its handle cached in a table
//! indexed by config position, so folding an event is an index and an atomic add, not a
//! key lookup (monoio-notes §5: a keyed `counter!` costs 60–340 ns, a cached handle ~5 ns).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics::{Counter, Gauge, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::histo::{Family, Series};
use super::{RequestEvent, Route, NONE};
use crate::balance::outcome::OutcomeClass;
use crate::config::Config;
use crate::health::breaker::Circuit;
use crate::health::report::ShardReport;
use crate::health::snapshot::Snapshot;

/// Request and TTFB bucket bounds, µs (rendered in seconds): LLM answers run from
/// milliseconds (cached, embeddings) to minutes (long generations): 5 ms … 30 min.
pub const LATENCY_BUCKETS_US: [u64; 18] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    20_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
];
/// Berry's own time per request, µs: 10 µs … 100 ms.
pub const OVERHEAD_BUCKETS_US: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000,
];
/// Upstream connect (TCP and TLS) time, µs: 100 µs … 2.5 s.
pub const CONNECT_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 2_500_000,
];

/// Berry's histogram families (see [`super::histo`]), shared by the control thread (the only
/// writer) and `/metrics` on the shards.
pub struct Histograms {
    pub duration: Family,
    pub ttfb: Family,
    pub overhead: Family,
    pub connect: Family,
    pub legacy_duration: Family,
    pub legacy_backend_latency: Family,
}

impl Histograms {
    fn new() -> Histograms {
        Histograms {
            duration: Family::new("berry_request_duration_seconds", "Request received to response complete, by model and backend", &LATENCY_BUCKETS_US),
            ttfb: Family::new("berry_time_to_first_byte_seconds", "Request received to the first response byte sent (a stream's first token), by model, backend and stream", &LATENCY_BUCKETS_US),
            overhead: Family::new("berry_overhead_seconds", "Time spent inside Berry per proxied request: duration minus upstream waits", &OVERHEAD_BUCKETS_US),
            connect: Family::new("berry_upstream_connect_seconds", "Upstream connect time (TCP and TLS), by backend", &CONNECT_BUCKETS_US),
            legacy_duration: Family::new("berry_api_http_request_duration_seconds", "Berry API compatible: request duration by method and endpoint", &LATENCY_BUCKETS_US),
            legacy_backend_latency: Family::new("berry_api_backend_latency_seconds", "Berry API compatible: upstream response-head latency by backend", &LATENCY_BUCKETS_US),
        }
    }

    fn all(&self) -> [&Family; 6] {
        [
            &self.duration,
            &self.ttfb,
            &self.overhead,
            &self.connect,
            &self.legacy_duration,
            &self.legacy_backend_latency,
        ]
    }
}

/// What `/metrics` renders: the exporter's counters and gauges, then Berry's histograms.
///
/// Rendering costs time in proportion to the number of series (tokens per user grow with the
/// users), so shards never do it: a shard takes a ticket and waits (asynchronously) until the
/// control thread has rendered a text at least as new as the ticket.
#[derive(Clone)]
pub struct MetricsView {
    handle: PrometheusHandle,
    histograms: Arc<Histograms>,
    slot: Arc<RenderSlot>,
}

#[derive(Default)]
struct RenderSlot {
    /// Tickets handed out so far.
    wanted: AtomicU64,
    /// The newest render and the last ticket it answers.
    done: Mutex<(u64, Arc<String>)>,
}

impl MetricsView {
    /// Asks for a render; the answer is ready when [`MetricsView::ready`] returns it.
    pub fn request(&self) -> u64 {
        self.slot.wanted.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The render answering `ticket`, once the control thread has made it.
    pub fn ready(&self, ticket: u64) -> Option<Arc<String>> {
        let done = self.slot.done.lock().unwrap_or_else(|e| e.into_inner());
        (done.0 >= ticket).then(|| done.1.clone())
    }

    /// Control thread: renders if a shard is waiting.
    pub fn serve_pending(&self) {
        let wanted = self.slot.wanted.load(Ordering::Acquire);
        let served = self.slot.done.lock().unwrap_or_else(|e| e.into_inner()).0;
        if wanted > served {
            let text = Arc::new(self.render());
            *self.slot.done.lock().unwrap_or_else(|e| e.into_inner()) = (wanted, text);
        }
    }

    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        for f in self.histograms.all() {
            f.render(&mut out);
        }
        out
    }
}

/// Outcome classes in label order.
const CLASSES: [OutcomeClass; 8] = [
    OutcomeClass::Success,
    OutcomeClass::Timeout,
    OutcomeClass::Connect,
    OutcomeClass::RateLimited,
    OutcomeClass::ServerError,
    OutcomeClass::AuthError,
    OutcomeClass::ModelError,
    OutcomeClass::ClientError,
];

pub fn class_label(c: OutcomeClass) -> &'static str {
    match c {
        OutcomeClass::Success => "success",
        OutcomeClass::Timeout => "timeout",
        OutcomeClass::Connect => "connect",
        OutcomeClass::RateLimited => "rate_limited",
        OutcomeClass::ServerError => "server_error",
        OutcomeClass::AuthError => "auth_error",
        OutcomeClass::ModelError => "model_error",
        OutcomeClass::ClientError => "client_error",
    }
}

fn class_index(c: OutcomeClass) -> usize {
    CLASSES.iter().position(|&x| x == c).unwrap_or(0)
}

/// `2xx` … `5xx`, and `other` (0, i.e. nothing was sent).
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// Every metric: name, kind, unit, help. `docs/observability.md` lists the same set.
const COUNTERS: &[(&str, Option<Unit>, &str)] = &[
    (
        "berry_requests_total",
        None,
        "Requests answered, by endpoint, model, backend and status class",
    ),
    (
        "berry_upstream_attempts_total",
        None,
        "Upstream attempts by model, backend and outcome",
    ),
    (
        "berry_failovers_total",
        None,
        "Requests moved to another backend, by the backend that failed and why",
    ),
    (
        "berry_upstream_retries_total",
        None,
        "Requests re-sent on a fresh connection to the same backend because a pooled one was stale",
    ),
    (
        "berry_tokens_total",
        None,
        "Tokens reported in upstream usage, by model, backend, user and kind",
    ),
    (
        "berry_upstream_connects_total",
        None,
        "Upstream connection attempts by backend and result",
    ),
    (
        "berry_connections_accepted_total",
        None,
        "Client connections accepted, by shard",
    ),
    (
        "berry_reports_dropped_total",
        None,
        "Shard reports that found the control channel full",
    ),
    (
        "berry_report_events_dropped_total",
        None,
        "Events lost because a shard's report buffer was full",
    ),
    (
        "berry_access_log_dropped_total",
        None,
        "Access-log lines dropped because the writer fell behind",
    ),
    (
        "berry_log_dropped_total",
        None,
        "Log records dropped because the writer fell behind",
    ),
    (
        "berry_api_http_requests_total",
        None,
        "Berry API compatible: HTTP requests by method, endpoint and status",
    ),
    (
        "berry_api_backend_request_count_total",
        None,
        "Berry API compatible: upstream attempts by backend",
    ),
    (
        "berry_api_backend_error_count_total",
        None,
        "Berry API compatible: failed upstream attempts by backend",
    ),
];

const GAUGES: &[(&str, Option<Unit>, &str)] = &[
    (
        "berry_inflight_requests",
        None,
        "Upstream attempts in flight, by model and backend (all shards)",
    ),
    (
        "berry_backend_healthy",
        None,
        "1 if the backend takes full traffic for the model (circuit closed, ramp done)",
    ),
    (
        "berry_circuit_state",
        None,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ),
    (
        "berry_smart_ai_confidence",
        None,
        "SmartAI confidence of the backend for the model",
    ),
    (
        "berry_backend_effective_weight",
        None,
        "The weight the selector ranks the backend by now",
    ),
    (
        "berry_pool_connections",
        None,
        "Upstream connections by backend and state (idle, busy), all shards",
    ),
    (
        "berry_connections_open",
        None,
        "Client connections open, by shard",
    ),
    (
        "berry_snapshot_age_seconds",
        Some(Unit::Seconds),
        "Age of the health snapshot each shard routes by, at its last report",
    ),
    (
        "berry_build_info",
        None,
        "Build and runtime facts: version and I/O driver",
    ),
    (
        "berry_api_http_requests_in_flight",
        None,
        "Berry API compatible: proxied requests in progress by method and endpoint",
    ),
    (
        "berry_api_backend_health_status",
        None,
        "Berry API compatible: 1 if the model (its `backend` label) has a healthy backend",
    ),
];

/// Builds a recorder with Berry's buckets and descriptions, not installed globally.
fn build_recorder() -> PrometheusRecorder {
    let r = PrometheusBuilder::new().build_recorder();
    for (name, unit, help) in COUNTERS {
        r.describe_counter(KeyName::from_const_str(name), *unit, (*help).into());
    }
    for (name, unit, help) in GAUGES {
        r.describe_gauge(KeyName::from_const_str(name), *unit, (*help).into());
    }
    r
}

/// Events folded between two yields of the control thread. A report carries thousands of
/// events; folded in one go they are a millisecond-long burst that takes a core away from a
/// shard in the middle of its requests (measured: p99 1.0× nginx instead of 0.85×). Yielding
/// every slice lets a waiting shard run first.
const FOLD_SLICE_EVENTS: usize = 256;

static META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// A lazily registered table of handles.
struct Table<T> {
    slots: Vec<Option<T>>,
}

impl<T: Clone> Table<T> {
    fn new(n: usize) -> Self {
        Table {
            slots: (0..n).map(|_| None).collect(),
        }
    }

    fn get(&mut self, i: usize, make: impl FnOnce() -> T) -> Option<&T> {
        let slot = self.slots.get_mut(i)?;
        Some(slot.get_or_insert_with(make))
    }
}

/// Per-(model, backend) label values, flattened: `pair(model, backend)` indexes them; the last
/// entry stands for "no model / no backend".
struct Pairs {
    base: Vec<usize>,
    labels: Vec<(String, String)>,
}

impl Pairs {
    fn new(config: &Config) -> Pairs {
        let mut base = Vec::with_capacity(config.models.len());
        let mut labels = Vec::new();
        for m in &config.models {
            base.push(labels.len());
            for b in &m.backends {
                let provider = &config.providers[b.provider].id;
                let shared = m
                    .backends
                    .iter()
                    .filter(|o| o.provider == b.provider)
                    .count()
                    > 1;
                // Two backends of one model on the same provider get distinct series.
                let backend = if shared {
                    format!("{provider}:{}", b.model)
                } else {
                    provider.clone()
                };
                labels.push((m.name.clone(), backend));
            }
        }
        labels.push((String::new(), String::new()));
        Pairs { base, labels }
    }

    fn none(&self) -> usize {
        self.labels.len() - 1
    }

    fn index(&self, model: u32, backend: u32) -> usize {
        if model == NONE {
            return self.none();
        }
        let Some(&base) = self.base.get(model as usize) else {
            return self.none();
        };
        if backend == NONE {
            // A model but no backend (refused, or no backend available): keep the model label.
            return self.none();
        }
        (base + backend as usize).min(self.none())
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn labels(&self, pair: usize) -> Vec<Label> {
        let (m, b) = &self.labels[pair];
        vec![
            Label::new("model", m.clone()),
            Label::new("backend", b.clone()),
        ]
    }
}

fn provider_label(config: &Config, p: usize) -> Vec<Label> {
    vec![Label::new("backend", config.providers[p].id.clone())]
}

fn with(mut labels: Vec<Label>, extra: Label) -> Vec<Label> {
    labels.push(extra);
    labels
}

fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

/// The metrics writer owned by the control thread.
pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    config: Arc<Config>,
    pairs: Pairs,
    requests: Table<Counter>,
    /// Requests that named a model but got no backend, by (route, model, status class).
    requests_model_only: HashMap<(Route, u32, usize), Counter>,
    histograms: Arc<Histograms>,
    slot: Arc<RenderSlot>,
    duration: Table<Arc<Series>>,
    ttfb: Table<Arc<Series>>,
    overhead: Arc<Series>,
    attempts: Table<Counter>,
    failovers: Table<Counter>,
    tokens: HashMap<(usize, u32, bool), Counter>,
    connects: Table<Counter>,
    connect_time: Table<Arc<Series>>,
    retries: Table<Counter>,
    legacy_requests: HashMap<(Route, bool, u16), Counter>,
    legacy_duration: Table<Arc<Series>>,
    legacy_backend_requests: Table<Counter>,
    legacy_backend_errors: Table<Counter>,
    legacy_backend_latency: Table<Arc<Series>>,
    /// Per shard: its latest gauges and in-flight counts (summed across shards on export).
    shard_gauges: Vec<crate::health::report::ShardGauges>,
    shard_inflight: Vec<Vec<Vec<u32>>>,
    last_upkeep: Instant,
}

impl Exporter {
    pub fn new(config: Arc<Config>, shards: usize) -> Exporter {
        let recorder = build_recorder();
        let handle = recorder.handle();
        let pairs = Pairs::new(&config);
        let providers = config.providers.len();
        let routes = Route::ALL.len();
        let histograms = Arc::new(Histograms::new());
        let overhead = histograms.overhead.series(&[]);
        Exporter {
            requests: Table::new(routes * pairs.len() * STATUS_CLASSES.len()),
            requests_model_only: HashMap::new(),
            duration: Table::new(pairs.len()),
            ttfb: Table::new(pairs.len() * 2),
            overhead,
            histograms,
            slot: Arc::default(),
            attempts: Table::new(pairs.len() * CLASSES.len()),
            failovers: Table::new(pairs.len() * CLASSES.len()),
            tokens: HashMap::new(),
            connects: Table::new(providers * 2),
            connect_time: Table::new(providers),
            retries: Table::new(providers),
            legacy_requests: HashMap::new(),
            legacy_duration: Table::new(routes * 2),
            legacy_backend_requests: Table::new(providers),
            legacy_backend_errors: Table::new(providers),
            legacy_backend_latency: Table::new(providers),
            shard_gauges: vec![Default::default(); shards],
            shard_inflight: vec![Vec::new(); shards],
            last_upkeep: Instant::now(),
            pairs,
            recorder,
            handle,
            config,
        }
    }

    /// What `/metrics` renders; cheap to clone and `Send`.
    pub fn view(&self) -> MetricsView {
        MetricsView {
            handle: self.handle.clone(),
            histograms: self.histograms.clone(),
            slot: self.slot.clone(),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    /// Sets the facts known once the shards run.
    pub fn set_build_info(&self, driver: &str) {
        self.gauge(
            "berry_build_info",
            vec![
                Label::new("version", env!("CARGO_PKG_VERSION")),
                Label::new("driver", driver.to_string()),
            ],
        )
        .set(1.0);
    }

    /// Folds one shard report in.
    pub fn apply(&mut self, r: &ShardReport, now: Instant) {
        for (i, e) in r.requests.iter().enumerate() {
            self.request(e);
            if i % FOLD_SLICE_EVENTS == FOLD_SLICE_EVENTS - 1 {
                std::thread::yield_now();
            }
        }
        for e in &r.events {
            let pair = self.pairs.index(e.model, e.backend);
            let (reg, pairs) = (&self.recorder, &self.pairs);
            let i = pair * CLASSES.len() + class_index(e.class);
            if let Some(c) = self.attempts.get(i, || {
                let l = with(
                    pairs.labels(pair),
                    Label::new("outcome", class_label(e.class)),
                );
                reg.register_counter(&key("berry_upstream_attempts_total", l), &META)
            }) {
                c.increment(1);
            }
            let Some(p) = self.provider_of(e.model, e.backend) else {
                continue;
            };
            let config = &self.config;
            if let Some(c) = self.legacy_backend_requests.get(p, || {
                let l = provider_label(config, p);
                reg.register_counter(&key("berry_api_backend_request_count_total", l), &META)
            }) {
                c.increment(1);
            }
            if e.class.is_backend_failure() {
                if let Some(c) = self.legacy_backend_errors.get(p, || {
                    let l = provider_label(config, p);
                    reg.register_counter(&key("berry_api_backend_error_count_total", l), &META)
                }) {
                    c.increment(1);
                }
            }
            let fam = &self.histograms.legacy_backend_latency;
            if let Some(h) = self
                .legacy_backend_latency
                .get(p, || fam.series(&[("backend", &config.providers[p].id)]))
            {
                h.record(fam.bounds_us, e.latency_us.into());
            }
        }
        for f in &r.failovers {
            let pair = self.pairs.index(f.model, f.backend);
            let (reg, pairs) = (&self.recorder, &self.pairs);
            let i = pair * CLASSES.len() + class_index(f.class);
            if let Some(c) = self.failovers.get(i, || {
                let l = with(
                    pairs.labels(pair),
                    Label::new("reason", class_label(f.class)),
                );
                reg.register_counter(&key("berry_failovers_total", l), &META)
            }) {
                c.increment(1);
            }
        }
        for c in &r.connects {
            let p = c.provider as usize;
            if p >= self.config.providers.len() {
                continue;
            }
            let (reg, config) = (&self.recorder, &self.config);
            if c.ok {
                let fam = &self.histograms.connect;
                if let Some(h) = self
                    .connect_time
                    .get(p, || fam.series(&[("backend", &config.providers[p].id)]))
                {
                    h.record(fam.bounds_us, c.micros.into());
                }
            }
            if let Some(counter) = self.connects.get(p * 2 + usize::from(c.ok), || {
                let result = Label::new("result", if c.ok { "ok" } else { "error" });
                let l = with(provider_label(config, p), result);
                reg.register_counter(&key("berry_upstream_connects_total", l), &META)
            }) {
                counter.increment(1);
            }
        }
        for (p, &n) in r.deltas.stale_retries.iter().enumerate() {
            if n == 0 || p >= self.config.providers.len() {
                continue;
            }
            let (reg, config) = (&self.recorder, &self.config);
            if let Some(c) = self.retries.get(p, || {
                let l = with(
                    provider_label(config, p),
                    Label::new("reason", "stale_connection"),
                );
                reg.register_counter(&key("berry_upstream_retries_total", l), &META)
            }) {
                c.increment(n);
            }
        }
        let shard = Label::new("shard", r.shard.to_string());
        if r.deltas.accepted > 0 {
            self.counter("berry_connections_accepted_total", vec![shard.clone()])
                .increment(r.deltas.accepted);
        }
        self.gauge("berry_connections_open", vec![shard.clone()])
            .set(f64::from(r.gauges.conns_open));
        if let Some(taken) = r.gauges.snapshot_taken {
            self.gauge("berry_snapshot_age_seconds", vec![shard])
                .set(now.saturating_duration_since(taken).as_secs_f64());
        }
        if let Some(slot) = self.shard_gauges.get_mut(r.shard) {
            *slot = r.gauges.clone();
        }
        if let Some(slot) = self.shard_inflight.get_mut(r.shard) {
            slot.clone_from(&r.inflight);
        }
    }

    fn provider_of(&self, model: u32, backend: u32) -> Option<usize> {
        let m = self.config.models.get(model as usize)?;
        Some(m.backends.get(backend as usize)?.provider)
    }

    fn request(&mut self, e: &RequestEvent) {
        let pair = self.pairs.index(e.model, e.backend);
        let class = status_class(e.status);
        let route = e.route as usize;
        let reg = &self.recorder;
        if pair == self.pairs.none() && e.model != NONE {
            // Named a model that exists but never reached a backend: keep the model label.
            let config = &self.config;
            self.requests_model_only
                .entry((e.route, e.model, class))
                .or_insert_with(|| {
                    let model = config
                        .models
                        .get(e.model as usize)
                        .map_or(String::new(), |m| m.name.clone());
                    reg.register_counter(
                        &Key::from_parts(
                            "berry_requests_total",
                            vec![
                                Label::new("endpoint", e.route.label()),
                                Label::new("model", model),
                                Label::new("backend", ""),
                                Label::new("status_class", STATUS_CLASSES[class]),
                            ],
                        ),
                        &META,
                    )
                })
                .increment(1);
        } else {
            let (m, b) = &self.pairs.labels[pair];
            let i = (route * self.pairs.len() + pair) * STATUS_CLASSES.len() + class;
            if let Some(c) = self.requests.get(i, || {
                reg.register_counter(
                    &Key::from_parts(
                        "berry_requests_total",
                        vec![
                            Label::new("endpoint", e.route.label()),
                            Label::new("model", m.clone()),
                            Label::new("backend", b.clone()),
                            Label::new("status_class", STATUS_CLASSES[class]),
                        ],
                    ),
                    &META,
                )
            }) {
                c.increment(1);
            }
        }
        self.legacy_requests
            .entry((e.route, e.get, e.status))
            .or_insert_with(|| {
                reg.register_counter(
                    &Key::from_parts(
                        "berry_api_http_requests_total",
                        vec![
                            Label::new("method", if e.get { "GET" } else { "POST" }),
                            Label::new("endpoint", e.route.legacy_path()),
                            Label::new("status", e.status.to_string()),
                        ],
                    ),
                    &META,
                )
            })
            .increment(1);
        let h = &self.histograms;
        let method = if e.get { "GET" } else { "POST" };
        if let Some(s) = self
            .legacy_duration
            .get(route * 2 + usize::from(e.get), || {
                let endpoint = e.route.legacy_path();
                h.legacy_duration
                    .series(&[("method", method), ("endpoint", endpoint)])
            })
        {
            s.record(h.legacy_duration.bounds_us, e.duration_us.into());
        }
        if !e.route.is_proxied() {
            return;
        }
        self.overhead
            .record(h.overhead.bounds_us, e.overhead_us().into());
        if pair == self.pairs.none() {
            return;
        }
        let (model, backend) = &self.pairs.labels[pair];
        if let Some(s) = self.duration.get(pair, || {
            h.duration.series(&[("model", model), ("backend", backend)])
        }) {
            s.record(h.duration.bounds_us, e.duration_us.into());
        }
        if let Some(s) = self.ttfb.get(pair * 2 + usize::from(e.stream), || {
            let stream = if e.stream { "true" } else { "false" };
            h.ttfb
                .series(&[("model", model), ("backend", backend), ("stream", stream)])
        }) {
            s.record(h.ttfb.bounds_us, e.ttfb_us.into());
        }
        if let Some(u) = e.usage {
            let (config, pairs) = (&self.config, &self.pairs);
            for (completion, n) in [(false, u.prompt), (true, u.completion)] {
                if n == 0 {
                    continue;
                }
                self.tokens
                    .entry((pair, e.user, completion))
                    .or_insert_with(|| {
                        let user = config
                            .users
                            .get(e.user as usize)
                            .map_or(String::new(), |u| u.id.clone());
                        let mut l = pairs.labels(pair);
                        l.push(Label::new("user", user));
                        l.push(Label::new(
                            "kind",
                            if completion { "completion" } else { "prompt" },
                        ));
                        reg.register_counter(&key("berry_tokens_total", l), &META)
                    })
                    .increment(u64::from(n));
            }
        }
    }

    /// Levels derived from a fresh snapshot and the shards' latest reports; also drains the
    /// recorder's histogram buffers about once a second so they never grow between scrapes.
    pub fn apply_snapshot(
        &mut self,
        snap: &Snapshot,
        now: Instant,
        log_dropped: u64,
        access_dropped: u64,
    ) {
        let config = self.config.clone();
        for (mi, m) in config.models.iter().enumerate() {
            let mut any_healthy = false;
            for (bi, b) in m.backends.iter().enumerate() {
                let Some(s) = snap.backend(mi, bi) else {
                    continue;
                };
                let pair = self.pairs.index(mi as u32, bi as u32);
                let labels = self.pairs.labels(pair);
                let enabled = m.enabled && b.enabled && config.providers[b.provider].enabled;
                let healthy = enabled && s.healthy(now);
                any_healthy |= healthy;
                self.gauge("berry_backend_healthy", labels.clone())
                    .set(if healthy { 1.0 } else { 0.0 });
                let state = match s.breaker.advance(now).circuit {
                    Circuit::Closed { .. } => 0.0,
                    Circuit::HalfOpen { .. } => 1.0,
                    Circuit::Open { .. } => 2.0,
                };
                self.gauge("berry_circuit_state", labels.clone()).set(state);
                self.gauge("berry_smart_ai_confidence", labels.clone())
                    .set(s.view.confidence);
                let available = s.breaker.admission(now) != crate::health::breaker::Admission::Deny;
                let w = crate::api::admin::effective_weight(&config, m, s, available);
                self.gauge("berry_backend_effective_weight", labels.clone())
                    .set(w);
                let inflight: u32 = self
                    .shard_inflight
                    .iter()
                    .filter_map(|s| s.get(mi).and_then(|b| b.get(bi)))
                    .sum();
                self.gauge("berry_inflight_requests", labels)
                    .set(f64::from(inflight));
            }
            self.gauge(
                "berry_api_backend_health_status",
                vec![Label::new("backend", m.key.clone())],
            )
            .set(if any_healthy { 1.0 } else { 0.0 });
        }
        for (p, provider) in config.providers.iter().enumerate() {
            let sum = |f: &dyn Fn(&crate::health::report::ShardGauges) -> Option<u32>| -> u32 {
                self.shard_gauges.iter().filter_map(f).sum()
            };
            let idle = sum(&|g| g.pool_idle.get(p).copied());
            let open = sum(&|g| g.pool_open.get(p).copied());
            for (state, n) in [("idle", idle), ("busy", open.saturating_sub(idle))] {
                self.gauge(
                    "berry_pool_connections",
                    vec![
                        Label::new("backend", provider.id.clone()),
                        Label::new("state", state),
                    ],
                )
                .set(f64::from(n));
            }
        }
        for (i, route) in [
            Route::ChatCompletions,
            Route::Completions,
            Route::Embeddings,
        ]
        .into_iter()
        .enumerate()
        {
            let n: u32 = self
                .shard_gauges
                .iter()
                .map(|g| g.inflight_by_route[i])
                .sum();
            self.gauge(
                "berry_api_http_requests_in_flight",
                vec![
                    Label::new("method", "POST"),
                    Label::new("endpoint", route.legacy_path()),
                ],
            )
            .set(f64::from(n));
        }
        self.counter("berry_reports_dropped_total", vec![])
            .absolute(snap.dropped_reports);
        self.counter("berry_report_events_dropped_total", vec![])
            .absolute(snap.dropped_events);
        self.counter("berry_log_dropped_total", vec![])
            .absolute(log_dropped);
        self.counter("berry_access_log_dropped_total", vec![])
            .absolute(access_dropped);
        if now.duration_since(self.last_upkeep) >= std::time::Duration::from_secs(1) {
            // Only the exporter's own bookkeeping: Berry's histograms need none.
            self.last_upkeep = now;
            self.handle.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_render_answers_only_tickets_taken_before_it() {
        let config = crate::config::load_str(
            "[providers.p]\nname = \"P\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"sk-p-0123456789\"\n\
             models = [\"m\"]\n[models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"p\"\nmodel = \"m\"\n",
            "t.toml",
        )
        .unwrap();
        let x = Exporter::new(Arc::new(config), 1);
        x.set_build_info("io_uring");
        let shard_view = x.view();
        let control_view = x.view();
        let first = shard_view.request();
        assert!(shard_view.ready(first).is_none(), "nothing rendered yet");
        control_view.serve_pending();
        let text = shard_view.ready(first).expect("rendered");
        assert!(text.contains("berry_build_info{version=\""), "{text}");
        let second = shard_view.request();
        assert!(
            shard_view.ready(second).is_none(),
            "an older render does not answer it"
        );
        control_view.serve_pending();
        assert!(shard_view.ready(second).is_some());
        // Nothing pending: no new render.
        control_view.serve_pending();
        assert!(shard_view.ready(second).is_some());
    }
}
