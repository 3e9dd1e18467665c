use std::time::{Duration, Instant};

use crate::both_drivers;
use crate::support::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[]}"#;

/// Config where `alpha` gets all first picks (weight 100 vs 0.001 would be flaky; instead we
/// run several requests and require that every one is served by the healthy backend).
fn run_many(gw: &Gateway, n: usize) -> Vec<Resp> {
    (0..n)
        .map(|_| send_raw(gw.addr, &post("/v1/chat/completions", CHAT)))
        .collect()
}

both_drivers! {
    fn refused_connection_fails_over(driver) {
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let gw = gateway(&config_two(dead_addr(), good.addr, ""), driver);
        for r in run_many(&gw, 6) {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
        }
        assert_eq!(good.count(), 6);
    }

    fn upstream_500_and_429_fail_over(driver) {
        let bad = upstream(|s| if s.body.len() % 2 == 0 { json_reply(500, "{}") } else { json_reply(429, "{}") });
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let gw = gateway(&config_two(bad.addr, good.addr, ""), driver);
        for r in run_many(&gw, 24) {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
        }
        assert!(bad.count() > 0, "with 24 random picks the bad backend is tried at least once (p = 1 - 2^-24)");
    }

    fn reset_before_headers_fails_over(driver) {
        let bad = upstream(|_| Reply::Close);
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let gw = gateway(&config_two(bad.addr, good.addr, ""), driver);
        for r in run_many(&gw, 4) {
            assert_eq!(r.status, 200);
        }
    }

    fn first_byte_timeout_fails_over(driver) {
        let slow = upstream(|_| Reply::Hang(Duration::from_secs(5)));
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let gw = gateway(&config_two(slow.addr, good.addr, ""), driver);
        let start = Instant::now();
        for r in run_many(&gw, 3) {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
        }
        assert!(start.elapsed() < Duration::from_secs(8));
    }

    fn an_upstream_that_stops_reading_the_request_times_out(driver) {
        // alpha accepts and never reads: a large body fills the socket buffers and the write
        // waits. It is bounded like the wait for the answer (first_byte_timeout_ms = 1500).
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let (s, _) = silent.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(s);
        });
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let toml = config_two(addr, good.addr, "") + "[server]\nbody_bytes_max = 33554432\n";
        let gw = gateway(&toml, driver);
        let filler = "x".repeat(24 << 20);
        let body = format!(r#"{{"model":"gpt-test","backend":"alpha","messages":[],"pad":"{filler}"}}"#);
        let start = Instant::now();
        let r = send_raw(gw.addr, &post("/v1/chat/completions", &body));
        let took = start.elapsed();
        let v = r.assert_error(504);
        assert_eq!(v["error"]["code"], "upstream_timeout");
        assert!(v["error"]["message"].as_str().unwrap().contains("did not take the request"), "{v}");
        assert!(took < Duration::from_secs(5), "bounded by first_byte_timeout_ms, took {took:?}");
        assert_eq!(good.count(), 0, "the request named its backend");
        held.join().unwrap();
    }

    fn an_early_answer_from_an_upstream_that_stops_reading_the_body_is_relayed(driver) {
        // A size limit upstream: it answers 413 after the head, closes without reading the
        // body, and Berry's write fails. Its answer, not a 502 and a failover, is the result.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    use std::io::{BufRead, Write};
                    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let body = r#"{"error":{"message":"request too large","code":"request_too_large"}}"#;
                    let _ = s.write_all(format!(
                        "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()).as_bytes());
                    std::thread::sleep(Duration::from_millis(50));
                });
            }
        });
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let toml = config_two(addr, good.addr, "") + "[server]\nbody_bytes_max = 33554432\n";
        let gw = gateway(&toml, driver);
        let filler = "x".repeat(24 << 20);
        let body = format!(r#"{{"model":"gpt-test","backend":"alpha","messages":[],"pad":"{filler}"}}"#);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", &body));
        assert_eq!(r.status, 413, "the upstream's own answer: {}", r.text());
        assert!(r.text().contains("request_too_large"), "{}", r.text());
        assert_eq!(r.header("x-berry-error"), None, "relayed, not Berry's");
    }

    fn client_errors_are_passed_through_not_retried(driver) {
        for status in [400u16, 401, 403, 404, 413, 422] {
            let a = upstream(move |_| json_reply(status, r#"{"error":{"message":"upstream says no"}}"#));
            let b = upstream(move |_| json_reply(status, r#"{"error":{"message":"upstream says no"}}"#));
            let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
            let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
            assert_eq!(r.status, status);
            assert_eq!(r.text(), r#"{"error":{"message":"upstream says no"}}"#);
            assert_eq!(a.count() + b.count(), 1, "status {status} must not be retried");
        }
    }

    fn all_backends_down_is_502_and_last_upstream_answer_is_relayed(driver) {
        let gw = gateway(&config_two(dead_addr(), dead_addr(), ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        let v = r.assert_error(502);
        assert_eq!(v["error"]["code"], "upstream_failed");
        assert!(!r.text().contains("127.0.0.1"), "no addresses in client errors");

        let a = upstream(|_| json_reply(503, r#"{"e":"a"}"#));
        let b = upstream(|_| json_reply(503, r#"{"e":"b"}"#));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 503);
        assert_eq!(a.count() + b.count(), 2, "each backend tried once, never twice");
    }

    fn malformed_answer_fails_over_and_counts_as_a_server_error(driver) {
        let bad = upstream(|_| Reply::Raw(b"HTTP/1.1 999 Nonsense\r\ncontent-length: 0\r\n\r\n".to_vec()));
        let good = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        let gw = gateway(&config_two(bad.addr, good.addr, ""), driver);
        // Pinned to the bad backend there is nothing else to try (first, while its breaker is closed).
        let pinned = r#"{"model":"gpt-test","backend":"alpha"}"#;
        let v = send_raw(gw.addr, &post("/v1/chat/completions", pinned)).assert_error(502);
        assert_eq!(v["error"]["code"], "upstream_malformed");
        for r in run_many(&gw, 8) {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
        }
        let tried = bad.count() as f64;
        let attempts = |s: &crate::observability::Samples, outcome| {
            crate::observability::sample(
                s,
                "berry_upstream_attempts_total",
                &[("model", "gpt-test"), ("backend", "alpha"), ("outcome", outcome)],
            )
        };
        let (text, s) = crate::observability::scrape_until(gw.addr, |s| attempts(s, "server_error") >= tried);
        assert_eq!(attempts(&s, "server_error"), tried, "{text}");
        assert_eq!(attempts(&s, "connect"), 0.0, "a garbled answer is not a network error:\n{text}");
    }

    fn no_failover_to_a_backend_whose_circuit_is_open(driver) {
        let busy = upstream(|_| json_reply(503, r#"{"error":{"message":"busy, try later"}}"#));
        let toml = config_two(busy.addr, dead_addr(), "")
            .replacen("[settings]\n", "[settings]\ncircuit_breaker_failure_threshold = 3\n", 1);
        let gw = gateway(&toml, driver);
        // Open beta's circuit: pinned to it, requests fail to connect.
        let pinned = r#"{"model":"gpt-test","backend":"beta"}"#;
        for _ in 0..3 {
            send_raw(gw.addr, &post("/v1/chat/completions", pinned)).assert_error(502);
        }
        // alpha answers 503 and the only other backend is known to be down: the client gets
        // alpha's own answer, not a blind try's connect error. (Two requests: a third 503
        // would open alpha's circuit too.)
        for _ in 0..2 {
            let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
            assert_eq!(r.status, 503, "{}", r.text());
            assert_eq!(r.text(), r#"{"error":{"message":"busy, try later"}}"#);
            assert_eq!(r.header("x-berry-backend"), Some("alpha"));
        }
        assert_eq!(busy.count(), 2);
    }

    fn with_every_circuit_open_a_request_tries_one_backend_not_all(driver) {
        let a = upstream(|_| Reply::Hang(Duration::from_secs(3)));
        let b = upstream(|_| Reply::Hang(Duration::from_secs(3)));
        let toml = config_two(a.addr, b.addr, "")
            .replacen("first_byte_timeout_ms = 1500", "first_byte_timeout_ms = 300", 1)
            .replacen("[settings]\n", "[settings]\ncircuit_breaker_failure_threshold = 1\n", 1);
        let gw = gateway(&toml, driver);
        // Both time out: both circuits open.
        send_raw(gw.addr, &post("/v1/chat/completions", CHAT)).assert_error(504);
        assert_eq!(a.count() + b.count(), 2);
        // Now every backend is down: one blind try (degraded mode), not one timeout per backend.
        let start = Instant::now();
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        r.assert_error(504);
        assert_eq!(r.header("x-berry-degraded"), Some("no available backend; tried an unavailable one"), "{:?}", r.headers);
        assert_eq!(a.count() + b.count(), 3);
        assert!(start.elapsed() < Duration::from_millis(600));
    }

    fn max_retries_zero_means_one_attempt(driver) {
        let bad = upstream(|_| json_reply(500, r#"{"e":1}"#));
        let gw = gateway(&config_two(bad.addr, bad.addr, "").replace("max_retries = 2", "max_retries = 0"), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 500);
        assert_eq!(bad.count(), 1);
    }

    fn upstream_timeout_everywhere_is_504(driver) {
        let slow = upstream(|_| Reply::Hang(Duration::from_secs(5)));
        let gw = gateway(&config_two(slow.addr, slow.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        r.assert_error(504);
    }
}
