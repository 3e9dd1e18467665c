//! What Berry exports: every counter and gauge with its help text, the histogram buckets, and
//! the label values of outcome and status classes. `docs/observability.md` lists the same set.

use metrics::{KeyName, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::balance::outcome::OutcomeClass;

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

/// Outcome classes in label order.
pub(super) const CLASSES: [OutcomeClass; 8] = [
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

pub(super) fn class_index(c: OutcomeClass) -> usize {
    CLASSES.iter().position(|&x| x == c).unwrap_or(0)
}

/// `2xx` … `5xx`, and `other` (0, i.e. nothing was sent).
pub(super) const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub(super) fn status_class(status: u16) -> usize {
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
        "berry_rate_limited_total",
        None,
        "Requests refused with 429 because the user's rate_limit was reached, by user",
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
pub(super) fn build_recorder() -> PrometheusRecorder {
    let r = PrometheusBuilder::new().build_recorder();
    for (name, unit, help) in COUNTERS {
        r.describe_counter(KeyName::from_const_str(name), *unit, (*help).into());
    }
    for (name, unit, help) in GAUGES {
        r.describe_gauge(KeyName::from_const_str(name), *unit, (*help).into());
    }
    r
}
