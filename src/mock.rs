//! `berry mock`: a fast mock of an OpenAI upstream for demos, tests and load tests.
//!
//! Answers chat completions and completions (JSON with `usage`, or paced SSE), embeddings and the
//! model list. Latency is fixed or drawn from a distribution (`plan::Latency`); streams have a
//! time to first token, a token count, an inter-token delay and a token size. Faults come at a
//! rate (`--faults 429=0.01,cut=0.002`, or the older `--fail-rate` for 500s) or per request from
//! the header `x-mock-fault` (`500`, `503`, `429[:retry-after]`, `reset`, `silence`,
//! `stall[:after]`, `pause[:ms]`, `cut[:after]`, `malformed[:at]`, `no-done`); other `x-mock-*`
//! headers override the shape of one answer. `GET /mock/stats` counts requests by outcome.
//! Runs on monoio like the gateway, one thread per worker.

mod answer;
mod io;
pub mod plan;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};

use crate::api::peek;
use crate::http::encode::{write_content_length, write_header, write_status_line};
use crate::http::head::{parse_request, RequestBody, RequestHead};
use answer::Shape;
use io::{hold, read, reset, write};
use plan::{Fault, FaultMix, Hiccup, Latency, Outcome};

#[derive(clap::Args, Clone, Debug)]
pub struct MockArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub bind: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Delay before every answer, in milliseconds (see --latency for distributions).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Latency distribution, overriding --latency-ms: `20`, `uniform:10-50`, `lognormal:P50,P99`
    /// (milliseconds).
    #[arg(long)]
    pub latency: Option<String>,
    /// Share of requests answered with 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Faults injected at random: `FAULT=RATE,...`, e.g. `429=0.01,503=0.01,cut:5=0.002`.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Content events (tokens) per streamed answer.
    #[arg(long, default_value_t = 8)]
    pub stream_events: usize,
    /// Pause between streamed events (inter-token delay), in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub event_delay_ms: u64,
    /// Time to first token of a stream, after its head, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Bytes of text per streamed token (0: a short word).
    #[arg(long, default_value_t = 0)]
    pub token_bytes: usize,
    /// Bytes of text in a non-streamed answer (0: one short sentence).
    #[arg(long, default_value_t = 0)]
    pub response_bytes: usize,
    /// Freeze the whole mock for --hiccup-ms every this many milliseconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub hiccup_every_ms: u64,
    /// Length of each freeze, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub hiccup_ms: u64,
    /// Name the mock puts into its answers.
    #[arg(long, default_value = "mock")]
    pub name: String,
}

impl Default for MockArgs {
    fn default() -> Self {
        MockArgs {
            bind: "127.0.0.1:0".into(),
            workers: 1,
            latency_ms: 0,
            latency: None,
            fail_rate: 0.0,
            faults: String::new(),
            stream_events: 8,
            event_delay_ms: 20,
            ttft_ms: 0,
            token_bytes: 0,
            response_bytes: 0,
            hiccup_every_ms: 0,
            hiccup_ms: 0,
            name: "mock".into(),
        }
    }
}

/// Requests answered, shared by a mock's workers (read by tests, the demo and `/mock/stats`).
pub struct MockStats {
    pub requests: AtomicU64,
    /// Requests that got an injected fault (by rate or by header).
    pub failed: AtomicU64,
    outcomes: [AtomicU64; Outcome::ALL.len()],
}

