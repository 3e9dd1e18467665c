//! The access log: one line per request, JSON or plain text.
//!
//! Shards hand a [`RequestEvent`] and the request id to a bounded queue and move on; a writer
//! thread formats and writes the lines, batching writes while the queue has more. A full queue
//! drops the line and counts it (exported as `berry_access_log_dropped_total`), so a slow disk
//! or a blocked stdout can never stall a shard. Only config ids (user, model, backend) are
//! written, never a token or a key. A file target follows rotation ([`sink`]).

mod sink;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{write_ms, RequestEvent, NONE};
use crate::api::peek::write_json_string;
use crate::config::Config;
use crate::http::encode::write_decimal;
use sink::Sink;

/// Batches buffered between the shards and the writer thread (each up to a few hundred lines).
pub const QUEUE_BATCHES_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

pub struct Record {
    /// When the request ended; the writer turns it into wall-clock time, so shards read only
    /// the monotonic clock they read anyway.
    pub end: Instant,
    /// The client's address.
    pub client: Option<std::net::IpAddr>,
    pub request_id: String,
    pub event: RequestEvent,
}

/// The shards' end of the access log (cheap to clone: a channel sender and a counter).
#[derive(Clone)]
pub struct AccessLog {
    tx: Sender<Vec<Record>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Queues a shard's batch of lines and leaves `batch` empty; never blocks. A full queue
    /// drops the batch and counts its lines.
    pub fn send(&self, batch: &mut Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let lines = std::mem::replace(batch, Vec::with_capacity(batch.capacity()));
        if let Err(TrySendError::Full(l) | TrySendError::Disconnected(l)) = self.tx.try_send(lines)
        {
            self.dropped.fetch_add(l.len() as u64, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Opens the target and starts the writer thread; `None` when the log is off. The thread ends
/// once every [`AccessLog`] clone is dropped, after writing what was queued.
pub fn start(config: Arc<Config>) -> io::Result<Option<AccessLog>> {
    let obs = &config.observability;
    let out = match &obs.access_log {
        Target::Off => return Ok(None),
        Target::Stdout => Sink::Stream(Box::new(io::stdout())),
        Target::Stderr => Sink::Stream(Box::new(io::stderr())),
        Target::File(path) => Sink::file(path, sink::ROTATION_CHECK).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the access log {}: {e}", path.display()),
            )
        })?,
    };
    let format = obs.access_log_format;
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES_MAX);
    let dropped = Arc::new(AtomicU64::new(0));
    let lost = dropped.clone();
    std::thread::Builder::new()
        .name("berry-access".into())
        .spawn(move || {
            crate::runtime::background_priority();
            writer(rx, out, &config, format, &lost)
        })?;
    Ok(Some(AccessLog { tx, dropped }))
}

/// Formats queued lines and writes them in batches until every sender is gone. Lines of a
/// batch that fails to write are counted in `dropped`, like lines the queue had no room for.
fn writer(
    rx: Receiver<Vec<Record>>,
    mut out: Sink,
    config: &Config,
    format: Format,
    dropped: &AtomicU64,
) {
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut lines = 0u64;
    let mut write = |buf: &mut Vec<u8>, lines: &mut u64| {
        if out.write_batch(buf, Instant::now()).is_err() {
            dropped.fetch_add(*lines, Ordering::Relaxed);
        }
        buf.clear();
        *lines = 0;
    };
    let mut clock = WallClock::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(batch) = next {
            for r in &batch {
                let at = clock.wall(r.end);
                match format {
                    Format::Json => json_line(&mut buf, config, r, at),
                    Format::Text => text_line(&mut buf, config, r, at),
                }
            }
            lines += batch.len() as u64;
            if buf.len() >= 128 * 1024 {
                write(&mut buf, &mut lines);
            }
            next = rx.try_recv().ok();
        }
        write(&mut buf, &mut lines);
    }
}

/// Maps monotonic instants to wall-clock time, re-anchored every second so that a wall-clock
/// step (NTP) shows up in the log within a second.
struct WallClock {
    wall: SystemTime,
    mono: Instant,
    /// Re-anchor once a record is past this (an `Instant` comparison, no clock read).
    next: Instant,
}

impl WallClock {
    fn new() -> WallClock {
        let mono = Instant::now();
        WallClock {
            wall: SystemTime::now(),
            mono,
            next: mono + Duration::from_secs(1),
        }
    }

    fn wall(&mut self, t: Instant) -> SystemTime {
        if t >= self.next {
            *self = WallClock::new();
        }
        match t.checked_duration_since(self.mono) {
            Some(after) => self.wall + after,
            None => self.wall - self.mono.duration_since(t),
        }
    }
}

