//! Stage two for `[models.*]` and their backends: every cross-reference to providers
//! (provider exists, upstream model is in its list), lenient strategy and billing names, and
//! the uniqueness rules that keep request lookup (key first, then name) unambiguous.

use std::collections::HashMap;
use std::ops::Range;

use super::keys::{index, join};
use super::raw::{Named, RawBackend, RawModel, S};
use super::validate::Ctx;
use super::{Backend, BillingMode, HealthCheck, Model, Provider, Severity, Strategy};

const WEIGHT_MAX: f64 = 100.0;
const PRIORITY_MAX: u64 = 10;

pub(super) fn models(
    cx: &mut Ctx<'_, '_>,
    raw: Option<Named<RawModel>>,
    providers: &[Provider],
) -> Vec<Model> {
    let Some(table) = raw else {
        let msg = "missing required table: define at least one `[models.<key>]`";
        cx.sink
            .push(Severity::Error, None, "models", msg.to_string());
        return Vec::new();
    };
    if table.get_ref().is_empty() {
        cx.sink
            .error(table.span(), "models", "at least one model is required");
    }
    let built: Vec<(Model, Range<usize>)> = table
        .into_inner()
        .into_iter()
        .map(|(key, m)| model(cx, key, m, providers))
        .collect();
    // Request lookup is key first, then name; both must be unambiguous.
    let mut first_with_name: HashMap<&str, &str> = HashMap::new();
    for (m, name_span) in &built {
        if m.name.is_empty() {
            continue;
        }
        let path = join(&join("models", &m.key), "name");
        if let Some(first) = first_with_name.insert(&m.name, &m.key) {
            let msg = format!(
                "duplicate model name {:?}: `{}` already uses it",
                m.name,
                join("models", first)
            );
            cx.sink.error(name_span.clone(), &path, msg);
        }
        if m.name != m.key && built.iter().any(|(other, _)| other.key == m.name) {
            let msg = format!(
                "{:?} is also the key of `{}`, so a request for it would be ambiguous",
                m.name,
                join("models", &m.name)
            );
            cx.sink.error(name_span.clone(), &path, msg);
        }
    }
    let mut models: Vec<Model> = built.into_iter().map(|(m, _)| m).collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

/// Returns the model and the span to blame for name conflicts.
fn model(
    cx: &mut Ctx<'_, '_>,
    key: S<String>,
    raw: S<RawModel>,
    providers: &[Provider],
) -> (Model, Range<usize>) {
    let span = raw.span();
    let raw = raw.into_inner();
    let path = join("models", key.get_ref());
    let p = |k: &str| join(&path, k);
    if key.get_ref().is_empty() {
        cx.sink
            .error(key.span(), &path, "model key must not be empty");
    }
    let name = cx.required(raw.name.as_ref(), span.clone(), &p("name"));
    let name_span = raw.name.as_ref().map_or(span.clone(), S::span);
    if let (Some(n), Some(v)) = (&name, &raw.name) {
        if n.chars().any(char::is_whitespace) {
            cx.sink.error(
                v.span(),
                &p("name"),
                format!("must not contain whitespace (got {n:?})"),
            );
        }
    }
    let strategy = match &raw.strategy {
        None => Strategy::WeightedRandom,
        Some(v) => parse_strategy(v.get_ref()).unwrap_or_else(|| {
            let msg = format!(
                "unknown strategy {:?}; expected one of {}",
                v.get_ref(),
                STRATEGIES
                    .iter()
                    .map(|s| s.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            cx.sink.error(v.span(), &p("strategy"), msg);
            Strategy::WeightedRandom
        }),
    };
    let enabled = raw.enabled.unwrap_or(true);
    let mut backends = Vec::new();
    match &raw.backends {
        None => cx
            .sink
            .error(span.clone(), &p("backends"), "missing (required)"),
        Some(list) if list.get_ref().is_empty() => {
            cx.sink.error(
                list.span(),
                &p("backends"),
                "must have at least one backend",
            );
        }
        Some(list) => {
            let mut any_enabled = false;
            for (i, b) in list.get_ref().iter().enumerate() {
                any_enabled |= b.get_ref().enabled.unwrap_or(true);
                let bpath = index(&p("backends"), i);
                if let Some(b) = backend(cx, b, &bpath, providers) {
                    backends.push(b);
                }
            }
            if enabled && !any_enabled {
                let msg = "an enabled model needs at least one enabled backend";
                cx.sink.error(list.span(), &p("backends"), msg);
            }
            let live: Vec<&Backend> = backends.iter().filter(|b| b.enabled).collect();
            let all_providers_off = live.iter().all(|b| !providers[b.provider].enabled);
            if enabled && !live.is_empty() && all_providers_off {
                let msg = "every enabled backend's provider is disabled; requests will fail";
                cx.sink.warn(list.span(), &p("backends"), msg);
            }
        }
    }
    let model = Model {
        key: key.into_inner(),
        name: name.unwrap_or_default(),
        strategy,
        enabled,
        backends,
    };
    (model, name_span)
}

/// Berry API's eight names from both eras, our two, and the CamelCase the CLI templates wrote.
const STRATEGIES: [(&str, &str, Strategy); 10] = [
    (
        "weighted_random",
        "WeightedRandom",
        Strategy::WeightedRandom,
    ),
    ("round_robin", "RoundRobin", Strategy::RoundRobin),
    ("random", "Random", Strategy::Random),
    ("least_latency", "LeastLatency", Strategy::LeastLatency),
    ("failover", "Failover", Strategy::Failover),
    (
        "weighted_failover",
        "WeightedFailover",
        Strategy::WeightedFailover,
    ),
    (
        "smart_weighted_failover",
        "SmartWeightedFailover",
        Strategy::SmartWeightedFailover,
    ),
    ("smart_ai", "SmartAi", Strategy::SmartAi),
    ("least_request", "LeastRequest", Strategy::LeastRequest),
    (
        "prefix_affinity",
        "PrefixAffinity",
        Strategy::PrefixAffinity,
    ),
];

fn parse_strategy(s: &str) -> Option<Strategy> {
    if s == "SmartAI" {
        return Some(Strategy::SmartAi);
    }
    STRATEGIES
        .iter()
        .find(|(snake, camel, _)| s == *snake || s == *camel)
        .map(|&(_, _, strategy)| strategy)
}

fn backend(
    cx: &mut Ctx<'_, '_>,
    raw: &S<RawBackend>,
    path: &str,
    providers: &[Provider],
) -> Option<Backend> {
    let span = raw.span();
    let raw = raw.get_ref();
    let p = |k: &str| join(path, k);
    let provider_id = cx.required(raw.provider.as_ref(), span.clone(), &p("provider"));
    let model = cx.required(raw.model.as_ref(), span, &p("model"));
    let provider = provider_id.as_deref().and_then(|id| {
        let found = providers.binary_search_by(|pr| pr.id.as_str().cmp(id)).ok();
        if found.is_none() {
            if let Some(v) = &raw.provider {
                let msg = format!("unknown provider {id:?}: no `[providers.{id}]` table");
                cx.sink.error(v.span(), &p("provider"), msg);
            }
        }
        found
    });
    if let (Some(i), Some(m), Some(v)) = (provider, &model, &raw.model) {
        let pr = &providers[i];
        if !pr.models.iter().any(|x| x == m) {
            let msg = format!(
                "{m:?} is not in `{}` ({:?})",
                join(&join("providers", &pr.id), "models"),
                pr.models
            );
            cx.sink.error(v.span(), &p("model"), msg);
        }
    }
    let weight = match &raw.weight {
        None => 1.0,
        Some(v) => {
            let w = *v.get_ref();
            if !(w > 0.0 && w <= WEIGHT_MAX) {
                let msg = format!("must be > 0 and <= {WEIGHT_MAX} (got {w})");
                cx.sink.error(v.span(), &p("weight"), msg);
            }
            w
        }
    };
    let priority = cx.int(
        raw.priority.as_ref(),
        &p("priority"),
        0,
        0,
        PRIORITY_MAX,
        "",
    ) as u8;
    let tags = tags(cx, raw.tags.as_ref(), &p("tags"));
    let billing_mode = match &raw.billing_mode {
        None => BillingMode::PerToken,
        Some(v) => match v.get_ref().as_str() {
            "per_token" | "PerToken" => BillingMode::PerToken,
            "per_request" | "PerRequest" => BillingMode::PerRequest,
            other => {
                let msg = format!("must be `per_token` or `per_request` (got {other:?})");
                cx.sink.error(v.span(), &p("billing_mode"), msg);
                BillingMode::PerToken
            }
        },
    };
    // Default: probe the free models endpoint for per-token backends; per-request backends
    // would pay for every probe, so live traffic judges them.
    let health_check = match &raw.health_check {
        None if billing_mode == BillingMode::PerRequest => HealthCheck::None,
        None => HealthCheck::Models,
        Some(v) => match v.get_ref().as_str() {
            "none" => HealthCheck::None,
            "models" => HealthCheck::Models,
            "chat" => HealthCheck::Chat,
            other => {
                let msg = format!("must be `none`, `models` or `chat` (got {other:?})");
                cx.sink.error(v.span(), &p("health_check"), msg);
                HealthCheck::None
            }
        },
    };
    Some(Backend {
        provider: provider?,
        model: model?,
        weight,
        priority,
        enabled: raw.enabled.unwrap_or(true),
        tags,
        billing_mode,
        health_check,
    })
}

pub(super) fn tags(cx: &mut Ctx<'_, '_>, raw: Option<&Vec<S<String>>>, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, t) in raw
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let tag = t.get_ref();
        if tag.is_empty() || tag.chars().any(char::is_whitespace) {
            let msg = format!("tags must be non-empty and contain no whitespace (got {tag:?})");
            cx.sink.error(t.span(), &index(path, i), msg);
        } else if !out.contains(tag) {
            out.push(tag.clone());
        }
    }
    out
}
