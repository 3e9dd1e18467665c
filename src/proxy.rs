//! THE request path for proxied endpoints, top-down:
//! authenticate → check the request → read and scan the body → resolve the model → check
//! permission → pick a backend → forward → relay, failing over to another backend while no
//! byte has reached the client. Every failure is a [`GatewayError`] answered in one place.

pub mod relay;

use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{CancelableAsyncReadRent, Canceller};

use crate::api::peek::{self, Peek};
use crate::auth::{self, Caller};
use crate::balance::filter::Filter;
use crate::balance::local::Outcome;
use crate::balance::outcome::{classify, OutcomeClass, TransportError};
use crate::balance::{self, PickRequest};
use crate::config::{Config, Model};
use crate::error::{ErrorKind, GatewayError};
use crate::health::report::OutcomeEvent;
use crate::http::encode::write_content_length;
use crate::http::head::{connection_tokens, is_hop_by_hop, RequestBody, RequestHead};
use crate::routes::{Routes, UpstreamPath};
use crate::server::conn::{Client, ClientReader, ClientWriter};
use crate::server::{body, respond};
use crate::shard::Shard;
use crate::upstream::exchange::{self, Budget, HeadLimits};

/// Nesting accepted in request JSON.
const JSON_DEPTH_MAX: usize = 128;
/// How long a proxied request runs before its client socket is watched for a disconnect.
const WATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(20);
/// Longest client-supplied `x-request-id` that is kept; longer ones are replaced.
const REQUEST_ID_BYTES_MAX: usize = 128;

/// A request that passed every check and is ready to forward.
struct Prepared<'r> {
    caller: Caller<'r>,
    model: usize,
    path: UpstreamPath,
    body: Vec<u8>,
    peek: Peek,
    /// The client's end-to-end headers, already rendered as `name: value\r\n` lines.
    forwarded: Vec<u8>,
    /// Only this provider may serve the request (forced backend).
    forced_provider: Option<usize>,
    request_id: String,
    client_minor_version: u8,
    keep_alive: bool,
    started: Instant,
}

/// A refusal: the error to send (None: the client is gone), whether the connection can carry
/// another request, and whether the request's bytes were already consumed.
struct Refusal {
    err: Option<GatewayError>,
    keep_alive: bool,
    consumed: bool,
}

impl From<GatewayError> for Refusal {
    /// A refusal before the body was read.
    fn from(err: GatewayError) -> Self {
        Refusal {
            err: Some(err),
            keep_alive: false,
            consumed: false,
        }
    }
}

/// Handles one proxied request; returns whether the connection may carry another.
pub async fn handle(
    shard: &Rc<Shard>,
    routes: &Routes,
    c: &mut Client,
    head: RequestHead,
    path: UpstreamPath,
) -> bool {
    let started = Instant::now();
    let request_id = request_id(shard, &head, &c.r.buf);
    let mut prepared = match prepare(routes, c, &head, path, started).await {
        Ok(p) => p,
        Err(mut refusal) => {
            let Some(err) = refusal.err.take() else {
                return false;
            };
            if !refusal.consumed && !head.expect_continue {
                // Refused before the body was read: skip a small one so keep-alive survives.
                let limits = &routes.config.server;
                refusal.keep_alive = head.keep_alive
                    && !shard.draining.get()
                    && body::skip(&mut c.r, &head, limits).await;
                c.r.consume(head.head_len);
            }
            respond::error(&mut c.w.out, &err, Some(&request_id), refusal.keep_alive);
            return c.w.flush().await.is_ok() && refusal.keep_alive;
        }
    };
    prepared.request_id = request_id;
    // Boxed once here, the request's ~3 KiB future is never copied again while it is raced
    // against the client watch (measured: memmove was the largest user-space cost).
    let forward = Box::pin(forward(shard, routes, &mut c.w, &prepared));
    watch_client(&mut c.r, forward).await.unwrap_or(false)
}

