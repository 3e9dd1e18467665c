//! THE request path for proxied endpoints, top-down:
//! authenticate → check the request → read and scan the body → resolve the model → check
//! permission → pick a backend → forward → relay, failing over to another backend while no
//! byte has reached the client. Every failure is a [`GatewayError`] answered in one place.

mod attempt;
pub mod relay;
mod request;
pub mod tally;
mod watch;

pub use request::request_id;

use std::rc::Rc;
use std::time::Instant;

use crate::api::peek::{self, Peek};
use crate::auth::{self, Caller};
use crate::balance::filter::Filter;
use crate::balance::outcome::{classify, OutcomeClass};
use crate::balance::PickRequest;
use crate::config::StreamUsage;
use crate::cors::Cors;
use crate::error::{clip, ErrorKind, GatewayError};
use crate::http::head::{is_json_media_type, RequestBody, RequestHead};
use crate::routes::{Routes, UpstreamPath};
use crate::server::conn::{Client, ClientWriter};
use crate::server::{body, respond};
use crate::shard::{Gauge, Shard};
use crate::timer::Timer;
use crate::upstream::exchange::{self, Budget, HeadLimits};
use attempt::{no_backend, retry_after, retryable_status, shutting_down, transport_class, Attempt};
use request::{build_request, forced_provider, forwarded_headers, prefix_key};
use tally::Tally;
use watch::watch_client;

use crate::telemetry::{FailoverEvent, Route};

/// Nesting accepted in request JSON.
const JSON_DEPTH_MAX: usize = 128;

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
    /// What the answer owes a browser page (CORS), decided from the head's `Origin`.
    cors: Cors<'r>,
    /// The splice that asks a stream for its usage (`stream_usage = "inject"`); when set, the
    /// relay removes the extra usage chunk the client did not ask for.
    usage_edit: Option<peek::UsageEdit>,
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
    head: &RequestHead,
    path: UpstreamPath,
) -> bool {
    let started = Instant::now();
    shard.timers.observe(started);
    let tally = Tally::default();
    let sent_before = c.w.sent;
    let in_flight = Gauge::enter(&shard.inflight_by_route[path as usize]);
    let (keep_alive, request_id) = answer(shard, routes, c, head, path, started, &tally).await;
    drop(in_flight);
    tally.finish(
        shard,
        Route::from(path),
        started,
        request_id,
        c.w.sent - sent_before,
        c.peer,
    );
    keep_alive
}

/// The request from its head to the end of its answer; returns keep-alive and the request id.
async fn answer(
    shard: &Rc<Shard>,
    routes: &Routes,
    c: &mut Client,
    head: &RequestHead,
    path: UpstreamPath,
    started: Instant,
    tally: &Tally,
) -> (bool, String) {
    let request_id = request_id(shard, head, &c.r.buf);
    let cors = Cors::of(&routes.config.server.cors_allow_origins, head, &c.r.buf);
    tally.bytes_in.set(head.head_len as u64);
    let mut prepared = match prepare(shard, routes, c, head, path, started, tally).await {
        Ok(p) => p,
        Err(mut refusal) => {
            let Some(err) = refusal.err.take() else {
                return (false, request_id);
            };
            // A client's own mistake is routine (debug); anything else is worth a warning.
            match err.kind.fault() {
                crate::error::Fault::Client => log::debug!("request {request_id}: refused: {err}"),
                _ => log::warn!("request {request_id}: refused: {err}"),
            }
            if !refusal.consumed && !head.expect_continue {
                // Refused before the body was read: skip a small one so keep-alive survives.
                let limits = &routes.config.server;
                refusal.keep_alive = head.keep_alive
                    && !shard.draining.get()
                    && body::skip(&mut c.r, head, limits).await;
                c.r.consume(head.head_len);
            }
            tally.status.set(err.status());
            tally.error.set(Some(err.kind));
            respond::error(
                &mut c.w.out,
                &err,
                Some(&request_id),
                refusal.keep_alive,
                cors,
            );
            let keep = c.w.flush().await.is_ok() && refusal.keep_alive;
            return (keep, request_id);
        }
    };
    prepared.request_id = request_id;
    prepared.cors = cors;
    // Boxed once here, the request's ~2 KiB future is never copied again while it is raced
    // against the client watch (measured: memmove was the largest user-space cost).
    let forward = Box::pin(forward(
        shard,
        routes,
        &mut c.w,
        &c.upstream,
        &prepared,
        tally,
    ));
    let keep = watch_client(&mut c.r, &c.watch, forward)
        .await
        .unwrap_or(false);
    shard.give_buf(std::mem::take(&mut prepared.body));
    shard.give_buf(std::mem::take(&mut prepared.forwarded));
    (keep, std::mem::take(&mut prepared.request_id))
}

