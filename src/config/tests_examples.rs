//! The shipped example files and the digest's Berry API example must load, plus robustness:
//! no input (empty, binary, deeply nested, every prefix of a real file) may panic.
//! `include_str!` paths are relative to `src/config/`, so they resolve the same way in the
//! scratch crate and in the main crate.

use super::tests::{check_err, ok};
use super::*;

fn any_env(name: &str) -> Option<String> {
    Some(format!("test-value-for-{name}"))
}

/// The shipped examples must load on a machine with no variables set.
fn no_env(_: &str) -> Option<String> {
    None
}

fn load_example(text: &str, origin: &str) -> Config {
    load_str_with_env(text, origin, &no_env).unwrap_or_else(|e| panic!("{origin}:\n{e}"))
}

/// Berry API digest, section 2.4: valid for Berry API HEAD, so it must load here unchanged.
const DIGEST_EXAMPLE: &str = r#"[settings]
health_check_interval_seconds = 30
recovery_check_interval_seconds = 120
max_internal_retries = 2

[providers.relay_a]                 # OpenAI-compatible; backend_type omitted on purpose
name = "Cheap relay A"
base_url = "https://relay-a.example.com"   # no /v1 suffix
api_key = "sk-relay-a-xxxxxxxxxxxx"
models = ["gpt-4o", "gpt-4o-mini"]
timeout_seconds = 30

[providers.official]
name = "Official OpenAI"
base_url = "https://api.openai.com"
api_key = "sk-official-xxxxxxxxxxxx"
models = ["gpt-4o"]
headers = { "OpenAI-Organization" = "org-123" }

[models.gpt_4o]
name = "gpt-4o"
strategy = "smart_ai"
[[models.gpt_4o.backends]]
provider = "relay_a"
model = "gpt-4o"
weight = 3.0
billing_mode = "per_request"        # passive validation only
[[models.gpt_4o.backends]]
provider = "official"
model = "gpt-4o"
weight = 1.0
tags = ["premium"]                  # no stability bonus; also a routing tag!

[models.mini]
name = "gpt-4o-mini"
[[models.mini.backends]]
provider = "relay_a"
model = "gpt-4o-mini"

[users.alice]
name = "Alice"
token = "berry-alice-0123456789abcdef"   # allowed_models empty = all models

[users.bob]
name = "Bob"
token = "berry-bob-0123456789abcdef"
allowed_models = ["mini"]                # model KEY, not "gpt-4o-mini"
tags = ["basic"]                         # sees only untagged backends or ones tagged "basic"
[users.bob.rate_limit]
requests_per_minute = 30
requests_per_hour = 600
requests_per_day = 5000
"#;

