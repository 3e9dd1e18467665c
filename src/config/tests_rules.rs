//! Tests for the rules that are not leniencies: cross-references, limits, secrets and
//! positions. Same conventions as `tests.rs`: snippet lines count from the snippet.

use super::tests::{
    base_lines, check_err, check_snippet_err, check_warn, find, load, ok, with_base, BASE,
};
use super::*;

#[test]
fn env_secret_references() {
    let text = BASE
        .replace("sk-p-0123456789", "env:RELAY_KEY")
        .replace("tok-u-0123456789abcdef", "${USER_TOKEN}")
        .replace(
            "name = \"P\"",
            "name = \"P\"\nheaders = { \"OpenAI-Organization\" = \"${ORG}\", \"X-Plain\" = \"v\" }",
        );
    let c = ok(&text);
    let p = &c.providers[0];
    assert_eq!(
        p.api_key.as_ref().map(Secret::expose),
        Some("sk-from-env-SECRETVALUE-1")
    );
    assert_eq!(c.users[0].token.expose(), "tok-from-env-SECRETVALUE-2");
    let headers: Vec<(&str, &str)> = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [
            ("OpenAI-Organization", "org-SECRETVALUE-3"),
            ("X-Plain", "v")
        ]
    );
    let text = BASE
        .replace("sk-p-0123456789", "env:MISSING_KEY")
        .replace("tok-u-0123456789abcdef", "${MISSING_TOKEN}")
        .replace(
            "name = \"P\"",
            "name = \"P\"\nheaders = { \"X-Org\" = \"env:EMPTY\" }",
        );
    check_err(&text, &[
        (Some(3), "`providers.p.headers.X-Org`: must not be empty (value from environment variable `EMPTY`)"),
        (Some(5), "`providers.p.api_key`: environment variable `MISSING_KEY` is not set"),
        (Some(16), "`users.u.token`: environment variable `MISSING_TOKEN` is not set"),
    ]);
    check_err(
        &BASE.replace("sk-p-0123456789", "${sk-abc}"),
        &[(Some(4), "malformed secret reference")],
    );
}

#[test]
fn secrets_never_shown() {
    const MARK: &str = "SECRETVALUE";
    let text = BASE.replace("sk-p-0123456789", "env:RELAY_KEY").replace(
        "name = \"P\"",
        "name = \"P\"\nheaders = { \"X-Org\" = \"env:ORG\" }",
    );
    let c = ok(&text);
    let debug = format!("{c:?} {c:#?}");
    assert!(
        !debug.contains(MARK) && !debug.contains("tok-u-0123456789abcdef"),
        "{debug}"
    );
    assert!(!debug.contains("sk-"), "{debug}");
    // Every way a secret can be wrong, in one file; the display must not contain any of them.
    let text = format!(
        "{}[users.v]\nname = \"V\"\ntoken = \"tok-u-0123456789abcdef\"\n[users.w]\nname = \"W\"\ntoken = \"SECRETVALUE has spaces\"\n[users.x]\nname = \"X\"\ntoken = \"SECRETVALUE\"\n",
        BASE.replace("sk-p-0123456789", "SECRETVALUE\\u0001").replace("name = \"P\"", "name = \"P\"\nheaders = { \"X-A\" = \"SECRETVALUE\\r\\n\" }")
    );
    let err = load(&text).expect_err("secret errors");
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains(MARK) && !shown.contains("tok-u-0123456789abcdef"),
        "{shown}"
    );
    assert!(shown.contains("same token as `users.u`"), "{shown}");
    assert!(shown.contains("must not contain whitespace"), "{shown}");
    assert!(shown.contains("control character"), "{shown}");
    // A serde type error on a secret key would quote the value; it must be redacted.
    let err = load(&BASE.replace("\"tok-u-0123456789abcdef\"", "12345678901234567890"))
        .expect_err("type");
    assert!(!err.to_string().contains("12345678901234567890"), "{err}");
    assert!(
        err.to_string()
            .contains("15:9: error: `users.u.token`: wrong type"),
        "{err}"
    );
    // User info in a base_url may hold a password.
    let err = load(&BASE.replace("https://p.example", "https://me:SECRETVALUE@p.example"))
        .expect_err("userinfo");
    assert!(!err.to_string().contains(MARK), "{err}");
}

