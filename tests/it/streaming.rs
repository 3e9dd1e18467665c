use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::both_drivers;
use crate::support::*;

const STREAM: &str = r#"{"model":"gpt-test","backend":"alpha","stream":true,"messages":[]}"#;

fn sse(pieces: &[&str], end: bool) -> Vec<u8> {
    let mut r = SSE_HEAD.as_bytes().to_vec();
    for p in pieces {
        r.extend(chunk(p));
    }
    if end {
        r.extend(b"0\r\n\r\n");
    }
    r
}

both_drivers! {
    fn sse_is_relayed_byte_exact_with_event_and_id_lines(driver) {
        // Events split across chunks at awkward places, with comments, event: and id: fields.
        let pieces = [
            ": keep-alive comment\n\n",
            "event: delta\nid: 1\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel",
            "lo\"}}]}\n\nid: 2\r\ndata: {\"x\":2}\r\n\r\n",
            "data: [DONE]\n\n",
        ];
        let a = upstream(move |_| Reply::Raw(sse(&pieces, true)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert_eq!(r.header("x-berry-backend"), Some("alpha"));
        assert!(r.clean_end, "a complete stream ends with the last chunk");
        assert_eq!(r.text(), pieces.concat());
    }

    fn events_arrive_as_they_are_produced(driver) {
        let pieces: Vec<Vec<u8>> = vec![
            SSE_HEAD.as_bytes().to_vec(),
            chunk("data: {\"n\":1}\n\n"),
            chunk("data: {\"n\":2}\n\n"),
            chunk("data: [DONE]\n\n"),
            b"0\r\n\r\n".to_vec(),
        ];
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(300)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(&post("/v1/chat/completions", STREAM)).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The first event must arrive long before the stream ends (~1.2 s): no buffering.
        while !String::from_utf8_lossy(&got).contains("{\"n\":1}") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
        let first = start.elapsed();
        assert!(first < Duration::from_millis(900), "first event after {first:?}");
        assert!(!String::from_utf8_lossy(&got).contains("[DONE]"));
    }

    fn broken_stream_ends_with_an_error_event_and_no_clean_end(driver) {
        let pieces: Vec<Vec<u8>> = vec![
            SSE_HEAD.as_bytes().to_vec(),
            chunk("data: {\"n\":1}\n\n"),
            // Half an event, then the upstream dies.
            chunk("data: {\"n\":"),
        ];
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(50)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        assert_eq!(r.status, 200);
        assert!(!r.clean_end, "a broken stream must not end cleanly");
        let text = r.text();
        assert!(text.starts_with("data: {\"n\":1}\n\n\n\ndata: {\"error\":"), "{text}");
        assert!(!text.contains("{\"n\":\n"), "the half event is never sent: {text}");
        assert!(text.ends_with("\n\n"));
        let err: serde_json::Value = serde_json::from_str(text.trim_start_matches("data: {\"n\":1}\n\n\n\ndata: ").trim()).unwrap();
        assert_eq!(err["error"]["code"], "upstream_failed");
        assert_eq!(b.count(), 0, "no failover after the first byte");
    }

    fn garbled_chunk_framing_mid_stream_is_reported_as_malformed(driver) {
        let pieces = vec![sse(&["data: {\"n\":1}\n\n"], false), b"zz\r\nnot a chunk\r\n".to_vec()];
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(50)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        assert_eq!(r.status, 200);
        assert!(!r.clean_end);
        let text = r.text();
        let err: serde_json::Value = serde_json::from_str(text.trim_start_matches("data: {\"n\":1}\n\n\n\ndata: ").trim()).unwrap();
        assert_eq!(err["error"]["code"], "upstream_malformed", "{text}");
        assert_eq!(b.count(), 0, "no failover after the first byte");
    }

    fn stream_without_done_is_reported_as_broken(driver) {
        // The second stream carries the text `[DONE]` as content: that is not the end event.
        for event in ["data: {\"n\":1}\n\n", "data: {\"content\":\"[DONE]\"}\n\n"] {
            // All at once: nothing was sent yet, so the client gets a real status.
            let a = upstream(move |_| Reply::Raw(sse(&[event], true)));
            let b = upstream(|_| json_reply(500, "{}"));
            let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
            let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
            let v = r.assert_error(502);
            assert!(v["error"]["message"].as_str().unwrap().contains("without [DONE]"), "{v}");
            // The first event sent, then the end: told in-band.
            let mut first = SSE_HEAD.as_bytes().to_vec();
            first.extend(chunk(event));
            let a = upstream(move |_| Reply::Paced(vec![first.clone(), b"0\r\n\r\n".to_vec()], Duration::from_millis(100)));
            let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
            let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
            assert_eq!(r.status, 200);
            assert!(!r.clean_end, "{event}");
            assert!(r.text().starts_with(event), "{}", r.text());
            assert!(r.text().contains("without [DONE]"), "{}", r.text());
        }
    }

    fn a_stream_that_ends_before_its_first_whole_event_fails_over(driver) {
        // alpha: half an event then a clean end, or no bytes at all; beta answers whole.
        for tail in ["data: {\"partial\":", ""] {
            let a = upstream(move |_| Reply::Raw(sse(&[tail], true)));
            let b = upstream(|_| Reply::Raw(sse(&["data: {\"from\":\"b\"}\n\n", "data: [DONE]\n\n"], true)));
            let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
            for _ in 0..12 {
                let r = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":"gpt-test","stream":true}"#));
                assert_eq!(r.status, 200);
                assert!(r.clean_end, "{tail:?}: {}", r.text());
                assert_eq!(r.header("x-berry-backend"), Some("beta"), "{}", r.text());
            }
        }
    }

    fn an_error_after_an_unfinished_event_is_an_event_of_its_own(driver) {
        let mut first = SSE_HEAD.as_bytes().to_vec();
        first.extend(chunk("data: {\"n\":1}\n\n"));
        let mut rest = chunk("data: {\"partial\":");
        rest.extend(b"0\r\n\r\n");
        let a = upstream(move |_| Reply::Paced(vec![first.clone(), rest.clone()], Duration::from_millis(100)));
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        assert_eq!(r.status, 200);
        assert!(!r.clean_end);
        let text = r.text();
        let (before, err) = text.split_once("\n\ndata: {\"error\"").expect("a separate error event");
        assert_eq!(before, "data: {\"n\":1}\n\ndata: {\"partial\":", "{text}");
        assert!(err.contains("without [DONE]"), "{text}");
    }

    fn stalled_stream_times_out_with_an_error_event(driver) {
        let mut first = SSE_HEAD.as_bytes().to_vec();
        first.extend(chunk("data: {\"n\":1}\n\n"));
        let a = upstream(move |_| Reply::Paced(vec![first.clone(), chunk("data: late\n\n")], Duration::from_secs(5)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let start = Instant::now();
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        assert!(start.elapsed() < Duration::from_secs(4), "stream_idle_timeout_ms (1.5 s) must end it");
        assert!(!r.clean_end);
        assert!(r.text().starts_with("data: {\"n\":1}\n\n\n\ndata: {\"error\""), "{}", r.text());
        assert!(r.text().contains("upstream_timeout"), "{}", r.text());
    }

    fn stall_before_the_first_event_is_a_504_not_a_stream(driver) {
        // Headers only, then silence: nothing was committed, so the client gets a real status.
        let a = upstream(|_| Reply::Paced(vec![SSE_HEAD.as_bytes().to_vec(), chunk("data: late\n\n")], Duration::from_secs(5)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        r.assert_error(504);
    }

    fn stream_failing_before_first_event_fails_over(driver) {
        // Headers, then the connection drops before any event: nothing reached the client yet.
        let a = upstream(|_| Reply::Paced(vec![SSE_HEAD.as_bytes().to_vec()], Duration::ZERO));
        let b = upstream(|_| Reply::Raw(sse(&["data: {\"from\":\"b\"}\n\n", "data: [DONE]\n\n"], true)));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let body = r#"{"model":"gpt-test","stream":true}"#;
        for _ in 0..4 {
            let r = send_raw(gw.addr, &post("/v1/chat/completions", body));
            assert_eq!(r.status, 200);
            assert!(r.clean_end);
            assert_eq!(r.header("x-berry-backend"), Some("beta"));
        }
    }

    fn an_event_over_the_buffer_limit_before_the_first_byte_is_berrys_limit_not_a_failover(driver) {
        // A first event of 96 KiB, or one just over the 64 KiB limit that ends inside the read
        // that crossed it, on both backends: failing over would only meet the limit again.
        for size in [96 * 1024, 65536 + 100] {
            let big = format!("data: {{\"x\":\"{}\"}}", "y".repeat(size));
            let reply = move |_: &Seen| Reply::Raw(sse(&[big.as_str(), "\n\ndata: [DONE]\n\n"], true));
            let a = upstream(reply.clone());
            let b = upstream(reply);
            let toml = config_two(a.addr, b.addr, "")
                .replace("[settings]\n", "[settings]\nresponse_buffer_bytes_max = 65536\n");
            let gw = gateway(&toml, driver);
            let r = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":"gpt-test","stream":true}"#));
            let v = r.assert_error(502);
            assert_eq!(v["error"]["code"], "response_too_large", "{size}");
            assert_eq!(r.header("x-berry-error"), Some("response_too_large"));
            assert_eq!(a.count() + b.count(), 1, "no failover");
        }
        // Exactly at the limit (the event and its blank line) passes.
        let fits = format!("data: {{\"x\":\"{}\"}}", "y".repeat(65536 - 16));
        assert_eq!(fits.len() + 2, 65536);
        let a = upstream(move |_| Reply::Raw(sse(&[fits.as_str(), "\n\ndata: [DONE]\n\n"], true)));
        let toml = config_two(a.addr, a.addr, "")
            .replace("[settings]\n", "[settings]\nresponse_buffer_bytes_max = 65536\n");
        let gw = gateway(&toml, driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":"gpt-test","stream":true}"#));
        assert_eq!(r.status, 200);
        assert!(r.clean_end);
    }

    fn an_error_after_an_event_cut_for_its_size_is_an_event_of_its_own(driver) {
        // After the first event, one outgrows the limit and is sent as is, cut just before
        // its line ends; the line's end arrives alone, then the stream ends without [DONE].
        let mut first = SSE_HEAD.as_bytes().to_vec();
        first.extend(chunk("data: {\"n\":1}\n\n"));
        let pieces = vec![
            first,
            chunk(&format!("data: {}", "y".repeat(3000))),
            chunk(&"y".repeat(2000)),
            chunk("\n"),
            b"0\r\n\r\n".to_vec(),
        ];
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(150)));
        let toml = config_two(a.addr, a.addr, "")
            .replace("[settings]\n", "[settings]\nresponse_buffer_bytes_max = 4096\n");
        let gw = gateway(&toml, driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", STREAM));
        assert_eq!(r.status, 200);
        assert!(!r.clean_end);
        let text = r.text();
        assert!(text.contains("without [DONE]"), "{text}");
        assert!(text.contains("\n\ndata: {\"error\""), "an event of its own: {:?}", &text[text.len() - 220..]);
    }

    fn a_client_that_stops_reading_is_dropped_and_the_backend_not_blamed(driver) {
        // A fast, long stream: 400 events of 32 KiB, far more than the sockets can buffer.
        let mut pieces = vec![SSE_HEAD.as_bytes().to_vec()];
        let event = format!("data: {{\"pad\":\"{}\"}}\n\n", "x".repeat(32 * 1024));
        for _ in 0..400 {
            pieces.push(chunk(&event));
        }
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(1)));
        let b = upstream(|_| json_reply(500, "{}"));
        let fast_reports = "[settings]\nreport_interval_ms = 20\nsnapshot_interval_ms = 20\n";
        let log = temp_file("slow-client.log", "");
        let toml = config_two(a.addr, b.addr, "").replacen("[settings]\n", fast_reports, 1)
            + "[server]\nclient_send_timeout_ms = 300\n"
            + &format!("[observability]\naccess_log = \"{}\"\n", log.path.display());
        let gw = gateway(&toml, driver);
        // A client with a small receive buffer that reads the head and then nothing.
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&gw.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.write_all(&post("/v1/chat/completions", STREAM)).unwrap();
        let mut first = [0u8; 64];
        s.read_exact(&mut first).unwrap();
        // Berry gives up on the client after client_send_timeout_ms and drops the upstream.
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.aborted.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "a client that stopped reading held the upstream");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The upstream did nothing wrong: its attempt is a success, not a timeout.
        let ok = [("model", "gpt-test"), ("backend", "alpha"), ("outcome", "success")];
        let (text, samples) = crate::observability::scrape_until(gw.addr, |s| {
            crate::observability::sample(s, "berry_upstream_attempts_total", &ok) >= 1.0
        });
        for outcome in ["timeout", "connect"] {
            let bad = [("model", "gpt-test"), ("backend", "alpha"), ("outcome", outcome)];
            assert_eq!(crate::observability::sample(&samples, "berry_upstream_attempts_total", &bad), 0.0, "{text}");
        }
        // The access log says why the answer was cut (its writer thread may lag a little).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let line = std::fs::read_to_string(&log.path).unwrap();
            if line.contains("\"error\":\"client_send_timeout\"") {
                break;
            }
            assert!(Instant::now() < deadline, "{line}");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(s);
    }

    fn a_client_cut_off_mid_answer_is_logged_with_the_bytes_it_took(driver) {
        // One 8 MiB answer written in one go: the sockets take part of it, then the client stalls.
        let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(8 << 20));
        let total = body.len() as u64;
        let a = upstream(move |_| json_reply(200, &body));
        let b = upstream(|_| json_reply(500, "{}"));
        let log = temp_file("cut-client.log", "");
        let toml = config_two(a.addr, b.addr, "")
            + "[server]\nclient_send_timeout_ms = 300\n"
            + &format!("[observability]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n", log.path.display());
        let gw = gateway(&toml, driver);
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&gw.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.write_all(&post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"alpha"}"#)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let line = loop {
            let text = std::fs::read_to_string(&log.path).unwrap();
            if let Some(l) = text.lines().find(|l| l.contains("client_send_timeout")) {
                break l.to_string();
            }
            assert!(Instant::now() < deadline, "no line for the cut answer: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // Part of the answer reached the client: not a 499, and every byte it got is counted,
        // including those of the write that timed out.
        assert_eq!(v["status"], 200, "{line}");
        let out = v["bytes_out"].as_u64().unwrap();
        let mut got = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_to_end(&mut got).unwrap();
        assert!(out < total, "{line}");
        assert_eq!(out, got.len() as u64, "bytes_out against what the client read: {line}");
    }

    fn client_disconnect_cancels_the_upstream(driver) {
        let mut pieces = vec![SSE_HEAD.as_bytes().to_vec()];
        for i in 0..100 {
            pieces.push(chunk(&format!("data: {{\"n\":{i}}}\n\n")));
        }
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(30)));
        let b = upstream(|_| json_reply(500, "{}"));
        let gw = gateway(&config_two(a.addr, b.addr, ""), driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(&post("/v1/chat/completions", STREAM)).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut first = [0u8; 64];
        r.read_exact(&mut first).unwrap();
        drop(r);
        drop(s);
        // The upstream notices within a few events (its writes fail once Berry closed).
        let deadline = Instant::now() + Duration::from_secs(2);
        while a.aborted.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "upstream was not cancelled");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
