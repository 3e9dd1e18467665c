//! One client connection: read a request head, dispatch it, repeat while keep-alive allows.
//!
//! The connection is split into a reader and a writer so that a proxied request can watch the
//! client socket for a disconnect while the upstream answer is relayed on the writer.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::api::{self, Endpoint};
use crate::config::ServerSettings;
use crate::cors::Cors;
use crate::error::{ErrorKind, GatewayError};
use crate::http::head::{parse_request_into, HeadError, Method, RequestBody, RequestHead};
use crate::server::respond;
use crate::shard::{Gauge, Shard};
use crate::telemetry::{micros, RequestEvent, Route, NONE};
use crate::timer::Timer;

/// Initial capacity of a connection's read and write buffers.
const CONN_BUF_BYTES: usize = 8 * 1024;

pub struct ClientReader {
    pub rd: OwnedReadHalf<TcpStream>,
    /// Bytes received and not yet consumed (the current request and anything pipelined after it).
    pub buf: Vec<u8>,
    /// The client half-closed or vanished; no further request can be read.
    pub eof: bool,
    /// Bounds each read (idle, header and body timeouts).
    pub timer: Timer,
}

pub struct ClientWriter {
    pub wr: OwnedWriteHalf<TcpStream>,
    /// Reusable output buffer; `flush` writes and clears it.
    pub out: Vec<u8>,
    /// Bytes written to the client so far (the access log's `bytes_out`).
    pub sent: u64,
    /// Bounds each write: a client that stops reading cannot hold its request (and the
    /// upstream connection behind it) open.
    pub timer: Timer,
    pub send_timeout: Duration,
}

pub struct Client {
    pub r: ClientReader,
    pub w: ClientWriter,
    /// The client's address, for the access log.
    pub peer: Option<std::net::IpAddr>,
    /// Delays the disconnect watch of a proxied request (see `proxy::watch`).
    pub watch: Timer,
    /// Bounds the upstream exchange of the request in progress (one at a time per client).
    pub upstream: Timer,
}

/// Writes all of `out`, adding each part the kernel accepts to `sent` as it goes: an answer
/// cut off by an error or the send timeout still counts the bytes its client was given.
async fn write_counted(
    wr: &mut OwnedWriteHalf<TcpStream>,
    mut out: Vec<u8>,
    sent: &mut u64,
) -> (io::Result<()>, Vec<u8>) {
    let mut at = 0;
    while at < out.len() {
        let (res, part) = wr.write(out.slice(at..)).await;
        out = part.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), out),
            Ok(n) => {
                at += n;
                *sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), out),
        }
    }
    (Ok(()), out)
}

impl ClientReader {
    /// Reads more bytes onto `buf` before `deadline`. `Ok(0)` is EOF.
    pub async fn read_more(&mut self, deadline: Instant) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(CONN_BUF_BYTES);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        match self
            .timer
            .run(deadline, self.rd.read(buf.slice_mut(len..)))
            .await
        {
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                if matches!(res, Ok(0)) {
                    self.eof = true;
                }
                res
            }
            Err(_) => {
                // The dropped read owned the buffer; start a fresh one. Bytes of a request
                // that never completed are not worth keeping.
                self.buf = Vec::with_capacity(CONN_BUF_BYTES);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read timed out",
                ))
            }
        }
    }

    pub fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }
}

