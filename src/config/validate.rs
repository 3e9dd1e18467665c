//! Stage two: raw → validated (after `load.rs` has parsed the file and deserialized it).
//! Checks `[server]` and `[settings]` (whose defaults live here), and hands the named tables
//! to `providers.rs`, `models.rs` and `users.rs`, collecting every finding instead of stopping
//! at the first. Must never panic on input or put a secret value into a diagnostic.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use super::keys::{self, join, Sink};
use super::raw::{RawConfig, RawServer, RawSettings, RawSmartAi, S};
use super::{models, providers, users};
use super::{ConfidenceAdjustments, Config, DriverChoice, ServerSettings, Settings, SmartAi};

/// Upper bound for every duration, so downstream `Instant + d` can never overflow.
const DURATION_MS_MAX: u64 = 24 * 60 * 60 * 1000;
const DURATION_SECS_MAX: u64 = DURATION_MS_MAX / 1000;

/// A first-byte timeout taken from a Berry API key (`settings.request_timeout_seconds`,
/// `providers.*.timeout_seconds`) below this gets a warning: those keys meant something
/// milder there, and Berry files often say 30.
pub(super) const FIRST_BYTE_TIMEOUT_WARN_BELOW_SECS: u64 = 60;

/// Retry-like counters: more than this is a typo, not a policy.
const RETRIES_MAX: u64 = 100;

/// State shared by every check: the diagnostics and the secret lookup.
pub(super) struct Ctx<'t, 'e> {
    pub sink: Sink<'t>,
    pub env: &'e dyn Fn(&str) -> Option<String>,
}

pub(super) fn build(cx: &mut Ctx<'_, '_>, raw: RawConfig) -> Config {
    let server_raw = raw.server.map(S::into_inner).unwrap_or_default();
    let settings_raw = raw.settings.map(S::into_inner).unwrap_or_default();
    let server = server(cx, &server_raw);
    let settings = settings(cx, &settings_raw);
    let providers = providers::providers(cx, raw.providers);
    let models = models::models(cx, raw.models, &providers);
    let users = users::users(cx, raw.users, &providers, &models, server.allow_anonymous);
    if let (Some(admin), Some(v)) = (&server.admin_token, &server_raw.admin_token) {
        // A user holding the admin token could read the admin views with their API key, and
        // the admin could spend the user's quota: the two must be different secrets.
        if let Some(u) = users.iter().find(|u| u.token.expose() == admin.expose()) {
            let msg = format!(
                "same token as `{}`; the admin token must be its own",
                join("users", &u.id)
            );
            cx.sink.error(v.span(), "server.admin_token", msg);
        }
    }
    let observability_raw = raw.observability.map(S::into_inner).unwrap_or_default();
    let observability = super::observability::observability(cx, &observability_raw);
    Config {
        server,
        settings,
        observability,
        providers,
        models,
        users,
        warnings: Vec::new(),
    }
}

/// Parses a listen address as `serve` binds it; `--bind` and `BIND_ADDRESS` go through this
/// too, so all three sources follow one rule and one message.
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "must be `ip:port`, such as `0.0.0.0:3000` or `[::1]:3000`; host names are not \
             resolved (got {text:?})"
        )
    })
}