/// Every check that needs no upstream, cheapest first; nothing is spent on a request that
/// fails one. On success the request's bytes are consumed from the connection buffer.
async fn prepare<'r>(
    shard: &Shard,
    routes: &'r Routes,
    c: &mut Client,
    head: &RequestHead,
    path: UpstreamPath,
    started: Instant,
    tally: &Tally,
) -> Result<Prepared<'r>, Refusal> {
    let limits = &routes.config.server;
    let caller = auth::authenticate(routes, head, &c.r.buf)?;
    tally.user.set(caller.index);
    // A missing Content-Type is accepted (curl sends none with -d @file); a wrong one is not,
    // nor two (Berry would check one and the upstream might read the other).
    let content_type = head.single_header(&c.r.buf, "content-type").map_err(|()| {
        Refusal::from(GatewayError::new(
            ErrorKind::BadRequest,
            "more than one Content-Type header",
        ))
    })?;
    if content_type.is_some_and(|v| !is_json_media_type(v)) {
        let msg = "Content-Type must be application/json";
        return Err(GatewayError::new(ErrorKind::UnsupportedMediaType, msg).into());
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
        let before = c.w.sent;
        c.w.flush().await.map_err(|_| gone())?;
        // Not part of the answer: a client that leaves after it got nothing else is a 499.
        tally.interim_out.set(c.w.sent - before);
    }
    let mut body = shard.take_buf(0);
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
    let forwarded = forwarded_headers(head, &c.r.buf, routes, shard.take_buf(256));
    let forced_header = head
        .header(&c.r.buf, "x-berry-backend")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    c.r.consume(head.head_len + raw);
    tally.bytes_in.set((head.head_len + raw) as u64);

    // The request is fully read from here on: refusals keep the connection.
    let refuse = |err: GatewayError| Refusal {
        err: Some(err),
        keep_alive: head.keep_alive,
        consumed: true,
    };
    let peek = peek::peek(&body, JSON_DEPTH_MAX)
        .map_err(|e| refuse(GatewayError::new(ErrorKind::InvalidJson, e.to_string())))?;
    tally.stream.set(peek.stream);
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
    tally.model.set(Some(model));
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
    // Last of the checks, so that only a request that will be forwarded spends quota; counted
    // now, not at `started`, which a slow upload leaves far behind.
    if let Some(limiter) = caller.index.and_then(|u| routes.limiter(u)) {
        limiter
            .admit(Instant::now())
            .map_err(|denied| refuse(GatewayError::rate_limited(denied)))?;
    }
    let inject = config.observability.stream_usage == StreamUsage::Inject
        && peek.stream
        && path != UpstreamPath::Embeddings;
    let usage_edit = if inject {
        peek::usage_edit(&body, &peek)
    } else {
        None
    };
    Ok(Prepared {
        usage_edit,
        caller,
        model,
        path,
        body,
        peek,
        forwarded,
        forced_provider,
        request_id: String::new(),
        cors: Cors::None,
        client_minor_version: head.minor_version,
        keep_alive: head.keep_alive,
        started,
    })
}