/// Every check that needs no upstream, cheapest first; nothing is spent on a request that
/// fails one. On success the request's bytes are consumed from the connection buffer.
async fn prepare<'r>(
    routes: &'r Routes,
    c: &mut Client,
    head: &RequestHead,
    path: UpstreamPath,
    started: Instant,
) -> Result<Prepared<'r>, Refusal> {
    let limits = &routes.config.server;
    let caller = auth::authenticate(routes, head, &c.r.buf)?;
    if let Some(ct) = head.header(&c.r.buf, "content-type") {
        if !is_json(ct) {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedMediaType,
                "Content-Type must be application/json",
            )
            .into());
        }
    }
    match head.body {
        RequestBody::None => {
            let msg = "a JSON body with Content-Length (or chunked encoding) is required";
            return Err(GatewayError::new(ErrorKind::LengthRequired, msg).into());
        }
        RequestBody::Length(n) if n > limits.body_bytes_max as u64 => {
            let msg = format!(
                "request body is larger than {} bytes",
                limits.body_bytes_max
            );
            return Err(GatewayError::new(ErrorKind::PayloadTooLarge, msg).into());
        }
        _ => {}
    }
    let gone = || Refusal {
        err: None,
        keep_alive: false,
        consumed: true,
    };
    if head.expect_continue {
        c.w.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        c.w.flush().await.map_err(|_| gone())?;
    }
    let mut body = Vec::new();
    let raw = match body::read(&mut c.r, head, limits, &mut body).await {
        Ok(raw) => raw,
        Err(err) => {
            return Err(Refusal {
                err,
                keep_alive: false,
                consumed: true,
            })
        }
    };
    let forwarded = forwarded_headers(head, &c.r.buf, routes);
    let forced_header = head
        .header(&c.r.buf, "x-berry-backend")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    c.r.consume(head.head_len + raw);

    // The request is fully read from here on: refusals keep the connection.
    let refuse = |err: GatewayError| Refusal {
        err: Some(err),
        keep_alive: head.keep_alive,
        consumed: true,
    };
    let peek = peek::peek(&body, JSON_DEPTH_MAX)
        .map_err(|e| refuse(GatewayError::new(ErrorKind::InvalidJson, e.to_string())))?;
    let name = match &peek.model {
        Some(f) => f.value.as_str(),
        None => {
            return Err(refuse(GatewayError::new(
                ErrorKind::MissingModel,
                "the request body has no `model` field",
            )))
        }
    };
    let config = &routes.config;
    let model = config
        .model_by_request_name(name)
        .filter(|&m| config.models[m].enabled)
        .ok_or_else(|| {
            refuse(GatewayError::new(
                ErrorKind::ModelNotFound,
                format!("the model `{}` does not exist", clip(name)),
            ))
        })?;
    if !caller.may_use(model) {
        return Err(refuse(GatewayError::new(
            ErrorKind::Forbidden,
            format!("access denied for model `{}`", clip(name)),
        )));
    }
    let forced_provider = match peek
        .backend
        .as_ref()
        .map(|f| f.value.clone())
        .or(forced_header)
    {
        None => None,
        Some(_) if !caller.may_override_backend() => {
            return Err(refuse(GatewayError::new(
                ErrorKind::Forbidden,
                "this API key may not choose a backend",
            )))
        }
        Some(id) => Some(forced_provider(config, &config.models[model], &id).map_err(refuse)?),
    };
    Ok(Prepared {
        caller,
        model,
        path,
        body,
        peek,
        forwarded,
        forced_provider,
        request_id: String::new(),
        client_minor_version: head.minor_version,
        keep_alive: head.keep_alive,
        started,
    })
}

