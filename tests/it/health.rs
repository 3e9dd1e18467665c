use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::both_drivers;
use crate::support::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[]}"#;

fn get(gw: &Gateway, path: &str) -> Resp {
    send_raw(
        gw.addr,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
    )
}

/// Waits until one snapshot period has certainly passed (default 100 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(350));
}

both_drivers! {
    fn admin_views_show_the_selectors_numbers(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(200, "{}"));
        let toml = config_two(a.addr, b.addr, "").replacen("name = \"gpt-test\"", "name = \"gpt-test\"\nstrategy = \"smart_ai\"", 1);
        let gw = gateway(&toml, driver);
        for _ in 0..6 {
            assert_eq!(send_raw(gw.addr, &post("/v1/chat/completions", CHAT)).status, 200);
        }
        settle();
        let health = get(&gw, "/admin/backend-health");
        assert_eq!(health.status, 200, "{}", health.text());
        let v = health.json();
        let backends = v["models"]["chat"]["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 2);
        let served: u64 = backends.iter().map(|b| b["requests_window"].as_u64().unwrap()).sum();
        assert_eq!(served, 6, "the window counts every attempt: {v}");
        assert!(backends.iter().all(|b| b["circuit"] == "closed" && b["is_healthy"] == true));

        let smart = get(&gw, "/smart-ai/models/gpt-test/weights").json();
        // Every backend that served requests gained confidence above the initial 0.8 (SmartAI
        // may have sent all six to one backend); none lost any.
        for (b, h) in smart["backends"].as_array().unwrap().iter().zip(backends) {
            let c = b["confidence"].as_f64().unwrap();
            if h["requests_window"].as_u64().unwrap() > 0 {
                assert!(c > 0.8, "successes raised confidence: {c}");
            } else {
                assert_eq!(c, 0.8);
            }
            assert!(b["effective_weight"].as_f64().unwrap() > 0.0);
        }
        assert_eq!(get(&gw, "/smart-ai/weights").json()["total_smart_ai_models"], 1);
        let weights = get(&gw, "/admin/model-weights?model=chat").json();
        assert_eq!(weights["models"]["chat"]["display_name"], "gpt-test");
        get(&gw, "/admin/model-weights?model=nope").assert_error(404);
        get(&gw, "/smart-ai/models/nope/weights").assert_error(404);
        assert!(!health.text().contains("sk-") && !health.text().contains("127.0.0.1"));
    }

    fn upstream_400_leaves_health_and_confidence_untouched(driver) {
        let a = upstream(|_| json_reply(400, r#"{"error":{"message":"bad"}}"#));
        let toml = config_two(a.addr, a.addr, "").replacen("name = \"gpt-test\"", "name = \"gpt-test\"\nstrategy = \"smart_ai\"", 1);
        let gw = gateway(&toml, driver);
        for _ in 0..10 {
            assert_eq!(send_raw(gw.addr, &post("/v1/chat/completions", CHAT)).status, 400);
        }
        settle();
        let v = get(&gw, "/admin/backend-health").json();
        for b in v["models"]["chat"]["backends"].as_array().unwrap() {
            assert_eq!(b["circuit"], "closed");
            assert_eq!(b["failure_count"], 0);
            assert_eq!(b["is_healthy"], true);
        }
        for b in get(&gw, "/smart-ai/models/chat/weights").json()["backends"].as_array().unwrap() {
            assert_eq!(b["confidence"].as_f64().unwrap(), 0.8, "initial_confidence, unchanged");
        }
    }

    fn flapping_backend_leaves_then_returns_after_the_breaker_timeout(driver) {
        let down = Arc::new(AtomicBool::new(true));
        let d2 = down.clone();
        let flappy = upstream(move |_| if d2.load(Ordering::SeqCst) { json_reply(503, "{}") } else { json_reply(200, r#"{"from":"flappy"}"#) });
        let steady = upstream(|_| json_reply(200, r#"{"from":"steady"}"#));
        let settings = "[settings]\ncircuit_breaker_failure_threshold = 2\ncircuit_breaker_timeout_seconds = 1\nmax_retries = 2\n";
        let toml = config_two(flappy.addr, steady.addr, "").replacen("[settings]\nmax_retries = 2\n", settings, 1);
        let gw = gateway(&toml, driver);
        for _ in 0..20 {
            assert_eq!(send_raw(gw.addr, &post("/v1/chat/completions", CHAT)).status, 200);
        }
        assert_eq!(flappy.count(), 2, "the circuit opened after two failures");
        settle();
        let v = get(&gw, "/admin/backend-health").json();
        assert_eq!(v["models"]["chat"]["backends"][0]["circuit"], "open", "{v}");
        assert_eq!(get(&gw, "/v1/health").json()["summary"]["backends"]["healthy"], 1);

        // The backend recovers; after circuit_breaker_timeout_seconds one probe closes the
        // circuit and traffic returns.
        down.store(false, Ordering::SeqCst);
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(1100));
        // Traffic ramps back (10 %, 30 %, 50 %, 100 % as successes come in): keep sending for
        // a few snapshot periods and require the backend's share to grow back.
        let before = flappy.count();
        while flappy.count() - before < 10 {
            assert!(start.elapsed() < Duration::from_secs(4), "traffic did not return: {} requests", flappy.count() - before);
            assert_eq!(send_raw(gw.addr, &post("/v1/chat/completions", CHAT)).status, 200);
            std::thread::sleep(Duration::from_millis(5));
        }
        settle();
        let v = get(&gw, "/admin/backend-health").json();
        assert_eq!(v["models"]["chat"]["backends"][0]["circuit"], "closed", "{v}");
    }

    fn admin_views_are_refused_to_non_loopback_clients(driver) {
        // Loopback is all a test can reach; check the loopback path answers without a token
        // when none is configured. The refusal of other addresses is decided in one place,
        // `api::admin_access`, and tested there.
        let a = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        assert_eq!(get(&gw, "/admin/backend-health").status, 200);
        assert_eq!(send_raw(gw.addr, b"POST /admin/backend-health HTTP/1.1\r\ncontent-length: 0\r\n\r\n").status, 405);
    }
}

both_drivers! {
    fn admin_token_is_required_from_every_client_when_set(driver) {
        const ADMIN: &str = "admin-secret-0123456789";
        let a = upstream(|_| json_reply(200, "{}"));
        let toml = format!("[server]\nadmin_token = \"{ADMIN}\"\n{}", config_two(a.addr, a.addr, ""));
        let gw = gateway(&toml, driver);
        let with = |path: &str, auth: &str| send_raw(gw.addr, format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\n").as_bytes());
        let bearer = format!("authorization: Bearer {ADMIN}\r\n");
        for path in ["/admin/backend-health", "/admin/model-weights", "/smart-ai/weights"] {
            let ok = with(path, &bearer);
            assert_eq!(ok.status, 200, "{path}: {}", ok.text());
            assert!(!ok.text().contains(ADMIN), "{path} shows the token");
            // This client is on loopback: without the token it is refused all the same.
            let missing = with(path, "");
            missing.assert_error(401);
            assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
            for wrong in [
                format!("authorization: Bearer {ADMIN}0\r\n"),
                format!("authorization: Bearer {TOKEN}\r\n"),
                format!("authorization: Basic {ADMIN}\r\n"),
            ] {
                let r = with(path, &wrong);
                let v = r.assert_error(401);
                assert_eq!(v["error"]["type"], "authentication_error");
                assert!(!r.text().contains(ADMIN), "{}", r.text());
            }
        }
        // The admin token is not an API key, and the public health views stay public.
        with("/v1/models", &bearer).assert_error(401);
        assert_eq!(with("/v1/models", &format!("authorization: Bearer {TOKEN}\r\n")).status, 200);
        assert_eq!(with("/v1/health", "").status, 200);
    }
}

both_drivers! {
    fn a_client_that_leaves_mid_request_is_not_counted_in_flight_forever(driver) {
        let slow = upstream(|_| Reply::Hang(Duration::from_secs(2)));
        let gw = gateway(&config_two(slow.addr, slow.addr, ""), driver);
        {
            let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
            std::io::Write::write_all(&mut s, &post("/v1/chat/completions", CHAT)).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        settle();
        let v = get(&gw, "/admin/backend-health").json();
        for b in v["models"]["chat"]["backends"].as_array().unwrap() {
            assert_eq!(b["inflight"], 0, "{v}");
            assert_eq!(b["failure_count"], 0, "a cancelled attempt blames no backend: {v}");
        }
    }

    fn past_the_total_timeout_no_other_backend_is_charged(driver) {
        let slow = upstream(|_| Reply::Hang(Duration::from_secs(3)));
        let good = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\ntotal_timeout_ms = 400\ncircuit_breaker_failure_threshold = 1\nmax_retries = 2\n";
        let toml = config_two(slow.addr, good.addr, "").replacen("[settings]\nmax_retries = 2\n", settings, 1);
        let gw = gateway(&toml, driver);
        let forced = format!("authorization: Bearer {TOKEN}\r\nx-berry-backend: alpha\r\n");
        send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &forced)).assert_error(504);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-berry-backend"), Some("beta"));
        assert_eq!(r.header("x-berry-degraded"), None, "beta's circuit was never charged");
    }
}

both_drivers! {
    fn active_checks_probe_per_token_backends_only(driver) {
        let per_token = upstream(|s| if s.method == "GET" { json_reply(503, "{}") } else { json_reply(200, "{}") });
        let per_request = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\nhealth_check_interval_seconds = 1\nhealth_check_timeout_seconds = 1\ncircuit_breaker_failure_threshold = 1\nmax_retries = 2\n";
        let toml = config_two(per_token.addr, per_request.addr, "")
            .replacen("[settings]\nmax_retries = 2\n", settings, 1)
            .replacen("model = \"up-model-b\"\nweight = 1", "model = \"up-model-b\"\nweight = 1\nbilling_mode = \"per_request\"", 1);
        let gw = gateway(&toml, driver);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = get(&gw, "/admin/backend-health").json();
            if v["models"]["chat"]["backends"][0]["circuit"] == "open" {
                assert_eq!(v["models"]["chat"]["backends"][1]["circuit"], "closed");
                break;
            }
            assert!(Instant::now() < deadline, "the failing models probe never opened the circuit: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let probes = per_token.seen.lock().unwrap().iter().filter(|s| s.method == "GET").count();
        assert!(probes >= 1);
        assert_eq!(per_token.last().path, "/v1/models");
        assert_eq!(per_token.last().header("authorization"), Some("Bearer sk-alpha-secret-000000"));
        assert_eq!(per_request.count(), 0, "per-request backends are never probed (probes would cost money)");
        // Probes are not traffic: the window shows no requests.
        let v = get(&gw, "/admin/backend-health").json();
        assert_eq!(v["models"]["chat"]["backends"][0]["requests_window"], 0);
    }

    fn a_forbidden_models_list_does_not_open_circuits(driver) {
        // A key allowed to chat but not to list models (OpenAI's restricted keys can be so).
        let up = upstream(|s| if s.method == "GET" { json_reply(403, "{}") } else { json_reply(200, "{}") });
        let other = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\nhealth_check_interval_seconds = 1\nhealth_check_timeout_seconds = 1\n\
                        circuit_breaker_failure_threshold = 1\nmax_retries = 2\n";
        let toml = config_two(up.addr, other.addr, "").replacen("[settings]\nmax_retries = 2\n", settings, 1);
        let gw = gateway(&toml, driver);
        let deadline = Instant::now() + Duration::from_secs(5);
        while up.seen.lock().unwrap().iter().filter(|s| s.method == "GET").count() < 2 {
            assert!(Instant::now() < deadline, "the models list was never probed twice");
            std::thread::sleep(Duration::from_millis(50));
        }
        settle();
        let v = get(&gw, "/admin/backend-health").json();
        assert_eq!(v["models"]["chat"]["backends"][0]["circuit"], "closed", "{v}");
    }

    fn health_names_the_down_backend_and_an_idle_recovery_is_healthy(driver) {
        let down = Arc::new(AtomicBool::new(true));
        let d2 = down.clone();
        let probed = upstream(move |_| if d2.load(Ordering::SeqCst) { json_reply(503, "{}") } else { json_reply(200, "{}") });
        let other = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\nhealth_check_interval_seconds = 1\nhealth_check_timeout_seconds = 1\n\
                        circuit_breaker_failure_threshold = 1\ncircuit_breaker_timeout_seconds = 1\nmax_retries = 2\n";
        let toml = config_two(probed.addr, other.addr, "").replacen("[settings]\nmax_retries = 2\n", settings, 1);
        let gw = gateway(&toml, driver);
        let deadline = Instant::now() + Duration::from_secs(6);
        let v = loop {
            let v = get(&gw, "/health").json();
            if v["unhealthy_backends"].as_array().is_some_and(|a| !a.is_empty()) {
                break v;
            }
            assert!(Instant::now() < deadline, "the down backend never showed: {v}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(v["unhealthy_backends"][0]["backend_key"], "alpha:up-model-a", "{v}");
        assert_eq!(v["unhealthy_backends"][0]["model"], "chat", "{v}");
        assert_eq!(v["providers"]["alpha"]["healthy"], false, "its only backend is down: {v}");
        assert_eq!(v["providers"]["beta"]["healthy"], true, "{v}");
        assert_eq!(v["summary"]["provider_health"]["healthy"], 1, "{v}");
        assert_eq!(get(&gw, "/v1/health").json()["summary"]["providers"]["healthy"], 1);

        // It recovers with no client traffic at all: probes close its circuit, and /health
        // says so (its traffic share still ramps back once requests come).
        down.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let v = get(&gw, "/health").json();
            if v["providers"]["alpha"]["healthy"] == true {
                assert_eq!(v["unhealthy_backends"], serde_json::json!([]), "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "an idle recovered backend stayed unhealthy: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(get(&gw, "/v1/health").json()["summary"]["backends"]["healthy"], 2);
        let posts = other.seen.lock().unwrap().iter().filter(|s| s.method == "POST").count();
        assert_eq!(posts, 0, "no client request was sent in this test (only probes)");
    }
}

both_drivers! {
    fn the_first_active_check_runs_at_startup(driver) {
        // A minute between rounds: only a round at startup can find the dead backend in time.
        let live = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\nhealth_check_interval_seconds = 60\nhealth_check_timeout_seconds = 1\ncircuit_breaker_failure_threshold = 1\nmax_retries = 2\n";
        let toml = config_two(dead_addr(), live.addr, "").replacen("[settings]\nmax_retries = 2\n", settings, 1);
        let started = Instant::now();
        let gw = gateway(&toml, driver);
        loop {
            let v = get(&gw, "/admin/backend-health").json();
            let backends = &v["models"]["chat"]["backends"];
            if backends[0]["is_healthy"] == false {
                assert_eq!(backends[0]["circuit"], "open", "{v}");
                assert_eq!(backends[1]["is_healthy"], true, "{v}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the dead backend still shows healthy: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

both_drivers! {
    fn stream_time_to_first_token_is_tracked_apart_from_the_head(driver) {
        // Head at once, first event 200 ms later: TTFB (what a streaming client feels) is not
        // the time to the response head.
        let mut rest = chunk("data: {\"n\":1}\n\n");
        rest.extend(chunk("data: [DONE]\n\n"));
        rest.extend(b"0\r\n\r\n");
        let a = upstream(move |_| Reply::Paced(vec![SSE_HEAD.as_bytes().to_vec(), rest.clone()], Duration::from_millis(200)));
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        let body = r#"{"model":"gpt-test","stream":true}"#;
        for _ in 0..3 {
            assert!(send_raw(gw.addr, &post("/v1/chat/completions", body)).clean_end);
        }
        // Percentiles refresh once a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (v, b) = loop {
            let v = get(&gw, "/admin/backend-health").json();
            let bs = v["models"]["chat"]["backends"].as_array().unwrap().clone();
            if let Some(b) = bs.into_iter().find(|b| b["ttfb_p50_ms"].is_number()) {
                break (v, b);
            }
            assert!(Instant::now() < deadline, "no TTFB percentiles: {v}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (head, ttfb) = (b["p50_ms"].as_f64().unwrap(), b["ttfb_p50_ms"].as_f64().unwrap());
        assert!(head < 150.0, "head p50 {head} ms");
        assert!(ttfb >= 190.0, "ttfb p50 {ttfb} ms: {v}");
    }
}

both_drivers! {
    fn a_failure_seen_by_shard_0_stops_shard_1_within_two_snapshot_periods(driver) {
        // Issue #4: shards agree through the control thread's snapshot. Each shard has its own
        // port here, so the test decides which shard sees what: A fails only on shard 0's
        // traffic, and shard 1 must then avoid A without ever having sent it a failing request
        // (so its own breaker knows nothing). The snapshot period is long next to scheduling
        // noise on a loaded two-core machine: the nominal worst case is one report period, one
        // snapshot period and one 50 ms shard inbox tick (300 ms); the bound is 2 × 200 + 50 ms.
        const SNAPSHOT_MS: u64 = 200;
        const REPORT_MS: u64 = 50;
        const THRESHOLD: usize = 3;
        let failing = Arc::new(AtomicBool::new(false));
        let failed_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (f2, t2) = (failing.clone(), failed_at.clone());
        let a = upstream(move |_| {
            if f2.load(Ordering::SeqCst) {
                t2.lock().unwrap().push(Instant::now());
                json_reply(500, r#"{"error":{"message":"down"}}"#)
            } else {
                json_reply(200, "{}")
            }
        });
        let b = upstream(|_| json_reply(200, "{}"));
        let settings = format!(
            "[settings]\nmax_retries = 1\ncircuit_breaker_failure_threshold = {THRESHOLD}\n\
             circuit_breaker_timeout_seconds = 60\nreport_interval_ms = {REPORT_MS}\n\
             snapshot_interval_ms = {SNAPSHOT_MS}\n"
        );
        // Round robin alternates strictly, so a shard that may use A sends it every other
        // request; no active checks, so every request A sees is a client's.
        let toml = config_two(a.addr, b.addr, "")
            .replacen("[settings]\nmax_retries = 2\n", &settings, 1)
            .replacen("name = \"gpt-test\"", "name = \"gpt-test\"\nstrategy = \"round_robin\"", 1)
            .replace("weight = 1", "weight = 1\nhealth_check = \"none\"");
        let gw = gateway_shards(&toml, 2, driver);
        let (shard0, shard1) = (gw.shards[0], gw.shards[1]);
        let chat = |addr: SocketAddr| send_raw(addr, &post("/v1/chat/completions", CHAT));
        // A's circuit in the snapshot a shard holds (`None` before its first snapshot).
        let circuit_of_a = |addr: SocketAddr| {
            let v = send_raw(addr, b"GET /admin/backend-health HTTP/1.1\r\nhost: x\r\n\r\n").json();
            (v["models"]["chat"]["backends"][0]["circuit"].as_str().map(str::to_string), v)
        };
        // Start from steady state: both shards hold a snapshot (a shard polls its inbox every
        // 50 ms, so right after startup it may still route without one).
        let deadline = Instant::now() + Duration::from_secs(5);
        for &shard in &gw.shards {
            while circuit_of_a(shard).0.is_none() {
                assert!(Instant::now() < deadline, "no snapshot reached shard {shard}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        // Healthy: shard 1 sends A half its traffic.
        for _ in 0..4 {
            assert_eq!(chat(shard1).status, 200);
        }
        assert_eq!((a.count(), b.count()), (2, 2), "shard 1 uses both backends");

        // A starts failing; only shard 0 gets traffic until A has failed THRESHOLD times.
        // Failover hides the failures from the client, and shard 0's own breaker then keeps it
        // away from A, so A's failures are exactly shard 0's THRESHOLD.
        failing.store(true, Ordering::SeqCst);
        for sent in 0.. {
            if failed_at.lock().unwrap().len() >= THRESHOLD {
                break;
            }
            assert!(sent < 4 * THRESHOLD, "shard 0 stopped sending to A early");
            assert_eq!(chat(shard0).status, 200, "failed over to beta");
        }
        let failed = failed_at.lock().unwrap()[THRESHOLD - 1];

        // Shard 1's admin view renders the snapshot its picks read; poll it until A's circuit
        // shows open there. A response received within the bound proves adoption within it.
        let bound = Duration::from_millis(2 * SNAPSHOT_MS + REPORT_MS);
        loop {
            let (circuit, v) = circuit_of_a(shard1);
            let took = failed.elapsed();
            if circuit.as_deref() == Some("open") {
                assert!(took <= bound, "shard 1 saw the open circuit only after {took:?}: {v}");
                break;
            }
            assert_eq!(circuit.as_deref(), Some("closed"), "{v}");
            assert!(took <= bound, "shard 1 still routes to A {took:?} after its last failure: {v}");
            std::thread::sleep(Duration::from_millis(5));
        }

        // And it routes by it. Round robin would try A on every other request (failing over to
        // beta, so the answer alone would not tell): A's own count must not move.
        for i in 0..10 {
            let r = chat(shard1);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
            assert_eq!(r.header("x-berry-degraded"), None);
            assert_eq!(failed_at.lock().unwrap().len(), THRESHOLD, "shard 1's request {i} tried A");
        }
        // So A's failures are all shard 0's: shard 1 never saw A fail and its own breaker is
        // still closed; only the snapshot can have kept it away.
        assert_eq!(a.count(), 2 + THRESHOLD);
        // The shared book agrees: A's window holds shard 1's two successes and shard 0's
        // failures, nothing else.
        let (_, v) = circuit_of_a(shard1);
        let a_book = &v["models"]["chat"]["backends"][0];
        assert_eq!(a_book["requests_window"], 2 + THRESHOLD, "{v}");
        assert_eq!(a_book["error_rate"], THRESHOLD as f64 / (2 + THRESHOLD) as f64, "{v}");
    }
}

/// Before the control thread's first snapshot reaches a shard (up to a shard tick after
/// start), the shard already routes by a snapshot with every backend closed and healthy.
#[test]
fn a_fresh_gateway_shows_every_backend_at_once() {
    let a = upstream(|_| json_reply(200, "{}"));
    let b = upstream(|_| json_reply(200, "{}"));
    let gw = gateway(
        &config_two(a.addr, b.addr, ""),
        berry::config::DriverChoice::Auto,
    );
    let v = get(&gw, "/admin/backend-health").json();
    let backends = v["models"]["chat"]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "{v}");
    assert!(backends.iter().all(|b| b["is_healthy"] == true), "{v}");
}