fn server(cx: &mut Ctx<'_, '_>, raw: &RawServer) -> ServerSettings {
    let p = |key: &str| join("server", key);
    let bind_address = raw.bind_address.as_ref().and_then(|v| {
        // The same parse `serve` does: a host name such as `localhost` is not resolved there,
        // so it must be refused here rather than pass validation and fail at startup.
        match parse_bind_address(v.get_ref()) {
            Ok(_) => Some(v.get_ref().clone()),
            Err(msg) => {
                cx.sink.error(v.span(), &p("bind_address"), msg);
                None
            }
        }
    });
    // 0 means "one per core"; normalised to None so callers test one thing.
    let workers = cx.int(raw.workers.as_ref(), &p("workers"), 0, 0, 1024, "") as usize;
    let driver = match raw.driver.as_ref() {
        None => DriverChoice::Auto,
        Some(v) => match v.get_ref().as_str() {
            "auto" => DriverChoice::Auto,
            "uring" | "io_uring" => DriverChoice::Uring,
            "epoll" | "legacy" => DriverChoice::Epoll,
            other => {
                let msg = format!("must be one of `auto`, `uring`, `epoll` (got {other:?})");
                cx.sink.error(v.span(), &p("driver"), msg);
                DriverChoice::Auto
            }
        },
    };
    ServerSettings {
        bind_address,
        workers: (workers != 0).then_some(workers),
        pin_cores: raw.pin_cores.unwrap_or(true),
        driver,
        allow_anonymous: raw.allow_anonymous.unwrap_or(false),
        admin_token: raw
            .admin_token
            .as_ref()
            .and_then(|v| users::token(cx, Some(v), v.span(), &p("admin_token"))),
        header_bytes_max: cx.size(
            raw.header_bytes_max.as_ref(),
            &p("header_bytes_max"),
            32 * 1024,
            1024 * 1024,
            "no request head would fit",
        ),
        headers_count_max: cx.size(
            raw.headers_count_max.as_ref(),
            &p("headers_count_max"),
            64,
            1024,
            "every request carries at least a Host header",
        ),
        body_bytes_max: cx.size(
            raw.body_bytes_max.as_ref(),
            &p("body_bytes_max"),
            16 * 1024 * 1024,
            1024 * 1024 * 1024,
            "no chat request would fit",
        ),
        connections_per_shard_max: cx.size(
            raw.connections_per_shard_max.as_ref(),
            &p("connections_per_shard_max"),
            10_000,
            1_000_000,
            "no client could connect",
        ),
        client_header_timeout: cx.ms(
            raw.client_header_timeout_ms.as_ref(),
            &p("client_header_timeout_ms"),
            10_000,
        ),
        client_body_timeout: cx.ms(
            raw.client_body_timeout_ms.as_ref(),
            &p("client_body_timeout_ms"),
            30_000,
        ),
        client_idle_timeout: cx.ms(
            raw.client_idle_timeout_ms.as_ref(),
            &p("client_idle_timeout_ms"),
            60_000,
        ),
        client_send_timeout: cx.ms(
            raw.client_send_timeout_ms.as_ref(),
            &p("client_send_timeout_ms"),
            60_000,
        ),
        drain_timeout: cx.ms(
            raw.drain_timeout_ms.as_ref(),
            &p("drain_timeout_ms"),
            // Under Kubernetes' default 30 s grace period, so the cut is Berry's, not SIGKILL's.
            25_000,
        ),
        cors_allow_origins: super::cors::allow_origins(
            cx,
            raw.cors_allow_origins.as_ref(),
            &p("cors_allow_origins"),
        ),
    }
}