impl ClientWriter {
    /// Writes all of `out` and clears it; gives up after `client_send_timeout_ms` (`TimedOut`:
    /// the client is treated as gone). Not bounded by the request's `total_timeout`, which is
    /// the upstream's budget: a deadline already passed would fail even a write the client
    /// was ready for.
    pub async fn flush(&mut self) -> io::Result<()> {
        let deadline = self.timer.now() + self.send_timeout;
        let out = std::mem::take(&mut self.out);
        let write = write_counted(&mut self.wr, out, &mut self.sent);
        match self.timer.run(deadline, write).await {
            Ok((res, mut out)) => {
                out.clear();
                self.out = out;
                res
            }
            Err(_) => {
                // The dropped write owned the buffer; the connection is done anyway.
                self.out = Vec::new();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not take the answer in time",
                ))
            }
        }
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let _open = Gauge::enter(&shard.conns_open);
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let loopback = peer.is_some_and(|ip| ip.is_loopback());
    let routes = shard.routes();
    let limits = routes.config.server.clone();
    drop(routes);
    let (rd, wr) = stream.into_split();
    let mut c = Client {
        r: ClientReader {
            rd,
            buf: Vec::with_capacity(CONN_BUF_BYTES),
            eof: false,
            timer: shard.timers.timer(),
        },
        w: ClientWriter {
            wr,
            out: Vec::with_capacity(CONN_BUF_BYTES),
            sent: 0,
            timer: shard.timers.timer(),
            send_timeout: limits.client_send_timeout,
        },
        peer,
        watch: shard.timers.timer(),
        // Cut when a stopping shard's drain time is up (`Timers::cut`).
        upstream: shard.timers.cuttable_timer(),
    };
    if shard.conns_open.get() > limits.connections_per_shard_max {
        let err = GatewayError::new(ErrorKind::Overloaded, "too many connections; retry shortly");
        refuse_connection(&shard, &mut c, err).await;
        return;
    }
    // One head for the connection's life: its header list is reused by every request.
    let mut head = RequestHead::default();
    let mut fresh = true;
    loop {
        match read_head(&mut c.r, &limits, &mut head, fresh).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                refuse_connection(&shard, &mut c, err).await;
                return;
            }
        }
        let _busy = Gauge::enter(&shard.conns_busy);
        let keep_alive = dispatch(&shard, &mut c, &head, &limits, loopback).await;
        fresh = false;
        if !keep_alive || shard.draining.get() || c.r.eof {
            return;
        }
    }
}

/// Answers a connection Berry will not read a request from (unparseable head, too many
/// connections) and closes it; counted like any other request.
async fn refuse_connection(shard: &Shard, c: &mut Client, err: GatewayError) {
    let answered = Answered::new(Route::Other, None, c);
    respond::error(&mut c.w.out, &err, None, false, Cors::None);
    let _ = c.w.flush().await;
    answered.record(shard, c, err.status(), Some(err.kind), String::new());
}

/// Waits for a complete request head. `Ok(None)`: the client closed (or idled out) between
/// requests, which is not an error. A `fresh` connection gets `client_header_timeout` for its
/// first byte, not the keep-alive idle time: a connection that never says anything must not
/// hold one of the shard's slots for a minute.
async fn read_head(
    r: &mut ClientReader,
    limits: &ServerSettings,
    head: &mut RequestHead,
    fresh: bool,
) -> Result<bool, GatewayError> {
    // The shard's coarse clock is enough for timeouts of seconds.
    let mut started: Option<Instant> = if r.buf.is_empty() {
        None
    } else {
        Some(r.timer.now())
    };
    // A fresh connection's whole head is due this long after it was accepted.
    let fresh_by = fresh.then(|| r.timer.now() + limits.client_header_timeout);
    loop {
        if !r.buf.is_empty() {
            let (bytes_max, count_max) = (limits.header_bytes_max, limits.headers_count_max);
            match parse_request_into(&r.buf, bytes_max, count_max, head) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => return Err(head_error(e)),
            }
        }
        let deadline = match (started, fresh_by) {
            (_, Some(by)) => by,
            (None, None) => r.timer.now() + limits.client_idle_timeout,
            (Some(t), None) => t + limits.client_header_timeout,
        };
        match r.read_more(deadline).await {
            Ok(0) | Err(_) if started.is_none() => return Ok(false),
            Ok(0) => return Ok(false),
            Ok(_) => {
                started.get_or_insert_with(|| r.timer.now());
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(GatewayError::new(
                    ErrorKind::RequestTimeout,
                    "request head not received in time",
                ))
            }
            Err(_) => return Ok(false),
        }
    }
}

fn head_error(e: HeadError) -> GatewayError {
    match e {
        HeadError::TooLarge => GatewayError::new(
            ErrorKind::HeadersTooLarge,
            "request head is larger than the server accepts",
        ),
        HeadError::TooManyHeaders => GatewayError::new(
            ErrorKind::HeadersTooLarge,
            "request has more headers than the server accepts",
        ),
        HeadError::Malformed(what) => {
            GatewayError::new(ErrorKind::BadRequest, format!("malformed request: {what}"))
        }
        HeadError::BadFraming(what) => GatewayError::new(
            ErrorKind::BadRequest,
            format!("bad message framing: {what}"),
        ),
        HeadError::UnsupportedCoding => GatewayError::new(
            ErrorKind::NotImplemented,
            "request transfer codings other than chunked are not supported; send the body \
             plain or chunked",
        ),
        HeadError::UnsupportedVersion => GatewayError::new(
            ErrorKind::VersionNotSupported,
            "only HTTP/1.0 and HTTP/1.1 are supported",
        ),
    }
}

