//! Admin and SmartAI views in Berry API's shapes, with real values: the numbers the selector
//! uses, read from the health snapshot. Who may read them is `super::admin_access`'s decision
//! (loopback clients, or the bearer of `server.admin_token`). No base URLs, keys or tokens
//! appear here.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::balance::smart_ai;
use crate::config::{BillingMode, Config, Model, Strategy};
use crate::error::{ErrorKind, GatewayError};
use crate::health::breaker::Admission;
use crate::health::snapshot::{BackendSnap, Snapshot};
use crate::logging::rfc3339;
use crate::routes::Routes;

/// Which admin view a path names.
pub enum View<'a> {
    BackendHealth,
    ModelWeights(Option<&'a str>),
    SmartAiWeights,
    SmartAiModel(&'a str),
    RateLimits,
}

/// Parses an admin path (query string included); `None` if it is not one.
pub fn parse(target: &[u8]) -> Option<View<'_>> {
    let text = std::str::from_utf8(target).ok()?;
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    match path {
        "/admin/backend-health" => Some(View::BackendHealth),
        "/admin/model-weights" => {
            let model = query.split('&').find_map(|kv| kv.strip_prefix("model="));
            Some(View::ModelWeights(model))
        }
        "/smart-ai/weights" => Some(View::SmartAiWeights),
        "/admin/rate-limits" => Some(View::RateLimits),
        _ => {
            let model = path
                .strip_prefix("/smart-ai/models/")?
                .strip_suffix("/weights")?;
            (!model.is_empty() && !model.contains('/')).then_some(View::SmartAiModel(model))
        }
    }
}

pub fn render(
    routes: &Routes,
    snapshot: &Snapshot,
    view: View<'_>,
) -> Result<(u16, Vec<u8>), GatewayError> {
    let config = &routes.config;
    let now = Instant::now();
    let body = match view {
        View::BackendHealth => backend_health(config, snapshot, now),
        View::ModelWeights(filter) => {
            let models: Vec<usize> = match filter {
                None => (0..config.models.len()).collect(),
                Some(key) => vec![config
                    .models
                    .iter()
                    .position(|m| m.key == key)
                    .ok_or_else(|| unknown(key))?],
            };
            model_weights(config, snapshot, &models, now)
        }
        View::SmartAiWeights => {
            let models: Vec<usize> = (0..config.models.len())
                .filter(|&m| config.models[m].strategy == Strategy::SmartAi)
                .collect();
            let list: Vec<Value> = models
                .iter()
                .map(|&m| smart_ai_model(config, snapshot, m, now))
                .collect();
            json!({ "models": list, "total_smart_ai_models": list.len(), "timestamp": stamp() })
        }
        View::SmartAiModel(name) => {
            let m = config
                .model_by_request_name(name)
                .ok_or_else(|| unknown(name))?;
            smart_ai_model(config, snapshot, m, now)
        }
        View::RateLimits => rate_limits(routes, now),
    };
    Ok((200, serde_json::to_vec(&body).unwrap_or_default()))
}

/// Every user with a `rate_limit`: each window's limit and what it counts now. Users are named
/// by config id and display name, never by token.
fn rate_limits(routes: &Routes, now: Instant) -> Value {
    let users: Vec<Value> = (routes.config.users.iter().enumerate())
        .filter_map(|(i, u)| {
            let windows: Vec<Value> = (routes.limiter(i)?.usage(now).into_iter())
                .map(|(span, limit, used)| {
                    json!({
                        "window": span.name(),
                        "limit": limit,
                        "used": used,
                        "remaining": u64::from(limit).saturating_sub(used),
                    })
                })
                .collect();
            Some(json!({ "user": u.id, "name": u.name, "enabled": u.enabled, "windows": windows }))
        })
        .collect();
    json!({ "users": users, "timestamp": stamp() })
}

fn unknown(name: &str) -> GatewayError {
    let shown = crate::error::clip(name);
    GatewayError::new(
        ErrorKind::ModelNotFound,
        format!("the model `{shown}` does not exist"),
    )
}

fn stamp() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// The selector's weight for one backend under its model's strategy: what it ranks by now.
pub fn effective_weight(
    config: &Config,
    model: &Model,
    snap: &BackendSnap,
    available: bool,
) -> f64 {
    let view = &snap.view;
    if !available {
        return 0.0;
    }
    // The same inputs the shards' picks use: the ramped weight, then the strategy's formula.
    let view = crate::balance::BackendView {
        weight: crate::balance::ramped_weight(
            model.strategy,
            view.weight,
            snap.breaker.traffic_factor(),
        ),
        ..view.clone()
    };
    match model.strategy {
        Strategy::SmartAi => smart_ai::effective_weight(&view, &config.settings.smart_ai),
        Strategy::SmartWeightedFailover => view.weight * view.health_factor,
        _ => view.weight,
    }
}

fn billing(mode: BillingMode) -> &'static str {
    match mode {
        BillingMode::PerToken => "PerToken",
        BillingMode::PerRequest => "PerRequest",
    }
}