/// Tries backends until one answers or the attempts run out, then relays the answer.
async fn forward(shard: &Shard, routes: &Routes, w: &mut ClientWriter, p: &Prepared<'_>) -> bool {
    let config = &routes.config;
    let settings = &config.settings;
    let model = &config.models[p.model];
    let deadline = p.started + settings.total_timeout;
    let attempts_max = 1 + settings.max_retries as usize;
    let limits = HeadLimits {
        bytes_max: config.server.header_bytes_max,
        count_max: config.server.headers_count_max,
    };
    let pick_req = PickRequest {
        prefix_key: prefix_key(model, p),
    };
    let keep_alive = p.keep_alive && !shard.draining.get();
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut last: Option<GatewayError> = None;
    let mut req = Vec::with_capacity(1024 + p.body.len());
    let mut scratch = Vec::with_capacity(64 + p.body.len());
    while tried.len() < attempts_max {
        // Past the deadline no backend is contacted, so none is charged for it.
        if let Err(e) = exchange::left(deadline) {
            last = Some(e);
            break;
        }
        let filter = Filter {
            user_tags: p.caller.tags(),
            tried: &tried,
            provider: p.forced_provider,
        };
        let now = Instant::now();
        // Borrowed, not cloned: the `Arc` is shared by every shard, and touching its count per
        // request would bounce a cache line between cores.
        let choice = {
            let snapshot = shard.snapshot.borrow();
            shard.balance.borrow_mut().pick(
                config,
                p.model,
                &filter,
                &pick_req,
                &snapshot,
                shard.id,
                now,
                &mut shard.rng.borrow_mut(),
            )
        };
        let Some(choice) = choice else { break };
        if choice.degraded && p.forced_provider.is_some() {
            // A forced backend that is down is said plainly, never tried blind or routed around.
            shard
                .balance
                .borrow_mut()
                .cancel(p.model, choice.backend, now);
            let id = &config.providers[model.backends[choice.backend].provider].id;
            last = Some(GatewayError::new(
                ErrorKind::NoBackend,
                format!(
                    "backend `{id}` is unavailable for model `{}` (its circuit is open)",
                    model.name
                ),
            ));
            break;
        }
        let mut attempt = Attempt {
            shard,
            model: p.model,
            backend: choice.backend,
            sent_at: now,
            first_byte_at: None,
            done: false,
        };
        tried.push(choice.backend);
        if choice.degraded {
            log::warn!(
                "request {}: no available backend for `{}`; trying an unavailable one",
                p.request_id,
                model.name
            );
        }
        let backend = &model.backends[choice.backend];
        let provider = &config.providers[backend.provider];
        let route = &routes.providers[backend.provider];
        build_request(&mut req, &mut scratch, route, p, &backend.model);
        let budget = Budget {
            connect_timeout: settings.connect_timeout,
            deadline,
            now,
        };
        let sent = exchange::send(shard, backend.provider, route, &mut req, budget, &limits).await;
        let (conn, head) = match sent {
            Ok(x) => x,
            Err(e) => {
                log::warn!(
                    "request {}: backend {}/{} failed: {}",
                    p.request_id,
                    provider.id,
                    backend.model,
                    e.message
                );
                attempt.finish(config, transport_class(&e), Instant::now(), None);
                last = Some(e);
                continue;
            }
        };
        let head_at = Instant::now();
        let status_class = classify(Some(head.status), None);
        let retry_after = (head.status == 429)
            .then(|| retry_after(&head, &conn.buf))
            .flatten();
        if retryable_status(head.status)
            && tried.len() < attempts_max
            && balance::filter::has_candidate(
                config,
                model,
                &Filter {
                    user_tags: p.caller.tags(),
                    tried: &tried,
                    provider: p.forced_provider,
                },
            )
        {
            log::warn!(
                "request {}: backend {}/{} answered {}; trying another",
                p.request_id,
                provider.id,
                backend.model,
                head.status
            );
            attempt.finish(config, status_class, head_at, retry_after);
            continue;
        }
        let ctx = relay::RelayCtx {
            request_id: &p.request_id,
            backend: &provider.id,
            provider: backend.provider,
            client_minor_version: p.client_minor_version,
            client_keep_alive: keep_alive,
            stream_must_end_with_done: p.peek.stream && p.path != UpstreamPath::Embeddings,
            buffer_bytes_max: settings.response_buffer_bytes_max,
            idle_timeout: settings.stream_idle_timeout,
            deadline,
            degraded: choice.degraded,
        };
        match relay::relay(shard, w, conn, head, &ctx).await {
            Ok(done) if done.upstream_broke => {
                // Broken mid-stream: a failure of the backend, timed by when its head arrived.
                attempt.finish_with_latency(
                    config,
                    classify(None, Some(TransportError::Io)),
                    head_at,
                    Instant::now(),
                    None,
                );
                return done.keep_alive;
            }
            Ok(done) => {
                attempt.first_byte_at = done.first_byte_at;
                attempt.finish(config, status_class, head_at, retry_after);
                return done.keep_alive;
            }
            Err(e) => {
                log::warn!(
                    "request {}: backend {}/{} failed mid-response: {}",
                    p.request_id,
                    provider.id,
                    backend.model,
                    e.message
                );
                attempt.finish_with_latency(
                    config,
                    transport_class(&e),
                    head_at,
                    Instant::now(),
                    None,
                );
                last = Some(e);
            }
        }
    }
    let err = last.unwrap_or_else(|| no_backend(model, p.forced_provider.is_some()));
    respond::error(&mut w.out, &err, Some(&p.request_id), keep_alive);
    w.flush().await.is_ok() && keep_alive
}