#[test]
fn every_wrong_type_is_reported_at_once_with_the_other_errors() {
    let text = r#"[server]
workers = "two"
header_bytes_max = "big"
[settings]
max_retries = -5
connect_timeout_ms = "x"
[providers.p]
name = 5
base_url = "http://127.0.0.1:1"
api_key = "sk-p-0123456789"
models = "m"
[models.m]
name = "m"
[[models.m.backends]]
provider = "p"
model = "m"
weight = "heavy"
[[models.m.backends]]
provider = "nope"
model = "m"
"#;
    let err = load(text).expect_err("many errors");
    for (line, needle) in [
        (2, "`server.workers`: invalid type: a string"),
        (3, "`server.header_bytes_max`: invalid type: a string"),
        (5, "`settings.max_retries`"),
        (6, "`settings.connect_timeout_ms`: invalid type: a string"),
        (8, "`providers.p.name`: invalid type: integer"),
        (11, "`providers.p.models`: invalid type: a string"),
        (17, "`models.m.backends[0].weight`: invalid type: a string"),
    ] {
        assert!(
            find(&err.diagnostics, Severity::Error, Some(line), needle).is_some(),
            "no error at line {line} containing {needle:?}; got:\n{err}"
        );
    }
    // Checks past deserialization still run, and a value taken out for its type is not
    // reported a second time as missing.
    assert!(err.to_string().contains("nope"), "{err}");
    let about_name = err
        .diagnostics
        .iter()
        .filter(|d| d.key == "providers.p.name")
        .count();
    assert_eq!(about_name, 1, "{err}");
}

#[test]
fn a_refused_value_has_no_follow_on_errors() {
    // One bad item takes its whole array out; what then reads as missing is not reported.
    let text = BASE.replace("models = [\"m1\", \"m2\"]", "models = [\"m1\", 5]");
    let err = load(&text).expect_err("bad item");
    let errors: Vec<_> = (err.diagnostics.iter())
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].key, "providers.p.models[1]", "{err}");
    // A whole provider of the wrong type: the backend naming it is not reported as well.
    let text = BASE.replace("[providers.p]\n", "[providers]\np = \"x\"\n[unused]\n");
    let err = load(&text).expect_err("bad provider");
    assert!(!err.to_string().contains("unknown provider"), "{err}");
    assert!(
        err.to_string().contains("`providers.p`: invalid type"),
        "{err}"
    );
}

#[test]
fn type_errors_have_lines() {
    let text = BASE.replace("model = \"m1\"", "model = \"m1\"\nweight = \"heavy\"");
    check_err(
        &text,
        &[(
            Some(12),
            "`models.m.backends[0].weight`: invalid type: a string, expected f64",
        )],
    );
    // The walk still reports unknown keys alongside serde's single error.
    let text = BASE.replace(
        "model = \"m1\"",
        "model = \"m1\"\nweight = \"heavy\"\ncolour = 1",
    );
    check_err(
        &text,
        &[
            (Some(12), "weight"),
            (Some(13), "`models.m.backends[0].colour`: unknown key"),
        ],
    );
    check_err(
        &with_base("[server]\nworkers = \"many\"\n"),
        &[(Some(base_lines() + 2), "`server.workers`: invalid type")],
    );
    check_err(
        "providers = 5\n",
        &[(
            Some(1),
            "`providers`: invalid type: integer `5`, expected a map",
        )],
    );
    check_err("[providers\n", &[(Some(1), "invalid TOML")]);
    check_err(
        "[server]\nworkers = 1\nworkers = 2\n",
        &[(Some(3), "duplicate key `workers`")],
    );
    check_err(
        "[server]\nworkers = 1\n[server]\n",
        &[(Some(3), "duplicate key `server`")],
    );
}

