//! The access log: one correct line per request from the real binary, no secret in any
//! output, and a file target that follows rotation.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use berry::config::DriverChoice;

use crate::observability::{as_bob, chat, config, mock_upstream, stream_usage, usage_of, BOB};
use crate::support::*;

/// The real binary with every log at `trace`, the access log on stdout, upstream failures of
/// every kind: no configured key or token may appear anywhere in its output, and every request
/// has its access-log line.
#[test]
fn access_log_lines_and_no_secrets_anywhere() {
    let good = mock_upstream();
    let unauthorized = upstream(|_| json_reply(401, r#"{"error":{"message":"bad key"}}"#));
    let port = free_port();
    let cfg = format!(
        "[server]\nbind_address = \"127.0.0.1:{port}\"\n{}",
        config(
            good,
            unauthorized.addr,
            "[observability]\naccess_log = \"stdout\"\naccess_log_format = \"json\"\n"
        )
    );
    let file = temp_file("obs.toml", &cfg);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berry"))
        .args(["serve", "--workers", "1", "--config"])
        .arg(&file.path)
        .env("RUST_LOG", "trace")
        .env_remove("CONFIG_PATH")
        .env_remove("BIND_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berry starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "berry never listened");
        thread::sleep(Duration::from_millis(20));
    }
    let path = "/v1/chat/completions";
    let mut ids = Vec::new();
    let mut keep = |r: Resp| {
        ids.push(r.header("x-request-id").unwrap().to_string());
        r
    };
    let ok = keep(send_raw(addr, &post(path, &chat("gpt-test", ""))));
    assert_eq!(ok.status, 200);
    let stream = keep(send_raw(
        addr,
        &as_bob(&chat(
            "gpt-test",
            r#","stream":true,"stream_options":{"include_usage":true}"#,
        )),
    ));
    assert_eq!(stream.status, 200);
    // `flaky`: the first backend refuses Berry's key (401); that is relayed, not retried.
    let refused = keep(send_raw(addr, &post(path, &chat("flaky", ""))));
    assert_eq!(refused.status, 401);
    keep(send_raw(
        addr,
        &post_with(
            path,
            &chat("gpt-test", ""),
            "authorization: Bearer tok-not-a-user\r\n",
        ),
    ))
    .assert_error(401);
    keep(send_raw(addr, &post(path, "{not json"))).assert_error(400);
    let models =
        format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {BOB}\r\n\r\n");
    assert_eq!(keep(send_raw(addr, models.as_bytes())).status, 200);

    // SIGTERM: drain, flush, exit.
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "berry exited with {status}:\n{stderr}");

    let all = format!("{stdout}\n{stderr}");
    for secret in [
        "sk-good-secret-111111",
        "sk-bad-secret-2222222",
        TOKEN,
        BOB,
        "tok-not-a-user",
    ] {
        assert!(
            !all.contains(secret),
            "`{secret}` appears in berry's output:\n{all}"
        );
    }
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG") || stderr.contains("INFO"));

    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), ids.len(), "{stdout}");
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access-log line for {id}:\n{stdout}"))
            .clone()
    };
    let l = line(&ids[0]);
    assert_eq!(l["status"], 200);
    assert_eq!(l["client"], "127.0.0.1");
    assert_eq!(l["user"], "alice");
    assert_eq!(l["model"], "gpt-test");
    assert_eq!(l["backend"], "good");
    assert_eq!(l["endpoint"], "chat_completions");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["upstream_status"], 200);
    assert_eq!(l["attempts"], 1);
    assert_eq!(l["stream"], false);
    let (p, c) = usage_of(&ok);
    assert_eq!(l["prompt_tokens"], p);
    assert_eq!(l["completion_tokens"], c);
    assert!(l["bytes_in"].as_u64().unwrap() > 50);
    assert!(l["bytes_out"].as_u64().unwrap() > ok.body.len() as u64);
    assert!(l["time"].as_str().unwrap().ends_with('Z'));
    for k in ["duration_ms", "ttfb_ms", "upstream_ms", "overhead_ms"] {
        assert!(l[k].as_f64().is_some(), "{k} in {l}");
    }
    let l = line(&ids[1]);
    assert_eq!(l["user"], "bob");
    assert_eq!(l["stream"], true);
    let (p, c) = stream_usage(&stream).unwrap();
    assert_eq!(
        (l["prompt_tokens"].clone(), l["completion_tokens"].clone()),
        (p.into(), c.into())
    );
    let l = line(&ids[2]);
    assert_eq!(l["status"], 401);
    assert_eq!(l["upstream_status"], 401);
    assert_eq!(l["backend"], "bad");
    assert_eq!(l["error"], serde_json::Value::Null);
    let l = line(&ids[3]);
    assert_eq!(l["status"], 401);
    assert_eq!(l["user"], serde_json::Value::Null);
    assert_eq!(l["error"], "invalid_api_key");
    let l = line(&ids[4]);
    assert_eq!(l["status"], 400);
    assert_eq!(l["error"], "invalid_json");
    // A local endpoint that authenticates names its caller like a proxied request.
    let l = line(&ids[5]);
    assert_eq!(
        (l["status"].clone(), l["endpoint"].clone()),
        (200.into(), "models".into()),
        "{l}"
    );
    assert_eq!(l["user"], "bob");
}

/// A file access log renamed away (logrotate's default) is followed: lines written after the
/// rename land in a new file at the configured path, and none is lost on the way.
#[test]
fn access_log_file_follows_rotation() {
    let good = mock_upstream();
    let log = temp_file("access.log", "");
    let rotated = TempFile {
        path: log.path.with_extension("log.1"),
    };
    let extra = format!(
        "[observability]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n",
        log.path.display()
    );
    let gw = gateway(&config(good, dead_addr(), &extra), DriverChoice::Auto);
    let ok = |n: usize| {
        (0..n)
            .map(|_| {
                let r = send_raw(
                    gw.addr,
                    &post("/v1/chat/completions", &chat("gpt-test", "")),
                );
                assert_eq!(r.status, 200);
                r.header("x-request-id").unwrap().to_string()
            })
            .collect::<Vec<_>>()
    };
    let ids_of = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["request_id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let wait_for = |path: &std::path::Path, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while ids_of(path).len() < n {
            assert!(
                Instant::now() < deadline,
                "{} lines never reached {}",
                n,
                path.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    let before = ok(3);
    wait_for(&log.path, 3);
    std::fs::rename(&log.path, &rotated.path).unwrap();
    // The writer looks at the path at most once a second; keep sending until the new file
    // appears, then check that every line is in exactly one of the two files.
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.path.exists() {
        assert!(
            Instant::now() < deadline,
            "the access log was never reopened"
        );
        after.extend(ok(1));
        thread::sleep(Duration::from_millis(50));
    }
    after.extend(ok(2));
    let total = before.len() + after.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids_of(&rotated.path).len() + ids_of(&log.path).len() < total {
        assert!(Instant::now() < deadline, "lines went missing");
        thread::sleep(Duration::from_millis(20));
    }
    let old = ids_of(&rotated.path);
    let new = ids_of(&log.path);
    assert_eq!(&old[..3], &before[..]);
    let mut seen: Vec<String> = old.into_iter().chain(new.iter().cloned()).collect();
    let mut sent: Vec<String> = before.into_iter().chain(after.iter().cloned()).collect();
    seen.sort();
    sent.sort();
    assert_eq!(seen, sent);
    assert!(!new.is_empty());
    assert_eq!(new.last(), after.last());
}