/// Routes one request; returns whether the connection may carry another.
async fn dispatch(
    shard: &Rc<Shard>,
    c: &mut Client,
    head: &RequestHead,
    limits: &ServerSettings,
    loopback: bool,
) -> bool {
    let routes = shard.routes();
    let endpoint = api::route(head.method, head.path(&c.r.buf));
    match endpoint {
        // Boxed: the proxied request's future is large, and inline it would be copied into
        // this one (and this one into `serve`'s) on every request.
        Ok(Endpoint::Proxy(path)) => {
            Box::pin(crate::proxy::handle(shard, &routes, c, head, path)).await
        }
        // Local answers and refusals are boxed too: rare, and kept out of the hot future.
        Ok(local) => {
            Box::pin(answer_local(
                shard, &routes, c, head, local, limits, loopback,
            ))
            .await
        }
        Err(err) => Box::pin(refuse(shard, &routes, c, head, err, limits)).await,
    }
}

/// Answers an endpoint Berry serves itself.
async fn answer_local(
    shard: &Rc<Shard>,
    routes: &crate::routes::Routes,
    c: &mut Client,
    head: &RequestHead,
    local: Endpoint,
    limits: &ServerSettings,
    loopback: bool,
) -> bool {
    let mut answered = Answered::new(route_of(local), Some(head), c);
    let request_id = crate::proxy::request_id(shard, head, &c.r.buf);
    // Of the local endpoints only the model list is OpenAI's, for pages to call.
    let cors = match local {
        Endpoint::Models => Cors::of(&routes.config.server.cors_allow_origins, head, &c.r.buf),
        _ => Cors::None,
    };
    let answer = match local {
        Endpoint::Metrics => metrics(shard, routes, head, &c.r.buf, loopback).await,
        _ => {
            let snapshot = shard.snapshot.borrow().clone();
            let ctx = api::LocalCtx {
                snapshot: &snapshot,
                loopback,
            };
            api::local(routes, local, head, &c.r.buf, &ctx).map(|a| {
                answered.user = a.user;
                (a.status, &b"application/json"[..], a.body)
            })
        }
    };
    // Local endpoints take no body; skip a small one so keep-alive survives.
    let mut keep = reusable(shard, head) && super::body::skip(&mut c.r, head, limits).await;
    c.r.consume(head.head_len);
    let (status, error) = match answer {
        Ok((status, content_type, body)) => {
            let out = &mut c.w.out;
            respond::typed(
                out,
                status,
                content_type,
                &body,
                Some(&request_id),
                keep,
                cors,
            );
            if head.method == Method::Head {
                // Same head as GET, content-length included, but no body.
                let len = out.len() - body.len();
                out.truncate(len);
            }
            (status, None)
        }
        Err(err) => {
            respond::error(&mut c.w.out, &err, Some(&request_id), keep, cors);
            (err.status(), Some(err.kind))
        }
    };
    keep &= c.w.flush().await.is_ok();
    answered.record(shard, c, status, error, request_id);
    keep
}

/// Answers a request no endpoint takes (404, 405), or the CORS preflight (an `OPTIONS`, which
/// no endpoint takes) of an allowed origin on an OpenAI API path. A preflight needs no token:
/// browsers send none with it. From an origin that is not allowed, or without `Origin`, an
/// `OPTIONS` is refused like any other method the path does not take.
async fn refuse(
    shard: &Rc<Shard>,
    routes: &crate::routes::Routes,
    c: &mut Client,
    head: &RequestHead,
    err: GatewayError,
    limits: &ServerSettings,
) -> bool {
    let answered = Answered::new(Route::Other, Some(head), c);
    let cors = if api::is_openai_path(head.path(&c.r.buf)) {
        Cors::of(&routes.config.server.cors_allow_origins, head, &c.r.buf)
    } else {
        Cors::None
    };
    let preflight = match cors {
        Cors::Allowed(origin) if head.method == Method::Options => {
            // Copied: skipping a body below may move the bytes it points into.
            let requested = head.header(&c.r.buf, "access-control-request-headers");
            Some((origin, requested.map(<[u8]>::to_vec)))
        }
        _ => None,
    };
    let keep = reusable(shard, head) && super::body::skip(&mut c.r, head, limits).await;
    c.r.consume(head.head_len);
    let status = match preflight {
        Some((origin, requested)) => {
            respond::preflight(&mut c.w.out, origin, requested.as_deref(), keep);
            204
        }
        None => {
            respond::error(&mut c.w.out, &err, None, keep, cors);
            err.status()
        }
    };
    let keep = c.w.flush().await.is_ok() && keep;
    let error = (status != 204).then_some(err.kind);
    answered.record(shard, c, status, error, String::new());
    keep
}