#[test]
fn model_and_backend_rules() {
    let n = base_lines();
    let model = |body: &str| format!("[models.x]\n{body}");
    let cases: &[(String, &[(usize, &str)])] = &[
        (model("name = \"m-name\"\nbackends = [{ provider = \"p\", model = \"m1\" }]\n"), &[(2, "duplicate model name \"m-name\": `models.m` already uses it")]),
        (model("name = \"m\"\nbackends = [{ provider = \"p\", model = \"m1\" }]\n"), &[(2, "is also the key of `models.m`")]),
        (model("name = \"a b\"\nbackends = [{ provider = \"p\", model = \"m1\" }]\n"), &[(2, "must not contain whitespace (got \"a b\")")]),
        (model("name = \"x\"\nbackends = []\n"), &[(3, "must have at least one backend")]),
        (model("name = \"x\"\n"), &[(1, "`models.x.backends`: missing (required)")]),
        (model("backends = [{ provider = \"p\", model = \"m1\" }]\n"), &[(1, "`models.x.name`: missing (required)")]),
        (model("name = \"x\"\nbackends = [{ provider = \"q\", model = \"m1\" }]\n"), &[(3, "unknown provider \"q\"")]),
        (model("name = \"x\"\nbackends = [{ provider = \"p\", model = \"m9\" }]\n"), &[(3, "\"m9\" is not in `providers.p.models` ([\"m1\", \"m2\"])")]),
        (model("name = \"x\"\nbackends = [{ provider = \"p\", model = \"m1\", weight = 101 }]\n"), &[(3, "must be > 0 and <= 100 (got 101)")]),
        (model("name = \"x\"\nbackends = [{ provider = \"p\", model = \"m1\", weight = nan }]\n"), &[(3, "(got NaN)")]),
        (model("name = \"x\"\nbackends = [{ provider = \"p\", model = \"m1\", priority = 11 }]\n"), &[(3, "`models.x.backends[0].priority`: must be >= 0 and <= 10 (got 11)")]),
        (model("name = \"x\"\nbackends = [{ provider = \"p\", model = \"m1\", tags = [\"a b\"] }]\n"), &[(3, "`models.x.backends[0].tags[0]`: tags must be non-empty and contain no whitespace")]),
        (model("name = \"x\"\nbackends = [{ provider = \"p\", model = \"m1\", enabled = false }]\n"), &[(3, "an enabled model needs at least one enabled backend")]),
        ("[users.v]\nname = \"V\"\ntoken = \"tok-v has spaces-0123\"\n".to_string(), &[(3, "must not contain whitespace")]),
        ("[users.v]\nname = \"\"\ntoken = \"tok-u-0123456789abcdef\"\n".to_string(), &[(2, "`users.v.name`: must not be empty"), (3, "same token as `users.u`")]),
        ("[providers.q]\nname = \"Q\"\nbase_url = \"https://q/api\"\napi_key = \"k\"\nmodels = []\ntimeout_seconds = 301\n".to_string(), &[(5, "must list at least one"), (6, "`providers.q.timeout_seconds`: must be > 0 and <= 300 (got 301)")]),
        ("[providers.q]\nname = \"Q\"\nbase_url = \"ftp://q\"\napi_key = \"0123456789\"\nmodels = [\"\"]\nheaders = { Host = \"x\" }\n".to_string(), &[(3, "must start with `http://` or `https://` (got \"ftp://q\")"), (5, "`providers.q.models[0]`: must not be empty"), (6, "`providers.q.headers.Host`: is set by the gateway")]),
    ];
    for (snippet, expected) in cases {
        let shifted: Vec<(Option<usize>, &str)> =
            expected.iter().map(|&(l, s)| (Some(l + n), s)).collect();
        check_err(&with_base(snippet), &shifted);
    }
    let disabled_model = model("name = \"x\"\nenabled = false\nbackends = [{ provider = \"p\", model = \"m1\", enabled = false }]\n");
    assert!(!ok(&with_base(&disabled_model)).models[1].enabled);
}