/// One attempt on one backend, counted in flight from the pick. It must end in exactly one
/// recorded outcome; if the request is dropped first (the client went away), `Drop` takes it
/// out of flight without blaming the backend, and frees a half-open probe slot it held.
struct Attempt<'a> {
    shard: &'a Shard,
    model: usize,
    backend: usize,
    sent_at: Instant,
    /// When a streamed answer's first event reached the client.
    first_byte_at: Option<Instant>,
    done: bool,
}

impl Attempt<'_> {
    /// Records the outcome; the backend's latency is the time until `at` (head or failure).
    fn finish(
        self,
        config: &Config,
        class: OutcomeClass,
        at: Instant,
        retry_after: Option<Duration>,
    ) {
        self.finish_with_latency(config, class, at, at, retry_after);
    }

    /// As `finish`, with latency measured to `head_at` but the outcome happening at `now`.
    fn finish_with_latency(
        mut self,
        config: &Config,
        class: OutcomeClass,
        head_at: Instant,
        now: Instant,
        retry_after: Option<Duration>,
    ) {
        self.done = true;
        let elapsed = head_at.saturating_duration_since(self.sent_at);
        let first_byte = self
            .first_byte_at
            .map_or(elapsed, |t| t.saturating_duration_since(self.sent_at));
        let outcome = Outcome {
            class,
            elapsed,
            retry_after,
        };
        self.shard
            .balance
            .borrow_mut()
            .finish(config, self.model, self.backend, outcome, now);
        self.shard.recorder.borrow_mut().record(OutcomeEvent {
            model: self.model as u32,
            backend: self.backend as u32,
            class,
            latency_us: micros(elapsed),
            ttfb_us: micros(first_byte),
            retry_after_s: retry_after.map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        });
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            // try_borrow: never panic inside a drop (this may run while unwinding).
            if let Ok(mut b) = self.shard.balance.try_borrow_mut() {
                b.cancel(self.model, self.backend, Instant::now());
            }
        }
    }
}

/// The outcome class of a failure Berry observed itself (no usable status).
fn transport_class(e: &GatewayError) -> OutcomeClass {
    let t = if e.kind == ErrorKind::UpstreamTimeout {
        TransportError::Timeout
    } else {
        TransportError::Connect
    };
    classify(None, Some(t))
}

/// A 429's `Retry-After` in seconds (the HTTP-date form is rare from APIs and is ignored).
fn retry_after(head: &crate::http::head::ResponseHead, buf: &[u8]) -> Option<Duration> {
    let v = head.header(buf, "retry-after")?;
    let secs: u64 = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// Bytes of the prompt hashed for prefix-affinity routing: enough to cover a shared system
/// prompt, few enough to hash in well under a microsecond.
const PREFIX_AFFINITY_BYTES: usize = 2048;

/// The prefix-affinity key: a hash of the first bytes of the prompt (`messages`, `prompt` or
/// `input`), only for models that route by it.
fn prefix_key(model: &Model, p: &Prepared<'_>) -> Option<u64> {
    if model.strategy != crate::config::Strategy::PrefixAffinity {
        return None;
    }
    let start = p.peek.prompt_start?;
    let end = p.body.len().min(start + PREFIX_AFFINITY_BYTES);
    Some(balance::prefix_affinity::key_of(&p.body[start..end]))
}

/// Statuses that say "try elsewhere": overload, rate limit, transient server failure.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn no_backend(model: &Model, forced: bool) -> GatewayError {
    let why = if forced {
        "the requested backend is disabled or not permitted for this key"
    } else {
        "every backend is disabled or excluded by this key's tags"
    };
    GatewayError::new(
        ErrorKind::NoBackend,
        format!("no available backend for model `{}`: {why}", model.name),
    )
}

/// The provider a forced-backend request names, if it serves this model.
fn forced_provider(
    config: &crate::config::Config,
    model: &Model,
    id: &str,
) -> Result<usize, GatewayError> {
    config
        .provider_index(id)
        .filter(|&p| model.backends.iter().any(|b| b.provider == p))
        .ok_or_else(|| {
            GatewayError::new(
                ErrorKind::BadRequest,
                format!(
                    "backend `{}` does not serve model `{}`",
                    clip(id),
                    model.name
                ),
            )
        })
}

/// Renders the upstream request: request line, provider headers, the client's end-to-end
/// headers, Berry's request id, and the body with `model` rewritten and `backend` dropped.
fn build_request(
    req: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    route: &crate::routes::ProviderRoute,
    p: &Prepared<'_>,
    upstream_model: &str,
) {
    scratch.clear();
    peek::rewrite(&p.body, &p.peek, upstream_model, true, scratch);
    req.clear();
    req.extend_from_slice(&route.request_lines[p.path as usize]);
    req.extend_from_slice(&route.fixed_headers);
    req.extend_from_slice(&p.forwarded);
    req.extend_from_slice(b"x-request-id: ");
    req.extend_from_slice(p.request_id.as_bytes());
    req.extend_from_slice(b"\r\n");
    write_content_length(req, scratch.len() as u64);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(scratch);
}

