//! The serde mirror of the file, exactly as written: every field optional and spanned, so that
//! `validate.rs` can report all missing or out-of-range values at once, each with its line.
//! Integers are read as `i64` (TOML's own integer type) and range-checked later, for the same
//! reason. Nothing outside `config/` may see these types; unknown keys are the walk's job
//! (`keys.rs`), so no struct here denies unknown fields.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type S<T> = Spanned<T>;
/// A table whose keys the user chooses (provider ids, model keys, user ids).
pub(super) type Named<T> = S<BTreeMap<S<String>, S<T>>>;

#[derive(Deserialize, Default)]
pub(super) struct RawConfig {
    pub server: Option<S<RawServer>>,
    pub settings: Option<S<RawSettings>>,
    pub providers: Option<Named<RawProvider>>,
    pub models: Option<Named<RawModel>>,
    pub users: Option<Named<RawUser>>,
    pub observability: Option<S<RawObservability>>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawObservability {
    pub metrics: Option<bool>,
    pub metrics_admin_only: Option<bool>,
    pub access_log: Option<S<String>>,
    pub access_log_format: Option<S<String>>,
    pub log_level: Option<S<String>>,
    pub stream_usage: Option<S<String>>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawServer {
    pub bind_address: Option<S<String>>,
    pub workers: Option<S<i64>>,
    pub pin_cores: Option<bool>,
    pub driver: Option<S<String>>,
    pub allow_anonymous: Option<bool>,
    pub admin_token: Option<S<String>>,
    pub header_bytes_max: Option<S<i64>>,
    pub headers_count_max: Option<S<i64>>,
    pub body_bytes_max: Option<S<i64>>,
    pub connections_per_shard_max: Option<S<i64>>,
    pub client_header_timeout_ms: Option<S<i64>>,
    pub client_body_timeout_ms: Option<S<i64>>,
    pub client_idle_timeout_ms: Option<S<i64>>,
    pub client_send_timeout_ms: Option<S<i64>>,
    pub drain_timeout_ms: Option<S<i64>>,
    pub cors_allow_origins: Option<S<Vec<S<String>>>>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawSettings {
    pub max_retries: Option<S<i64>>,
    pub connect_timeout_ms: Option<S<i64>>,
    pub first_byte_timeout_ms: Option<S<i64>>,
    /// Berry API's name for the first-byte timeout; mutually exclusive with the `_ms` key.
    pub request_timeout_seconds: Option<S<i64>>,
    pub stream_idle_timeout_ms: Option<S<i64>>,
    pub total_timeout_ms: Option<S<i64>>,
    pub pool_idle_per_backend_max: Option<S<i64>>,
    pub pool_idle_timeout_ms: Option<S<i64>>,
    pub response_buffer_bytes_max: Option<S<i64>>,
    pub report_interval_ms: Option<S<i64>>,
    pub snapshot_interval_ms: Option<S<i64>>,
    pub health_check_interval_seconds: Option<S<i64>>,
    pub recovery_check_interval_seconds: Option<S<i64>>,
    pub circuit_breaker_failure_threshold: Option<S<i64>>,
    pub circuit_breaker_timeout_seconds: Option<S<i64>>,
    pub circuit_breaker_error_rate: Option<S<f64>>,
    pub circuit_breaker_min_requests: Option<S<i64>>,
    pub max_internal_retries: Option<S<i64>>,
    pub health_check_timeout_seconds: Option<S<i64>>,
    pub smart_ai: Option<S<RawSmartAi>>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawSmartAi {
    pub initial_confidence: Option<S<f64>>,
    pub min_confidence: Option<S<f64>>,
    pub enable_time_decay: Option<bool>,
    pub lightweight_check_interval_seconds: Option<S<i64>>,
    pub exploration_ratio: Option<S<f64>>,
    pub non_premium_stability_bonus: Option<S<f64>>,
    pub confidence_adjustments: Option<S<RawAdjustments>>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawAdjustments {
    pub success_boost: Option<S<f64>>,
    pub network_error_penalty: Option<S<f64>>,
    pub auth_error_penalty: Option<S<f64>>,
    pub rate_limit_penalty: Option<S<f64>>,
    pub server_error_penalty: Option<S<f64>>,
    pub model_error_penalty: Option<S<f64>>,
    pub timeout_penalty: Option<S<f64>>,
}

#[derive(Deserialize)]
pub(super) struct RawProvider {
    pub name: Option<S<String>>,
    pub base_url: Option<S<String>>,
    pub api_key: Option<S<String>>,
    pub models: Option<S<Vec<S<String>>>>,
    pub headers: Option<BTreeMap<S<String>, S<String>>>,
    pub enabled: Option<bool>,
    pub timeout_seconds: Option<S<i64>>,
    pub backend_type: Option<S<String>>,
    pub ca_file: Option<S<String>>,
}

#[derive(Deserialize)]
pub(super) struct RawModel {
    pub name: Option<S<String>>,
    pub strategy: Option<S<String>>,
    pub enabled: Option<bool>,
    pub backends: Option<S<Vec<S<RawBackend>>>>,
}

#[derive(Deserialize)]
pub(super) struct RawBackend {
    pub provider: Option<S<String>>,
    pub model: Option<S<String>>,
    pub weight: Option<S<f64>>,
    pub priority: Option<S<i64>>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<S<String>>>,
    pub billing_mode: Option<S<String>>,
    pub health_check: Option<S<String>>,
}

#[derive(Deserialize)]
pub(super) struct RawUser {
    pub name: Option<S<String>>,
    pub token: Option<S<String>>,
    pub allowed_models: Option<Vec<S<String>>>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<S<String>>>,
    pub rate_limit: Option<S<RawRateLimit>>,
    pub allow_backend_override: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct RawRateLimit {
    pub requests_per_minute: Option<S<i64>>,
    pub requests_per_hour: Option<S<i64>>,
    pub requests_per_day: Option<S<i64>>,
}