#[test]
fn server_and_settings_rules() {
    let c = ok(&with_base(concat!(
        "[server]\nbind_address = \"0.0.0.0:3000\"\nworkers = 0\ndriver = \"epoll\"\n",
        "[settings]\nrequest_timeout_seconds = 45\n",
    )));
    assert_eq!(c.server.bind_address.as_deref(), Some("0.0.0.0:3000"));
    assert_eq!(c.server.workers, None);
    assert_eq!(c.server.driver, DriverChoice::Epoll);
    assert_eq!(c.settings.first_byte_timeout, Duration::from_secs(45));
    let n = base_lines();
    let c = check_warn(
        &with_base("[settings]\nrequest_timeout_seconds = 30\n"),
        &[(
            Some(n + 2),
            "now the first-byte timeout of every relayed request",
        )],
    );
    assert_eq!(c.settings.first_byte_timeout, Duration::from_secs(30));
    let c = ok(&with_base("[server]\nworkers = 3\ndriver = \"io_uring\"\n"));
    assert_eq!(
        (c.server.workers, c.server.driver),
        (Some(3), DriverChoice::Uring)
    );
    check_snippet_err(
        "[server]\nbind_address = \"3000\"\ndriver = \"kqueue\"\nheader_bytes_max = 0\nbody_bytes_max = -1\nclient_idle_timeout_ms = 0\nworkers = 5000\n",
        &[
            (2, "`server.bind_address`: must be `ip:port`"),
            (3, "must be one of `auto`, `uring`, `epoll` (got \"kqueue\")"),
            (4, "`server.header_bytes_max`: must be > 0 and <= 1048576 (got 0): no request head would fit"),
            (5, "(got -1): no chat request would fit"),
            (6, "a duration of zero or less would expire at once"),
            (7, "`server.workers`: must be >= 0 and <= 1024 (got 5000)"),
        ],
    );
    // `serve` does not resolve host names, so validation must not pass one.
    check_snippet_err(
        "[server]\nbind_address = \"localhost:19214\"\n",
        &[(2, "must be `ip:port`, such as `0.0.0.0:3000` or `[::1]:3000`; host names are not resolved (got \"localhost:19214\")")],
    );
    assert_eq!(
        ok(&with_base("[server]\nbind_address = \"[::]:3000\"\n"))
            .server
            .bind_address
            .as_deref(),
        Some("[::]:3000")
    );
    check_snippet_err(
        "[settings]\nfirst_byte_timeout_ms = 1000\nrequest_timeout_seconds = 30\nhealth_check_interval_seconds = 0\ncircuit_breaker_failure_threshold = 0\n[settings.smart_ai]\ninitial_confidence = 0.5\nmin_confidence = 0.6\nexploration_ratio = 1.5\nnon_premium_stability_bonus = 0.9\n",
        &[
            (3, "conflicts with `settings.first_byte_timeout_ms` (line "),
            (4, "`settings.health_check_interval_seconds`: must be > 0"),
            (5, "the breaker would open before any failure"),
            (8, "must be <= initial_confidence (0.5) (got 0.6)"),
            (9, "must be >= 0 and <= 1 (got 1.5)"),
            (10, "must be >= 1 and <= 10 (got 0.9)"),
        ],
    );
    let c = ok(&with_base(
        "[settings]\npool_idle_per_backend_max = 0\nmax_retries = 0\n",
    ));
    assert_eq!(
        (c.settings.pool_idle_per_backend_max, c.settings.max_retries),
        (0, 0)
    );
    let text = with_base("[settings]\ntotal_timeout_ms = 1000\npool_idle_timeout_ms = 5000\n");
    let n = base_lines();
    check_warn(
        &text,
        &[
            (Some(n + 2), "always fire first"),
            (Some(n + 3), "uvicorn/vLLM"),
        ],
    );
}

