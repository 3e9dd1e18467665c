//! Berry's `/health` and `/v1/health` views, in the predecessor's field names.
//!
//! No base URLs, keys or tokens appear here. A backend is healthy when it and its provider are
//! enabled and the latest health snapshot has its circuit closed (see `BackendSnap::healthy`);
//! a provider is healthy when it is enabled and one of its backends is (or it serves none).
//! The 503 rule is Berry's: unhealthy when half or fewer of the enabled models have a healthy
//! backend.

use serde_json::{json, Map, Value};

use std::time::Instant;

use crate::config::Config;
use crate::health::snapshot::Snapshot;
use crate::logging::rfc3339;
use crate::routes::Routes;

/// Enabled, and its circuit closed in the latest snapshot (before the first snapshot: enabled
/// is enough).
fn backend_healthy(config: &Config, snap: &Snapshot, model: usize, i: usize) -> bool {
    let b = &config.models[model].backends[i];
    let enabled = b.enabled && config.providers[b.provider].enabled;
    enabled
        && snap
            .backend(model, i)
            .is_none_or(|s| s.healthy(Instant::now()))
}

/// The backends (model index, backend index) of enabled models that provider `pi` serves.
fn backends_of(config: &Config, pi: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    config.models.iter().enumerate().flat_map(move |(mi, m)| {
        (m.backends.iter().enumerate())
            .filter(move |(_, b)| m.enabled && b.provider == pi)
            .map(move |(bi, _)| (mi, bi))
    })
}

/// Enabled, and one of its backends healthy (a provider no enabled model uses has nothing to
/// judge it by: enabled is enough).
fn provider_healthy(config: &Config, snap: &Snapshot, pi: usize) -> bool {
    let mut backends = backends_of(config, pi).peekable();
    config.providers[pi].enabled
        && (backends.peek().is_none()
            || backends.any(|(mi, bi)| backend_healthy(config, snap, mi, bi)))
}

fn model_healthy(config: &Config, snap: &Snapshot, model: usize) -> bool {
    let m = &config.models[model];
    m.enabled && (0..m.backends.len()).any(|i| backend_healthy(config, snap, model, i))
}

struct Summary {
    models_enabled: usize,
    models_healthy: usize,
    backends_total: usize,
    backends_healthy: usize,
}

