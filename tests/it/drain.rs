//! Stopping: after `drain_timeout_ms` every request still waiting on an upstream is answered
//! `shutting_down` (a 503, or an in-band event once its stream has begun), logged, and not
//! blamed on its backend.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::both_drivers;
use crate::support::*;

const STREAM: &str = r#"{"model":"gpt-test","backend":"alpha","stream":true,"messages":[]}"#;

/// The access-log line that mentions `needle`, waiting for the writer thread.
fn log_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = std::fs::read_to_string(path).unwrap();
        if let Some(l) = all.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line with {needle}: {all}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads what is left of an answer on another thread, bounded so a request that is never
/// answered fails the test instead of hanging it.
fn rest_of(mut s: TcpStream) -> std::thread::JoinHandle<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    })
}

both_drivers! {
    fn a_stream_still_running_when_the_drain_times_out_ends_with_an_error_event(driver) {
        let mut pieces = vec![SSE_HEAD.as_bytes().to_vec()];
        for i in 0..200 {
            pieces.push(chunk(&format!("data: {{\"n\":{i}}}\n\n")));
        }
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(30)));
        let b = upstream(|_| json_reply(500, "{}"));
        let log = temp_file("drain.log", "");
        let toml = config_two(a.addr, b.addr, "")
            + "[server]\ndrain_timeout_ms = 300\n"
            + &format!("[observability]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n", log.path.display());
        let gw = gateway(&toml, driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(&post("/v1/chat/completions", STREAM)).unwrap();
        let mut first = [0u8; 64];
        s.read_exact(&mut first).unwrap();
        let reader = rest_of(s);
        let stop = Instant::now();
        drop(gw); // SIGTERM's path: stop accepting, drain, then end what is left
        assert!(stop.elapsed() < Duration::from_secs(3), "the drain is bounded");
        let text = reader.join().unwrap();
        assert!(text.contains("\"code\":\"shutting_down\""), "{text}");
        assert!(!text.ends_with("0\r\n\r\n"), "a cut stream never ends cleanly: {text}");
        let line = log_line(&log.path, "shutting_down");
        assert!(line.contains("\"status\":200"), "{line}");
        assert_eq!(b.count(), 0, "a stopping gateway does not fail over");
    }

    fn requests_waiting_on_a_silent_upstream_are_answered_when_the_drain_times_out(driver) {
        // alpha: one event, then thinks for 3 s; beta: never answers.
        let pieces = vec![
            SSE_HEAD.as_bytes().to_vec(),
            chunk("data: {\"n\":0}\n\n"),
            chunk("data: {\"n\":1}\n\n"),
        ];
        let a = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_secs(3)));
        let b = upstream(|_| Reply::Hang(Duration::from_secs(5)));
        let log = temp_file("drain-silent.log", "");
        let toml = config_two(a.addr, b.addr, "")
            .replace("first_byte_timeout_ms = 1500", "first_byte_timeout_ms = 10000")
            .replace("stream_idle_timeout_ms = 1500", "stream_idle_timeout_ms = 10000")
            + "[server]\ndrain_timeout_ms = 300\n"
            + &format!("[observability]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n", log.path.display());
        let gw = gateway(&toml, driver);
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.write_all(&post("/v1/chat/completions", STREAM)).unwrap();
        let mut first = [0u8; 64];
        stream.read_exact(&mut first).unwrap();
        let mut whole = TcpStream::connect(gw.addr).unwrap();
        whole.write_all(&post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"beta"}"#)).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // beta has the request
        let (stream_rest, whole_rest) = (rest_of(stream), rest_of(whole));
        let stop = Instant::now();
        drop(gw);
        assert!(stop.elapsed() < Duration::from_secs(2), "the drain is bounded");
        let text = stream_rest.join().unwrap();
        assert!(text.contains("\"code\":\"shutting_down\""), "the silent stream is told: {text}");
        let answer = whole_rest.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "the waiting request is answered: {answer}");
        assert!(answer.contains("\"code\":\"shutting_down\""), "{answer}");
        let line = log_line(&log.path, "\"status\":503");
        assert!(line.contains("shutting_down"), "{line}");
    }

    fn a_tls_handshake_that_never_finishes_is_cut_when_the_drain_times_out(driver) {
        // beta accepts TCP and then says nothing: the TLS handshake waits on it.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let (s, _) = silent.accept().unwrap();
            std::thread::sleep(Duration::from_secs(4));
            drop(s);
        });
        let a = upstream(|_| json_reply(200, "{}"));
        let toml = config_two(a.addr, a.addr, "")
            .replace(&format!("base_url = \"http://{}/v1\"", a.addr), &format!("base_url = \"https://localhost:{port}/v1\""))
            .replace("[settings]\n", "[settings]\nconnect_timeout_ms = 10000\n")
            + "[server]\ndrain_timeout_ms = 200\n";
        assert!(toml.contains("https://localhost"), "{toml}");
        let gw = gateway(&toml, driver);
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.write_all(&post("/v1/chat/completions", r#"{"model":"gpt-test","backend":"beta"}"#)).unwrap();
        std::thread::sleep(Duration::from_millis(150)); // the handshake has begun
        let rest = rest_of(s);
        let stop = Instant::now();
        drop(gw);
        let answer = rest.join().unwrap();
        assert!(stop.elapsed() < Duration::from_secs(3), "the drain is bounded");
        assert!(answer.starts_with("HTTP/1.1 503"), "the waiting request is answered: {answer}");
        assert!(answer.contains("\"code\":\"shutting_down\""), "{answer}");
        assert_eq!(a.count(), 0, "a stopping gateway does not fail over");
        held.join().unwrap();
    }
}
