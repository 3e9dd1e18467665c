//! `berry mock`: a small, fast mock of an OpenAI upstream for demos, tests and load tests.
//!
//! Answers chat completions (JSON or SSE), completions, embeddings and the model list, with a
//! configurable latency, failure rate and stream pacing. A request header `x-mock-fault`
//! injects one fault: `500`, `429` (with Retry-After), `reset` (close before any byte),
//! `stall` (headers, then silence), `cut` (stream cut after two events), `no-done`
//! (stream without `[DONE]`). Runs on monoio like the gateway, one thread per worker.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::api::peek;
use crate::http::encode::{
    write_chunk, write_content_length, write_header, write_status_line, LAST_CHUNK,
};
use crate::http::head::{parse_request, RequestBody};

#[derive(clap::Args, Clone, Debug)]
pub struct MockArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub bind: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests answered with 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Content events per streamed answer.
    #[arg(long, default_value_t = 8)]
    pub stream_events: usize,
    /// Pause between streamed events, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub event_delay_ms: u64,
    /// Name the mock puts into its answers.
    #[arg(long, default_value = "mock")]
    pub name: String,
}

/// Requests answered, shared by a mock's workers (read by tests and the demo).
#[derive(Default)]
pub struct MockStats {
    pub requests: AtomicU64,
    pub failed: AtomicU64,
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

/// Starts a mock on `addr` (port 0 picks one) in background threads.
pub fn spawn(args: MockArgs, addr: SocketAddr) -> Result<Mock, String> {
    let listeners = crate::runtime::bind_listeners(addr, args.workers.max(1))
        .map_err(|e| format!("mock: cannot listen on {addr}: {e}"))?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let stats = Arc::new(MockStats::default());
    for (i, l) in listeners.into_iter().enumerate() {
        let (args, stats) = (args.clone(), stats.clone());
        std::thread::Builder::new()
            .name(format!("berry-mock-{i}"))
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build();
                match rt {
                    Ok(mut rt) => rt.block_on(accept(l, Rc::new(args), stats)),
                    Err(e) => log::error!("mock: cannot start runtime: {e}"),
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(Mock { addr, stats })
}

async fn accept(l: std::net::TcpListener, args: Rc<MockArgs>, stats: Arc<MockStats>) {
    let Ok(l) = TcpListener::from_std(l) else {
        return;
    };
    let seq = Rc::new(Cell::new(0u64));
    while let Ok((s, _)) = l.accept().await {
        let _ = s.set_nodelay(true);
        monoio::spawn(serve(s, args.clone(), stats.clone(), seq.clone()));
    }
}

struct Req {
    path: Vec<u8>,
    fault: Vec<u8>,
    stream: bool,
    model: String,
    keep_alive: bool,
}

async fn serve(mut s: TcpStream, args: Rc<MockArgs>, stats: Arc<MockStats>, seq: Rc<Cell<u64>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        let req = loop {
            match parse_request(&buf, 64 * 1024, 64) {
                Ok(Some(head)) => {
                    let RequestBody::Length(n) = head.body else {
                        if head.body == RequestBody::None {
                            let req = request(&head, &buf, &[]);
                            buf.drain(..head.head_len);
                            break req;
                        }
                        return;
                    };
                    let end = head.head_len + n as usize;
                    while buf.len() < end {
                        if !read(&mut s, &mut buf).await {
                            return;
                        }
                    }
                    let req = request(&head, &buf, &buf[head.head_len..end]);
                    buf.drain(..end);
                    break req;
                }
                Ok(None) => {
                    if !read(&mut s, &mut buf).await {
                        return;
                    }
                }
                Err(_) => return,
            }
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let n = seq.get() + 1;
        seq.set(n);
        if args.latency_ms > 0 {
            monoio::time::sleep(Duration::from_millis(args.latency_ms)).await;
        }
        let fail = args.fail_rate > 0.0 && fastrand::f64() < args.fail_rate;
        if fail {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        let keep = match (req.fault.as_slice(), fail) {
            (b"reset", _) => return,
            (b"500", _) | (_, true) => {
                error(&mut out, 500, "mock failure");
                write(&mut s, &mut out).await
            }
            (b"429", _) => {
                error(&mut out, 429, "mock rate limit");
                write(&mut s, &mut out).await
            }
            (b"stall", _) => {
                write_status_line(&mut out, 200, b"");
                write_header(&mut out, b"content-type", b"text/event-stream");
                write_header(&mut out, b"transfer-encoding", b"chunked");
                out.extend_from_slice(b"\r\n");
                let _ = write(&mut s, &mut out).await;
                monoio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            _ => answer(&mut s, &mut out, &req, &args, n).await,
        };
        if !keep || !req.keep_alive {
            return;
        }
    }
}

fn request(head: &crate::http::head::RequestHead, buf: &[u8], body: &[u8]) -> Req {
    let p = peek::peek(body, 64).unwrap_or_default();
    Req {
        path: head.path(buf).to_vec(),
        fault: head
            .header(buf, "x-mock-fault")
            .unwrap_or_default()
            .to_vec(),
        stream: p.stream,
        model: p
            .model
            .map(|m| m.value)
            .unwrap_or_else(|| "mock-model".into()),
        keep_alive: head.keep_alive,
    }
}

async fn answer(s: &mut TcpStream, out: &mut Vec<u8>, req: &Req, args: &MockArgs, n: u64) -> bool {
    let body = match req.path.as_slice() {
        b"/v1/chat/completions" | b"/v1/completions" if req.stream => {
            return stream(s, out, req, args, n).await;
        }
        b"/v1/chat/completions" => format!(
            r#"{{"id":"chatcmpl-{n}","object":"chat.completion","created":1700000000,"model":"{}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from {}."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}}}"#,
            req.model, args.name
        ),
        b"/v1/completions" => format!(
            r#"{{"id":"cmpl-{n}","object":"text_completion","created":1700000000,"model":"{}","choices":[{{"index":0,"text":"Hello from {}.","finish_reason":"stop"}}],"usage":{{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}}}"#,
            req.model, args.name
        ),
        b"/v1/embeddings" => format!(
            r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}}],"model":"{}","usage":{{"prompt_tokens":3,"total_tokens":3}}}}"#,
            req.model
        ),
        b"/v1/models" => r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#.to_string(),
        _ => {
            error(out, 404, "unknown path");
            return write(s, out).await;
        }
    };
    write_status_line(out, 200, b"");
    write_header(out, b"content-type", b"application/json");
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    write(s, out).await
}

