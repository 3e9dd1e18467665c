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
