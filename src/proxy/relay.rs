//! Relaying an upstream response to the client.
//!
//! Nothing is sent until there is something worth committing to: a small fixed-length body is
//! read whole first, a stream is held until its first complete SSE event. Until then a failure
//! may still fail over. After that Berry never fakes a clean end: a broken SSE stream gets an
//! in-band error event and the connection closes without the final chunk, and any other broken
//! body is cut short so its framing shows the loss.

use std::time::{Duration, Instant};

use crate::cors::{self, Cors};
use crate::error::{ErrorKind, GatewayError};
use crate::http::body::ChunkedDecoder;
use crate::http::encode::{
    write_chunk, write_content_length, write_header, write_status_line, LAST_CHUNK,
};
use crate::http::head::{connection_tokens, is_hop_by_hop, ResponseBody, ResponseHead};
use crate::http::sse::{first_event_end, last_event_end};
use crate::server::conn::ClientWriter;
use crate::shard::Shard;
use crate::upstream::conn::UpConn;

use super::tally::Tally;
use crate::balance::outcome::{refine_with_error_code, OutcomeClass};
use crate::telemetry::{micros, usage, write_server_timing};

/// Trailer bytes accepted after a chunked upstream body.
const TRAILER_BYTES_MAX: usize = 16 * 1024;

/// How a relay that sent something ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The client connection may carry another request.
    pub keep_alive: bool,
    /// The upstream failed after the first byte, and how: `UpstreamTimeout` when it went
    /// silent, `UpstreamMalformed` when it garbled the body, `UpstreamFailed` when it closed
    /// or reset the connection or ended a stream without `[DONE]`.
    pub broke: Option<ErrorKind>,
    /// A 4xx whose OpenAI error `code` says the backend does not serve the model Berry asked
    /// for: the backend's fault (a config error), not the client's.
    pub model_error: bool,
}

impl Relayed {
    fn done(keep_alive: bool) -> Relayed {
        Relayed {
            keep_alive,
            broke: None,
            model_error: false,
        }
    }
}

/// What the relay needs to know about the request it answers.
pub struct RelayCtx<'a> {
    pub request_id: &'a str,
    /// Provider id, sent back as `x-berry-backend`.
    pub backend: &'a str,
    pub provider: usize,
    pub client_minor_version: u8,
    pub client_keep_alive: bool,
    /// An OpenAI completion stream must end with `data: [DONE]`; one that does not was cut.
    pub stream_must_end_with_done: bool,
    pub buffer_bytes_max: usize,
    pub idle_timeout: Duration,
    pub deadline: Instant,
    /// The strategy had to choose among unavailable backends; said in `x-berry-degraded`.
    pub degraded: bool,
    /// When the request's head was read, and when this response's head arrived
    /// (`server-timing`).
    pub started: Instant,
    pub head_at: Instant,
    /// Bounds every upstream read (idle and total timeouts).
    pub timer: &'a crate::timer::Timer,
    /// Remove the usage-only chunk Berry asked for on the client's behalf.
    pub strip_usage: bool,
    /// Look for `usage` in the body (2xx answers only).
    pub scan_usage: bool,
    /// The status is a client-class 4xx: look for a model error code in a buffered body.
    pub client_error: bool,
    pub tally: &'a Tally,
    /// What the answer owes a browser page; Berry's CORS lines replace the upstream's.
    pub cors: Cors<'a>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (204/304), or an empty one.
    Empty,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and unknown length: the body ends when the connection closes.
    Close,
}