fn summarize(config: &Config, snap: &Snapshot) -> Summary {
    let mut s = Summary {
        models_enabled: 0,
        models_healthy: 0,
        backends_total: 0,
        backends_healthy: 0,
    };
    for (mi, m) in config.models.iter().enumerate() {
        s.backends_total += m.backends.len();
        s.backends_healthy += (0..m.backends.len())
            .filter(|&i| m.enabled && backend_healthy(config, snap, mi, i))
            .count();
        if m.enabled {
            s.models_enabled += 1;
            s.models_healthy += usize::from(model_healthy(config, snap, mi));
        }
    }
    s
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Berry's rule: unhealthy when the healthy share of enabled models is 0.5 or less.
fn status(s: &Summary) -> (u16, &'static str) {
    if ratio(s.models_healthy, s.models_enabled) > 0.5 {
        (200, "healthy")
    } else {
        (503, "unhealthy")
    }
}

fn now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `/v1/health`: the short form.
pub fn short(routes: &Routes, snap: &Snapshot) -> (u16, Vec<u8>) {
    let config = &routes.config;
    let s = summarize(config, snap);
    let (code, word) = status(&s);
    let providers_enabled = config.providers.iter().filter(|p| p.enabled).count();
    let providers_healthy = (0..config.providers.len())
        .filter(|&pi| provider_healthy(config, snap, pi))
        .count();
    let body = json!({
        "status": word,
        "service_running": true,
        "models_available": s.models_healthy,
        "summary": {
            "providers": { "total": config.providers.len(), "enabled": providers_enabled, "healthy": providers_healthy },
            "models": { "total": config.models.len(), "enabled": s.models_enabled, "healthy": s.models_healthy },
            "backends": { "total": s.backends_total, "healthy": s.backends_healthy,
                          "health_ratio": ratio(s.backends_healthy, s.backends_total) },
        },
        "timestamp": now(),
        "uptime_seconds": routes.started.elapsed().as_secs(),
    });
    (code, serde_json::to_vec(&body).unwrap_or_default())
}

/// `/health`: per provider and per model detail.
pub fn detailed(routes: &Routes, snap: &Snapshot) -> (u16, Vec<u8>) {
    let config = &routes.config;
    let s = summarize(config, snap);
    let (code, word) = status(&s);
    let mut providers = Map::new();
    let mut providers_healthy = 0;
    let mut unhealthy = Vec::new();
    for (pi, p) in config.providers.iter().enumerate() {
        let mut models = Map::new();
        for (mi, bi) in backends_of(config, pi) {
            let b = &config.models[mi].backends[bi];
            let healthy = backend_healthy(config, snap, mi, bi);
            let s = snap.backend(mi, bi);
            let failures = s.map_or(0, |s| s.consecutive_failures);
            let key = format!("{}:{}", p.id, b.model);
            if b.enabled && p.enabled && !healthy {
                unhealthy.push(json!({
                    "backend_key": key, "model": config.models[mi].key,
                    "failure_count": failures,
                    "circuit": s.map_or("closed", |s| s.breaker.name()),
                    "last_failure_seconds_ago": s.and_then(|s| s.last_failure_age).map(|a| a.as_secs()),
                }));
            }
            // Two models may use the same upstream model of one provider: one entry, healthy
            // only if both are.
            let latency = s
                .and_then(|s| s.view.latency_ewma_ms)
                .map_or(Value::Null, |v| json!(v.round()));
            let entry = models.entry(b.model.clone()).or_insert_with(|| {
                json!({ "healthy": true, "latency_ms": latency, "failure_count": 0,
                        "backend_key": key })
            });
            entry["healthy"] = json!(entry["healthy"] == true && healthy);
            let worst = entry["failure_count"]
                .as_u64()
                .unwrap_or(0)
                .max(u64::from(failures));
            entry["failure_count"] = json!(worst);
        }
        let healthy_models = models.values().filter(|v| v["healthy"] == true).count();
        let healthy = provider_healthy(config, snap, pi);
        providers_healthy += usize::from(healthy);
        providers.insert(
            p.id.clone(),
            json!({ "name": p.name, "healthy": healthy, "enabled": p.enabled,
                    "total_models": models.len(), "healthy_models": healthy_models, "models": models }),
        );
    }
    let mut models = Map::new();
    for (mi, m) in config.models.iter().enumerate() {
        let backends: Vec<Value> = m
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                json!({ "provider": config.providers[b.provider].id, "model": b.model, "enabled": b.enabled,
                        "healthy": m.enabled && backend_healthy(config, snap, mi, i), "weight": b.weight,
                        "priority": b.priority })
            })
            .collect();
        let healthy = backends.iter().filter(|b| b["healthy"] == true).count();
        models.insert(
            m.key.clone(),
            json!({ "name": m.name, "strategy": format!("{:?}", m.strategy), "enabled": m.enabled,
                    "total_backends": backends.len(), "healthy_backends": healthy,
                    "health_ratio": ratio(healthy, backends.len()), "backends": backends }),
        );
    }
    let body = json!({
        "status": word,
        "service_running": true,
        "summary": {
            "provider_health": { "total": config.providers.len(), "healthy": providers_healthy,
                                 "ratio": ratio(providers_healthy, config.providers.len()) },
            "model_health": { "total": s.models_enabled, "healthy": s.models_healthy,
                              "ratio": ratio(s.models_healthy, s.models_enabled) },
        },
        "providers": providers,
        "models": models,
        "unhealthy_backends": unhealthy,
        "timestamp": now(),
    });
    (code, serde_json::to_vec(&body).unwrap_or_default())
}
