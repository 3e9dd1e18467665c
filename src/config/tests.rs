//! Rule-by-rule tests: each rule gets a TOML snippet and the diagnostics (line + text) it must
//! produce. Snippets are appended to `BASE`, a valid config, and their expected lines are
//! counted from the snippet's first line, so the tests read like the files they describe.

use super::*;

pub(super) const BASE: &str = r#"[providers.p]
name = "P"
base_url = "https://p.example"
api_key = "sk-p-0123456789"
models = ["m1", "m2"]

[models.m]
name = "m-name"
[[models.m.backends]]
provider = "p"
model = "m1"

[users.u]
name = "U"
token = "tok-u-0123456789abcdef"
"#;

pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "RELAY_KEY" => Some("sk-from-env-SECRETVALUE-1".to_string()),
        "USER_TOKEN" => Some("tok-from-env-SECRETVALUE-2".to_string()),
        "ORG" => Some("org-SECRETVALUE-3".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

pub(super) fn load(text: &str) -> Result<Config, ConfigError> {
    load_str_with_env(text, "config.toml", &env)
}

pub(super) fn ok(text: &str) -> Config {
    load(text).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

pub(super) fn base_lines() -> usize {
    BASE.lines().count()
}

pub(super) fn with_base(snippet: &str) -> String {
    format!("{BASE}{snippet}")
}

pub(super) fn find<'a>(
    diags: &'a [Diagnostic],
    sev: Severity,
    line: Option<usize>,
    needle: &str,
) -> Option<&'a Diagnostic> {
    diags
        .iter()
        .find(|d| d.severity == sev && d.line == line && (d.to_string().contains(needle)))
}

/// Asserts the full file fails and that each `(line, text)` matches some error; `text` is
/// searched in the diagnostic's display form, so it can name the key path or the message.
pub(super) fn check_err(text: &str, expected: &[(Option<usize>, &str)]) {
    let err = match load(text) {
        Ok(_) => panic!("expected errors {expected:?}, but the config loaded"),
        Err(err) => err,
    };
    for &(line, needle) in expected {
        assert!(
            find(&err.diagnostics, Severity::Error, line, needle).is_some(),
            "no error at line {line:?} containing {needle:?}; got:\n{err}"
        );
    }
}

/// Like `check_err`, for a snippet appended to `BASE`; lines count from the snippet.
pub(super) fn check_snippet_err(snippet: &str, expected: &[(usize, &str)]) {
    let shifted: Vec<(Option<usize>, &str)> = expected
        .iter()
        .map(|&(l, s)| (Some(l + base_lines()), s))
        .collect();
    check_err(&with_base(snippet), &shifted);
}

/// Asserts the full file loads and has each `(line, text)` warning.
pub(super) fn check_warn(text: &str, expected: &[(Option<usize>, &str)]) -> Config {
    let config = ok(text);
    for &(line, needle) in expected {
        assert!(
            find(&config.warnings, Severity::Warning, line, needle).is_some(),
            "no warning at line {line:?} containing {needle:?}; got {:#?}",
            config.warnings
        );
    }
    config
}

#[test]
fn base_loads_with_defaults() {
    let c = ok(BASE);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.server.header_bytes_max, 32768);
    assert_eq!(c.server.headers_count_max, 64);
    assert_eq!(c.server.body_bytes_max, 16 * 1024 * 1024);
    assert_eq!(c.server.connections_per_shard_max, 10_000);
    assert_eq!(c.server.client_header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.client_body_timeout, Duration::from_secs(30));
    assert_eq!(c.server.client_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.workers, None);
    assert_eq!(c.server.driver, DriverChoice::Auto);
    assert!(!c.server.allow_anonymous);
    let s = &c.settings;
    assert_eq!(s.max_retries, 3);
    assert_eq!(s.connect_timeout, Duration::from_millis(5000));
    assert_eq!(s.first_byte_timeout, Duration::from_secs(120));
    assert_eq!(s.stream_idle_timeout, Duration::from_secs(120));
    assert_eq!(s.total_timeout, Duration::from_secs(900));
    assert_eq!(s.pool_idle_per_backend_max, 256);
    assert_eq!(s.pool_idle_timeout, Duration::from_millis(4000));
    assert_eq!(s.response_buffer_bytes_max, 262_144);
    assert_eq!(s.health_check_interval, Duration::from_secs(30));
    assert_eq!(s.recovery_check_interval, Duration::from_secs(120));
    assert_eq!(s.circuit_breaker_failure_threshold, 5);
    assert_eq!(s.circuit_breaker_timeout, Duration::from_secs(60));
    assert_eq!(s.max_internal_retries, 2);
    assert_eq!(s.health_check_timeout, Duration::from_secs(10));
    assert_eq!(s.smart_ai.initial_confidence, 0.8);
    assert_eq!(s.smart_ai.min_confidence, 0.05);
    assert!(s.smart_ai.enable_time_decay);
    assert_eq!(
        s.smart_ai.lightweight_check_interval,
        Duration::from_secs(600)
    );
    assert_eq!(s.smart_ai.exploration_ratio, 0.2);
    assert_eq!(s.smart_ai.non_premium_stability_bonus, 1.1);
    assert_eq!(s.smart_ai.adjustments.auth_error_penalty, 0.8);
    assert_eq!(s.smart_ai.adjustments.timeout_penalty, 0.2);
    let b = &c.models[0].backends[0];
    assert_eq!((b.weight, b.priority, b.enabled), (1.0, 0, true));
    assert_eq!(b.billing_mode, BillingMode::PerToken);
    assert_eq!(c.models[0].strategy, Strategy::WeightedRandom);
    let u = &c.users[0];
    assert_eq!(
        (
            u.allowed_models.clone(),
            u.rate_limit,
            u.allow_backend_override
        ),
        (None, None, false)
    );
    assert_eq!(c.providers[0].backend_type, BackendType::OpenAi);
    assert_eq!(c.providers[0].first_byte_timeout, None);
}