fn settings(cx: &mut Ctx<'_, '_>, raw: &RawSettings) -> Settings {
    let p = |key: &str| join("settings", key);
    let first_byte_timeout = match (&raw.first_byte_timeout_ms, &raw.request_timeout_seconds) {
        (Some(ms), Some(secs)) => {
            let line = keys::line_col_bytes(cx.sink_text().as_bytes(), ms.span().start).0;
            let msg = format!(
                "conflicts with `settings.first_byte_timeout_ms` (line {line}); Berry API's \
                 `request_timeout_seconds` is an alias for it, so keep only one"
            );
            cx.sink
                .error(secs.span(), &p("request_timeout_seconds"), msg);
            cx.ms(Some(ms), &p("first_byte_timeout_ms"), 120_000)
        }
        (None, Some(secs)) => {
            let timeout = cx.secs(Some(secs), &p("request_timeout_seconds"), 120);
            // Berry API only used this for health checks, and its templates wrote 30, which
            // is short for a non-streaming completion's first byte. Say what changed.
            if timeout < Duration::from_secs(FIRST_BYTE_TIMEOUT_WARN_BELOW_SECS) {
                let msg = format!(
                    "now the first-byte timeout of every relayed request (Berry API used it \
                     only for health checks); {} s may cut off long non-streaming \
                     completions",
                    timeout.as_secs()
                );
                cx.sink
                    .warn(secs.span(), &p("request_timeout_seconds"), msg);
            }
            timeout
        }
        (ms, None) => cx.ms(ms.as_ref(), &p("first_byte_timeout_ms"), 120_000),
    };
    let total_timeout = cx.ms(
        raw.total_timeout_ms.as_ref(),
        &p("total_timeout_ms"),
        900_000,
    );
    if let Some(v) = &raw.total_timeout_ms {
        if total_timeout < first_byte_timeout {
            cx.sink.warn(
                v.span(),
                &p("total_timeout_ms"),
                "is shorter than the first-byte timeout, so it will always fire first",
            );
        }
    }
    let pool_idle_timeout = cx.ms(
        raw.pool_idle_timeout_ms.as_ref(),
        &p("pool_idle_timeout_ms"),
        4_000,
    );
    if let Some(v) = &raw.pool_idle_timeout_ms {
        if pool_idle_timeout >= Duration::from_secs(5) {
            cx.sink.warn(
                v.span(),
                &p("pool_idle_timeout_ms"),
                "is 5 s or more: uvicorn/vLLM close idle connections after 5 s, so pooled \
                 connections may be dead when reused",
            );
        }
    }
    let max_retries = cx.int(
        raw.max_retries.as_ref(),
        &p("max_retries"),
        3,
        0,
        RETRIES_MAX,
        "",
    );
    let max_internal_retries = cx.int(
        raw.max_internal_retries.as_ref(),
        &p("max_internal_retries"),
        2,
        0,
        RETRIES_MAX,
        "",
    );
    let threshold = cx.int(
        raw.circuit_breaker_failure_threshold.as_ref(),
        &p("circuit_breaker_failure_threshold"),
        5,
        1,
        10_000,
        "the breaker would open before any failure",
    );
    // Berry API keys that still parse but have no effect in Berry: say so instead of ignoring
    // them silently.
    if let Some(v) = &raw.recovery_check_interval_seconds {
        let msg = "has no effect: active checks run every `health_check_interval_seconds`, and a \
                   tripped circuit is probed after `circuit_breaker_timeout_seconds`";
        cx.sink
            .warn(v.span(), &p("recovery_check_interval_seconds"), msg);
    }
    if let Some(v) = &raw.max_internal_retries {
        let msg =
            "has no effect: unavailable backends are never picked, and failover uses `max_retries`";
        cx.sink.warn(v.span(), &p("max_internal_retries"), msg);
    }
    let smart_ai_raw = raw.smart_ai.as_ref().map(S::get_ref);
    if let Some(v) = smart_ai_raw.and_then(|s| s.lightweight_check_interval_seconds.as_ref()) {
        let msg = "has no effect: active checks run every `settings.health_check_interval_seconds`";
        cx.sink.warn(
            v.span(),
            "settings.smart_ai.lightweight_check_interval_seconds",
            msg,
        );
    }
    Settings {
        max_retries: max_retries as u32,
        connect_timeout: cx.ms(
            raw.connect_timeout_ms.as_ref(),
            &p("connect_timeout_ms"),
            5_000,
        ),
        first_byte_timeout,
        stream_idle_timeout: cx.ms(
            raw.stream_idle_timeout_ms.as_ref(),
            &p("stream_idle_timeout_ms"),
            120_000,
        ),
        total_timeout,
        // Zero is meaningful here: it turns connection reuse off.
        pool_idle_per_backend_max: cx.int(
            raw.pool_idle_per_backend_max.as_ref(),
            &p("pool_idle_per_backend_max"),
            256,
            0,
            65_536,
            "",
        ) as usize,
        pool_idle_timeout,
        report_interval: cx.ms(
            raw.report_interval_ms.as_ref(),
            &p("report_interval_ms"),
            100,
        ),
        snapshot_interval: cx.ms(
            raw.snapshot_interval_ms.as_ref(),
            &p("snapshot_interval_ms"),
            100,
        ),
        response_buffer_bytes_max: cx.size(
            raw.response_buffer_bytes_max.as_ref(),
            &p("response_buffer_bytes_max"),
            256 * 1024,
            1024 * 1024 * 1024,
            "no response could be buffered",
        ),
        health_check_interval: cx.secs(
            raw.health_check_interval_seconds.as_ref(),
            &p("health_check_interval_seconds"),
            30,
        ),
        recovery_check_interval: cx.secs(
            raw.recovery_check_interval_seconds.as_ref(),
            &p("recovery_check_interval_seconds"),
            120,
        ),
        circuit_breaker_failure_threshold: threshold as u32,
        circuit_breaker_error_rate: cx.fraction(
            raw.circuit_breaker_error_rate.as_ref(),
            &p("circuit_breaker_error_rate"),
            0.0,
            true,
        ),
        circuit_breaker_min_requests: cx.int(
            raw.circuit_breaker_min_requests.as_ref(),
            &p("circuit_breaker_min_requests"),
            20,
            1,
            1_000_000,
            "a rate over no requests means nothing",
        ) as u32,
        circuit_breaker_timeout: cx.secs(
            raw.circuit_breaker_timeout_seconds.as_ref(),
            &p("circuit_breaker_timeout_seconds"),
            60,
        ),
        max_internal_retries: max_internal_retries as u32,
        health_check_timeout: cx.secs(
            raw.health_check_timeout_seconds.as_ref(),
            &p("health_check_timeout_seconds"),
            10,
        ),
        smart_ai: smart_ai(cx, smart_ai_raw),
    }
}