#[test]
fn digest_example_loads_with_expected_values() {
    let c = ok(DIGEST_EXAMPLE);
    // Flagged: the Berry API keys that have no effect in Berry, and the provider timeout
    // that means more here (the first byte, not the connection).
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "settings.recovery_check_interval_seconds",
            "settings.max_internal_retries",
            "providers.relay_a.timeout_seconds"
        ],
        "{:?}",
        c.warnings
    );
    assert_eq!(c.settings.health_check_interval, Duration::from_secs(30));
    assert_eq!(c.settings.recovery_check_interval, Duration::from_secs(120));
    assert_eq!(c.settings.max_internal_retries, 2);
    // Providers sorted by id.
    let ids: Vec<&str> = c.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["official", "relay_a"]);
    let relay = &c.providers[1];
    assert_eq!(relay.name, "Cheap relay A");
    assert_eq!(
        (relay.url.scheme, relay.url.host.as_str(), relay.url.port),
        (Scheme::Https, "relay-a.example.com", 443)
    );
    assert_eq!(
        relay.url.path_for("/chat/completions"),
        "/v1/chat/completions"
    );
    assert_eq!(
        relay.api_key.as_ref().map(Secret::expose),
        Some("sk-relay-a-xxxxxxxxxxxx")
    );
    assert_eq!(relay.models, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(relay.first_byte_timeout, Some(Duration::from_secs(30)));
    assert_eq!(relay.backend_type, BackendType::OpenAi);
    let official = &c.providers[0];
    assert_eq!(official.headers.len(), 1);
    assert_eq!(official.headers[0].0, "OpenAI-Organization");
    assert_eq!(official.headers[0].1.expose(), "org-123");
    assert_eq!(official.first_byte_timeout, None);
    // Models sorted by display name.
    let names: Vec<(&str, &str)> = c
        .models
        .iter()
        .map(|m| (m.key.as_str(), m.name.as_str()))
        .collect();
    assert_eq!(names, [("gpt_4o", "gpt-4o"), ("mini", "gpt-4o-mini")]);
    let gpt = &c.models[0];
    assert_eq!(gpt.strategy, Strategy::SmartAi);
    assert_eq!(gpt.backends.len(), 2);
    let (b0, b1) = (&gpt.backends[0], &gpt.backends[1]);
    assert_eq!(
        (b0.provider, b0.model.as_str(), b0.weight, b0.billing_mode),
        (1, "gpt-4o", 3.0, BillingMode::PerRequest)
    );
    assert_eq!(
        (b1.provider, b1.weight, b1.tags.clone()),
        (0, 1.0, vec!["premium".to_string()])
    );
    assert_eq!(c.models[1].strategy, Strategy::WeightedRandom);
    assert_eq!(c.models[1].backends[0].weight, 1.0);
    // Users sorted by id; bob is limited to "mini" (index 1).
    assert_eq!(
        c.users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(c.users[0].allowed_models, None);
    let bob = &c.users[1];
    assert_eq!(bob.allowed_models, Some(vec![1]));
    assert_eq!(bob.tags, ["basic"]);
    assert_eq!(
        bob.rate_limit,
        Some(RateLimit {
            requests_per_minute: Some(30),
            requests_per_hour: Some(600),
            requests_per_day: Some(5000)
        })
    );
    assert_eq!(c.model_by_request_name("mini"), Some(1));
    assert_eq!(c.model_by_request_name("gpt-4o-mini"), Some(1));
}

#[test]
fn reference_example_loads_cleanly() {
    let c = load_example(
        include_str!("../../config/berry.example.toml"),
        "berry.example.toml",
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.providers.len(), 3);
    assert_eq!(c.models.len(), 3);
    assert_eq!(c.users.len(), 2);
    let openai = &c.providers[c.provider_index("openai").expect("openai")];
    assert_eq!(
        openai.api_key.as_ref().map(Secret::expose),
        Some("sk-replace-me-0000000000")
    );
    assert_eq!(openai.url.base_path, "/v1");
    let local = &c.providers[c.provider_index("local").expect("local")];
    assert_eq!(local.url.host_header(), "127.0.0.1:8000");
    assert!(c.users[0].allow_backend_override);
    // The file's address would win over the image's BIND_ADDRESS=0.0.0.0:3000 and leave a
    // container started with this example unreachable.
    assert_eq!(c.server.bind_address, None);
}

#[test]
fn reference_example_bind_address_line_works_uncommented() {
    let text = include_str!("../../config/berry.example.toml");
    let line = "# bind_address = \"127.0.0.1:3000\"";
    assert!(text.contains(line), "the example documents bind_address");
    let c = load_example(&text.replace(line, &line[2..]), "berry.example.toml");
    assert_eq!(c.server.bind_address.as_deref(), Some("127.0.0.1:3000"));
}

/// berry.example.toml says it lists every key: each key the schema knows must be written in
/// a section of its table, set or commented out (`# key = …`).
#[test]
fn reference_example_documents_every_key() {
    let text = include_str!("../../config/berry.example.toml");
    // (header path split on dots, the lines under it) for each `[table]` or `[[array]]`.
    let mut sections: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            let path = line.trim_matches(|c| c == '[' || c == ']');
            sections.push((path.split('.').collect(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    let mentions = |line: &str, key: &str| {
        line.match_indices(&format!("{key} =")).any(|(i, _)| {
            let before = line[..i].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    };
    let leaves = keys::known_leaves();
    assert!(leaves.len() > 50, "{leaves:?}");
    for (table, key) in leaves {
        let pattern: Vec<&str> = table.split('.').collect();
        let documented = sections.iter().any(|(path, lines)| {
            path.len() == pattern.len()
                && path.iter().zip(&pattern).all(|(a, b)| b == &"*" || a == b)
                && lines.iter().any(|l| mentions(l, key))
        });
        assert!(
            documented,
            "berry.example.toml does not document `{table}.{key}`"
        );
    }
}

#[test]
fn reference_example_admin_token_line_works_uncommented() {
    let text = include_str!("../../config/berry.example.toml");
    let line = "# admin_token = \"env:BERRY_ADMIN_TOKEN\"";
    assert!(text.contains(line), "the example documents admin_token");
    let text = text.replace(line, &line[2..]);
    let env = |name: &str| (name == "BERRY_ADMIN_TOKEN").then(|| "admin-0123456789abcdef".into());
    let c = load_str_with_env(&text, "berry.example.toml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.server.admin_token.as_ref().map(Secret::expose),
        Some("admin-0123456789abcdef")
    );
}

#[test]
fn minimal_example_loads() {
    let c = load_example(include_str!("../../config/minimal.toml"), "minimal.toml");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        (c.providers.len(), c.models.len(), c.users.len()),
        (1, 1, 1)
    );
}

#[test]
fn berry_api_compat_example_loads_with_warnings_only() {
    let c = load_example(
        include_str!("../../config/berry-api-compat.toml"),
        "berry-api-compat.toml",
    );
    assert!(c.warnings.len() >= 2, "{:?}", c.warnings);
    assert!(c.warnings.iter().all(|w| w.severity == Severity::Warning));
    let relay = &c.providers[c.provider_index("relay_a").expect("relay_a")];
    assert_eq!(
        relay.url.path_for("/chat/completions"),
        "/v1/chat/completions"
    );
    let bob = c.users.iter().find(|u| u.id == "bob").expect("bob");
    assert_eq!(
        bob.allowed_models,
        Some(vec![c.model_by_request_name("mini").expect("mini")])
    );
    let rl = bob.rate_limit.expect("rate limit");
    assert_eq!(
        (
            rl.requests_per_minute,
            rl.requests_per_hour,
            rl.requests_per_day
        ),
        (Some(30), None, None)
    );
}

#[test]
fn hostile_inputs_do_not_panic() {
    let deep_arrays = format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_inline = format!("a = {}1{}", "{b=".repeat(50_000), "}".repeat(50_000));
    let deep_header = format!("[{}]\n", vec!["a"; 20_000].join("."));
    let deep_known = format!("[providers.p.headers.{}]\n", vec!["x"; 20_000].join("."));
    let inputs: Vec<String> = vec![
        String::new(),
        "\u{0}\u{1}\u{7f}garbage\u{fffd}".to_string(),
        "=".repeat(1000),
        deep_arrays,
        deep_inline,
        deep_header,
        deep_known,
        "x".repeat(5 * 1024 * 1024),
        "[providers.\"\"]\n[models.\"\"]\n[users.\"\"]\n".to_string(),
        "providers = []\nmodels = \"x\"\n".to_string(),
    ];
    for input in &inputs {
        assert!(load_str_with_env(input, "fuzz.toml", &any_env).is_err());
    }
    check_err(
        "[providers.\"\"]\nname = \"P\"\n",
        &[(Some(1), "provider id must not be empty")],
    );
}

#[test]
fn every_prefix_of_an_example_is_handled() {
    // Cheap fuzzing: truncating a real file at every character hits most half-written states.
    let text = include_str!("../../config/berry-api-compat.toml");
    for (i, _) in text.char_indices() {
        let _ = load_str_with_env(&text[..i], "prefix.toml", &any_env);
    }
}