enum Source {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// How a stream relay goes; fixed per response.
struct StreamPlan {
    framing: Framing,
    sse: bool,
    done_check: bool,
    upstream_reusable: bool,
    keep_alive: bool,
}

/// Relays the response whose head was just read. `Ok(keep_alive)` once anything was sent
/// (or the client is gone); `Err` only when nothing was sent, so failover may continue.
pub async fn relay(
    shard: &Shard,
    w: &mut ClientWriter,
    mut conn: UpConn,
    head: ResponseHead,
    ctx: &RelayCtx<'_>,
) -> Result<Relayed, GatewayError> {
    if head.status == 101 || head.transfer_coded {
        // Berry cannot relay a protocol switch, nor a transfer coding other than chunked (it
        // would have to re-declare it); nothing was sent yet, so another backend may answer.
        w.out.clear();
        let what = if head.status == 101 {
            "a protocol switch (101)"
        } else {
            "a transfer coding other than chunked"
        };
        return Err(Break::Malformed(what.to_string()).into_error(true));
    }
    let sse = head
        .header(&conn.buf, "content-type")
        .is_some_and(|v| v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream"));
    let framing = match head.body {
        ResponseBody::None => Framing::Empty,
        ResponseBody::Length(n) if !sse => Framing::Length(n),
        _ if ctx.client_minor_version >= 1 => Framing::Chunked,
        _ => Framing::Close,
    };
    let keep_alive = ctx.client_keep_alive && framing != Framing::Close;
    w.out.clear();
    write_head(&mut w.out, &head, &conn.buf, framing, ctx, keep_alive);
    let upstream_reusable = head.keep_alive;
    if let ResponseBody::Length(n) = head.body {
        if !sse && n <= ctx.buffer_bytes_max as u64 {
            // The body follows the head in the buffer: copy it from there, no shifting.
            let (start, n) = (head.head_len, n as usize);
            return relay_buffered(shard, w, conn, start, n, ctx, upstream_reusable, keep_alive)
                .await;
        }
    }
    conn.consume(head.head_len);

    let source = match head.body {
        ResponseBody::None => {
            // The upstream is done with this response: pool it before waiting on the client.
            release(shard, ctx.provider, conn, upstream_reusable);
            return Ok(Relayed::done(sent(w.flush().await, ctx) && keep_alive));
        }
        ResponseBody::Length(n) => Source::Length(n),
        ResponseBody::Chunked => Source::Chunked(ChunkedDecoder::new(TRAILER_BYTES_MAX)),
        ResponseBody::UntilClose => Source::UntilClose,
    };
    let plan = StreamPlan {
        framing,
        sse,
        done_check: sse && ctx.stream_must_end_with_done && (200..300).contains(&head.status),
        upstream_reusable: upstream_reusable && !matches!(source, Source::UntilClose),
        keep_alive,
    };
    // Boxed: a stream lives long enough that one allocation is nothing, and keeping its
    // state out of line keeps every short request's future small.
    Box::pin(relay_events(shard, w, conn, source, &plan, ctx)).await
}

/// A small fixed-length body: read it whole, then send head and body in one write.
#[allow(clippy::too_many_arguments)]
async fn relay_buffered(
    shard: &Shard,
    w: &mut ClientWriter,
    mut conn: UpConn,
    start: usize,
    n: usize,
    ctx: &RelayCtx<'_>,
    reusable: bool,
    keep_alive: bool,
) -> Result<Relayed, GatewayError> {
    while conn.buf.len() < start + n {
        if let Err(e) = read_some(&mut conn, ctx).await {
            w.out.clear();
            let e = cut_or(shard, e);
            let retryable = !matches!(e, Break::Shutdown);
            return Err(e.into_error(retryable));
        }
    }
    let body = &conn.buf[start..start + n];
    if ctx.scan_usage {
        ctx.tally.usage.set(usage::find(body));
    }
    let model_error = ctx.client_error && says_model_not_served(body);
    w.out.extend_from_slice(body);
    conn.consume(start + n);
    release(shard, ctx.provider, conn, reusable);
    Ok(Relayed {
        model_error,
        ..Relayed::done(sent(w.flush().await, ctx) && keep_alive)
    })
}

/// Does this (small, 4xx) error body carry an OpenAI error code meaning "no such model"?
/// Parsed properly: error answers are rare and short.
fn says_model_not_served(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let code = v["error"]["code"].as_str();
    refine_with_error_code(OutcomeClass::ClientError, code) == OutcomeClass::ModelError
}

async fn relay_events(
    shard: &Shard,
    w: &mut ClientWriter,
    mut conn: UpConn,
    mut source: Source,
    plan: &StreamPlan,
    ctx: &RelayCtx<'_>,
) -> Result<Relayed, GatewayError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut stripped: Vec<u8> = Vec::new();
    let mut usage_scan = usage::BodyScan::new(plan.sse);
    let mut committed = false;
    let mut saw_done = false;
    let mut finished = false;
    loop {
        // Move whatever payload has arrived into `pending`.
        let used = match &mut source {
            Source::Length(rem) => {
                let take = (*rem).min(conn.buf.len() as u64) as usize;
                pending.extend_from_slice(&conn.buf[..take]);
                *rem -= take as u64;
                finished = *rem == 0;
                take
            }
            Source::Chunked(dec) => {
                match dec.decode(&conn.buf, &mut |data| pending.extend_from_slice(data)) {
                    Ok(used) => {
                        finished = dec.is_done();
                        used
                    }
                    Err(e) => {
                        let brk = Break::Malformed(e.to_string());
                        return broken(w, brk, committed, plan, ctx).await;
                    }
                }
            }
            Source::UntilClose => {
                pending.extend_from_slice(&conn.buf);
                conn.buf.len()
            }
        };
        conn.consume(used);

        // Send what is complete: everything, or for SSE only whole events.
        let mut upto = if finished || !plan.sse {
            pending.len()
        } else {
            last_event_end(&pending).unwrap_or(0)
        };
        // An SSE event may not grow without bound while it is held back: before the first
        // byte the request fails with Berry's limit named; after it, what has arrived is sent
        // as is.
        // Held back: an event still growing, or before the first byte the first whole one.
        let held = match (plan.sse, upto, committed) {
            (false, _, _) | (true, 1.., true) => 0,
            (true, 0, _) => pending.len(),
            (true, 1.., false) => first_event_end(&pending).unwrap_or(upto),
        };
        if held > ctx.buffer_bytes_max {
            if !committed {
                return broken(w, Break::EventTooLarge, false, plan, ctx).await;
            }
            upto = pending.len();
        }
        if upto > 0 || finished {
            let events = &pending[..upto];
            if plan.done_check && !saw_done {
                saw_done = crate::http::sse::has_done_event(events);
            }
            if finished && plan.done_check && !saw_done && !committed {
                // Ended without its last event before anything was sent: as broken as a cut
                // connection, and another backend may still answer whole.
                return broken(w, Break::NoDone, false, plan, ctx).await;
            }
            if ctx.strip_usage && plan.sse {
                stripped.clear();
                if let Some(u) = usage::strip_usage_chunk(events, &mut stripped) {
                    ctx.tally.usage.set(Some(u));
                }
                frame(&mut w.out, plan.framing, &stripped);
            } else {
                if ctx.scan_usage {
                    if let Some(u) = usage_scan.feed(events, finished) {
                        ctx.tally.usage.set(Some(u));
                    }
                }
                frame(&mut w.out, plan.framing, events);
            }
            pending.drain(..upto);
            committed = true;
            if ctx.tally.first_byte.get().is_none() {
                // A stream's first event reached the client: its time to first token.
                ctx.tally.first_byte.set(Some(Instant::now()));
            }
            if finished {
                if plan.done_check && !saw_done {
                    return broken(w, Break::NoDone, committed, plan, ctx).await;
                }
                if plan.framing == Framing::Chunked {
                    w.out.extend_from_slice(LAST_CHUNK);
                }
                release(shard, ctx.provider, conn, plan.upstream_reusable);
                return Ok(Relayed::done(sent(w.flush().await, ctx) && plan.keep_alive));
            }
            if !sent(w.flush().await, ctx) {
                return Ok(Relayed::done(false));
            }
        }

        if shard.drain_expired.get() {
            return broken(w, Break::Shutdown, committed, plan, ctx).await;
        }
        match read_some(&mut conn, ctx).await {
            Ok(()) => {}
            Err(Break::Eof) if matches!(source, Source::UntilClose) => finished = true,
            Err(brk) => return broken(w, cut_or(shard, brk), committed, plan, ctx).await,
        }
    }
}

/// A wait that ended because the stopping shard cut it (`Timers::cut`) is a shutdown, not
/// the upstream's silence.
fn cut_or(shard: &Shard, brk: Break) -> Break {
    match brk {
        Break::Stalled(_) | Break::TotalTimeout if shard.drain_expired.get() => Break::Shutdown,
        other => other,
    }
}

/// Why an upstream body ended early.
enum Break {
    Eof,
    Io(std::io::ErrorKind),
    Stalled(Duration),
    TotalTimeout,
    Malformed(String),
    /// An SSE event outgrew `response_buffer_bytes_max` before the first byte: Berry's limit,
    /// not garbled framing.
    EventTooLarge,
    NoDone,
    /// The server is stopping and its drain timeout ran out (not the upstream's fault).
    Shutdown,
}

impl Break {
    fn into_error(self, retryable: bool) -> GatewayError {
        let (kind, msg) = match self {
            Break::Eof => (
                ErrorKind::UpstreamFailed,
                "the upstream closed the connection before the response was complete".to_string(),
            ),
            Break::Io(k) => (
                ErrorKind::UpstreamFailed,
                format!("reading the upstream response failed: {k}"),
            ),
            Break::Stalled(d) => (
                ErrorKind::UpstreamTimeout,
                format!("the upstream sent nothing for {} ms", d.as_millis()),
            ),
            Break::TotalTimeout => (
                ErrorKind::UpstreamTimeout,
                "the request exceeded total_timeout".to_string(),
            ),
            Break::Malformed(what) => (
                ErrorKind::UpstreamMalformed,
                format!("the upstream sent a malformed body: {what}"),
            ),
            Break::EventTooLarge => (
                ErrorKind::ResponseTooLarge,
                "the upstream sent an SSE event larger than response_buffer_bytes_max".to_string(),
            ),
            Break::NoDone => (
                ErrorKind::UpstreamFailed,
                "the upstream ended the stream without [DONE]".to_string(),
            ),
            Break::Shutdown => (
                ErrorKind::ShuttingDown,
                "the gateway is shutting down".to_string(),
            ),
        };
        let mut e = GatewayError::new(kind, msg);
        e.retryable = retryable;
        e
    }
}

/// Reads more upstream bytes within the idle timeout and the request deadline.
async fn read_some(conn: &mut UpConn, ctx: &RelayCtx<'_>) -> Result<(), Break> {
    let before = Instant::now();
    let left = ctx
        .deadline
        .checked_duration_since(before)
        .unwrap_or_default();
    if left.is_zero() {
        return Err(Break::TotalTimeout);
    }
    let (wait, brk) = if left < ctx.idle_timeout {
        (left, Break::TotalTimeout)
    } else {
        (ctx.idle_timeout, Break::Stalled(ctx.idle_timeout))
    };
    ctx.tally.begin_wait(before);
    let read = ctx.timer.run(before + wait, conn.read_more()).await;
    ctx.tally.wait(before.elapsed());
    match read {
        Ok(Ok(0)) => Err(Break::Eof),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Break::Io(e.kind())),
        Err(_) => Err(brk),
    }
}