fn smart_ai(cx: &mut Ctx<'_, '_>, raw: Option<&RawSmartAi>) -> SmartAi {
    let empty = RawSmartAi::default();
    let raw = raw.unwrap_or(&empty);
    let p = |key: &str| join("settings.smart_ai", key);
    let initial = cx.fraction(
        raw.initial_confidence.as_ref(),
        &p("initial_confidence"),
        0.8,
        false,
    );
    let min = cx.fraction(
        raw.min_confidence.as_ref(),
        &p("min_confidence"),
        0.05,
        true,
    );
    if let Some(v) = &raw.min_confidence {
        if min > initial {
            let msg = format!("must be <= initial_confidence ({initial}) (got {min})");
            cx.sink.error(v.span(), &p("min_confidence"), msg);
        }
    }
    let bonus = match &raw.non_premium_stability_bonus {
        None => 1.1,
        Some(v) => {
            let b = *v.get_ref();
            if !(1.0..=10.0).contains(&b) {
                let msg = format!("must be >= 1 and <= 10 (got {b}); 1 means no bonus");
                cx.sink
                    .error(v.span(), &p("non_premium_stability_bonus"), msg);
            }
            b
        }
    };
    let adj_empty = Default::default();
    let a = raw
        .confidence_adjustments
        .as_ref()
        .map_or(&adj_empty, S::get_ref);
    let q = |key: &str| join("settings.smart_ai.confidence_adjustments", key);
    SmartAi {
        initial_confidence: initial,
        min_confidence: min,
        enable_time_decay: raw.enable_time_decay.unwrap_or(true),
        lightweight_check_interval: cx.secs(
            raw.lightweight_check_interval_seconds.as_ref(),
            &p("lightweight_check_interval_seconds"),
            600,
        ),
        exploration_ratio: cx.fraction(
            raw.exploration_ratio.as_ref(),
            &p("exploration_ratio"),
            0.2,
            true,
        ),
        non_premium_stability_bonus: bonus,
        adjustments: ConfidenceAdjustments {
            success_boost: cx.fraction(a.success_boost.as_ref(), &q("success_boost"), 0.1, true),
            network_error_penalty: cx.fraction(
                a.network_error_penalty.as_ref(),
                &q("network_error_penalty"),
                0.3,
                true,
            ),
            auth_error_penalty: cx.fraction(
                a.auth_error_penalty.as_ref(),
                &q("auth_error_penalty"),
                0.8,
                true,
            ),
            rate_limit_penalty: cx.fraction(
                a.rate_limit_penalty.as_ref(),
                &q("rate_limit_penalty"),
                0.1,
                true,
            ),
            server_error_penalty: cx.fraction(
                a.server_error_penalty.as_ref(),
                &q("server_error_penalty"),
                0.2,
                true,
            ),
            model_error_penalty: cx.fraction(
                a.model_error_penalty.as_ref(),
                &q("model_error_penalty"),
                0.3,
                true,
            ),
            timeout_penalty: cx.fraction(
                a.timeout_penalty.as_ref(),
                &q("timeout_penalty"),
                0.2,
                true,
            ),
        },
    }
}