#[test]
fn backend_type_spellings() {
    let cases = [
        ("openai", BackendType::OpenAi),
        ("open_a_i", BackendType::OpenAi),
        ("OpenAI", BackendType::OpenAi),
        ("claude", BackendType::Claude),
        ("Claude", BackendType::Claude),
        ("gemini", BackendType::Gemini),
        ("Gemini", BackendType::Gemini),
    ];
    for (spelling, want) in cases {
        let text = BASE.replace(
            "models = [\"m1\", \"m2\"]",
            &format!("models = [\"m1\", \"m2\"]\nbackend_type = \"{spelling}\""),
        );
        let c = ok(&text);
        assert_eq!(c.providers[0].backend_type, want, "{spelling}");
        // Only OpenAI is spoken, so the other two values are a trap worth a warning.
        let warned = find(
            &c.warnings,
            Severity::Warning,
            Some(6),
            "`providers.p.backend_type`: Berry sends OpenAI-format requests (Bearer key, \
             `/chat/completions`) to every provider;",
        );
        assert_eq!(
            warned.is_some(),
            want != BackendType::OpenAi,
            "{spelling}: {:?}",
            c.warnings
        );
        if want != BackendType::OpenAi {
            assert!(c.warnings[0].to_string().contains(
                "so `base_url` must be the vendor's OpenAI-compatible endpoint, such as `https://"
            ));
        }
    }
    let text = BASE.replace(
        "models = [\"m1\", \"m2\"]",
        "models = [\"m1\", \"m2\"]\nbackend_type = \"azure\"",
    );
    check_err(
        &text,
        &[(
            Some(6),
            "`providers.p.backend_type`: must be `openai`, `claude` or `gemini` (got \"azure\")",
        )],
    );
}

#[test]
fn strategy_spellings() {
    let cases = [
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
        ("SmartAI", "SmartAI", Strategy::SmartAi),
    ];
    for (snake, camel, want) in cases {
        for spelling in [snake, camel] {
            let text = BASE.replace(
                "name = \"m-name\"",
                &format!("name = \"m-name\"\nstrategy = \"{spelling}\""),
            );
            assert_eq!(ok(&text).models[0].strategy, want, "{spelling}");
        }
    }
    let text = BASE.replace(
        "name = \"m-name\"",
        "name = \"m-name\"\nstrategy = \"fastest\"",
    );
    check_err(
        &text,
        &[(
            Some(9),
            "unknown strategy \"fastest\"; expected one of weighted_random",
        )],
    );
}

#[test]
fn billing_mode_spellings() {
    for (spelling, want) in [
        ("per_token", BillingMode::PerToken),
        ("PerToken", BillingMode::PerToken),
        ("per_request", BillingMode::PerRequest),
        ("PerRequest", BillingMode::PerRequest),
    ] {
        let text = BASE.replace(
            "model = \"m1\"",
            &format!("model = \"m1\"\nbilling_mode = \"{spelling}\""),
        );
        assert_eq!(
            ok(&text).models[0].backends[0].billing_mode,
            want,
            "{spelling}"
        );
    }
    let text = BASE.replace(
        "model = \"m1\"",
        "model = \"m1\"\nbilling_mode = \"per_second\"",
    );
    check_err(
        &text,
        &[(
            Some(12),
            "`models.m.backends[0].billing_mode`: must be `per_token` or `per_request`",
        )],
    );
}

