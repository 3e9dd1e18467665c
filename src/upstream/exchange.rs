//! Sending one request to one provider and reading the response head.
//!
//! A pooled connection the upstream has already closed is the normal failure of keep-alive
//! pools; when it fails before any response byte, the request is sent once more on a fresh
//! connection. That retry is not a failover: the same backend, the same attempt.

use std::io;
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, GatewayError};
use crate::http::head::{parse_response, Method, ResponseHead};
use crate::routes::ProviderRoute;
use crate::shard::Shard;
use crate::telemetry::{micros, ConnectEvent};
use crate::timer::Timer;
use crate::upstream::conn::{Live, UpConn};

/// How soon after sending a request a closed pooled connection still counts as stale (closed
/// by the upstream while idle) rather than as a failure while processing.
const STALE_WINDOW: Duration = Duration::from_millis(100);

/// Time limits of one attempt.
#[derive(Clone, Copy)]
pub struct Budget {
    pub connect_timeout: Duration,
    /// The whole request's deadline (`total_timeout`).
    pub deadline: Instant,
    /// The caller's clock reading: at these request rates every avoided read shows.
    pub now: Instant,
}

/// Limits applied to upstream response heads.
pub struct HeadLimits {
    pub bytes_max: usize,
    pub count_max: usize,
}

/// Sends `req` (head and body, ready to write) and waits for the response head.
/// Every error is an upstream fault that happened before any byte reached the client.
pub async fn send(
    shard: &Shard,
    provider: usize,
    route: &ProviderRoute,
    req: &mut Vec<u8>,
    timer: &Timer,
    budget: Budget,
    limits: &HeadLimits,
) -> Result<(UpConn, ResponseHead), GatewayError> {
    let Budget {
        connect_timeout,
        deadline,
        now,
    } = budget;
    let mut fresh_only = false;
    let mut now = now;
    loop {
        let pooled = if fresh_only {
            None
        } else {
            shard.pool.borrow_mut().take(provider, now)
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let timeout = connect_timeout.min(left(deadline)?);
                connect(shard, provider, route, timer, timeout).await?
            }
        };
        if !reused {
            // Connecting took time of its own.
            now = Instant::now();
        }
        // One bound from the start of sending to the response head: an upstream that stops
        // reading a large body times out too, and a request arms its timer once.
        let wait = route
            .first_byte_timeout
            .min(deadline.saturating_duration_since(now));
        if wait.is_zero() {
            return Err(left(deadline).err().unwrap_or_else(|| {
                GatewayError::upstream(
                    ErrorKind::UpstreamTimeout,
                    "the request exceeded total_timeout",
                )
            }));
        }
        // When the request was written (the shard's coarse clock: to a tick, for free).
        let mut written: Option<Instant> = None;
        let exchanged = timer
            .run(now + wait, async {
                let (res, buf) = conn.write_all(std::mem::take(req)).await;
                *req = buf;
                if let Err(e) = res {
                    conn.request_cut = true;
                    if reused {
                        // Most likely closed while idle; whatever it holds was not an answer to
                        // this request. Sent again on a fresh connection, below.
                        return Err(HeadFailure::Write(e.kind()));
                    }
                    // An upstream may answer before it has read the whole body (a 413 from a
                    // size limit) and close: that answer is still queued on the socket, and it
                    // is the real one. Only a connection that answered nothing failed.
                    return match read_head(&mut conn, limits).await {
                        Err(HeadFailure::ClosedEarly | HeadFailure::Io(_)) => {
                            Err(HeadFailure::Write(e.kind()))
                        }
                        answered => answered,
                    };
                }
                written = Some(timer.now());
                read_head(&mut conn, limits).await
            })
            .await;
        match exchanged {
            Ok(Ok(head)) => return Ok((conn, head)),
            // A pooled connection the upstream had already closed fails at once: the write, or
            // the read right after it. One that dies later was closed while working on the
            // request: sending it again could run it twice, so that is an ordinary (recorded)
            // failure instead.
            Ok(Err(HeadFailure::Write(_))) if reused => {
                shard.recorder.borrow_mut().stale_retry(provider);
                fresh_only = true;
            }
            Ok(Err(HeadFailure::ClosedEarly))
                if reused && written.is_some_and(|t| t.elapsed() < STALE_WINDOW) =>
            {
                shard.recorder.borrow_mut().stale_retry(provider);
                fresh_only = true;
                now = Instant::now();
            }
            Ok(Err(f)) => return Err(f.into_error(wait)),
            Err(_) if written.is_none() => {
                return Err(GatewayError::upstream(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "the upstream did not take the request within {} ms",
                        wait.as_millis()
                    ),
                ))
            }
            Err(_) => return Err(HeadFailure::TimedOut.into_error(wait)),
        }
    }
}

/// Time left before `deadline`, or the total-timeout error.
pub fn left(deadline: Instant) -> Result<Duration, GatewayError> {
    left_at(deadline, Instant::now())
}

/// As [`left`], with the caller's clock reading.
pub fn left_at(deadline: Instant, now: Instant) -> Result<Duration, GatewayError> {
    deadline
        .checked_duration_since(now)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            GatewayError::upstream(
                ErrorKind::UpstreamTimeout,
                "the request exceeded total_timeout",
            )
        })
}

