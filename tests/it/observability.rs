//! Metrics, usage accounting, the access log and response timing headers, checked against
//! what the test itself sent and what the mock upstream reported.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use berry::config::DriverChoice;
use berry::mock::{self, MockArgs};

use crate::support::*;

pub const BOB: &str = "tok-bob-0123456789abcdef0000";

pub fn mock_upstream() -> SocketAddr {
    let args = MockArgs {
        stream_events: 3,
        event_delay_ms: 1,
        ..MockArgs::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    mock::spawn(args, any).expect("mock starts").addr
}

/// `good` is the real mock; `bad` answers 500 to everything.
pub fn config(good: SocketAddr, bad: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[settings]
max_retries = 2
report_interval_ms = 20
snapshot_interval_ms = 20

[providers.good]
name = "Good"
base_url = "http://{good}/v1"
api_key = "sk-good-secret-111111"
models = ["m"]

[providers.bad]
name = "Bad"
base_url = "http://{bad}/v1"
api_key = "sk-bad-secret-2222222"
models = ["m"]

[models.chat]
name = "gpt-test"
[[models.chat.backends]]
provider = "good"
model = "m"

[models.flaky]
name = "flaky"
strategy = "failover"
[[models.flaky.backends]]
provider = "bad"
model = "m"
priority = 0
[[models.flaky.backends]]
provider = "good"
model = "m"
priority = 1

[users.alice]
name = "Alice"
token = "{TOKEN}"

[users.bob]
name = "Bob"
token = "{BOB}"
{extra}
"#
    )
}

pub fn chat(model: &str, extra: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
}

pub fn as_bob(body: &str) -> Vec<u8> {
    post_with(
        "/v1/chat/completions",
        body,
        &format!("authorization: Bearer {BOB}\r\n"),
    )
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    send_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: b\r\nauthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
}

/// A series (name, labels) and the value it should have.
type Level<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Prometheus text exposition: (name, labels) → value, for every sample line.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