#[test]
fn users_optional_providers_and_models_required() {
    let no_users = &BASE[..BASE.find("[users.u]").unwrap_or(BASE.len())];
    let c = check_warn(no_users, &[(None, "no users are defined")]);
    assert!(c.users.is_empty());
    let anon = format!("{no_users}[server]\nallow_anonymous = true\n");
    assert!(ok(&anon).warnings.is_empty());
    check_err(
        "[users.u]\nname = \"U\"\ntoken = \"tok-u-0123456789abcdef\"\n",
        &[
            (None, "`providers`: missing required table"),
            (None, "`models`: missing required table"),
        ],
    );
    check_err("", &[(None, "`providers`: missing required table")]);
    check_err(
        "providers = {}\nmodels = {}\n",
        &[
            (Some(1), "at least one provider"),
            (Some(2), "at least one model"),
        ],
    );
}

#[test]
fn rate_limits() {
    let c = ok(&BASE.replace(
        "[users.u]",
        "[users.u.rate_limit]\nrequests_per_minute = 30\n[users.u]",
    ));
    let rl = c.users[0].rate_limit.expect("rate limit");
    assert_eq!(
        (
            rl.requests_per_minute,
            rl.requests_per_hour,
            rl.requests_per_day
        ),
        (Some(30), None, None)
    );
    let c = ok(&with_base(
        "rate_limit = { requests_per_hour = 5, requests_per_day = 5 }\n",
    ));
    let rl = c.users[0].rate_limit.expect("rate limit");
    assert_eq!(
        (
            rl.requests_per_minute,
            rl.requests_per_hour,
            rl.requests_per_day
        ),
        (None, Some(5), Some(5))
    );
    assert!(ok(&with_base("rate_limit = {}\n")).users[0]
        .rate_limit
        .is_none());
    check_snippet_err(
        "[users.u.rate_limit]\nrequests_per_minute = 0\nrequests_per_hour = 10\nrequests_per_day = 9\n",
        &[
            (2, "`users.u.rate_limit.requests_per_minute`: must be > 0"),
            (4, "`users.u.rate_limit.requests_per_day`: must be >= requests_per_hour (10) (got 9)"),
        ],
    );
    check_snippet_err(
        "[users.u.rate_limit]\nrequests_per_minute = 100\nrequests_per_day = 50\n",
        &[(3, "must be >= requests_per_minute (100) (got 50)")],
    );
    check_snippet_err(
        "[users.u.rate_limit]\nrequests_per_hour = 5000000000\n",
        &[(2, "must be > 0 and <= 4294967295 (got 5000000000)")],
    );
}

#[test]
fn allowed_models_by_key_or_name() {
    let extra = "[models.other]\nname = \"other-name\"\n[[models.other.backends]]\nprovider = \"p\"\nmodel = \"m2\"\n";
    for entries in [r#"["m"]"#, r#"["m-name"]"#, r#"["m", "m-name"]"#] {
        let text = format!(
            "{}{extra}",
            BASE.replace(
                "[users.u]",
                &format!("[users.u]\nallowed_models = {entries}")
            )
        );
        let c = ok(&text);
        let want = c.model_by_request_name("m").expect("model m");
        assert_eq!(c.users[0].allowed_models, Some(vec![want]), "{entries}");
    }
    let text = BASE.replace(
        "[users.u]",
        "[users.u]\nallowed_models = [\"m\", \"gpt-5\"]",
    );
    check_err(
        &text,
        &[(
            Some(14),
            "`users.u.allowed_models[1]`: unknown model \"gpt-5\"",
        )],
    );
    // Berry API's meaning of an empty list: every model.
    let text = BASE.replace("[users.u]", "[users.u]\nallowed_models = []");
    assert_eq!(ok(&text).users[0].allowed_models, None);
}

#[test]
fn api_key_rules() {
    let disabled = BASE.replace("api_key = \"sk-p-0123456789\"", "enabled = false");
    let c = check_warn(
        &disabled,
        &[(Some(9), "every enabled backend's provider is disabled")],
    );
    assert!(c.providers[0].api_key.is_none());
    let missing = BASE.replace("api_key = \"sk-p-0123456789\"\n", "");
    check_err(
        &missing,
        &[(
            Some(1),
            "`providers.p.api_key`: missing: required for an enabled provider",
        )],
    );
    let empty = BASE.replace("sk-p-0123456789", "");
    check_err(
        &empty,
        &[(Some(4), "must not be empty for an enabled provider")],
    );
    let short = BASE.replace("sk-p-0123456789", "sk-short");
    check_warn(&short, &[(Some(4), "is shorter than 10 characters")]);
    // A disabled provider may keep an empty key or a reference to an unset variable.
    let text = BASE.replace(
        "api_key = \"sk-p-0123456789\"",
        "enabled = false\napi_key = \"env:NOPE\"",
    );
    check_warn(
        &text,
        &[(
            Some(5),
            "`NOPE` is not set; ignored because the provider is disabled",
        )],
    );
}