async fn connect(
    shard: &Shard,
    provider: usize,
    route: &ProviderRoute,
    timer: &Timer,
    timeout: Duration,
) -> Result<UpConn, GatewayError> {
    let addrs = shard.addresses(provider);
    if addrs.is_empty() {
        return Err(GatewayError::upstream(
            ErrorKind::UpstreamFailed,
            "the upstream host name did not resolve",
        ));
    }
    let tls = route.tls.as_ref().map(|(cfg, name)| (cfg, name));
    let mut last = io::Error::new(io::ErrorKind::TimedOut, "no time left");
    // One budget for every address a name resolves to, so the attempt never outruns it; each
    // address gets an equal share of what is left, so one that black-holes (a broken IPv6
    // route) cannot starve the next.
    let deadline = Instant::now() + timeout;
    let count = addrs.len() as u32;
    for (i, addr) in addrs.into_iter().enumerate() {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let share = (deadline - started) / (count - i as u32);
        // Boxed: the TLS handshake future is large and rare; inline it would be copied
        // around with every request's future.
        let result = Box::pin(UpConn::connect(addr, tls, timer, started + share)).await;
        if result.is_err() && shard.drain_expired.get() {
            // A stopping shard cut the wait: the next address would be cut the same way, and
            // none of this is the upstream's failure to count or log.
            break;
        }
        shard.recorder.borrow_mut().connect(ConnectEvent {
            provider: provider as u32,
            ok: result.is_ok(),
            micros: micros(started.elapsed()),
        });
        match result {
            Ok(mut c) => {
                c.live = Live::enter(&shard.upstream_open, provider);
                return Ok(c);
            }
            Err(e) => {
                // The full reason (e.g. a TLS certificate error) goes to the log only; clients
                // get the kind, never addresses.
                log::warn!("provider `{}`: connecting to {addr} failed: {e}", route.id);
                last = e;
            }
        }
    }
    Err(if last.kind() == io::ErrorKind::TimedOut {
        GatewayError::upstream(
            ErrorKind::UpstreamTimeout,
            format!(
                "connecting to the upstream timed out after {} ms",
                timeout.as_millis()
            ),
        )
    } else {
        GatewayError::upstream(
            ErrorKind::UpstreamFailed,
            format!("connecting to the upstream failed: {}", last.kind()),
        )
    })
}

enum HeadFailure {
    /// Writing the request failed.
    Write(io::ErrorKind),
    /// EOF or reset before a single response byte: typical of a stale pooled connection.
    ClosedEarly,
    /// EOF inside the response head: cut short, not garbled.
    CutShort,
    Io(io::ErrorKind),
    TimedOut,
    Malformed(String),
}

impl HeadFailure {
    fn into_error(self, wait: Duration) -> GatewayError {
        match self {
            HeadFailure::Write(kind) => GatewayError::upstream(
                ErrorKind::UpstreamFailed,
                format!("sending the request failed: {kind}"),
            ),
            HeadFailure::ClosedEarly => GatewayError::upstream(
                ErrorKind::UpstreamFailed,
                "the upstream closed the connection without answering",
            ),
            HeadFailure::CutShort => GatewayError::upstream(
                ErrorKind::UpstreamFailed,
                "the upstream closed the connection inside its response head",
            ),
            HeadFailure::Io(kind) => GatewayError::upstream(
                ErrorKind::UpstreamFailed,
                format!("reading the upstream response failed: {kind}"),
            ),
            HeadFailure::TimedOut => GatewayError::upstream(
                ErrorKind::UpstreamTimeout,
                format!(
                    "the upstream sent no response head within {} ms",
                    wait.as_millis()
                ),
            ),
            HeadFailure::Malformed(what) => GatewayError::upstream(
                ErrorKind::UpstreamMalformed,
                format!("the upstream sent a malformed response: {what}"),
            ),
        }
    }
}

/// Reads until a final response head has arrived; the caller bounds the wait.
async fn read_head(conn: &mut UpConn, limits: &HeadLimits) -> Result<ResponseHead, HeadFailure> {
    let mut got_any = !conn.buf.is_empty();
    loop {
        if !conn.buf.is_empty() {
            match parse_response(&conn.buf, Method::Post, limits.bytes_max, limits.count_max) {
                // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    conn.consume(head.head_len);
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(HeadFailure::Malformed(e.to_string())),
            }
        }
        match conn.read_more().await {
            Ok(0) if !got_any => return Err(HeadFailure::ClosedEarly),
            Ok(0) => return Err(HeadFailure::CutShort),
            Ok(_) => got_any = true,
            // TLS peers often close idle connections without `close_notify`, which rustls
            // reports as an unexpected EOF: for a stale connection, the same as a plain close.
            Err(e)
                if !got_any
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::UnexpectedEof
                    ) =>
            {
                return Err(HeadFailure::ClosedEarly)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(HeadFailure::CutShort)
            }
            Err(e) => return Err(HeadFailure::Io(e.kind())),
        }
    }
}
