use std::io::{Read, Write};
use std::net::TcpStream;

use crate::both_drivers;
use crate::support::*;

fn gw_with(driver: berry::config::DriverChoice, extra: &str) -> (Gateway, Upstream) {
    let a = upstream(|_| json_reply(200, r#"{"ok":1}"#));
    let gw = gateway(&config_two(a.addr, a.addr, extra), driver);
    (gw, a)
}

const BOB: &str = r#"
[users.bob]
name = "Bob"
token = "tok-bob-0123456789abcdef"
allowed_models = ["other"]

[models.other]
name = "other-model"
[[models.other.backends]]
provider = "alpha"
model = "up-model-a"
"#;

both_drivers! {
    fn malformed_json_missing_model_unknown_model(driver) {
        let (gw, up) = gw_with(driver, "");
        let v = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model": "gpt-test",}"#)).assert_error(400);
        assert_eq!(v["error"]["code"], "invalid_json");
        let v = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"messages":[]}"#)).assert_error(400);
        assert_eq!(v["error"]["code"], "missing_model");
        let v = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":"nope"}"#)).assert_error(404);
        assert_eq!(v["error"]["code"], "model_not_found");
        let v = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":7}"#)).assert_error(400);
        assert_eq!(v["error"]["code"], "invalid_json");
        assert_eq!(up.count(), 0, "nothing reaches an upstream");
    }

    fn auth_failures_are_401_and_forbidden_model_is_403(driver) {
        let (gw, up) = gw_with(driver, BOB);
        let body = r#"{"model":"gpt-test"}"#;
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", body, ""));
        r.assert_error(401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        send_raw(gw.addr, &post_with("/v1/chat/completions", body, "authorization: Basic abc\r\n")).assert_error(401);
        send_raw(gw.addr, &post_with("/v1/chat/completions", body, "authorization: Bearer wrong-token-0000000000\r\n")).assert_error(401);
        let bob = "authorization: Bearer tok-bob-0123456789abcdef\r\n";
        let v = send_raw(gw.addr, &post_with("/v1/chat/completions", body, bob)).assert_error(403);
        assert_eq!(v["error"]["code"], "model_access_denied");
        // Bob may not force a backend either.
        let forced = r#"{"model":"other-model","backend":"alpha"}"#;
        send_raw(gw.addr, &post_with("/v1/chat/completions", forced, bob)).assert_error(403);
        // ...but may use his model, by display name or by key.
        assert_eq!(send_raw(gw.addr, &post_with("/v1/chat/completions", r#"{"model":"other-model"}"#, bob)).status, 200);
        assert_eq!(send_raw(gw.addr, &post_with("/v1/chat/completions", r#"{"model":"other"}"#, bob)).status, 200);
        assert_eq!(up.count(), 2);
    }

    fn unknown_path_wrong_method_wrong_type_no_length(driver) {
        let (gw, _up) = gw_with(driver, "");
        let v = send_raw(gw.addr, b"GET /v2/nothing HTTP/1.1\r\nhost: x\r\n\r\n").assert_error(404);
        assert_eq!(v["error"]["code"], "unknown_url");
        let r = send_raw(gw.addr, format!("GET /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\n\r\n").as_bytes());
        r.assert_error(405);
        assert_eq!(r.header("allow"), Some("POST"));
        let raw = format!("POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi");
        send_raw(gw.addr, raw.as_bytes()).assert_error(415);
        let raw = format!("POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n\r\n");
        send_raw(gw.addr, raw.as_bytes()).assert_error(411);
        // A coding besides chunked is sound framing Berry cannot read (501); one that does not
        // end with chunked leaves the length unknown (400).
        let coded = |te: &str| format!("POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: {te}\r\n\r\n0\r\n\r\n");
        let v = send_raw(gw.addr, coded("gzip, chunked").as_bytes()).assert_error(501);
        assert_eq!(v["error"]["code"], "not_implemented");
        let v = send_raw(gw.addr, coded("gzip").as_bytes()).assert_error(400);
        assert_eq!(v["error"]["code"], "bad_request");
    }

    fn oversized_body_and_headers(driver) {
        let (gw, up) = gw_with(driver, "[server]\nbody_bytes_max = 1024\nheader_bytes_max = 2048\n");
        let big = format!(r#"{{"model":"gpt-test","pad":"{}"}}"#, "x".repeat(2000));
        send_raw(gw.addr, &post("/v1/chat/completions", &big)).assert_error(413);
        // Chunked bodies are limited as they are decoded.
        let mut raw = format!("POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n").into_bytes();
        raw.extend(chunk(&big));
        raw.extend(b"0\r\n\r\n");
        send_raw(gw.addr, &raw).assert_error(413);
        // A chunk declared too big is refused as its size line arrives, before its data (the
        // client here never sends it all: without the early answer this would wait for the
        // 30 s body timeout).
        let mut raw = format!("POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n").into_bytes();
        raw.extend(b"a00000\r\n");
        raw.extend([b'x'; 100]);
        let started = std::time::Instant::now();
        send_raw(gw.addr, &raw).assert_error(413);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A size that cannot be added to what came before is refused too, not overflowed.
        let mut raw = format!("POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n").into_bytes();
        raw.extend(b"1\r\n{\r\nffffffffffffffff\r\n");
        raw.extend([b'x'; 100]);
        send_raw(gw.addr, &raw).assert_error(413);
        let huge = format!("GET /health HTTP/1.1\r\nx-pad: {}\r\n\r\n", "y".repeat(4000));
        send_raw(gw.addr, huge.as_bytes()).assert_error(431);
        assert_eq!(up.count(), 0);
    }

    fn garbage_request_line_is_400_and_http2_preface_is_505(driver) {
        let (gw, _up) = gw_with(driver, "");
        send_raw(gw.addr, b"HELLO\r\n\r\n").assert_error(400);
        send_raw(gw.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").assert_error(505);
    }

    fn slow_client_gets_408(driver) {
        let (gw, _up) = gw_with(driver, "[server]\nclient_header_timeout_ms = 300\n");
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").unwrap();
        let mut out = String::new();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }

    fn a_body_that_stops_arriving_gets_408(driver) {
        let (gw, up) = gw_with(driver, "[server]\nclient_body_timeout_ms = 300\n");
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let started = std::time::Instant::now();
        let mut partial = post("/v1/chat/completions", &format!("{{\"model\":\"gpt-test\",\"pad\":\"{}\"}}", "x".repeat(100)));
        partial.truncate(partial.len() - 60);
        s.write_all(&partial).unwrap();
        let mut out = String::new();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        let took = started.elapsed();
        assert!(took >= std::time::Duration::from_millis(250), "fired early: {took:?}");
        assert!(took < std::time::Duration::from_secs(3), "fired late: {took:?}");
        assert_eq!(up.count(), 0);
    }

    fn an_idle_keep_alive_connection_is_closed(driver) {
        let (gw, _up) = gw_with(driver, "[server]\nclient_idle_timeout_ms = 300\n");
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        s.write_all(&post("/v1/chat/completions", r#"{"model":"gpt-test"}"#)).unwrap();
        assert_eq!(read_response(&mut r).status, 200);
        let idle_from = std::time::Instant::now();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        // EOF (0 bytes, no error) once the gateway closes the idle connection.
        let n = std::io::Read::read_to_end(&mut r, &mut rest).expect("closed, not timed out");
        assert_eq!(n, 0, "nothing is sent on an idle close");
        let took = idle_from.elapsed();
        assert!(took >= std::time::Duration::from_millis(250), "closed early: {took:?}");
        assert!(took < std::time::Duration::from_secs(3), "closed late: {took:?}");
    }

    fn a_new_connection_that_says_nothing_gets_the_header_timeout(driver) {
        // Idle time is for keep-alive connections between requests; a fresh one that never
        // sends a byte is closed at the (shorter) header timeout.
        let (gw, _up) = gw_with(driver, "[server]\nclient_header_timeout_ms = 300\nclient_idle_timeout_ms = 20000\n");
        let s = TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let from = std::time::Instant::now();
        let mut rest = Vec::new();
        let n = std::io::Read::read_to_end(&mut &s, &mut rest).expect("closed, not timed out");
        assert_eq!(n, 0, "nothing is sent to a client that sent nothing");
        let took = from.elapsed();
        assert!(took >= std::time::Duration::from_millis(250), "closed early: {took:?}");
        assert!(took < std::time::Duration::from_secs(3), "closed at the idle timeout: {took:?}");
    }

    fn a_header_that_must_be_single_is_refused_when_doubled(driver) {
        let (gw, up) = gw_with(driver, BOB);
        let body = r#"{"model":"gpt-test"}"#;
        // Which token counts would be a guess (a proxy in front may have checked the other).
        let two_tokens = format!("authorization: Bearer {TOKEN}\r\nauthorization: Bearer tok-bob-0123456789abcdef\r\n");
        let raw = format!("POST /v1/chat/completions HTTP/1.1\r\n{two_tokens}content-length: {}\r\n\r\n{body}", body.len());
        let v = send_raw(gw.addr, raw.as_bytes()).assert_error(400);
        assert!(v["error"]["message"].as_str().unwrap().contains("Authorization"), "{v}");
        // `post_with` sends one Content-Type already.
        let second_type = format!("authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n");
        let v = send_raw(gw.addr, &post_with("/v1/chat/completions", body, &second_type)).assert_error(400);
        assert!(v["error"]["message"].as_str().unwrap().contains("Content-Type"), "{v}");
        assert_eq!(up.count(), 0);
    }

    fn a_new_connection_has_its_whole_head_due_at_the_header_timeout(driver) {
        // One byte just before the limit does not buy another full header timeout.
        let (gw, _up) = gw_with(driver, "[server]\nclient_header_timeout_ms = 500\n");
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let from = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(400));
        s.write_all(b"G").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let r = read_response(&mut std::io::BufReader::new(&s));
        r.assert_error(408);
        let took = from.elapsed();
        assert!(took < std::time::Duration::from_millis(800), "head due at {took:?}");
    }

    fn error_then_keep_alive_still_works(driver) {
        let (gw, up) = gw_with(driver, "");
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        s.write_all(&post("/v1/chat/completions", r#"{"model":"nope"}"#)).unwrap();
        assert_eq!(read_response(&mut r).status, 404);
        s.write_all(&post_with("/v1/chat/completions", r#"{"model":"gpt-test"}"#, "authorization: Bearer bad-token-0000000000\r\n")).unwrap();
        assert_eq!(read_response(&mut r).status, 401);
        s.write_all(&post("/v1/chat/completions", r#"{"model":"gpt-test"}"#)).unwrap();
        assert_eq!(read_response(&mut r).status, 200);
        assert_eq!(up.count(), 1);
    }
}

both_drivers! {
    fn random_garbage_never_takes_the_shard_down(driver) {
        let (gw, _up) = gw_with(driver, "");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prefixes: [&[u8]; 4] = [b"", b"POST /v1/chat/completions HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n", b"POST /v1/embeddings HTTP/1.1\r\ncontent-length: 5\r\n\r\n"];
        for i in 0..200 {
            let mut data = prefixes[i % prefixes.len()].to_vec();
            let len = (next() % 300) as usize;
            data.extend((0..len).map(|_| {
                let b = next() as u8;
                // Bias towards bytes that matter to the parsers.
                match b % 8 {
                    0 => b'\r',
                    1 => b'\n',
                    2 => b':',
                    _ => b,
                }
            }));
            if let Ok(mut s) = TcpStream::connect(gw.addr) {
                let _ = s.write_all(&data);
                let _ = s.shutdown(std::net::Shutdown::Write);
                s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        let r = send_raw(gw.addr, b"GET /v1/health HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 200);
    }
}
