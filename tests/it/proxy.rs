use std::io::{BufReader, Write};
use std::net::TcpStream;

use crate::both_drivers;
use crate::support::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.5,"backend":"alpha"}"#;

both_drivers! {
    fn non_stream_is_relayed_with_rewrite_and_headers(driver) {
        let a = upstream(|_| json_reply(200, r#"{"id":"x","model":"up-model-a","usage":{"total_tokens":3}}"#));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200, "{}", r.text());
        // Byte-exact body, the upstream's own model and usage.
        assert_eq!(r.text(), r#"{"id":"x","model":"up-model-a","usage":{"total_tokens":3}}"#);
        assert_eq!(r.header("x-berry-backend"), Some("alpha"));
        assert_eq!(r.header("x-upstream-request-id"), Some("up-123"));
        let id = r.header("x-request-id").expect("request id").to_string();
        assert_eq!(id.len(), 32);
        assert_eq!(b.count(), 0, "forced backend alpha must be the only one used");

        let seen = a.last();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(seen.header("authorization"), Some("Bearer sk-alpha-secret-000000"));
        assert_eq!(seen.header("x-org"), Some("org-alpha"));
        assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
        assert_eq!(seen.header("accept-encoding"), None);
        // Model rewritten, backend dropped, every other byte untouched.
        assert_eq!(
            String::from_utf8(seen.body.clone()).unwrap(),
            r#"{"model":"up-model-a","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.5}"#
        );
    }

    fn client_credentials_and_provider_headers_are_not_taken_from_clients(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let extra = format!("authorization: Bearer {TOKEN}\r\nx-org: evil\r\nx-api-key: stolen\r\nopenai-organization: org-evil\r\nx-custom: kept\r\n");
        let r = send_raw(gw.addr, &post_with("/v1/chat/completions", CHAT, &extra));
        assert_eq!(r.status, 200);
        let seen = a.last();
        let orgs: Vec<_> = seen.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("x-org")).collect();
        assert_eq!(orgs.len(), 1, "only the provider's own X-Org: {orgs:?}");
        assert_eq!(seen.header("x-org"), Some("org-alpha"));
        assert_eq!(seen.header("x-api-key"), None);
        assert_eq!(seen.header("openai-organization"), None);
        assert_eq!(seen.header("x-custom"), Some("kept"));
    }

    fn client_request_id_is_kept_and_base_url_v1_is_not_doubled(driver) {
        let a = upstream(|_| json_reply(500, "{}"));
        let b = upstream(|_| json_reply(200, r#"{"ok":true}"#));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let body = r#"{"model":"gpt-test","input":"x","backend":"beta"}"#;
        let r = send_raw(gw.addr, &post_with("/v1/embeddings", body, &format!("authorization: Bearer {TOKEN}\r\nx-request-id: my-id-42\r\n")));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-request-id"), Some("my-id-42"));
        let seen = b.last();
        assert_eq!(seen.path, "/v1/embeddings");
        assert_eq!(seen.header("x-request-id"), Some("my-id-42"));
        assert_eq!(seen.json()["model"], "up-model-b");
    }

    fn keep_alive_reuses_one_upstream_connection(driver) {
        let a = upstream(|_| json_reply(200, r#"{"n":1}"#));
        let b = upstream(|_| json_reply(200, r#"{"n":2}"#));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        for _ in 0..5 {
            s.write_all(&post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"alpha"}"#)).unwrap();
            let resp = read_response(&mut r);
            assert_eq!(resp.status, 200);
            assert_eq!(resp.text(), r#"{"n":1}"#);
        }
        assert_eq!(a.count(), 5);
        assert_eq!(a.conns.load(std::sync::atomic::Ordering::SeqCst), 1, "pooled upstream connection reused");
    }

    fn stale_pooled_connection_is_retried_on_a_fresh_one(driver) {
        // The upstream answers, then closes every connection: the pooled one is stale.
        let a = upstream(|_| Reply::Paced(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()], std::time::Duration::ZERO));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        for _ in 0..3 {
            let r = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"alpha"}"#));
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), "ok");
        }
        assert_eq!(b.count(), 0);
    }

    fn pipelined_requests_are_answered_in_order(driver) {
        let a = upstream(|s| json_reply(200, &format!(r#"{{"echo":{}}}"#, s.json()["n"])));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let mut both = post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"alpha","n":1}"#);
        both.extend(post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"alpha","n":2}"#));
        s.write_all(&both).unwrap();
        let mut r = BufReader::new(s);
        assert_eq!(read_response(&mut r).text(), r#"{"echo":1}"#);
        assert_eq!(read_response(&mut r).text(), r#"{"echo":2}"#);
    }

    fn expect_100_continue_and_chunked_request_body(driver) {
        let a = upstream(|s| json_reply(200, &String::from_utf8_lossy(&s.body)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let body = r#"{"model":"gpt-test","backend":"alpha"}"#;
        let mut s = TcpStream::connect(gw.addr).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let interim = read_response(&mut r);
        assert_eq!(interim.status, 100);
        let (x, y) = body.split_at(10);
        s.write_all(&chunk(x)).unwrap();
        s.write_all(&chunk(y)).unwrap();
        s.write_all(b"0\r\n\r\n").unwrap();
        let resp = read_response(&mut r);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), r#"{"model":"up-model-a"}"#);
        assert_eq!(a.last().header("transfer-encoding"), None);
    }

    fn http10_client_gets_a_close_delimited_stream(driver) {
        let a = upstream(|_| {
            let mut r = SSE_HEAD.as_bytes().to_vec();
            r.extend(chunk("data: {\"a\":1}\n\n"));
            r.extend(chunk("data: [DONE]\n\n"));
            r.extend(b"0\r\n\r\n");
            Reply::Raw(r)
        });
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let body = r#"{"model":"gpt-test","backend":"alpha","stream":true}"#;
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = send_raw(gw.addr, raw.as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), None);
        assert_eq!(r.text(), "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    }
}
