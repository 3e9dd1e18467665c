//! Levels the control thread sets from each shard report and each snapshot: connection and pool
//! gauges, backend health, in-flight counts, and the pipeline's own drop counters. Every handle
//! is registered on first use and kept, so a snapshot is a few hundred stores, not as many
//! registry lookups with their label allocations.

use std::time::Instant;

use metrics::{Counter, Gauge, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::exporter::{key, Pairs, META};
use super::handles::Table;
use super::Route;
use crate::config::Config;
use crate::health::breaker::{Admission, Circuit};
use crate::health::report::{ShardGauges, ShardReport};
use crate::health::snapshot::Snapshot;

/// Gauges per (model, backend) pair, in this order.
const PAIR_GAUGES: [&str; 5] = [
    "berry_backend_healthy",
    "berry_circuit_state",
    "berry_smart_ai_confidence",
    "berry_backend_effective_weight",
    "berry_inflight_requests",
];

/// The pipeline's own losses, set from absolute totals.
const DROP_COUNTERS: [&str; 4] = [
    "berry_reports_dropped_total",
    "berry_report_events_dropped_total",
    "berry_log_dropped_total",
    "berry_access_log_dropped_total",
];

/// The proxied routes whose in-flight count is exported, in the shards' order.
const INFLIGHT_ROUTES: [Route; 3] = [
    Route::ChatCompletions,
    Route::Completions,
    Route::Embeddings,
];

/// What the drop counters stand at, from wherever each is kept.
pub struct Drops {
    pub reports: u64,
    pub report_events: u64,
    pub log: u64,
    pub access_log: u64,
}

pub(super) struct Levels {
    pair: Table<[Gauge; 5]>,
    /// `berry_api_backend_health_status`, per model.
    model_up: Table<Gauge>,
    /// `berry_pool_connections`, per provider: idle, busy.
    pool: Table<[Gauge; 2]>,
    route_inflight: Table<Gauge>,
    conns_open: Table<Gauge>,
    snapshot_age: Table<Gauge>,
    accepted: Table<Counter>,
    drops: Table<Counter>,
    /// Per shard: its latest gauges and in-flight counts (summed across shards on export).
    shard_gauges: Vec<ShardGauges>,
    shard_inflight: Vec<Vec<Vec<u32>>>,
}

fn gauge(reg: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> Gauge {
    reg.register_gauge(&key(name, labels), &META)
}

impl Levels {
    pub(super) fn new(config: &Config, pairs: &Pairs, shards: usize) -> Levels {
        Levels {
            pair: Table::new(pairs.len()),
            model_up: Table::new(config.models.len()),
            pool: Table::new(config.providers.len()),
            route_inflight: Table::new(INFLIGHT_ROUTES.len()),
            conns_open: Table::new(shards),
            snapshot_age: Table::new(shards),
            accepted: Table::new(shards),
            drops: Table::new(DROP_COUNTERS.len()),
            shard_gauges: vec![ShardGauges::default(); shards],
            shard_inflight: vec![Vec::new(); shards],
        }
    }

    /// Takes in a shard's report: its connection counters and the levels kept for snapshots.
    pub(super) fn shard_report(&mut self, reg: &PrometheusRecorder, r: &ShardReport, now: Instant) {
        let i = r.shard;
        let shard = || vec![Label::new("shard", i.to_string())];
        if r.deltas.accepted > 0 {
            if let Some(c) = self.accepted.get(i, || {
                reg.register_counter(&key("berry_connections_accepted_total", shard()), &META)
            }) {
                c.increment(r.deltas.accepted);
            }
        }
        if let Some(g) = (self.conns_open).get(i, || gauge(reg, "berry_connections_open", shard()))
        {
            g.set(f64::from(r.gauges.conns_open));
        }
        if let Some(taken) = r.gauges.snapshot_taken {
            let age = now.saturating_duration_since(taken).as_secs_f64();
            if let Some(g) =
                (self.snapshot_age).get(i, || gauge(reg, "berry_snapshot_age_seconds", shard()))
            {
                g.set(age);
            }
        }
        if let Some(slot) = self.shard_gauges.get_mut(i) {
            *slot = r.gauges.clone();
        }
        if let Some(slot) = self.shard_inflight.get_mut(i) {
            slot.clone_from(&r.inflight);
        }
    }

    /// Sets every level derived from a fresh snapshot and the shards' latest reports.
    pub(super) fn snapshot(
        &mut self,
        reg: &PrometheusRecorder,
        config: &Config,
        pairs: &Pairs,
        snap: &Snapshot,
        now: Instant,
        drops: Drops,
    ) {
        for (mi, m) in config.models.iter().enumerate() {
            let mut any_healthy = false;
            for (bi, b) in m.backends.iter().enumerate() {
                let Some(s) = snap.backend(mi, bi) else {
                    continue;
                };
                let enabled = m.enabled && b.enabled && config.providers[b.provider].enabled;
                let healthy = enabled && s.healthy(now);
                any_healthy |= healthy;
                let circuit = match s.breaker.advance(now).circuit {
                    Circuit::Closed { .. } => 0.0,
                    Circuit::HalfOpen { .. } => 1.0,
                    Circuit::Open { .. } => 2.0,
                };
                let available = s.breaker.admission(now) != Admission::Deny;
                let weight = crate::api::admin::effective_weight(config, m, s, available);
                let inflight: u32 = (self.shard_inflight.iter())
                    .filter_map(|s| s.get(mi).and_then(|b| b.get(bi)))
                    .sum();
                let values = [
                    if healthy { 1.0 } else { 0.0 },
                    circuit,
                    s.view.confidence,
                    weight,
                    f64::from(inflight),
                ];
                let pair = pairs.index(mi as u32, bi as u32);
                if let Some(gauges) = self.pair.get(pair, || {
                    PAIR_GAUGES.map(|name| gauge(reg, name, pairs.labels(pair)))
                }) {
                    gauges.iter().zip(values).for_each(|(g, v)| g.set(v));
                }
            }
            if let Some(g) = self.model_up.get(mi, || {
                let l = vec![Label::new("backend", m.key.clone())];
                gauge(reg, "berry_api_backend_health_status", l)
            }) {
                g.set(if any_healthy { 1.0 } else { 0.0 });
            }
        }
        for (p, provider) in config.providers.iter().enumerate() {
            let sum = |f: &dyn Fn(&ShardGauges) -> Option<u32>| -> u32 {
                self.shard_gauges.iter().filter_map(f).sum()
            };
            let idle = sum(&|g| g.pool_idle.get(p).copied());
            let open = sum(&|g| g.pool_open.get(p).copied());
            if let Some(gauges) = self.pool.get(p, || {
                ["idle", "busy"].map(|state| {
                    let l = vec![
                        Label::new("backend", provider.id.clone()),
                        Label::new("state", state),
                    ];
                    gauge(reg, "berry_pool_connections", l)
                })
            }) {
                gauges[0].set(f64::from(idle));
                gauges[1].set(f64::from(open.saturating_sub(idle)));
            }
        }
        for (i, route) in INFLIGHT_ROUTES.into_iter().enumerate() {
            let n: u32 = self
                .shard_gauges
                .iter()
                .map(|g| g.inflight_by_route[i])
                .sum();
            if let Some(g) = self.route_inflight.get(i, || {
                let l = vec![
                    Label::new("method", "POST"),
                    Label::new("endpoint", route.legacy_path()),
                ];
                gauge(reg, "berry_api_http_requests_in_flight", l)
            }) {
                g.set(f64::from(n));
            }
        }
        let totals = [
            drops.reports,
            drops.report_events,
            drops.log,
            drops.access_log,
        ];
        for (i, (name, total)) in DROP_COUNTERS.into_iter().zip(totals).enumerate() {
            if let Some(c) = (self.drops).get(i, || reg.register_counter(&key(name, vec![]), &META))
            {
                c.absolute(total);
            }
        }
    }
}
