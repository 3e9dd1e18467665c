//! What one request left behind for metrics and the access log, filled in as it goes.
//!
//! `Cell`s, because the forward future (raced against the client watch, and dropped if the
//! client leaves) and the relay fill it through shared references, and `handle` reads it after
//! either has ended.

use std::cell::Cell;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::ErrorKind;
use crate::shard::Shard;
use crate::telemetry::{micros, RequestEvent, Route, Usage, NONE};

#[derive(Default)]
pub struct Tally {
    pub model: Cell<Option<usize>>,
    pub backend: Cell<Option<usize>>,
    pub user: Cell<Option<usize>>,
    pub attempts: Cell<u8>,
    pub stream: Cell<bool>,
    /// Status sent to the client (0: nothing sent).
    pub status: Cell<u16>,
    pub upstream_status: Cell<u16>,
    pub error: Cell<Option<ErrorKind>>,
    /// Time spent waiting on upstreams so far.
    pub upstream_wait: Cell<Duration>,
    /// Start of the upstream wait in progress: counted up to the end if the request is dropped
    /// during it (the client left), so that wait is not taken for Berry's overhead.
    pub waiting_since: Cell<Option<Instant>>,
    /// When the first response byte was handed to the client, if before the end.
    pub first_byte: Cell<Option<Instant>>,
    pub usage: Cell<Option<Usage>>,
    pub bytes_in: Cell<u64>,
    /// Bytes of interim responses (`100 Continue`) sent before the answer.
    pub interim_out: Cell<u64>,
}

impl Tally {
    /// An upstream wait begins (ended by [`Tally::wait`]).
    pub fn begin_wait(&self, at: Instant) {
        self.waiting_since.set(Some(at));
    }

    /// An upstream wait of `d` ended.
    pub fn wait(&self, d: Duration) {
        self.upstream_wait.set(self.upstream_wait.get() + d);
        self.waiting_since.set(None);
    }

    /// Records the finished request: one event for the control thread, one access-log line.
    pub fn finish(
        &self,
        shard: &Shard,
        route: Route,
        started: Instant,
        request_id: String,
        bytes_out: u64,
        peer: Option<IpAddr>,
    ) {
        if !shard.telemetry.enabled() {
            return;
        }
        let end = Instant::now();
        let idx = |c: &Cell<Option<usize>>| c.get().map_or(NONE, |i| i as u32);
        let answered = bytes_out.saturating_sub(self.interim_out.get());
        // Nothing of the answer reached the client: it left first (nginx's 499).
        let client_left = self.status.get() == 0 || answered == 0;
        let status = if client_left { 499 } else { self.status.get() };
        let event = RequestEvent {
            route,
            get: false,
            status,
            client_left,
            upstream_status: self.upstream_status.get(),
            model: idx(&self.model),
            backend: idx(&self.backend),
            user: idx(&self.user),
            attempts: self.attempts.get(),
            stream: self.stream.get(),
            error: self.error.get(),
            duration_us: micros(end.saturating_duration_since(started)),
            ttfb_us: micros(
                self.first_byte
                    .get()
                    .unwrap_or(end)
                    .saturating_duration_since(started),
            ),
            upstream_us: micros(
                self.upstream_wait.get()
                    + self
                        .waiting_since
                        .get()
                        .map_or(Duration::ZERO, |t| end.saturating_duration_since(t)),
            ),
            bytes_in: self.bytes_in.get(),
            bytes_out,
            usage: self.usage.get(),
        };
        shard.record_request(event, request_id, end, peer);
    }
}
