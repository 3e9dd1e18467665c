//! One attempt on one backend: counted in flight from the pick, ending in exactly one recorded
//! outcome (for the shard's balancer and the control thread's report), or cancelled without
//! blame when its request is dropped.

use std::time::{Duration, Instant};

use crate::balance::local::Outcome;
use crate::balance::outcome::{classify, OutcomeClass, TransportError};
use crate::config::{Config, Model};
use crate::error::{ErrorKind, GatewayError};
use crate::health::report::OutcomeEvent;
use crate::shard::Shard;

/// One attempt on one backend, counted in flight from the pick. It must end in exactly one
/// recorded outcome; if the request is dropped first (the client went away), `Drop` takes it
/// out of flight without blaming the backend, and frees a half-open probe slot it held.
pub(super) struct Attempt<'a> {
    pub(super) shard: &'a Shard,
    pub(super) model: usize,
    pub(super) backend: usize,
    pub(super) sent_at: Instant,
    /// When a streamed answer's first event reached the client.
    pub(super) first_byte_at: Option<Instant>,
    pub(super) done: bool,
}

impl Attempt<'_> {
    /// Records the outcome; the backend's latency is the time until `at` (head or failure).
    pub(super) fn finish(
        self,
        config: &Config,
        class: OutcomeClass,
        at: Instant,
        retry_after: Option<Duration>,
    ) {
        self.finish_with_latency(config, class, at, at, retry_after);
    }

    /// As `finish`, with latency measured to `head_at` but the outcome happening at `now`.
    pub(super) fn finish_with_latency(
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
pub(super) fn transport_class(kind: ErrorKind) -> OutcomeClass {
    let t = match kind {
        ErrorKind::UpstreamTimeout => TransportError::Timeout,
        ErrorKind::UpstreamMalformed => TransportError::Protocol,
        _ => TransportError::Connect,
    };
    classify(None, Some(t))
}

/// A 429's `Retry-After` in seconds (the HTTP-date form is rare from APIs and is ignored).
pub(super) fn retry_after(head: &crate::http::head::ResponseHead, buf: &[u8]) -> Option<Duration> {
    let v = head.header(buf, "retry-after")?;
    let secs: u64 = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// Statuses that say "try elsewhere": overload, rate limit, transient server failure.
pub(super) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// A stopping shard's drain timeout ran out before this request was answered.
pub(super) fn shutting_down() -> GatewayError {
    GatewayError::new(ErrorKind::ShuttingDown, "the gateway is shutting down")
}

pub(super) fn no_backend(model: &Model, forced: bool) -> GatewayError {
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