/// Ends a response whose upstream failed. Before anything was sent this is a failover-able
/// error; after, the client is told in-band (SSE) and the connection closes unfinished.
async fn broken(
    w: &mut ClientWriter,
    brk: Break,
    committed: bool,
    plan: &StreamPlan,
    ctx: &RelayCtx<'_>,
) -> Result<Relayed, GatewayError> {
    if !committed {
        w.out.clear();
        // Another backend would be cut the same way: a stopping gateway answers now, and
        // Berry's own size limit would stop the next answer too.
        let retryable = !matches!(brk, Break::Shutdown | Break::EventTooLarge);
        return Err(brk.into_error(retryable));
    }
    let err = brk.into_error(false);
    // A stopping gateway cut it: not the backend's doing.
    let how = if err.kind == ErrorKind::ShuttingDown {
        "cut"
    } else {
        "broken"
    };
    log::warn!(
        "request {}: answer from backend {} {how} after its first byte: {}",
        ctx.request_id,
        ctx.backend,
        err.message
    );
    if plan.sse {
        let mut event = Vec::with_capacity(160);
        // A blank line first: what was sent may end inside an event (an unterminated tail, an
        // event sent unfinished for its size, a line whose end is still to come), and the
        // error must be an event of its own. After a whole event the extra blank lines
        // dispatch nothing (an SSE reader's data buffer is empty there).
        event.extend_from_slice(b"\n\ndata: ");
        err.write_body(&mut event);
        event.extend_from_slice(b"\n\n");
        frame(&mut w.out, plan.framing, &event);
    }
    let _ = w.flush().await;
    Ok(Relayed {
        keep_alive: false,
        broke: Some(err.kind),
        model_error: false,
    })
}