async fn stream(s: &mut TcpStream, out: &mut Vec<u8>, req: &Req, args: &MockArgs, n: u64) -> bool {
    write_status_line(out, 200, b"");
    write_header(out, b"content-type", b"text/event-stream");
    write_header(out, b"transfer-encoding", b"chunked");
    out.extend_from_slice(b"\r\n");
    let events = args.stream_events.max(1);
    for i in 0..events {
        if req.fault == b"cut" && i == 2 {
            let _ = write(s, out).await;
            return false;
        }
        let ev = format!(
            "data: {{\"id\":\"chatcmpl-{n}\",\"object\":\"chat.completion.chunk\",\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n",
            req.model
        );
        write_chunk(out, ev.as_bytes());
        if !write(s, out).await {
            return false;
        }
        if args.event_delay_ms > 0 {
            monoio::time::sleep(Duration::from_millis(args.event_delay_ms)).await;
        }
    }
    let usage = format!(
        "data: {{\"id\":\"chatcmpl-{n}\",\"object\":\"chat.completion.chunk\",\"model\":\"{}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":{events},\"total_tokens\":{}}}}}\n\n",
        req.model,
        9 + events
    );
    write_chunk(out, usage.as_bytes());
    if req.fault != b"no-done" {
        write_chunk(out, b"data: [DONE]\n\n");
    }
    out.extend_from_slice(LAST_CHUNK);
    write(s, out).await
}

fn error(out: &mut Vec<u8>, status: u16, message: &str) {
    let body =
        format!(r#"{{"error":{{"message":"{message}","type":"mock_error","code":{status}}}}}"#);
    write_status_line(out, status, b"");
    write_header(out, b"content-type", b"application/json");
    if status == 429 {
        write_header(out, b"retry-after", b"1");
    }
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

async fn read(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let b = std::mem::take(buf);
    let len = b.len();
    let (res, slice) = s.read(b.slice_mut(len..)).await;
    *buf = slice.into_inner();
    matches!(res, Ok(n) if n > 0)
}

async fn write(s: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    let data = std::mem::take(out);
    let (res, mut data) = s.write_all(data).await;
    data.clear();
    *out = data;
    res.is_ok()
}