/// Tries backends until one answers or the attempts run out, then relays the answer.
async fn forward(
    shard: &Shard,
    routes: &Routes,
    w: &mut ClientWriter,
    timer: &Timer,
    p: &Prepared<'_>,
    tally: &Tally,
) -> bool {
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
    // The attempt that produced `last` went to a backend known to be down.
    let mut degraded = false;
    // The backend that failed last and how, reported as a failover if another is tried.
    let mut failed: Option<(usize, OutcomeClass)> = None;
    let mut req = shard.take_buf(1024 + p.body.len());
    let mut scratch = shard.take_buf(64 + p.body.len());
    // Every way out of the attempts passes the end of this block, where the buffers go back.
    let keep = 'answered: {
        while tried.len() < attempts_max {
            let now = Instant::now();
            if shard.drain_expired.get() {
                last = Some(shutting_down());
                break;
            }
            // Past the deadline no backend is contacted, so none is charged for it.
            if let Err(e) = exchange::left_at(deadline, now) {
                last = Some(e);
                break;
            }
            let filter = Filter {
                user_tags: p.caller.tags(),
                tried: &tried,
                provider: p.forced_provider,
            };
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
            if choice.degraded && !tried.is_empty() {
                // Failing over to a backend known to be down would only trade the last real
                // failure for a blind one (and its timeout); a first attempt may still try one.
                shard
                    .balance
                    .borrow_mut()
                    .cancel(p.model, choice.backend, now);
                break;
            }
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
            if let Some((backend, class)) = failed.take() {
                shard.recorder.borrow_mut().failover(FailoverEvent {
                    model: p.model as u32,
                    backend: backend as u32,
                    class,
                });
            }
            tally.backend.set(Some(choice.backend));
            tally.attempts.set(tally.attempts.get().saturating_add(1));
            let mut attempt = Attempt {
                shard,
                model: p.model,
                backend: choice.backend,
                sent_at: now,
                first_byte_at: None,
                done: false,
            };
            tried.push(choice.backend);
            degraded = choice.degraded;
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
            tally.begin_wait(now);
            let budget = Budget {
                connect_timeout: settings.connect_timeout,
                deadline,
                now,
            };
            let sent = exchange::send(
                shard,
                backend.provider,
                route,
                &mut req,
                timer,
                budget,
                &limits,
            )
            .await;
            let (conn, head) = match sent {
                Ok(x) => x,
                Err(_) if shard.drain_expired.get() => {
                    // The stopping shard cut the wait (`Timers::cut`): not the backend's
                    // fault, so the dropped attempt is cancelled, and nothing else is tried.
                    tally.wait(Instant::now().saturating_duration_since(now));
                    last = Some(shutting_down());
                    break;
                }
                Err(e) => {
                    let failed_at = Instant::now();
                    tally.wait(failed_at.saturating_duration_since(now));
                    log::warn!(
                        "request {}: backend {}/{} failed: {}",
                        p.request_id,
                        provider.id,
                        backend.model,
                        e.message
                    );
                    let class = transport_class(e.kind);
                    attempt.finish(config, class, failed_at, None);
                    // The error itself says whether another backend may be tried.
                    let retry = e.retryable;
                    last = Some(e);
                    if retry {
                        failed = Some((choice.backend, class));
                        continue;
                    }
                    break;
                }
            };
            let head_at = Instant::now();
            tally.wait(head_at.saturating_duration_since(now));
            tally.upstream_status.set(head.status);
            let status_class = classify(Some(head.status), None);
            let retry_after = (head.status == 429)
                .then(|| retry_after(&head, &conn.buf))
                .flatten();
            // Only to a backend that may take traffic: when the rest are down, this answer is
            // the real one, better relayed than traded for a blind try's connect error.
            // Nor when the drain time is up: the next attempt would only be cut.
            if retryable_status(head.status)
                && tried.len() < attempts_max
                && !shard.drain_expired.get()
                && shard.balance.borrow().has_available(
                    config,
                    p.model,
                    &Filter {
                        user_tags: p.caller.tags(),
                        tried: &tried,
                        provider: p.forced_provider,
                    },
                    &shard.snapshot.borrow(),
                    shard.id,
                    head_at,
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
                failed = Some((choice.backend, status_class));
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
                started: p.started,
                head_at,
                strip_usage: p.usage_edit.is_some(),
                client_error: status_class == OutcomeClass::ClientError,
                // Tokens are only looked for when someone (metrics, access log) will read them.
                scan_usage: (200..300).contains(&head.status) && shard.telemetry.enabled(),
                tally,
                timer,
                cors: p.cors,
            };
            match relay::relay(shard, w, conn, head, &ctx).await {
                Ok(relay::Relayed {
                    broke: Some(kind),
                    keep_alive,
                    ..
                }) => {
                    // Broken mid-stream: a failure of the backend, timed by when its head arrived
                    // (unless the gateway itself cut it: the dropped attempt is then cancelled).
                    tally.error.set(Some(kind));
                    if kind != ErrorKind::ShuttingDown {
                        let class = transport_class(kind);
                        attempt.finish_with_latency(config, class, head_at, Instant::now(), None);
                    }
                    break 'answered keep_alive;
                }
                Ok(done) => {
                    attempt.first_byte_at = tally.first_byte.get();
                    let class = if done.model_error {
                        OutcomeClass::ModelError
                    } else {
                        status_class
                    };
                    attempt.finish(config, class, head_at, retry_after);
                    break 'answered done.keep_alive;
                }
                // The gateway stopped it (shutting down, or its own size limit): the backend is
                // not blamed (the dropped attempt is cancelled), and nothing else is tried.
                Err(e) if e.kind.fault() == crate::error::Fault::Gateway => {
                    if e.kind == ErrorKind::ResponseTooLarge {
                        log::warn!(
                            "request {}: backend {}/{}: {}",
                            p.request_id,
                            provider.id,
                            backend.model,
                            e.message
                        );
                    }
                    last = Some(e);
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "request {}: backend {}/{} failed after its response head, before \
                         anything reached the client: {}",
                        p.request_id,
                        provider.id,
                        backend.model,
                        e.message
                    );
                    let class = transport_class(e.kind);
                    attempt.finish_with_latency(config, class, head_at, Instant::now(), None);
                    let retry = e.retryable;
                    last = Some(e);
                    if !retry {
                        break;
                    }
                    failed = Some((choice.backend, class));
                }
            }
        }
        let mut err = last.unwrap_or_else(|| no_backend(model, p.forced_provider.is_some()));
        err.degraded = degraded && err.kind.fault() == crate::error::Fault::Upstream;
        tally.status.set(err.status());
        tally.error.set(Some(err.kind));
        respond::error(&mut w.out, &err, Some(&p.request_id), keep_alive, p.cors);
        w.flush().await.is_ok() && keep_alive
    };
    shard.give_buf(req);
    shard.give_buf(scratch);
    keep
}