fn route_of(endpoint: Endpoint) -> Route {
    match endpoint {
        Endpoint::Models => Route::Models,
        Endpoint::Health | Endpoint::ShortHealth => Route::Health,
        Endpoint::Admin => Route::Admin,
        Endpoint::Metrics => Route::Metrics,
        Endpoint::Proxy(path) => Route::from(path),
    }
}

/// A request Berry answers itself, from the moment it starts answering: what its metrics event
/// and access-log line need besides the status.
struct Answered {
    route: Route,
    get: bool,
    started: Instant,
    sent_before: u64,
    /// The head's bytes; a body, if any, is skipped unread.
    bytes_in: u64,
    /// The authenticated caller (index into `Config.users`), for endpoints that take tokens.
    user: Option<usize>,
}

impl Answered {
    /// `head` is `None` for a connection refused before a request head could be read.
    fn new(route: Route, head: Option<&RequestHead>, c: &Client) -> Answered {
        Answered {
            route,
            get: head.is_some_and(|h| h.method != Method::Post),
            started: Instant::now(),
            sent_before: c.w.sent,
            bytes_in: head.map_or(c.r.buf.len(), |h| h.head_len) as u64,
            user: None,
        }
    }

    fn record(
        self,
        shard: &Shard,
        c: &Client,
        status: u16,
        error: Option<ErrorKind>,
        request_id: String,
    ) {
        if !shard.telemetry.enabled() {
            return;
        }
        let end = Instant::now();
        let duration_us = micros(end.saturating_duration_since(self.started));
        let event = RequestEvent {
            route: self.route,
            get: self.get,
            status,
            error,
            duration_us,
            ttfb_us: duration_us,
            bytes_in: self.bytes_in,
            bytes_out: c.w.sent - self.sent_before,
            user: self.user.map_or(NONE, |i| i as u32),
            ..RequestEvent::default()
        };
        shard.record_request(event, request_id, end, c.peer);
    }
}

/// `GET /metrics`: the Prometheus text exposition, rendered from the control thread's
/// recorder (at most one report interval behind the shards).
async fn metrics(
    shard: &Shard,
    routes: &crate::routes::Routes,
    head: &RequestHead,
    buf: &[u8],
    loopback: bool,
) -> Result<(u16, &'static [u8], Vec<u8>), GatewayError> {
    let Some(view) = &shard.telemetry.metrics else {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            "metrics are off (`observability.metrics = false`)",
        ));
    };
    if routes.config.observability.metrics_admin_only {
        api::admin_access(routes, head, buf, loopback)?;
    }
    // Rendered by the control thread, which looks for requests at least every 20 ms.
    let ticket = view.request();
    let deadline = Instant::now() + METRICS_RENDER_WAIT;
    let text = loop {
        if let Some(text) = view.ready(ticket) {
            break text;
        }
        if Instant::now() >= deadline {
            return Err(GatewayError::new(
                ErrorKind::Overloaded,
                "the metrics were not rendered in time; retry",
            ));
        }
        monoio::time::sleep(Duration::from_millis(2)).await;
    };
    Ok((
        200,
        b"text/plain; version=0.0.4; charset=utf-8",
        text.as_bytes().to_vec(),
    ))
}

/// Longest wait for the control thread to render `/metrics`.
const METRICS_RENDER_WAIT: Duration = Duration::from_secs(2);

/// May the connection carry another request after this one? Not when the client said so, not
/// while draining (the response then says `connection: close`), and not when the client waits
/// for `100 Continue` before sending a body nobody will read.
fn reusable(shard: &Shard, head: &RequestHead) -> bool {
    head.keep_alive && !shard.draining.get() && !(head.expect_continue && has_body(head))
}

/// True when the request announces a body.
pub fn has_body(head: &RequestHead) -> bool {
    !matches!(head.body, RequestBody::None | RequestBody::Length(0))
}
