//! The control thread's side of metrics: the single writer of a `metrics-exporter-prometheus`
//! recorder and of Berry's histograms. Shards never touch either; their reports (request,
//! attempt, connect and failover events, plus levels) are folded in here, and `GET /metrics`
//! serves what [`MetricsView`] renders.
//!
//! The recorder is not installed globally: each server owns its own, so tests can run many
//! servers in one process. Every series is registered once and its handle cached in a table
//! indexed by config position, so folding an event is an index and an atomic add, not a
//! key lookup (monoio-notes §5: a keyed `counter!` costs 60–340 ns, a cached handle ~5 ns).

use std::sync::Arc;
use std::time::Instant;

use metrics::{Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};

use super::catalog::{
    build_recorder, class_index, class_label, status_class, CLASSES, STATUS_CLASSES,
};
use super::handles::{Batched, FastMap, Table};
use super::histo::Series;
use super::levels::{Drops, Levels};
use super::view::{Histograms, MetricsView};
use super::{RequestEvent, Route, NONE};
use crate::config::Config;
use crate::health::report::ShardReport;
use crate::health::snapshot::Snapshot;

/// Events folded between two yields of the control thread. A report carries thousands of
/// events; folded in one go they are a millisecond-long burst that takes a core away from a
/// shard in the middle of its requests (measured: p99 1.0× nginx instead of 0.85×). Yielding
/// every slice lets a waiting shard run first. Each yield is a context switch when a shard is
/// waiting, so the slice is as long as p99 allows: 512 events, tens of microseconds of folding
/// now that counter increments are batched per report.
const FOLD_SLICE_EVENTS: usize = 512;

pub(super) static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, None);

/// Per-(model, backend) label values, flattened: `pair(model, backend)` indexes them; the last
/// entry stands for "no model / no backend".
pub(super) struct Pairs {
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

    /// The pair's index, or [`Pairs::none`] without a model or a backend (callers that want
    /// the model label of a request that got no backend keep it themselves).
    pub(super) fn index(&self, model: u32, backend: u32) -> usize {
        match self.base.get(model as usize) {
            Some(&base) if backend != NONE => (base + backend as usize).min(self.none()),
            _ => self.none(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.labels.len()
    }

    pub(super) fn labels(&self, pair: usize) -> Vec<Label> {
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

pub(super) fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

/// The metrics writer owned by the control thread.
pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    config: Arc<Config>,
    pairs: Pairs,
    requests: Table<Batched>,
    /// Requests that named a model but got no backend, by (route, model, status class).
    requests_model_only: FastMap<(Route, u32, usize), Batched>,
    histograms: Arc<Histograms>,
    view: MetricsView,
    duration: Table<Arc<Series>>,
    ttfb: Table<Arc<Series>>,
    overhead: Arc<Series>,
    attempts: Table<Batched>,
    failovers: Table<Batched>,
    tokens: FastMap<(usize, u32, bool), Batched>,
    /// Requests refused by a user's `rate_limit`, per user.
    rate_limited: Table<Batched>,
    connects: Table<Batched>,
    connect_time: Table<Arc<Series>>,
    retries: Table<Batched>,
    legacy_requests: FastMap<(Route, bool, u16), Batched>,
    legacy_duration: Table<Arc<Series>>,
    legacy_backend_requests: Table<Batched>,
    legacy_backend_errors: Table<Batched>,
    legacy_backend_latency: Table<Arc<Series>>,
    levels: Levels,
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
        let view = MetricsView::new(handle.clone(), histograms.clone());
        Exporter {
            requests: Table::new(routes * pairs.len() * STATUS_CLASSES.len()),
            requests_model_only: FastMap::default(),
            duration: Table::new(pairs.len()),
            ttfb: Table::new(pairs.len() * 2),
            overhead,
            histograms,
            view,
            attempts: Table::new(pairs.len() * CLASSES.len()),
            failovers: Table::new(pairs.len() * CLASSES.len()),
            tokens: FastMap::default(),
            rate_limited: Table::new(config.users.len()),
            connects: Table::new(providers * 2),
            connect_time: Table::new(providers),
            retries: Table::new(providers),
            legacy_requests: FastMap::default(),
            legacy_duration: Table::new(routes * 2),
            legacy_backend_requests: Table::new(providers),
            legacy_backend_errors: Table::new(providers),
            legacy_backend_latency: Table::new(providers),
            levels: Levels::new(&config, &pairs, shards),
            last_upkeep: Instant::now(),
            pairs,
            recorder,
            handle,
            config,
        }
    }

    /// What `/metrics` renders; cheap to clone and `Send`.
    pub fn view(&self) -> MetricsView {
        self.view.clone()
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
                c.add(1);
            }
            let Some(p) = self.provider_of(e.model, e.backend) else {
                continue;
            };
            let config = &self.config;
            if let Some(c) = self.legacy_backend_requests.get(p, || {
                let l = provider_label(config, p);
                reg.register_counter(&key("berry_api_backend_request_count_total", l), &META)
            }) {
                c.add(1);
            }
            if e.class.is_backend_failure() {
                if let Some(c) = self.legacy_backend_errors.get(p, || {
                    let l = provider_label(config, p);
                    reg.register_counter(&key("berry_api_backend_error_count_total", l), &META)
                }) {
                    c.add(1);
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
                c.add(1);
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
                counter.add(1);
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
                c.add(n);
            }
        }
        self.levels.shard_report(&self.recorder, r, now);
        self.flush();
    }

    /// Hands the report's folded increments to the recorder's counters.
    fn flush(&mut self) {
        for t in [
            &mut self.requests,
            &mut self.attempts,
            &mut self.failovers,
            &mut self.connects,
            &mut self.retries,
            &mut self.legacy_backend_requests,
            &mut self.legacy_backend_errors,
            &mut self.rate_limited,
        ] {
            t.flush();
        }
        let maps = self.requests_model_only.values_mut();
        let maps = maps.chain(self.legacy_requests.values_mut());
        maps.chain(self.tokens.values_mut())
            .for_each(Batched::flush);
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
                    Batched::from({
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
                })
                .add(1);
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
                c.add(1);
            }
        }
        self.legacy_requests
            .entry((e.route, e.get, e.status))
            .or_insert_with(|| {
                Batched::from({
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
            })
            .add(1);
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
        if e.error == Some(crate::error::ErrorKind::RateLimited) {
            let config = &self.config;
            if let Some(c) = self.rate_limited.get(e.user as usize, || {
                let l = vec![Label::new("user", config.users[e.user as usize].id.clone())];
                reg.register_counter(&key("berry_rate_limited_total", l), &META)
            }) {
                c.add(1);
            }
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
        // A client that left before any byte had no first byte to time.
        let ttfb = if e.client_left {
            None
        } else {
            self.ttfb.get(pair * 2 + usize::from(e.stream), || {
                let stream = if e.stream { "true" } else { "false" };
                h.ttfb
                    .series(&[("model", model), ("backend", backend), ("stream", stream)])
            })
        };
        if let Some(s) = ttfb {
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
                        Batched::from({
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
                    })
                    .add(u64::from(n));
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
        let drops = Drops {
            reports: snap.dropped_reports,
            report_events: snap.dropped_events,
            log: log_dropped,
            access_log: access_dropped,
        };
        let (reg, config, pairs) = (&self.recorder, &self.config, &self.pairs);
        self.levels.snapshot(reg, config, pairs, snap, now, drops);
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