#[test]
fn provider_timeout_below_a_minute_warns() {
    let with_timeout = |secs: u64| {
        BASE.replace(
            "name = \"P\"",
            &format!("name = \"P\"\ntimeout_seconds = {secs}"),
        )
    };
    let c = check_warn(
        &with_timeout(30),
        &[(
            Some(3),
            "`providers.p.timeout_seconds`: bounds the time to the first response byte of every \
             request to this provider (Berry API used it only as a connect timeout), which for \
             a non-streaming answer is the whole generation; 30 s may cut off",
        )],
    );
    assert_eq!(
        c.providers[0].first_byte_timeout,
        Some(Duration::from_secs(30))
    );
    let c = ok(&with_timeout(60));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn user_tags_that_exclude_every_backend_of_a_model_warn() {
    // Model `m`'s one backend is tagged "premium"; user `u` gets the snippet's keys.
    let tagged = BASE.replace("model = \"m1\"\n", "model = \"m1\"\ntags = [\"premium\"]\n");
    let with_user = |keys: &str| format!("{tagged}{keys}");
    let user_line = tagged.lines().count() + 1;
    let c = check_warn(
        &with_user("tags = [\"basic\"]\n"),
        &[(
            Some(user_line),
            "`users.u.tags`: user `u` with tags [\"basic\"] reaches no backend of model `m` \
             (\"m-name\"): a caller with tags only reaches untagged backends and those sharing a \
             tag, so every request for it would get 503",
        )],
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    // Not a trap: a shared tag, no tags, a disabled user, or a model the user may not call.
    let other_model =
        "[models.x]\nname = \"x\"\nbackends = [{ provider = \"p\", model = \"m2\" }]\n";
    for keys in [
        "tags = [\"basic\", \"premium\"]\n".to_string(),
        "tags = []\n".to_string(),
        "tags = [\"basic\"]\nenabled = false\n".to_string(),
        format!("tags = [\"basic\"]\nallowed_models = [\"x\"]\n{other_model}"),
    ] {
        let c = ok(&with_user(&keys));
        assert!(c.warnings.is_empty(), "{keys}: {:?}", c.warnings);
    }
    // An untagged backend beside the tagged one is reachable; a disabled one is not.
    let untagged = "[[models.m.backends]]\nprovider = \"p\"\nmodel = \"m2\"\n";
    let text = format!("{tagged}tags = [\"basic\"]\n{untagged}");
    assert!(ok(&text).warnings.is_empty());
    let text = format!("{tagged}tags = [\"basic\"]\n{untagged}enabled = false\n");
    check_warn(
        &text,
        &[(Some(user_line), "reaches no backend of model `m`")],
    );
}

#[test]
fn admin_token_rules() {
    assert!(ok(BASE).server.admin_token.is_none(), "unset by default");
    let c = ok(&with_base(
        "[server]\nadmin_token = \"admin-0123456789abcdef\"\n",
    ));
    assert_eq!(
        c.server.admin_token.as_ref().map(Secret::expose),
        Some("admin-0123456789abcdef")
    );
    // Like every secret: from the environment, and never shown.
    let env = |name: &str| (name == "ADMIN").then(|| "admin-from-env-SECRETVALUE".to_string());
    for reference in ["env:ADMIN", "${ADMIN}"] {
        let text = with_base(&format!("[server]\nadmin_token = \"{reference}\"\n"));
        let c = load_str_with_env(&text, "config.toml", &env).expect("valid");
        assert_eq!(
            c.server.admin_token.as_ref().map(Secret::expose),
            Some("admin-from-env-SECRETVALUE")
        );
        assert!(!format!("{c:?}").contains("SECRETVALUE"));
    }
    check_snippet_err(
        "[server]\nadmin_token = \"env:NOT_SET\"\n",
        &[(
            2,
            "`server.admin_token`: environment variable `NOT_SET` is not set",
        )],
    );
    // The user token rules apply: long enough to resist guessing, no whitespace.
    check_snippet_err(
        "[server]\nadmin_token = \"SECRETVALUE\"\n",
        &[(
            2,
            "`server.admin_token`: must be at least 16 characters (got 11)",
        )],
    );
    check_snippet_err(
        "[server]\nadmin_token = \"SECRETVALUE with spaces\"\n",
        &[(2, "`server.admin_token`: must not contain whitespace")],
    );
    // A user's token would let that user read the admin views.
    check_snippet_err(
        "[server]\nadmin_token = \"tok-u-0123456789abcdef\"\n",
        &[(
            2,
            "same token as `users.u`; the admin token must be its own",
        )],
    );
    // Misspelt, it is an unknown key, not silently "no token".
    check_snippet_err(
        "[server]\nadmin_tokn = \"admin-0123456789abcdef\"\n",
        &[(2, "`server.admin_tokn`: unknown key")],
    );
    let err = load(&with_base("[server]\nadmin_token = 12345678901234567890\n")).expect_err("type");
    let shown = err.to_string();
    assert!(
        shown.contains("`server.admin_token`: wrong type (value not shown"),
        "{shown}"
    );
    assert!(!shown.contains("12345678901234567890"), "{shown}");
    let err = load(&with_base("[server]\nadmin_token = \"SECRETVALUE\"\n")).expect_err("short");
    assert!(!format!("{err} {err:?}").contains("SECRETVALUE"));
    // A token written one level too high sits under no secret key: still not echoed.
    for misplaced in [
        "[users]\nv = \"SECRET-TOKEN-abcdefgh123\"\n",
        "[providers]\nq = \"SECRET-TOKEN-abcdefgh123\"\n",
    ] {
        let err = load(&with_base(misplaced)).expect_err("misplaced");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRET-TOKEN"), "{shown}");
        assert!(shown.contains("invalid type: a string"), "{shown}");
    }
}

#[test]
fn diagnostic_positions_count_characters() {
    // Two multi-byte characters before the bad value on its line.
    let text = BASE.replace("model = \"m1\"", "model = \"m1\"\n\"wé✓\" = 1");
    let err = load(&text).expect_err("unknown key");
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (Some(12), Some(1)));
    assert_eq!(d.key, "models.m.backends[0].\"wé✓\"");
    let text = BASE.replace("name = \"m-name\"", "name = \"m-name\" ; é\nstrategy = 1");
    let err = load(&text).expect_err("syntax");
    assert_eq!(err.diagnostics[0].line, Some(8));
}

#[test]
fn observability_table() {
    let c = ok(BASE);
    assert!(c.observability.metrics);
    assert_eq!(
        c.observability.access_log,
        crate::telemetry::access::Target::Stdout
    );
    assert_eq!(c.observability.stream_usage, StreamUsage::Pass);
    let c = ok(&with_base(
        "[observability]\nmetrics = false\naccess_log = \"/var/log/berry/access.log\"\n\
         access_log_format = \"text\"\nlog_level = \"warn,berry::proxy=debug\"\n\
         stream_usage = \"inject\"\nmetrics_admin_only = true\n",
    ));
    let o = &c.observability;
    assert!(!o.metrics && o.metrics_admin_only);
    assert_eq!(
        o.access_log,
        crate::telemetry::access::Target::File("/var/log/berry/access.log".into())
    );
    assert_eq!(o.access_log_format, crate::telemetry::access::Format::Text);
    assert_eq!(o.log_level, "warn,berry::proxy=debug");
    assert_eq!(o.stream_usage, StreamUsage::Inject);
    let n = base_lines();
    check_err(
        &with_base(
            "[observability]\nstream_usage = \"always\"\naccess_log_format = \"xml\"\n\
             log_level = \"info,berry=shouting\"\nmetric = true\n",
        ),
        &[
            (
                Some(n + 2),
                "`observability.stream_usage`: must be one of `pass`, `inject`",
            ),
            (
                Some(n + 3),
                "`observability.access_log_format`: must be one of `json`, `text`",
            ),
            (Some(n + 4), "`observability.log_level`: must be a level"),
            (Some(n + 5), "`observability.metric`: unknown key"),
        ],
    );
}

#[test]
fn cors_allow_origins_rules() {
    // Absent: every origin, like OpenAI's API and Berry API.
    assert_eq!(ok(BASE).server.cors_allow_origins, CorsOrigins::Any);
    let only = |snippet: &str| ok(&with_base(snippet)).server.cors_allow_origins;
    assert_eq!(
        only("[server]\ncors_allow_origins = [\"https://App.example.com\", \"http://localhost:5173\"]\n"),
        CorsOrigins::Only(vec![
            "https://app.example.com".into(),
            "http://localhost:5173".into()
        ])
    );
    assert_eq!(
        only("[server]\ncors_allow_origins = []\n"),
        CorsOrigins::Off
    );
    check_snippet_err(
        "[server]\ncors_allow_origins = [\n  \"https://ok.example.com\",\n  \"https://app.example.com/\",\n  \"app.example.com\",\n]\n",
        &[
            (4, "`server.cors_allow_origins[1]`: must be \"*\" or an origin"),
            (4, "no trailing slash"),
            (5, "`server.cors_allow_origins[2]`: must be \"*\" or an origin"),
        ],
    );
    check_snippet_err(
        "[server]\ncors_allow_origins = \"*\"\n",
        &[(2, "server.cors_allow_origins")],
    );
    let n = base_lines();
    let c = check_warn(
        &with_base("[server]\ncors_allow_origins = [\"*\", \"https://a.example\"]\n"),
        &[(Some(n + 2), "the other entries have no effect")],
    );
    assert_eq!(c.server.cors_allow_origins, CorsOrigins::Any);
}