pub fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels close")),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here never contain `",`; a value with one would fail the promtool check.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label is k=\"v\"");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        let v: f64 = value.parse().expect("numeric value");
        out.insert((name.to_string(), map), v);
    }
    out
}

pub fn sample(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.get(&(name.to_string(), key)).copied().unwrap_or(0.0)
}

/// Scrapes until `ready` holds (the exposition lags by up to one report interval).
pub fn scrape_until(addr: SocketAddr, ready: impl Fn(&Samples) -> bool) -> (String, Samples) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(addr, "/metrics");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = r.text();
        let s = parse(&text);
        if ready(&s) {
            return (text, s);
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn usage_of(r: &Resp) -> (u64, u64) {
    let v = r.json();
    (
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        v["usage"]["completion_tokens"].as_u64().unwrap(),
    )
}

/// The usage chunk of an SSE body, if it has one.
pub fn stream_usage(r: &Resp) -> Option<(u64, u64)> {
    r.text().split("\n\n").find_map(|ev| {
        let data = ev.strip_prefix("data: ")?;
        let v: serde_json::Value = serde_json::from_str(data).ok()?;
        let u = v.get("usage")?;
        Some((
            u["prompt_tokens"].as_u64()?,
            u["completion_tokens"].as_u64()?,
        ))
    })
}

/// `promtool check metrics` on the exposition, when promtool is installed (CI installs it and
/// sets BERRY_REQUIRE_PROMTOOL so that a missing promtool fails there instead of skipping).
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("BERRY_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here but cannot run: {e}"
            );
            eprintln!("promtool not installed: exposition format check skipped");
            return;
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 3 for lint findings only (e.g. naming advice); 1 means the text is invalid.
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "promtool rejected the exposition:\n{report}\n---\n{text}"
    );
    assert!(
        !report.contains("error"),
        "promtool reported errors:\n{report}"
    );
}

#[test]
fn scraped_counters_match_what_was_sent() {
    let good = mock_upstream();
    let bad = upstream(|_| json_reply(500, r#"{"error":{"message":"boom"}}"#));
    let gw = gateway(&config(good, bad.addr, ""), DriverChoice::Auto);
    let chat_path = "/v1/chat/completions";

    let mut alice_tokens = (0, 0);
    for _ in 0..3 {
        let r = send_raw(gw.addr, &post(chat_path, &chat("gpt-test", "")));
        assert_eq!(r.status, 200, "{}", r.text());
        let (p, c) = usage_of(&r);
        alice_tokens = (alice_tokens.0 + p, alice_tokens.1 + c);
        let timing = r.header("server-timing").expect("server-timing header");
        let parts: Vec<&str> = timing.split(", ").collect();
        assert_eq!(parts.len(), 2, "{timing}");
        assert!(parts[0].starts_with("berry;dur=") && parts[1].starts_with("upstream;dur="));
        for p in parts {
            let ms: f64 = p.split_once("dur=").unwrap().1.parse().expect("ms value");
            assert!((0.0..10_000.0).contains(&ms), "{timing}");
        }
        assert_eq!(r.header("x-berry-backend"), Some("good"));
        assert!(r.header("x-request-id").is_some());
    }
    let mut bob_tokens = (0, 0);
    for _ in 0..2 {
        let body = chat(
            "gpt-test",
            r#","stream":true,"stream_options":{"include_usage":true}"#,
        );
        let r = send_raw(gw.addr, &as_bob(&body));
        assert_eq!(r.status, 200);
        let (p, c) = stream_usage(&r).expect("a stream that asked for usage gets it");
        bob_tokens = (bob_tokens.0 + p, bob_tokens.1 + c);
    }
    // A stream that did not ask for usage (stream_usage = "pass"): no tokens to count.
    let r = send_raw(
        gw.addr,
        &post(chat_path, &chat("gpt-test", r#","stream":true"#)),
    );
    assert_eq!(r.status, 200);
    assert_eq!(stream_usage(&r), None);
    // The failover model: `bad` answers 500, `good` serves.
    let r = send_raw(gw.addr, &post(chat_path, &chat("flaky", "")));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-berry-backend"), Some("good"));
    let (p, c) = usage_of(&r);
    let flaky_tokens = (p, c);
    for _ in 0..2 {
        send_raw(gw.addr, &post(chat_path, &chat("nope", ""))).assert_error(404);
    }
    let bad_token = post_with(
        chat_path,
        &chat("gpt-test", ""),
        "authorization: Bearer wrong\r\n",
    );
    send_raw(gw.addr, &bad_token).assert_error(401);
    assert_eq!(get(gw.addr, "/v1/models").status, 200);
    assert_eq!(get(gw.addr, "/nope").status, 404);

    let requests = "berry_requests_total";
    let chat_ok = [
        ("endpoint", "chat_completions"),
        ("model", "gpt-test"),
        ("backend", "good"),
        ("status_class", "2xx"),
    ];
    let (text, s) = scrape_until(gw.addr, |s| {
        sample(s, requests, &chat_ok) >= 6.0
            && sample(
                s,
                "berry_api_http_requests_total",
                &[("method", "GET"), ("endpoint", "other"), ("status", "404")],
            ) >= 1.0
            // Levels follow one snapshot period behind the counters.
            && sample(
                s,
                "berry_pool_connections",
                &[("backend", "good"), ("state", "busy")],
            ) == 0.0
            && sample(
                s,
                "berry_inflight_requests",
                &[("model", "gpt-test"), ("backend", "good")],
            ) == 0.0
    });
    assert_eq!(sample(&s, requests, &chat_ok), 6.0, "{text}");
    let flaky_ok = [
        ("endpoint", "chat_completions"),
        ("model", "flaky"),
        ("backend", "good"),
        ("status_class", "2xx"),
    ];
    assert_eq!(sample(&s, requests, &flaky_ok), 1.0);
    // Refused before a model was resolved (unknown model, bad token): no model label.
    let refused = [
        ("endpoint", "chat_completions"),
        ("model", ""),
        ("backend", ""),
        ("status_class", "4xx"),
    ];
    assert_eq!(sample(&s, requests, &refused), 3.0, "{text}");
    let models = [
        ("endpoint", "models"),
        ("model", ""),
        ("backend", ""),
        ("status_class", "2xx"),
    ];
    assert_eq!(sample(&s, requests, &models), 1.0);
    assert_eq!(
        sample(
            &s,
            "berry_failovers_total",
            &[
                ("model", "flaky"),
                ("backend", "bad"),
                ("reason", "server_error")
            ]
        ),
        1.0
    );
    let attempts = |model, backend, outcome| {
        sample(
            &s,
            "berry_upstream_attempts_total",
            &[("model", model), ("backend", backend), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("flaky", "bad", "server_error"), 1.0);
    assert_eq!(attempts("flaky", "good", "success"), 1.0);
    assert_eq!(attempts("gpt-test", "good", "success"), 6.0);
    let tokens = |model, user, kind| {
        sample(
            &s,
            "berry_tokens_total",
            &[
                ("model", model),
                ("backend", "good"),
                ("user", user),
                ("kind", kind),
            ],
        )
    };
    assert_eq!(tokens("gpt-test", "alice", "prompt"), alice_tokens.0 as f64);
    assert_eq!(
        tokens("gpt-test", "alice", "completion"),
        alice_tokens.1 as f64
    );
    assert_eq!(tokens("gpt-test", "bob", "prompt"), bob_tokens.0 as f64);
    assert_eq!(tokens("gpt-test", "bob", "completion"), bob_tokens.1 as f64);
    assert_eq!(
        tokens("flaky", "alice", "completion"),
        flaky_tokens.1 as f64
    );
    let pair = [("model", "gpt-test"), ("backend", "good")];
    assert_eq!(
        sample(&s, "berry_request_duration_seconds_count", &pair),
        6.0
    );
    assert_eq!(
        sample(
            &s,
            "berry_time_to_first_byte_seconds_count",
            &[
                ("model", "gpt-test"),
                ("backend", "good"),
                ("stream", "false")
            ]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &s,
            "berry_time_to_first_byte_seconds_count",
            &[
                ("model", "gpt-test"),
                ("backend", "good"),
                ("stream", "true")
            ]
        ),
        3.0
    );
    // Buckets span milliseconds to minutes, and every request fits under the top one.
    let le = |v: &str| {
        sample(
            &s,
            "berry_request_duration_seconds_bucket",
            &[("model", "gpt-test"), ("backend", "good"), ("le", v)],
        )
    };
    assert_eq!(le("600"), 6.0, "{text}");
    assert_eq!(le("+Inf"), 6.0);
    assert!(le("0.005") <= le("1"));
    // Berry's own overhead is recorded for every proxied request, refused ones included.
    assert_eq!(sample(&s, "berry_overhead_seconds_count", &[]), 10.0);
    // Berry API's names still work.
    let legacy = |status| {
        sample(
            &s,
            "berry_api_http_requests_total",
            &[
                ("method", "POST"),
                ("endpoint", "/v1/chat/completions"),
                ("status", status),
            ],
        )
    };
    assert_eq!(legacy("200"), 7.0);
    assert_eq!(legacy("404"), 2.0);
    assert_eq!(legacy("401"), 1.0);
    assert_eq!(
        sample(
            &s,
            "berry_api_backend_error_count_total",
            &[("backend", "bad")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "berry_api_backend_request_count_total",
            &[("backend", "good")]
        ),
        7.0
    );
    // Health and pool levels.
    assert_eq!(
        sample(
            &s,
            "berry_inflight_requests",
            &[("model", "gpt-test"), ("backend", "good")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &s,
            "berry_circuit_state",
            &[("model", "gpt-test"), ("backend", "good")]
        ),
        0.0
    );
    assert!(
        sample(
            &s,
            "berry_pool_connections",
            &[("backend", "good"), ("state", "idle")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &s,
            "berry_upstream_connects_total",
            &[("backend", "good"), ("result", "ok")]
        ) >= 1.0
    );
    // Every level is there, not just read as 0 for want of a series.
    let good = [("model", "gpt-test"), ("backend", "good")];
    let levels: [Level; 8] = [
        ("berry_backend_healthy", &good, 1.0),
        ("berry_circuit_state", &good, 0.0),
        ("berry_inflight_requests", &good, 0.0),
        (
            "berry_api_backend_health_status",
            &[("backend", "chat")],
            1.0,
        ),
        (
            "berry_api_http_requests_in_flight",
            &[("method", "POST"), ("endpoint", "/v1/chat/completions")],
            0.0,
        ),
        (
            "berry_pool_connections",
            &[("backend", "good"), ("state", "busy")],
            0.0,
        ),
        ("berry_reports_dropped_total", &[], 0.0),
        ("berry_access_log_dropped_total", &[], 0.0),
    ];
    for (name, labels, want) in levels {
        let key = (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(s.get(&key), Some(&want), "{name} {labels:?}:\n{text}");
    }
    for name in [
        "berry_smart_ai_confidence",
        "berry_backend_effective_weight",
    ] {
        assert!(sample(&s, name, &good) > 0.0, "{name}:\n{text}");
    }
    assert!(sample(&s, "berry_snapshot_age_seconds", &[("shard", "0")]) < 5.0);
    for shard_level in ["berry_snapshot_age_seconds", "berry_connections_open"] {
        assert!(
            text.contains(&format!("{shard_level}{{shard=\"0\"}}")),
            "{text}"
        );
    }
    assert!(text.contains("berry_build_info{version=\""), "{text}");
    assert!(sample(&s, "berry_connections_accepted_total", &[("shard", "0")]) >= 13.0);
    for secret in ["sk-good-secret", "sk-bad-secret", TOKEN, BOB] {
        assert!(!text.contains(secret), "a secret reached /metrics");
    }
    promtool_check(&text);
}

#[test]
fn inject_asks_every_stream_for_usage_and_hides_the_extra_chunk() {
    // The upstream records what it was asked and answers like OpenAI: a usage chunk only when
    // `include_usage` was requested.
    let up = upstream(|seen| {
        let asked = seen.json()["stream_options"]["include_usage"] == true;
        let mut body = Vec::new();
        body.extend_from_slice(SSE_HEAD.as_bytes());
        body.extend(chunk(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        ));
        if asked {
            body.extend(chunk(
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5}}\n\n",
            ));
        }
        body.extend(chunk("data: [DONE]\n\n"));
        body.extend_from_slice(b"0\r\n\r\n");
        Reply::Raw(body)
    });
    let extra = "[observability]\naccess_log = \"off\"\nstream_usage = \"inject\"\n";
    let gw = gateway(&config(up.addr, dead_addr(), extra), DriverChoice::Auto);
    let path = "/v1/chat/completions";

    // 1. No stream_options at all.
    let r = send_raw(gw.addr, &post(path, &chat("gpt-test", r#","stream":true"#)));
    assert_eq!(r.status, 200);
    assert!(r.clean_end);
    assert_eq!(
        r.text(),
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(up.last().json()["stream_options"]["include_usage"], true);

    // 2. stream_options with another field and include_usage false: kept, flag turned on.
    let opts =
        r#","stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}"#;
    let r = send_raw(gw.addr, &post(path, &chat("gpt-test", opts)));
    assert_eq!(stream_usage(&r), None);
    let sent = up.last().json();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["stream_options"]["continuous_usage_stats"], true);

    // 3. A client that asked for usage gets it, unchanged.
    let opts = r#","stream":true,"stream_options":{"include_usage":true}"#;
    let r = send_raw(gw.addr, &post(path, &chat("gpt-test", opts)));
    assert_eq!(stream_usage(&r), Some((11, 5)));

    // 4. Not a stream: the body goes up untouched.
    let _ = send_raw(gw.addr, &post(path, &chat("gpt-test", "")));
    assert!(up.last().json().get("stream_options").is_none());

    // All three streams were counted.
    let labels = [
        ("model", "gpt-test"),
        ("backend", "good"),
        ("user", "alice"),
        ("kind", "prompt"),
    ];
    let (text, s) = scrape_until(gw.addr, |s| {
        sample(s, "berry_tokens_total", &labels) >= 33.0
    });
    assert_eq!(sample(&s, "berry_tokens_total", &labels), 33.0, "{text}");
}

#[test]
fn metrics_can_be_turned_off() {
    let good = mock_upstream();
    let extra = "[observability]\naccess_log = \"off\"\nmetrics = false\n";
    let gw = gateway(&config(good, dead_addr(), extra), DriverChoice::Auto);
    get(gw.addr, "/metrics").assert_error(404);
}

/// An upstream that says it does not serve the model Berry asked for is blamed (model_error,
/// counted against its health); any other 4xx stays the client's.
#[test]
fn model_not_found_from_upstream_is_the_backends_fault() {
    let up = upstream(|seen| {
        if seen.body.windows(7).any(|w| w == b"missing") {
            json_reply(
                404,
                r#"{"error":{"message":"no such model","type":"invalid_request_error","code":"model_not_found"}}"#,
            )
        } else {
            json_reply(
                400,
                r#"{"error":{"message":"bad","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
            )
        }
    });
    let gw = gateway(&config(up.addr, dead_addr(), ""), DriverChoice::Auto);
    let path = "/v1/chat/completions";
    let r = send_raw(
        gw.addr,
        &post(path, &chat("gpt-test", r#","user":"missing""#)),
    );
    assert_eq!(r.status, 404, "the upstream's answer is relayed");
    assert!(r.text().contains("model_not_found"));
    let r = send_raw(gw.addr, &post(path, &chat("gpt-test", "")));
    assert_eq!(r.status, 400);
    let outcome = |s: &Samples, o| {
        sample(
            s,
            "berry_upstream_attempts_total",
            &[("model", "gpt-test"), ("backend", "good"), ("outcome", o)],
        )
    };
    let (text, s) = scrape_until(gw.addr, |s| {
        outcome(s, "model_error") + outcome(s, "client_error") >= 2.0
    });
    assert_eq!(outcome(&s, "model_error"), 1.0, "{text}");
    assert_eq!(outcome(&s, "client_error"), 1.0, "{text}");
    assert_eq!(
        sample(
            &s,
            "berry_api_backend_error_count_total",
            &[("backend", "good")]
        ),
        1.0
    );
}

/// A client that leaves before any byte of its answer is counted as 499, the upstream
/// attempt it abandoned blames nobody, and its wait on the upstream is not taken for Berry's
/// overhead (nor timed as a first byte).
#[test]
fn a_client_that_leaves_first_is_a_499() {
    let up = upstream(|_| Reply::Hang(Duration::from_secs(3)));
    let gw = gateway(&config(up.addr, dead_addr(), ""), DriverChoice::Auto);
    {
        use std::io::Write;
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(&post("/v1/chat/completions", &chat("gpt-test", "")))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while up.count() == 0 {
            assert!(
                Instant::now() < deadline,
                "the request never reached upstream"
            );
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(300));
    } // dropped: the client is gone while the upstream is still thinking
    let labels = [
        ("method", "POST"),
        ("endpoint", "/v1/chat/completions"),
        ("status", "499"),
    ];
    let (text, s) = scrape_until(gw.addr, |s| {
        sample(s, "berry_api_http_requests_total", &labels) >= 1.0
    });
    assert_eq!(sample(&s, "berry_api_http_requests_total", &labels), 1.0);
    let attempts: f64 = s
        .iter()
        .filter(|((name, _), _)| name == "berry_upstream_attempts_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        attempts, 0.0,
        "an abandoned attempt has no outcome:\n{text}"
    );
    // Some 300 ms waited on the upstream: the overhead is far below that.
    let fast = sample(&s, "berry_overhead_seconds_bucket", &[("le", "0.1")]);
    assert_eq!(fast, 1.0, "overhead under 100 ms:\n{text}");
    let ttfb: f64 = s
        .iter()
        .filter(|((name, _), _)| name == "berry_time_to_first_byte_seconds_count")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ttfb, 0.0, "no first byte to time:\n{text}");
}

/// A stream that goes silent after its first event is a timeout of its backend (not a connect
/// failure), and its access-log line says so.
#[test]
fn a_stream_that_stalls_counts_as_a_timeout() {
    let up = upstream(|_| {
        let mut first = SSE_HEAD.as_bytes().to_vec();
        first.extend(chunk(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        ));
        Reply::Paced(vec![first], Duration::from_secs(3))
    });
    let cfg = config(up.addr, dead_addr(), "").replace(
        "max_retries = 2",
        "max_retries = 2\nstream_idle_timeout_ms = 300",
    );
    let gw = gateway(&cfg, DriverChoice::Auto);
    let r = send_raw(
        gw.addr,
        &post(
            "/v1/chat/completions",
            &chat("gpt-test", r#","stream":true"#),
        ),
    );
    assert_eq!(r.status, 200);
    assert!(!r.clean_end, "a stalled stream must not end cleanly");
    let timeout = [
        ("model", "gpt-test"),
        ("backend", "good"),
        ("outcome", "timeout"),
    ];
    let (text, s) = scrape_until(gw.addr, |s| {
        sample(s, "berry_upstream_attempts_total", &timeout) >= 1.0
    });
    assert_eq!(
        sample(&s, "berry_upstream_attempts_total", &timeout),
        1.0,
        "{text}"
    );
}

/// A JSON answer relayed in pieces (chunked, so not buffered) whose `usage` key is split
/// between two reads is still counted.
#[test]
fn usage_split_across_reads_of_a_chunked_json_body_is_counted() {
    let up = upstream(|_| {
        let body = r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#;
        let split = body.find("\"usage\"").unwrap() + 4;
        let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        head.extend(chunk(&body[..split]));
        let mut tail = chunk(&body[split..]);
        tail.extend_from_slice(b"0\r\n\r\n");
        Reply::Paced(vec![head, tail], Duration::from_millis(50))
    });
    let gw = gateway(&config(up.addr, dead_addr(), ""), DriverChoice::Auto);
    let r = send_raw(
        gw.addr,
        &post("/v1/chat/completions", &chat("gpt-test", "")),
    );
    assert_eq!(r.status, 200);
    assert_eq!(usage_of(&r), (7, 5));
    let labels = [
        ("model", "gpt-test"),
        ("backend", "good"),
        ("user", "alice"),
        ("kind", "completion"),
    ];
    let (text, s) = scrape_until(gw.addr, |s| sample(s, "berry_tokens_total", &labels) >= 5.0);
    assert_eq!(sample(&s, "berry_tokens_total", &labels), 5.0, "{text}");
}

/// A client that reads its whole answer and closes at once (curl does) was answered: 200, not
/// 499, even though the request ran long enough for its client socket to be watched.
#[test]
fn a_client_that_closes_after_its_answer_was_answered() {
    let up = upstream(|_| {
        thread::sleep(Duration::from_millis(60));
        json_reply(
            200,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        )
    });
    let gw = gateway(&config(up.addr, dead_addr(), ""), DriverChoice::Auto);
    const N: usize = 12;
    for _ in 0..N {
        // send_raw reads the response and drops the connection right away.
        let r = send_raw(
            gw.addr,
            &post("/v1/chat/completions", &chat("gpt-test", "")),
        );
        assert_eq!(r.status, 200);
    }
    let status = |s: &Samples, code| {
        sample(
            s,
            "berry_api_http_requests_total",
            &[
                ("method", "POST"),
                ("endpoint", "/v1/chat/completions"),
                ("status", code),
            ],
        )
    };
    let (text, s) = scrape_until(gw.addr, |s| status(s, "200") + status(s, "499") >= N as f64);
    assert_eq!(status(&s, "200"), N as f64, "{text}");
    assert_eq!(status(&s, "499"), 0.0, "{text}");
}
