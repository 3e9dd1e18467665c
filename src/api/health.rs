//! Berry's `/health` and `/v1/health` views, in the predecessor's field names.
//!
//! No base URLs, keys or tokens appear here. A backend is healthy when it and its provider are
//! enabled and the latest health snapshot has its circuit closed and its recovery ramp done;
//! the 503 rule is Berry's: unhealthy when half or fewer of the enabled models have a healthy
//! backend.

use serde_json::{json, Map, Value};

use std::time::Instant;

use crate::config::Config;
use crate::health::snapshot::Snapshot;
use crate::logging::rfc3339;
use crate::routes::Routes;

/// Enabled, and neither its circuit open nor still on the recovery ramp in the latest
/// snapshot (before the first snapshot: enabled is enough).
fn backend_healthy(config: &Config, snap: &Snapshot, model: usize, i: usize) -> bool {
    let b = &config.models[model].backends[i];
    let enabled = b.enabled && config.providers[b.provider].enabled;
    enabled
        && snap
            .backend(model, i)
            .is_none_or(|s| s.healthy(Instant::now()))
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
    let body = json!({
        "status": word,
        "service_running": true,
        "models_available": s.models_healthy,
        "summary": {
            "providers": { "total": config.providers.len(), "enabled": providers_enabled, "healthy": providers_enabled },
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
    for (pi, p) in config.providers.iter().enumerate() {
        let mut models = Map::new();
        for (mi, m) in config.models.iter().enumerate() {
            for (bi, b) in m
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.provider == pi)
            {
                let healthy = backend_healthy(config, snap, mi, bi);
                let s = snap.backend(mi, bi);
                let latency = s
                    .and_then(|s| s.view.latency_ewma_ms)
                    .map_or(Value::Null, |v| json!(v.round()));
                models.insert(
                    b.model.clone(),
                    json!({ "healthy": healthy, "latency_ms": latency,
                            "failure_count": s.map_or(0, |s| s.consecutive_failures),
                            "backend_key": format!("{}:{}", p.id, b.model) }),
                );
            }
        }
        let healthy_models = models.values().filter(|v| v["healthy"] == true).count();
        providers_healthy += usize::from(p.enabled);
        providers.insert(
            p.id.clone(),
            json!({ "name": p.name, "healthy": p.enabled, "enabled": p.enabled,
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
        "unhealthy_backends": [],
        "timestamp": now(),
    });
    (code, serde_json::to_vec(&body).unwrap_or_default())
}
