//! CORS for pages in a browser: preflights answered without a token, every answer on the
//! OpenAI API paths carrying the CORS lines for an allowed origin (relayed, streamed, or
//! Berry's own error), and nothing at all changed for requests without `Origin`.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::both_drivers;
use crate::support::*;

const APP: &str = "https://app.example";
const ONLY_APP: &str = "[server]\ncors_allow_origins = [\"https://app.example\"]\n";
const CHAT: &str = r#"{"model":"gpt-test","backend":"alpha","messages":[]}"#;
const STREAM: &str = r#"{"model":"gpt-test","backend":"alpha","stream":true,"messages":[]}"#;

/// A JSON answer from an upstream that does CORS itself (as OpenAI's API does).
fn upstream_with_cors() -> Reply {
    let body = r#"{"id":"x","choices":[]}"#;
    Reply::Raw(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             access-control-allow-origin: *\r\naccess-control-expose-headers: x-up\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn preflight(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "OPTIONS {path} HTTP/1.1\r\nhost: berry\r\naccess-control-request-method: POST\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// The header lines a response has with this name (repeats included).
fn all<'r>(r: &'r Resp, name: &str) -> Vec<&'r str> {
    r.headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// No CORS line of any kind.
fn assert_no_cors(r: &Resp) {
    let cors: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-") || n == "vary")
        .collect();
    assert!(cors.is_empty(), "status {}: {cors:?}", r.status);
}

/// The lines an allowed origin's answer carries, with `allow_origin` as their origin.
fn assert_cors(r: &Resp, allow_origin: &str) {
    assert_eq!(
        all(r, "access-control-allow-origin"),
        [allow_origin],
        "status {}",
        r.status
    );
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for name in [
        "x-request-id",
        "x-berry-backend",
        "x-berry-error",
        "retry-after",
    ] {
        assert!(expose.contains(name), "{name} in {expose:?}");
    }
    let vary = all(r, "vary");
    if allow_origin == "*" {
        assert!(vary.is_empty(), "{vary:?}");
    } else {
        assert_eq!(vary, ["Origin"]);
    }
    assert!(r.header("access-control-allow-credentials").is_none());
}

both_drivers! {
    fn a_preflight_needs_no_token_and_names_what_a_page_may_send(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        let origin = format!("origin: {APP}\r\n");
        let asked = format!("{origin}access-control-request-headers: authorization,content-type,x-stainless-os\r\n");
        let r = send_raw(gw.addr, &preflight("/v1/chat/completions", &asked));
        assert_eq!(r.status, 204, "{}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert!(all(&r, "vary").is_empty());
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST, OPTIONS"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("authorization,content-type,x-stainless-os")
        );
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
        assert!(r.header("access-control-allow-credentials").is_none());
        assert!(r.header("content-length").is_none() && r.body.is_empty());
        // Without a list of its own, the headers an OpenAI client sends.
        for path in ["/v1/models", "/models", "/v1/embeddings?x=1", "/v1/not-yet"] {
            let r = send_raw(gw.addr, &preflight(path, &origin));
            assert_eq!(r.status, 204, "{path}");
            assert_eq!(
                r.header("access-control-allow-headers"),
                Some("authorization, content-type, accept"),
                "{path}"
            );
        }
        // Operators' views are not for pages.
        for (path, status) in [("/v1/health", 405), ("/health", 405), ("/metrics", 405), ("/admin/backend-health", 405), ("/nope", 404)] {
            let r = send_raw(gw.addr, &preflight(path, &origin));
            r.assert_error(status);
            assert_no_cors(&r);
        }
        // Without Origin it is no preflight: the path takes POST only, as before.
        let r = send_raw(gw.addr, &preflight("/v1/chat/completions", ""));
        r.assert_error(405);
        assert_eq!(r.header("allow"), Some("POST"));
        assert_no_cors(&r);
        assert_eq!(a.count(), 0, "a preflight never reaches an upstream");
    }

    fn a_preflight_keeps_the_connection_for_the_request_it_announces(driver) {
        let a = upstream(|_| upstream_with_cors());
        let gw = gateway(&config_two(a.addr, a.addr, ONLY_APP), driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        s.write_all(&preflight("/v1/chat/completions", &format!("origin: {APP}\r\n"))).unwrap();
        let pre = read_response(&mut r);
        assert_eq!(pre.status, 204);
        assert_eq!(pre.header("access-control-allow-origin"), Some(APP));
        assert_eq!(all(&pre, "vary"), ["Origin"]);
        assert!(pre.header("connection").is_none());
        let auth = format!("authorization: Bearer {TOKEN}\r\norigin: {APP}\r\n");
        s.write_all(&post_with("/v1/chat/completions", CHAT, &auth)).unwrap();
        let r = read_response(&mut r);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_cors(&r, APP);
    }

    fn a_disallowed_origin_gets_no_grant_from_berry_or_the_upstream(driver) {
        let a = upstream(|_| upstream_with_cors());
        let gw = gateway(&config_two(a.addr, a.addr, ONLY_APP), driver);
        let evil = "origin: https://evil.example\r\n";
        // The list decided, so each answer varies with Origin: a cache must not hand it to
        // a page the list allows.
        let no_grant = |r: &Resp| {
            assert!(r.headers.iter().all(|(n, _)| !n.starts_with("access-control-")), "{:?}", r.headers);
            assert_eq!(all(r, "vary"), ["Origin"]);
        };
        let r = send_raw(gw.addr, &preflight("/v1/chat/completions", evil));
        r.assert_error(405);
        no_grant(&r);
        // A page's simple request is not preflighted: the answer must not let it read it.
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &format!("authorization: Bearer {TOKEN}\r\n{evil}")));
        assert_eq!(r.status, 200);
        no_grant(&r);
        // Without an Origin too (the upstream's own lines are dropped as well).
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &format!("authorization: Bearer {TOKEN}\r\n")));
        assert_eq!(r.status, 200);
        no_grant(&r);
    }

    fn a_relayed_answer_carries_berrys_cors_lines_instead_of_the_upstreams(driver) {
        let a = upstream(|_| upstream_with_cors());
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        let auth = format!("authorization: Bearer {TOKEN}\r\norigin: {APP}\r\n");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &auth));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_cors(&r, "*");
        assert_ne!(r.header("access-control-expose-headers"), Some("x-up"));
        assert_eq!(all(&r, "access-control-expose-headers").len(), 1);
        assert_eq!(r.header("x-berry-backend"), Some("alpha"));
        // The model list is OpenAI's too.
        let models = format!("GET /v1/models HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\norigin: {APP}\r\n\r\n");
        let r = send_raw(gw.addr, models.as_bytes());
        assert_eq!(r.status, 200);
        assert_cors(&r, "*");
    }

    fn a_stream_carries_the_cors_lines(driver) {
        let mut reply = SSE_HEAD.replace("\r\n\r\n", "\r\naccess-control-allow-origin: *\r\n\r\n").into_bytes();
        reply.extend(chunk("data: {\"n\":1}\n\n"));
        reply.extend(chunk("data: [DONE]\n\n"));
        reply.extend(b"0\r\n\r\n");
        let a = upstream(move |_| Reply::Raw(reply.clone()));
        let gw = gateway(&config_two(a.addr, a.addr, ONLY_APP), driver);
        let auth = format!("authorization: Bearer {TOKEN}\r\norigin: {APP}\r\n");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", STREAM, &auth));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert!(r.clean_end && r.text().contains("[DONE]"));
        assert_cors(&r, APP);
    }

    fn berrys_own_errors_carry_the_cors_lines(driver) {
        let up = upstream(|_| Reply::Close);
        let gw = gateway(&config_two(up.addr, up.addr, ONLY_APP), driver);
        let origin = format!("origin: {APP}\r\n");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &origin));
        r.assert_error(401);
        assert_cors(&r, APP);
        let auth = format!("authorization: Bearer {TOKEN}\r\n{origin}");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", r#"{"model":"nope"}"#, &auth));
        r.assert_error(404);
        assert_cors(&r, APP);
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &auth));
        r.assert_error(502);
        assert_cors(&r, APP);
        let r = send_raw(gw.addr, format!("GET /v1/not-yet HTTP/1.1\r\n{origin}\r\n").as_bytes());
        r.assert_error(404);
        assert_cors(&r, APP);
        let r = send_raw(gw.addr, format!("GET /v1/chat/completions HTTP/1.1\r\n{origin}\r\n").as_bytes());
        r.assert_error(405);
        assert_cors(&r, APP);
        let r = send_raw(gw.addr, format!("GET /models HTTP/1.1\r\n{origin}\r\n").as_bytes());
        r.assert_error(401);
        assert_cors(&r, APP);
        // Not the operators' views.
        let r = send_raw(gw.addr, format!("GET /admin/backend-health HTTP/1.1\r\n{origin}\r\n").as_bytes());
        assert_no_cors(&r);
    }

    fn a_rate_limited_page_can_read_retry_after(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let limit = "[users.alice.rate_limit]\nrequests_per_minute = 1\n";
        let gw = gateway(&config_two(a.addr, a.addr, limit), driver);
        let auth = format!("authorization: Bearer {TOKEN}\r\norigin: {APP}\r\n");
        assert_eq!(send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &auth)).status, 200);
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &auth));
        r.assert_error(429);
        assert!(r.header("retry-after").is_some());
        assert_cors(&r, "*");
    }

    fn without_origin_nothing_changes(driver) {
        let a = upstream(|_| upstream_with_cors());
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200);
        // The upstream's own lines pass as they always did; Berry adds none.
        assert_eq!(all(&r, "access-control-allow-origin"), ["*"]);
        assert_eq!(r.header("access-control-expose-headers"), Some("x-up"));
        assert!(all(&r, "vary").is_empty());
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, ""));
        r.assert_error(401);
        assert_no_cors(&r);
        let r = send_raw(gw.addr, format!("GET /v1/models HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_no_cors(&r);
    }

    fn an_empty_list_turns_cors_off(driver) {
        let a = upstream(|_| upstream_with_cors());
        let gw = gateway(&config_two(a.addr, a.addr, "[server]\ncors_allow_origins = []\n"), driver);
        let origin = format!("origin: {APP}\r\n");
        let r = send_raw(gw.addr, &preflight("/v1/chat/completions", &origin));
        r.assert_error(405);
        assert_no_cors(&r);
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &origin));
        r.assert_error(401);
        assert_no_cors(&r);
        // "None allowed" holds against the upstream too: its own lines cannot grant access.
        let auth = format!("authorization: Bearer {TOKEN}\r\n{origin}");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &auth));
        assert_eq!(r.status, 200);
        assert_no_cors(&r);
        // Without an Origin the answer is relayed as before CORS existed, its lines included.
        let auth = format!("authorization: Bearer {TOKEN}\r\n");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &auth));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-expose-headers"), Some("x-up"));
    }
}