/// Client headers that travel upstream: end-to-end ones, minus those Berry owns (framing,
/// request id, routing overrides), every credential or account header a client could use to
/// act as someone else upstream (a bad one would also make the upstream answer 401 and open
/// the backend's circuit for everyone), any header a provider sets itself, and
/// `accept-encoding` (Berry reads the bodies it relays: SSE framing, `[DONE]`, usage).
fn forwarded_headers(head: &RequestHead, buf: &[u8], routes: &Routes) -> Vec<u8> {
    const OWNED: [&[u8]; 15] = [
        b"host",
        b"authorization",
        b"content-length",
        b"expect",
        b"x-request-id",
        b"x-berry-backend",
        b"accept-encoding",
        b"cookie",
        b"api-key",
        b"x-api-key",
        b"x-goog-api-key",
        b"openai-organization",
        b"openai-project",
        b"anthropic-version",
        b"anthropic-beta",
    ];
    let listed = head.header(buf, "connection");
    let mut out = Vec::with_capacity(256);
    let mut has_content_type = false;
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        if is_hop_by_hop(name)
            || OWNED.iter().any(|o| o.eq_ignore_ascii_case(name))
            || routes
                .provider_header_names
                .iter()
                .any(|o| o.eq_ignore_ascii_case(name))
            || listed.is_some_and(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case(name)))
        {
            continue;
        }
        has_content_type |= name.eq_ignore_ascii_case(b"content-type");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&buf[h.value.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    if !has_content_type {
        out.extend_from_slice(b"content-type: application/json\r\n");
    }
    out
}

fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
}

/// The client's `x-request-id` when it is short printable ASCII, else a fresh random one.
pub fn request_id(shard: &Shard, head: &RequestHead, buf: &[u8]) -> String {
    if let Some(v) = head.header(buf, "x-request-id") {
        if !v.is_empty()
            && v.len() <= REQUEST_ID_BYTES_MAX
            && v.iter().all(|b| (0x21..0x7f).contains(b))
        {
            return String::from_utf8_lossy(v).into_owned();
        }
    }
    // 32 lowercase hex digits of a random u128, without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = shard.rng.borrow_mut().u128(..);
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = HEX[((n >> ((31 - i) * 4)) & 0xf) as usize];
    }
    String::from_utf8_lossy(&id).into_owned()
}

/// Echoes at most 100 characters of client input in messages, cut on a char boundary.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Runs `fut` while watching the client socket. A client that disconnects cancels the request:
/// `fut` is dropped, which closes the upstream connection. Bytes the client sends meanwhile
/// (a pipelined request) are kept.
///
/// The watch (a cancelable read, then its cancellation) costs two I/O operations, which is
/// a fifth of a short request's kernel time; it is armed only once the request has run for
/// [`WATCH_AFTER`], which short requests never reach and long ones hardly notice.
async fn watch_client<F: std::future::Future<Output = bool>>(
    r: &mut ClientReader,
    fut: F,
) -> Option<bool> {
    let mut fut = std::pin::pin!(fut);
    monoio::select! {
        keep = &mut fut => return Some(keep),
        _ = monoio::time::sleep(WATCH_AFTER) => {}
    }
    if r.buf.capacity() - r.buf.len() < 1024 {
        r.buf.reserve(4096);
    }
    let canceller = Canceller::new();
    let buf = std::mem::take(&mut r.buf);
    let len = buf.len();
    let watch =
        r.rd.cancelable_read(buf.slice_mut(len..), canceller.handle());
    let mut watch = std::pin::pin!(watch);
    let mut fut = std::pin::pin!(fut);
    monoio::select! {
        keep = &mut fut => {
            canceller.cancel();
            let (res, slice) = watch.await;
            r.buf = slice.into_inner();
            if matches!(res, Ok(0)) {
                r.eof = true;
            }
            Some(keep)
        }
        (res, slice) = &mut watch => {
            r.buf = slice.into_inner();
            match res {
                Ok(n) if n > 0 => Some(fut.await),
                _ => {
                    r.eof = true;
                    None
                }
            }
        }
    }
}