/// Did a write to the client go through? A client that took too long to accept it is
/// recorded as such (the access log's `error`); one that went away is just gone.
fn sent(written: std::io::Result<()>, ctx: &RelayCtx<'_>) -> bool {
    match written {
        Ok(()) => true,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                ctx.tally.error.set(Some(ErrorKind::ClientSendTimeout));
            }
            false
        }
    }
}

fn frame(out: &mut Vec<u8>, framing: Framing, data: &[u8]) {
    match framing {
        Framing::Chunked => write_chunk(out, data),
        _ => out.extend_from_slice(data),
    }
}

/// Returns a connection to the pool when its response was read to the end.
fn release(shard: &Shard, provider: usize, conn: UpConn, reusable: bool) {
    if reusable && !conn.request_cut && conn.buf.is_empty() {
        shard
            .pool
            .borrow_mut()
            .put(provider, conn, shard.timers.now());
    }
}

/// The client's response head: upstream status and end-to-end headers, Berry's own headers,
/// and the framing Berry chose.
fn write_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    ubuf: &[u8],
    framing: Framing,
    ctx: &RelayCtx<'_>,
    keep_alive: bool,
) {
    write_status_line(out, head.status, &ubuf[head.reason.clone()]);
    let listed = head.header(ubuf, "connection");
    let own_cors = ctx.cors.owns_headers();
    for h in &head.headers {
        let name = &ubuf[h.name.clone()];
        if is_hop_by_hop(name)
            || (own_cors && cors::is_cors_header(name))
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"x-berry-backend")
            || name.eq_ignore_ascii_case(b"server-timing")
            || listed.is_some_and(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case(name)))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-request-id") {
            // Keep the upstream's own id under another name: the client's id is Berry's.
            write_header(out, b"x-upstream-request-id", &ubuf[h.value.clone()]);
            continue;
        }
        write_header(out, name, &ubuf[h.value.clone()]);
    }
    write_header(out, b"x-request-id", ctx.request_id.as_bytes());
    write_header(out, b"x-berry-backend", ctx.backend.as_bytes());
    ctx.cors.write(out);
    // Up to this response's head: Berry's own time and the upstreams' (every attempt's).
    let upstream = ctx.tally.upstream_wait.get();
    let total = ctx.head_at.saturating_duration_since(ctx.started);
    out.extend_from_slice(b"server-timing: ");
    write_server_timing(
        out,
        micros(total.saturating_sub(upstream)),
        micros(upstream),
    );
    out.extend_from_slice(b"\r\n");
    ctx.tally.status.set(head.status);
    if ctx.degraded {
        write_header(
            out,
            b"x-berry-degraded",
            crate::error::DEGRADED_HEADER_VALUE,
        );
    }
    match framing {
        Framing::Empty if head.status == 204 || head.status == 304 => {}
        Framing::Empty => write_content_length(out, 0),
        Framing::Length(n) => write_content_length(out, n),
        Framing::Chunked => write_header(out, b"transfer-encoding", b"chunked"),
        Framing::Close => {}
    }
    if !keep_alive {
        write_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}