impl Default for MockStats {
    fn default() -> Self {
        MockStats {
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl MockStats {
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize].load(Ordering::Relaxed)
    }

    fn count(&self, o: Outcome) {
        self.outcomes[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `{"requests":N,"faulted":N,"outcomes":{"ok_json":N,...}}`
    pub fn to_json(&self) -> String {
        let mut s = format!(
            r#"{{"requests":{},"faulted":{},"outcomes":{{"#,
            self.requests.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            s.push_str(&format!(r#"{sep}"{}":{}"#, o.name(), self.outcome(*o)));
        }
        s.push_str("}}");
        s
    }
}

/// A running mock.
pub struct Mock {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
}

pub fn run_cli(args: MockArgs) -> Result<(), String> {
    let addr: SocketAddr = args
        .bind
        .parse()
        .map_err(|_| format!("`{}` is not ip:port", args.bind))?;
    let mock = spawn(args.clone(), addr)?;
    log::info!(
        "mock upstream `{}` listening on http://{} ({} worker(s))",
        args.name,
        mock.addr,
        args.workers.max(1)
    );
    let shutdown = crate::runtime::Shutdown::new();
    crate::cli::wait_for_signal(&shutdown);
    Ok(())
}

/// The parsed, validated form of [`MockArgs`].
struct Cfg {
    latency: Latency,
    faults: FaultMix,
    hiccup: Hiccup,
    tokens: u32,
    token_delay: Duration,
    ttft: Duration,
    token_bytes: usize,
    response_bytes: usize,
    name: String,
}

impl Cfg {
    fn new(args: &MockArgs) -> Result<Cfg, String> {
        let latency = match &args.latency {
            Some(spec) => Latency::parse(spec).map_err(|e| format!("--latency: {e}"))?,
            None => Latency::Fixed(Duration::from_millis(args.latency_ms)),
        };
        let mut faults = FaultMix::parse(&args.faults).map_err(|e| format!("--faults: {e}"))?;
        if args.fail_rate > 0.0 {
            faults
                .0
                .push((Fault::Status(500, 1), args.fail_rate.min(1.0)));
        }
        Ok(Cfg {
            latency,
            faults,
            hiccup: Hiccup {
                every: Duration::from_millis(args.hiccup_every_ms),
                length: Duration::from_millis(args.hiccup_ms),
            },
            tokens: args.stream_events.clamp(1, u32::MAX as usize) as u32,
            token_delay: Duration::from_millis(args.event_delay_ms),
            ttft: Duration::from_millis(args.ttft_ms),
            token_bytes: args.token_bytes,
            response_bytes: args.response_bytes,
            name: args.name.clone(),
        })
    }
}

/// One worker's state: shared by its connections, never by other threads (except `stats`).
struct Worker {
    cfg: Cfg,
    stats: Arc<MockStats>,
    started: Instant,
    seq: Cell<u64>,
    rng: RefCell<fastrand::Rng>,
}

/// Starts a mock on `addr` (port 0 picks one) in background threads.
pub fn spawn(args: MockArgs, addr: SocketAddr) -> Result<Mock, String> {
    Cfg::new(&args)?;
    let listeners = crate::runtime::bind_listeners(addr, args.workers.max(1))
        .map_err(|e| format!("mock: cannot listen on {addr}: {e}"))?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let stats = Arc::new(MockStats::default());
    let started = Instant::now();
    for (i, l) in listeners.into_iter().enumerate() {
        let (args, stats) = (args.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("berry-mock-{i}"))
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build();
                let Ok(cfg) = Cfg::new(&args) else { return };
                let w = Rc::new(Worker {
                    cfg,
                    stats,
                    started,
                    seq: Cell::new(0),
                    rng: RefCell::new(fastrand::Rng::new()),
                });
                match rt {
                    Ok(mut rt) => rt.block_on(accept(l, w)),
                    Err(e) => log::error!("mock: cannot start runtime: {e}"),
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(Mock { addr, stats })
}

async fn accept(l: std::net::TcpListener, w: Rc<Worker>) {
    let Ok(l) = TcpListener::from_std(l) else {
        return;
    };
    while let Ok((s, _)) = l.accept().await {
        let _ = s.set_nodelay(true);
        monoio::spawn(serve(s, w.clone()));
    }
}

async fn serve(mut s: TcpStream, w: Rc<Worker>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        let (head, body_end) = loop {
            match parse_request(&buf, 64 * 1024, 64) {
                Ok(Some(head)) => {
                    let end = match head.body {
                        RequestBody::None => head.head_len,
                        RequestBody::Length(n) => head.head_len + n as usize,
                        RequestBody::Chunked => return,
                    };
                    while buf.len() < end {
                        if !read(&mut s, &mut buf).await {
                            return;
                        }
                    }
                    break (head, end);
                }
                Ok(None) => {
                    if !read(&mut s, &mut buf).await {
                        return;
                    }
                }
                Err(_) => return,
            }
        };
        if head.path(&buf) == b"/mock/stats" {
            let body = w.stats.to_json();
            write_status_line(&mut out, 200, b"");
            write_header(&mut out, b"content-type", b"application/json");
            write_content_length(&mut out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body.as_bytes());
            buf.drain(..body_end);
            if !write(&mut s, &mut out).await || !head.keep_alive {
                return;
            }
            continue;
        }
        w.stats.requests.fetch_add(1, Ordering::Relaxed);
        let shape = shape(&w, &head, &buf, &buf[head.head_len..body_end]);
        let keep_alive = head.keep_alive;
        buf.drain(..body_end);
        let Ok((shape, latency)) = shape else {
            answer::error(&mut out, 400, "bad x-mock-fault", 0);
            w.stats.count(Outcome::ClientError);
            if !write(&mut s, &mut out).await || !keep_alive {
                return;
            }
            continue;
        };
        if shape.fault.is_some() {
            w.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        let freeze = w.cfg.hiccup.wait(w.started.elapsed());
        if !(latency + freeze).is_zero() {
            monoio::time::sleep(latency + freeze).await;
        }
        let (keep, outcome) = match shape.fault {
            Some(Fault::Reset) => {
                reset(&s);
                (false, Outcome::Reset)
            }
            Some(Fault::Silence) => {
                hold(&mut s).await;
                (false, Outcome::Silence)
            }
            Some(f @ Fault::Status(status, retry_after)) => {
                answer::error(&mut out, status, "mock failure", retry_after);
                (write(&mut s, &mut out).await, f.outcome())
            }
            _ => answer::answer(&mut s, &mut out, &shape).await,
        };
        w.stats.count(outcome);
        if !keep || !keep_alive {
            return;
        }
    }
}

/// A numeric `x-mock-*` header.
fn header_num(head: &RequestHead, buf: &[u8], name: &str) -> Option<u64> {
    std::str::from_utf8(head.header(buf, name)?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How to answer this request (defaults, the fault drawn or asked for, `x-mock-*` overrides) and
/// how long to wait first.
fn shape(
    w: &Worker,
    head: &RequestHead,
    buf: &[u8],
    body: &[u8],
) -> Result<(Shape, Duration), String> {
    let p = peek::peek(body, 64).unwrap_or_default();
    let fault = match head.header(buf, "x-mock-fault") {
        Some(v) => Some(Fault::parse(&String::from_utf8_lossy(v))?),
        None => w.cfg.faults.draw(&mut w.rng.borrow_mut()),
    };
    let seq = w.seq.get() + 1;
    w.seq.set(seq);
    let ms = |name: &str, default: Duration| {
        header_num(head, buf, name).map_or(default, Duration::from_millis)
    };
    let size =
        |name: &str, default: usize| header_num(head, buf, name).map_or(default, |v| v as usize);
    let latency = match header_num(head, buf, "x-mock-latency-ms") {
        Some(v) => Duration::from_millis(v),
        None => w.cfg.latency.sample(&mut w.rng.borrow_mut()),
    };
    let shape = Shape {
        path: head.path(buf).to_vec(),
        stream: p.stream,
        include_usage: p.stream_options_include_usage,
        model: p
            .model
            .map(|m| m.value)
            .unwrap_or_else(|| "mock-model".into()),
        name: w.cfg.name.clone(),
        seq,
        ttft: ms("x-mock-ttft-ms", w.cfg.ttft),
        tokens: header_num(head, buf, "x-mock-tokens")
            .map_or(w.cfg.tokens, |v| v.clamp(1, 1_000_000) as u32),
        token_delay: ms("x-mock-token-delay-ms", w.cfg.token_delay),
        token_bytes: size("x-mock-token-bytes", w.cfg.token_bytes).min(1 << 20),
        response_bytes: size("x-mock-response-bytes", w.cfg.response_bytes).min(16 << 20),
        fault,
    };
    Ok((shape, latency))
}
