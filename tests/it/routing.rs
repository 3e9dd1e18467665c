use crate::both_drivers;
use crate::support::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"hi"}]}"#;

/// `config_two` with the model's strategy and the backends' weights/priorities replaced.
fn config_with(
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    strategy: &str,
    alpha: &str,
    beta: &str,
    extra: &str,
) -> String {
    config_two(a, b, extra)
        .replacen(
            "name = \"gpt-test\"",
            &format!("name = \"gpt-test\"\nstrategy = \"{strategy}\""),
            1,
        )
        .replacen(
            "model = \"up-model-a\"\nweight = 1",
            &format!("model = \"up-model-a\"\n{alpha}"),
            1,
        )
        .replacen(
            "model = \"up-model-b\"\nweight = 1",
            &format!("model = \"up-model-b\"\n{beta}"),
            1,
        )
}

fn send_n(gw: &Gateway, n: usize) {
    for _ in 0..n {
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

both_drivers! {
    fn round_robin_follows_weights_exactly(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_with(a.addr, b.addr, "round_robin", "weight = 3", "weight = 1", ""), driver);
        send_n(&gw, 40);
        assert_eq!((a.count(), b.count()), (30, 10));
    }

    fn failover_uses_the_first_priority_tier_until_it_fails(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_with(a.addr, b.addr, "failover", "priority = 1", "priority = 0", ""), driver);
        send_n(&gw, 10);
        assert_eq!((a.count(), b.count()), (0, 10), "beta has the lower priority number");

        let dead = dead_addr();
        let a = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_with(a.addr, dead, "failover", "priority = 1", "priority = 0", ""), driver);
        send_n(&gw, 5);
        assert_eq!(a.count(), 5, "the next tier takes over when the first fails");
    }

    fn open_circuit_stops_traffic_to_a_failing_backend(driver) {
        let bad = upstream(|_| json_reply(500, "{}"));
        let good = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\ncircuit_breaker_failure_threshold = 2\ncircuit_breaker_timeout_seconds = 60\n";
        let toml = config_with(bad.addr, good.addr, "weighted_random", "weight = 1", "weight = 1", "")
            .replacen("[settings]\n", settings, 1);
        let gw = gateway(&toml, driver);
        send_n(&gw, 40);
        // Two failures open the circuit (each one failed over to `good`); after that `bad` gets
        // nothing until circuit_breaker_timeout_seconds has passed.
        assert_eq!(bad.count(), 2, "bad saw {} requests", bad.count());
        assert_eq!(good.count(), 40);
    }

    fn weighted_random_splits_by_weight(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_with(a.addr, b.addr, "weighted_random", "weight = 4", "weight = 1", ""), driver);
        send_n(&gw, 200);
        // Expected 160 / 40; ±5 standard deviations (σ ≈ 5.7) keeps this from ever flaking.
        assert!((131..=189).contains(&a.count()), "alpha got {}", a.count());
    }

    fn prefix_affinity_keeps_a_prompt_on_one_backend(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_with(a.addr, b.addr, "prefix_affinity", "weight = 1", "weight = 1", ""), driver);
        send_n(&gw, 20);
        assert!(a.count() == 20 || b.count() == 20, "split {} / {}", a.count(), b.count());
    }

    fn forced_backend_by_header_goes_only_there(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_with(a.addr, b.addr, "round_robin", "weight = 1", "weight = 1", ""), driver);
        for _ in 0..6 {
            let extra = format!("authorization: Bearer {TOKEN}\r\nx-berry-backend: beta\r\n");
            let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &extra));
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
        }
        assert_eq!((a.count(), b.count()), (0, 6));
        // A forced backend that is down is a clear error, never a silent detour.
        let gw = gateway(&config_with(a.addr, dead_addr(), "round_robin", "weight = 1", "weight = 1", ""), driver);
        let extra = format!("authorization: Bearer {TOKEN}\r\nx-berry-backend: beta\r\n");
        send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &extra)).assert_error(502);
        assert_eq!(a.count(), 0);
    }
}

both_drivers! {
    fn forced_backend_with_an_open_circuit_is_a_clear_503(driver) {
        let bad = upstream(|_| json_reply(500, "{}"));
        let good = upstream(|_| json_reply(200, "{}"));
        let settings = "[settings]\ncircuit_breaker_failure_threshold = 1\ncircuit_breaker_timeout_seconds = 60\n";
        let toml = config_with(bad.addr, good.addr, "weighted_random", "weight = 1", "weight = 1", "").replacen("[settings]\n", settings, 1);
        let gw = gateway(&toml, driver);
        let forced = format!("authorization: Bearer {TOKEN}\r\nx-berry-backend: alpha\r\n");
        assert_eq!(send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &forced)).status, 500);
        let v = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &forced)).assert_error(503);
        assert!(v["error"]["message"].as_str().unwrap().contains("alpha"), "{v}");
        assert_eq!(bad.count(), 1, "not tried again while open");
        assert_eq!(good.count(), 0, "never silently elsewhere");
    }
}