#[test]
fn unknown_keys_are_errors_with_lines() {
    let text = BASE.replace("model = \"m1\"", "model = \"m1\"\nwieght = 2");
    check_err(
        &text,
        &[(
            Some(12),
            "`models.m.backends[0].wieght`: unknown key; did you mean `weight`?",
        )],
    );
    // Every unknown key is reported, not just the first.
    check_snippet_err(
        "[settings]\nconnect_timeout = 5\n[server]\nbind = \"0.0.0.0:1\"\n[metrics]\nx = 1\n",
        &[
            (2, "`settings.connect_timeout`: unknown key"),
            (4, "`server.bind`: unknown key"),
            (5, "`metrics`: unknown key"),
        ],
    );
    let text = BASE.replace(
        "name = \"P\"",
        "name = \"P\"\nheaders = { \"X-A\" = \"1\" }\n\"odd key\" = 1",
    );
    check_err(
        &text,
        &[(Some(4), "`providers.p.\"odd key\"`: unknown key")],
    );
}

#[test]
fn two_errors_two_lines() {
    let text = BASE
        .replace("model = \"m1\"", "model = \"m1\"\nweight = 0")
        .replace("tok-u-0123456789abcdef", "short");
    let err = load(&text).expect_err("two errors");
    let errors: Vec<_> = err
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 2, "{err}");
    assert_eq!(
        errors[0].to_string(),
        "12:10: error: `models.m.backends[0].weight`: must be > 0 and <= 100 (got 0)"
    );
    assert_eq!(errors[1].line, Some(16));
    assert!(errors[1].message.contains("at least 16 characters (got 5)"));
    let shown = err.to_string();
    assert!(shown.starts_with("config.toml:12:10: error: `models.m.backends[0].weight`: must be > 0 and <= 100 (got 0)\n"), "{shown}");
    assert_eq!(shown.lines().count(), 2);
}

#[test]
fn berry_era_keys_warn() {
    let text = with_base(concat!(
        "[settings.batch_metrics]\nbatch_size = 100\n",
        "[settings.smart_ai]\nenabled = true\nsmall_traffic_threshold = 100\ncost_control_factor = 0.8\nhealth_check_weight = 0.3\n",
    ));
    let n = base_lines();
    let c = check_warn(
        &text,
        &[
            (
                Some(n + 1),
                "`settings.batch_metrics`: Berry API documented this table but never read it",
            ),
            (
                Some(n + 4),
                "`settings.smart_ai.enabled`: written by `berry-cli generate-config`",
            ),
            (Some(n + 5), "`settings.smart_ai.small_traffic_threshold`"),
            (Some(n + 6), "`settings.smart_ai.cost_control_factor`"),
            (Some(n + 7), "`settings.smart_ai.health_check_weight`"),
        ],
    );
    assert_eq!(c.warnings.len(), 5);
    let text = BASE.replace(
        "name = \"P\"",
        "name = \"P\"\nmax_retries = 3\ntags = [\"x\"]",
    );
    check_warn(
        &text,
        &[
            (
                Some(3),
                "`providers.p.max_retries`: Berry API never used a per-provider retry count",
            ),
            (
                Some(4),
                "`providers.p.tags`: Berry API never read provider tags",
            ),
        ],
    );
    // Ignoring this one would have granted every model, so it is an error.
    check_err(
        &with_base("models = [\"m\"]\n"),
        &[(Some(base_lines() + 1), "did you mean `allowed_models`?")],
    );
}

#[test]
fn model_lookup_by_key_then_name() {
    let extra = "[models.zeta]\nname = \"alpha\"\n[[models.zeta.backends]]\nprovider = \"p\"\nmodel = \"m2\"\n";
    let c = ok(&format!("{BASE}{extra}"));
    // Sorted by display name: "alpha" (key zeta) before "m-name" (key m).
    assert_eq!(
        c.models.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["zeta", "m"]
    );
    assert_eq!(c.model_by_request_name("zeta"), Some(0));
    assert_eq!(c.model_by_request_name("alpha"), Some(0));
    assert_eq!(c.model_by_request_name("m"), Some(1));
    assert_eq!(c.model_by_request_name("m-name"), Some(1));
    assert_eq!(c.model_by_request_name("nope"), None);
    assert_eq!(c.provider_index("p"), Some(0));
    assert_eq!(c.provider_index("q"), None);
}