impl Ctx<'_, '_> {
    fn sink_text(&self) -> &str {
        self.sink.text()
    }

    /// An integer in `[min, max]`, or `default` when absent. Out of range is reported and the
    /// default returned, so later checks still see a sane value. `why` explains a lower bound
    /// of 1 ("zero makes no sense because …").
    pub fn int(
        &mut self,
        v: Option<&S<i64>>,
        path: &str,
        default: u64,
        min: u64,
        max: u64,
        why: &str,
    ) -> u64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        match u64::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                let mut msg = if min == 1 {
                    format!("must be > 0 and <= {max} (got {n})")
                } else {
                    format!("must be >= {min} and <= {max} (got {n})")
                };
                if n < min as i64 && !why.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(why);
                }
                self.sink.error(v.span(), path, msg);
                default
            }
        }
    }

    /// A byte or count limit; zero is never meaningful for these.
    fn size(&mut self, v: Option<&S<i64>>, path: &str, default: u64, max: u64, why: &str) -> usize {
        usize::try_from(self.int(v, path, default, 1, max, why)).unwrap_or(usize::MAX)
    }

    /// A `_ms` duration; zero would make every wait fail immediately.
    pub fn ms(&mut self, v: Option<&S<i64>>, path: &str, default: u64) -> Duration {
        let why = "a duration of zero or less would expire at once";
        Duration::from_millis(self.int(v, path, default, 1, DURATION_MS_MAX, why))
    }

    /// A Berry API `_seconds` duration; zero would make a timeout fire at once or a loop spin.
    pub fn secs(&mut self, v: Option<&S<i64>>, path: &str, default: u64) -> Duration {
        let why = "a duration of zero or less would expire at once or spin";
        Duration::from_secs(self.int(v, path, default, 1, DURATION_SECS_MAX, why))
    }

    /// A probability-like value in `[0, 1]` (or `(0, 1]` when `zero_ok` is false). NaN fails.
    fn fraction(&mut self, v: Option<&S<f64>>, path: &str, default: f64, zero_ok: bool) -> f64 {
        let Some(v) = v else { return default };
        let x = *v.get_ref();
        let ok = if zero_ok {
            (0.0..=1.0).contains(&x)
        } else {
            x > 0.0 && x <= 1.0
        };
        if ok {
            x
        } else {
            let low = if zero_ok { ">= 0" } else { "> 0" };
            self.sink
                .error(v.span(), path, format!("must be {low} and <= 1 (got {x})"));
            default
        }
    }

    /// A required, non-empty string; reports a missing key at `table_span` (its table header).
    pub fn required(
        &mut self,
        v: Option<&S<String>>,
        table_span: Range<usize>,
        path: &str,
    ) -> Option<String> {
        match v {
            None => {
                self.sink.error(table_span, path, "missing (required)");
                None
            }
            Some(v) if v.get_ref().trim().is_empty() => {
                self.sink.error(v.span(), path, "must not be empty");
                None
            }
            Some(v) => Some(v.get_ref().clone()),
        }
    }
}