/// Config ids of the request's user, model and backend (`None` where it never got that far).
struct Names<'c> {
    user: Option<&'c str>,
    model: Option<&'c str>,
    backend: Option<&'c str>,
}

fn names<'c>(config: &'c Config, e: &RequestEvent) -> Names<'c> {
    let get = |i: u32| (i != NONE).then_some(i as usize);
    let model = get(e.model).and_then(|m| config.models.get(m));
    Names {
        user: get(e.user)
            .and_then(|u| config.users.get(u))
            .map(|u| u.id.as_str()),
        model: model.map(|m| m.name.as_str()),
        backend: model
            .zip(get(e.backend))
            .and_then(|(m, b)| m.backends.get(b))
            .and_then(|b| config.providers.get(b.provider))
            .map(|p| p.id.as_str()),
    }
}

/// One JSON object per line; absent facts are `null`, durations are ms with µs precision.
pub fn json_line(out: &mut Vec<u8>, config: &Config, r: &Record, at: SystemTime) {
    let e = &r.event;
    let n = names(config, e);
    out.extend_from_slice(b"{\"time\":\"");
    crate::logging::write_rfc3339(out, at);
    out.extend_from_slice(b"\",\"client\":");
    match r.client {
        // IPv4 by hand: `Ipv4Addr`'s `Display` goes through `core::fmt` for every octet, which
        // showed in the writer's profile at 90 000 lines a second.
        Some(std::net::IpAddr::V4(v4)) => {
            out.push(b'"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_decimal(out, u64::from(octet));
            }
            out.push(b'"');
        }
        Some(ip) => {
            use std::io::Write as _;
            let _ = write!(out, "\"{ip}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"request_id\":");
    write_json_string(out, &r.request_id);
    for (key, value) in [("user", n.user), ("model", n.model), ("backend", n.backend)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        match value {
            Some(v) => write_json_string(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"endpoint\":\"");
    out.extend_from_slice(e.route.label().as_bytes());
    out.extend_from_slice(if e.get {
        b"\",\"method\":\"GET\""
    } else {
        b"\",\"method\":\"POST\""
    });
    let int = |out: &mut Vec<u8>, key: &str, v: u64| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_decimal(out, v);
    };
    int(out, "status", e.status.into());
    if e.upstream_status != 0 {
        int(out, "upstream_status", e.upstream_status.into());
    } else {
        out.extend_from_slice(b",\"upstream_status\":null");
    }
    int(out, "attempts", e.attempts.into());
    out.extend_from_slice(if e.stream {
        b",\"stream\":true"
    } else {
        b",\"stream\":false"
    });
    int(out, "bytes_in", e.bytes_in);
    int(out, "bytes_out", e.bytes_out);
    for (key, us) in [
        ("duration_ms", e.duration_us),
        ("ttfb_ms", e.ttfb_us),
        ("upstream_ms", e.upstream_us),
        ("overhead_ms", e.overhead_us()),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_ms(out, us);
    }
    match e.usage {
        Some(u) => {
            int(out, "prompt_tokens", u.prompt.into());
            int(out, "completion_tokens", u.completion.into());
        }
        None => out.extend_from_slice(b",\"prompt_tokens\":null,\"completion_tokens\":null"),
    }
    out.extend_from_slice(b",\"error\":");
    match e.error {
        Some(k) => write_json_string(out, k.code()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

/// `time status METHOD endpoint key=value …`, for people reading a terminal.
pub fn text_line(out: &mut Vec<u8>, config: &Config, r: &Record, at: SystemTime) {
    use std::io::Write as _;
    let e = &r.event;
    let n = names(config, e);
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let ms = |us: u32| f64::from(us) / 1000.0;
    let _ = write!(
        out,
        "{} {} {} {} {} id={} user={} model={} backend={} attempts={} stream={} \
         duration_ms={:.3} ttfb_ms={:.3} upstream_ms={:.3} bytes_in={} bytes_out={}",
        crate::logging::rfc3339(at),
        r.client.map_or("-".to_string(), |ip| ip.to_string()),
        e.status,
        if e.get { "GET" } else { "POST" },
        e.route.label(),
        r.request_id,
        dash(n.user),
        dash(n.model),
        dash(n.backend),
        e.attempts,
        e.stream,
        ms(e.duration_us),
        ms(e.ttfb_us),
        ms(e.upstream_us),
        e.bytes_in,
        e.bytes_out,
    );
    if let Some(u) = e.usage {
        let _ = write!(out, " tokens={}/{}", u.prompt, u.completion);
    }
    if let Some(k) = e.error {
        let _ = write!(out, " error={}", k.code());
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Route, Usage};
    use std::time::{Duration, UNIX_EPOCH};

    fn config() -> Config {
        crate::config::load_str(
            r#"
[providers.p]
name = "P"
base_url = "http://127.0.0.1:1"
api_key = "sk-p-0123456789"
models = ["m"]
[models.m]
name = "model\"quoted\""
[[models.m.backends]]
provider = "p"
model = "m"
[users.u]
name = "U"
token = "tok-u-0123456789abcdef"
"#,
            "t.toml",
        )
        .unwrap()
    }

    fn record(event: RequestEvent) -> Record {
        Record {
            end: Instant::now(),
            client: Some("10.1.2.3".parse().unwrap()),
            request_id: "id-with-\"quote\\".into(),
            event,
        }
    }

    #[test]
    fn client_addresses_are_written_as_std_formats_them() {
        let c = config();
        for ip in ["0.255.9.100", "10.1.2.3", "::1", "2001:db8::7"] {
            let mut r = record(RequestEvent::default());
            r.client = Some(ip.parse().unwrap());
            let mut out = Vec::new();
            json_line(&mut out, &c, &r, UNIX_EPOCH);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["client"], ip);
        }
    }

    #[test]
    fn json_line_is_valid_json_with_every_field() {
        let c = config();
        let at = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let r = record(RequestEvent {
            route: Route::ChatCompletions,
            status: 200,
            upstream_status: 200,
            model: 0,
            backend: 0,
            user: 0,
            attempts: 2,
            stream: true,
            duration_us: 12_345,
            ttfb_us: 2_000,
            upstream_us: 12_000,
            bytes_in: 10,
            bytes_out: 20,
            usage: Some(Usage {
                prompt: 9,
                completion: 4,
            }),
            ..RequestEvent::default()
        });
        let mut out = Vec::new();
        json_line(&mut out, &c, &r, at);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["request_id"], "id-with-\"quote\\");
        assert_eq!(v["client"], "10.1.2.3");
        assert_eq!(v["model"], "model\"quoted\"");
        assert_eq!(
            (v["user"].clone(), v["backend"].clone()),
            ("u".into(), "p".into())
        );
        assert_eq!(v["duration_ms"].as_f64(), Some(12.345));
        assert_eq!(v["overhead_ms"].as_f64(), Some(0.345));
        assert_eq!(
            (v["prompt_tokens"].clone(), v["completion_tokens"].clone()),
            (9.into(), 4.into())
        );
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["stream"], true);
        assert_eq!(v["error"], serde_json::Value::Null);
    }

    #[test]
    fn refused_request_has_nulls_and_an_error_code() {
        let c = config();
        let r = record(RequestEvent {
            status: 401,
            error: Some(crate::error::ErrorKind::Unauthorized),
            ..RequestEvent::default()
        });
        let mut out = Vec::new();
        json_line(&mut out, &c, &r, SystemTime::now());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for k in [
            "user",
            "model",
            "backend",
            "upstream_status",
            "prompt_tokens",
        ] {
            assert_eq!(v[k], serde_json::Value::Null, "{k}");
        }
        assert_eq!(v["error"], "invalid_api_key");
        let mut text = Vec::new();
        text_line(&mut text, &c, &r, SystemTime::now());
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(" 10.1.2.3 401 POST other "), "{text}");
        assert!(text.contains("user=- model=- backend=-"), "{text}");
        assert!(text.trim_end().ends_with("error=invalid_api_key"), "{text}");
    }

    /// Fails its first write, then keeps what it is given.
    struct FlakyOut {
        calls: Arc<AtomicU64>,
        kept: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl std::io::Write for FlakyOut {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(io::Error::other("disk full"));
            }
            self.kept.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_its_lines_as_dropped_and_the_writer_goes_on() {
        let calls = Arc::new(AtomicU64::new(0));
        let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = Sink::Stream(Box::new(FlakyOut {
            calls: calls.clone(),
            kept: kept.clone(),
        }));
        let (tx, rx) = crossbeam_channel::bounded(4);
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        let t = std::thread::spawn(move || writer(rx, out, &config(), Format::Text, &d));
        let batch = |n: usize| (0..n).map(|_| record(RequestEvent::default())).collect();
        tx.send(batch(3)).unwrap();
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        tx.send(batch(2)).unwrap();
        drop(tx);
        t.join().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
        let kept = String::from_utf8(kept.lock().unwrap().clone()).unwrap();
        assert_eq!(kept.lines().count(), 2, "{kept}");
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let mut c = WallClock::new();
        let base = c.mono;
        let later = c.wall(base + Duration::from_millis(250));
        assert_eq!(
            later.duration_since(c.wall).unwrap(),
            Duration::from_millis(250)
        );
        let earlier = c.wall(base - Duration::from_millis(5).min(base.elapsed()));
        assert!(earlier <= c.wall);
    }
}
