use crate::both_drivers;
use crate::observability::{sample, scrape_until};
use crate::support::*;

const USERS: &str = r#"
[users.carol]
name = "Carol"
token = "tok-carol-0123456789abcdef"
allowed_models = ["gpt-test"]
[users.carol.rate_limit]
requests_per_minute = 3
requests_per_day = 100

[models.other]
name = "other-model"
[[models.other.backends]]
provider = "alpha"
model = "up-model-a"
"#;

const CAROL: &str = "authorization: Bearer tok-carol-0123456789abcdef\r\n";

both_drivers! {
    fn rate_limit_is_counted_across_shards_and_refusals_spend_nothing(driver) {
        let a = upstream(|_| json_reply(200, r#"{"ok":1}"#));
        // Each shard on its own port, so the test decides which shard serves each request.
        let fast_reports = "[settings]\nreport_interval_ms = 20\nsnapshot_interval_ms = 20\n";
        let toml = config_two(a.addr, a.addr, USERS).replacen("[settings]\n", fast_reports, 1);
        let toml = format!("{toml}\n[observability]\naccess_log = \"off\"\n");
        let gw = gateway_shards(&toml, 2, driver);
        let chat = |shard: usize, body: &str| {
            send_raw(gw.shards[shard], &post_with("/v1/chat/completions", body, CAROL))
        };
        // Refused before the limit is looked at: these spend no quota.
        chat(0, r#"{"model":"gpt-test",}"#).assert_error(400);
        chat(1, r#"{"model":"other-model"}"#).assert_error(403);
        chat(0, r#"{"model":"nope"}"#).assert_error(404);
        for shard in [0, 1, 0] {
            assert_eq!(chat(shard, r#"{"model":"gpt-test"}"#).status, 200);
        }
        for shard in [1, 0] {
            let r = chat(shard, r#"{"model":"gpt-test"}"#);
            let v = r.assert_error(429);
            assert_eq!(v["error"]["code"], "rate_limit_exceeded");
            assert_eq!(v["error"]["type"], "requests");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("3 requests per minute"), "{v}");
            let wait: u64 = r.header("retry-after").expect("retry-after").parse().unwrap();
            assert!((55..=61).contains(&wait), "retry-after {wait}");
            assert!(r.header("x-request-id").is_some());
            assert_eq!(r.header("connection"), None, "a 429 keeps the connection");
        }
        assert_eq!(a.count(), 3, "refused requests never reach an upstream");
        // Other users have their own (here: no) limit.
        for shard in [0, 1] {
            let r = send_raw(gw.shards[shard], &post("/v1/chat/completions", r#"{"model":"gpt-test"}"#));
            assert_eq!(r.status, 200);
        }
        // Operators see who hits a limit; the token itself is nowhere.
        let (text, s) = scrape_until(gw.shards[1], |s| {
            sample(s, "berry_rate_limited_total", &[("user", "carol")]) >= 2.0
        });
        assert_eq!(sample(&s, "berry_rate_limited_total", &[("user", "carol")]), 2.0);
        let status_429 = [("method", "POST"), ("endpoint", "/v1/chat/completions"), ("status", "429")];
        assert_eq!(sample(&s, "berry_api_http_requests_total", &status_429), 2.0);
        assert!(!text.contains("tok-carol"), "{text}");
        // The admin view (loopback here) shows each window's count, from either shard.
        let r = send_raw(gw.shards[0], b"GET /admin/rate-limits HTTP/1.1\r\nhost: b\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert!(!r.text().contains("tok-carol"));
        let users = v["users"].as_array().unwrap();
        assert_eq!(users.len(), 1, "only users with a limit: {v}");
        assert_eq!(users[0]["user"], "carol");
        let windows = &users[0]["windows"];
        assert_eq!(windows[0]["window"], "minute");
        assert_eq!((windows[0]["limit"].as_u64(), windows[0]["used"].as_u64(), windows[0]["remaining"].as_u64()), (Some(3), Some(3), Some(0)));
        assert_eq!(windows[1]["window"], "day");
        assert_eq!((windows[1]["limit"].as_u64(), windows[1]["used"].as_u64()), (Some(100), Some(3)));
    }
}