fn ms(d: Option<f64>) -> Value {
    d.map_or(Value::Null, |v| json!((v * 100.0).round() / 100.0))
}

fn backend_health(config: &Config, snapshot: &Snapshot, now: Instant) -> Value {
    let mut models = Map::new();
    for (mi, m) in config.models.iter().enumerate() {
        let backends: Vec<Value> = m
            .backends
            .iter()
            .enumerate()
            .filter_map(|(bi, b)| {
                let s = snapshot.backend(mi, bi)?;
                Some(json!({
                    "provider": config.providers[b.provider].id,
                    "model": b.model,
                    "enabled": b.enabled && config.providers[b.provider].enabled,
                    "is_healthy": s.healthy(now),
                    "circuit": s.breaker.name(),
                    "failure_count": s.consecutive_failures,
                    "is_in_unhealthy_list": s.view.health_factor < 1.0,
                    "recovery_factor": s.view.health_factor,
                    "error_rate": s.error_rate(),
                    "requests_window": s.requests_window,
                    "latency_ewma_ms": ms(s.view.latency_ewma_ms),
                    "p50_ms": ms(s.p50_ms),
                    "p99_ms": ms(s.p99_ms),
                    "ttfb_p50_ms": ms(s.ttfb_p50_ms),
                    "ttfb_p99_ms": ms(s.ttfb_p99_ms),
                    "inflight": s.inflight_total,
                    "last_failure_seconds_ago": s.last_failure_age.map(|d| d.as_secs()),
                    "tags": b.tags,
                    "priority": b.priority,
                }))
            })
            .collect();
        models.insert(
            m.key.clone(),
            json!({ "name": m.name, "backends": backends }),
        );
    }
    json!({
        "models": models,
        "snapshot_seq": snapshot.seq,
        "snapshot_age_ms": snapshot.taken.map(|t| now.saturating_duration_since(t).as_millis() as u64),
        "dropped_reports": snapshot.dropped_reports,
        "timestamp": stamp(),
    })
}

fn model_weights(config: &Config, snapshot: &Snapshot, models: &[usize], now: Instant) -> Value {
    let mut out = Map::new();
    for &mi in models {
        let m = &config.models[mi];
        let mut total = 0.0;
        let backends: Vec<Value> = m
            .backends
            .iter()
            .enumerate()
            .filter_map(|(bi, b)| {
                let s = snapshot.backend(mi, bi)?;
                let enabled = b.enabled && config.providers[b.provider].enabled;
                let open = s.breaker.admission(now) != Admission::Deny;
                let w = if enabled {
                    effective_weight(config, m, s, open)
                } else {
                    0.0
                };
                total += w;
                Some(json!({
                    "provider": config.providers[b.provider].id,
                    "model": b.model,
                    "original_weight": b.weight,
                    "effective_weight": w,
                    "is_healthy": s.healthy(now),
                    "is_enabled": enabled,
                    "priority": b.priority,
                    "tags": b.tags,
                    "billing_mode": billing(b.billing_mode),
                    "failure_count": s.consecutive_failures,
                }))
            })
            .collect();
        out.insert(
            m.key.clone(),
            json!({ "model_name": m.key, "display_name": m.name, "strategy": format!("{:?}", m.strategy),
                    "enabled": m.enabled, "backends": backends, "total_effective_weight": total }),
        );
    }
    json!({ "models": out, "total_models": models.len(), "timestamp": stamp() })
}

fn smart_ai_model(config: &Config, snapshot: &Snapshot, mi: usize, now: Instant) -> Value {
    let m = &config.models[mi];
    let mut confidences = Vec::new();
    let mut premium = 0;
    let mut healthy = 0;
    let backends: Vec<Value> = m
        .backends
        .iter()
        .enumerate()
        .filter_map(|(bi, b)| {
            let s = snapshot.backend(mi, bi)?;
            confidences.push(s.view.confidence);
            premium += usize::from(s.view.premium);
            healthy += usize::from(s.healthy(now));
            Some(json!({
                "provider": config.providers[b.provider].id,
                "model": b.model,
                "original_weight": b.weight,
                "effective_weight": effective_weight(config, m, s, s.breaker.admission(now) != Admission::Deny),
                "confidence": s.view.confidence,
                "is_premium": s.view.premium,
                "enabled": b.enabled,
                "tags": b.tags,
                "billing_mode": billing(b.billing_mode),
            }))
        })
        .collect();
    let average = if confidences.is_empty() {
        0.0
    } else {
        confidences.iter().sum::<f64>() / confidences.len() as f64
    };
    json!({
        "name": m.name,
        "key": m.key,
        "strategy": format!("{:?}", m.strategy),
        "enabled": m.enabled,
        "backends": backends,
        "stats": { "total_backends": m.backends.len(), "enabled_backends": m.backends.iter().filter(|b| b.enabled).count(),
                   "healthy_backends": healthy, "premium_backends": premium, "average_confidence": average },
    })
}
