//! What a shard tells the control thread: the outcome of every attempt since its last report,
//! in order, as small fixed-size events. Recording one costs a push onto a reused `Vec`; the
//! shard never blocks on sending (a full channel keeps the events for the next report and
//! counts the miss).

use std::time::Duration;

use crate::balance::outcome::OutcomeClass;
use crate::telemetry::{ConnectEvent, FailoverEvent, RequestEvent};

/// Events one report may carry; beyond it events are dropped (and counted), so a shard whose
/// control thread stalls cannot grow without bound.
pub const REPORT_EVENTS_MAX: usize = 1 << 16;

/// One finished attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeEvent {
    pub model: u32,
    pub backend: u32,
    pub class: OutcomeClass,
    /// Time from sending the request to the response head (or the failure), µs.
    pub latency_us: u32,
    /// Time from sending the request to the first byte sent to the client, µs: for a stream its
    /// first event (time to first token), otherwise the same as `latency_us`.
    pub ttfb_us: u32,
    /// A 429's `Retry-After`, seconds (`Retry-After: 0` is `Some(0)`, not "none").
    pub retry_after_s: Option<u32>,
}

impl OutcomeEvent {
    pub fn latency(&self) -> Duration {
        Duration::from_micros(u64::from(self.latency_us))
    }
}

/// Everything a shard tells the control thread every `report_interval_ms`.
#[derive(Default)]
pub struct ShardReport {
    pub shard: usize,
    pub events: Vec<OutcomeEvent>,
    /// In-flight attempts per model and backend on this shard, now.
    pub inflight: Vec<Vec<u32>>,
    /// Events this shard dropped since the previous successful report.
    pub dropped_events: u64,
    /// Reports this shard could not send (channel full) so far.
    pub dropped_reports: u64,
    /// Finished requests (metrics), in order.
    pub requests: Vec<RequestEvent>,
    pub connects: Vec<ConnectEvent>,
    pub failovers: Vec<FailoverEvent>,
    /// Counts since the previous successful report.
    pub deltas: Deltas,
    /// Levels now.
    pub gauges: ShardGauges,
}

/// Counters a shard keeps between reports (sent as increments).
#[derive(Default, Clone, Debug, PartialEq)]
pub struct Deltas {
    pub accepted: u64,
    /// Stale pooled connections retried on a fresh one, per provider.
    pub stale_retries: Vec<u64>,
}

impl Deltas {
    fn absorb(&mut self, other: Deltas) {
        self.accepted += other.accepted;
        if self.stale_retries.len() < other.stale_retries.len() {
            self.stale_retries.resize(other.stale_retries.len(), 0);
        }
        for (a, b) in self.stale_retries.iter_mut().zip(other.stale_retries) {
            *a += b;
        }
    }
}

/// A shard's levels at report time.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct ShardGauges {
    pub conns_open: u32,
    /// Idle pooled connections per provider.
    pub pool_idle: Vec<u32>,
    /// Open upstream connections per provider (idle + busy).
    pub pool_open: Vec<u32>,
    /// Proxied requests in progress per route (chat, completions, embeddings).
    pub inflight_by_route: [u32; 3],
    /// When the snapshot this shard routes by was taken.
    pub snapshot_taken: Option<std::time::Instant>,
}

/// The shard-side buffer of what was not yet reported.
#[derive(Default)]
pub struct Recorder {
    pub events: Vec<OutcomeEvent>,
    pub requests: Vec<RequestEvent>,
    pub connects: Vec<ConnectEvent>,
    pub failovers: Vec<FailoverEvent>,
    pub deltas: Deltas,
    pub dropped_events: u64,
    pub dropped_reports: u64,
    /// Buffers of a folded report, sent back by the control thread.
    spare: Option<ReportBuffers>,
}

/// The event buffers of a report, emptied, on their way back to their shard.
#[derive(Default)]
pub struct ReportBuffers {
    events: Option<Vec<OutcomeEvent>>,
    requests: Option<Vec<RequestEvent>>,
    connects: Option<Vec<ConnectEvent>>,
    failovers: Option<Vec<FailoverEvent>>,
}

impl ShardReport {
    /// Empties the report's event buffers for reuse by the shard that sent it.
    pub fn into_buffers(self) -> ReportBuffers {
        fn empty<T>(mut v: Vec<T>) -> Option<Vec<T>> {
            v.clear();
            Some(v)
        }
        ReportBuffers {
            events: empty(self.events),
            requests: empty(self.requests),
            connects: empty(self.connects),
            failovers: empty(self.failovers),
        }
    }
}

impl Recorder {
    pub fn record(&mut self, event: OutcomeEvent) {
        push_bounded(&mut self.events, event, &mut self.dropped_events);
    }

    pub fn request(&mut self, event: RequestEvent) {
        push_bounded(&mut self.requests, event, &mut self.dropped_events);
    }

    pub fn connect(&mut self, event: ConnectEvent) {
        push_bounded(&mut self.connects, event, &mut self.dropped_events);
    }

    pub fn failover(&mut self, event: FailoverEvent) {
        push_bounded(&mut self.failovers, event, &mut self.dropped_events);
    }

    pub fn stale_retry(&mut self, provider: usize) {
        let v = &mut self.deltas.stale_retries;
        if v.len() <= provider {
            v.resize(provider + 1, 0);
        }
        v[provider] += 1;
    }

    /// Moves everything recorded into a report (buffers keep their capacity).
    pub fn take(
        &mut self,
        shard: usize,
        inflight: Vec<Vec<u32>>,
        gauges: ShardGauges,
    ) -> ShardReport {
        /// The recorded items, replaced by a returned buffer when there is one: a fresh
        /// allocation of this size would page-fault on the shard every report.
        fn take_vec<T>(v: &mut Vec<T>, spare: Option<Vec<T>>) -> Vec<T> {
            let keep = v.len();
            let next = spare.unwrap_or_else(|| Vec::with_capacity(keep));
            std::mem::replace(v, next)
        }
        let spare = self.spare.take().unwrap_or_default();
        ShardReport {
            shard,
            events: take_vec(&mut self.events, spare.events),
            inflight,
            dropped_events: std::mem::take(&mut self.dropped_events),
            dropped_reports: std::mem::take(&mut self.dropped_reports),
            requests: take_vec(&mut self.requests, spare.requests),
            connects: take_vec(&mut self.connects, spare.connects),
            failovers: take_vec(&mut self.failovers, spare.failovers),
            deltas: std::mem::take(&mut self.deltas),
            gauges,
        }
    }

    /// Keeps the emptied buffers of a report the control thread has folded, for the next one.
    pub fn recycle(&mut self, bufs: ReportBuffers) {
        self.spare = Some(bufs);
    }

    /// Takes back a report that could not be sent: its contents go ahead of what was recorded
    /// since, within the bound, and the miss is counted.
    pub fn restore(&mut self, mut back: ShardReport) {
        self.dropped_reports += back.dropped_reports + 1;
        self.dropped_events += back.dropped_events;
        let dropped = &mut self.dropped_events;
        prepend(&mut self.events, back.events, dropped);
        prepend(
            &mut self.requests,
            std::mem::take(&mut back.requests),
            dropped,
        );
        prepend(
            &mut self.connects,
            std::mem::take(&mut back.connects),
            dropped,
        );
        prepend(
            &mut self.failovers,
            std::mem::take(&mut back.failovers),
            dropped,
        );
        let newer = std::mem::replace(&mut self.deltas, back.deltas);
        self.deltas.absorb(newer);
    }
}

fn push_bounded<T>(v: &mut Vec<T>, item: T, dropped: &mut u64) {
    if v.len() < REPORT_EVENTS_MAX {
        v.push(item);
    } else {
        *dropped += 1;
    }
}

/// `older` followed by `*newer`, truncated to the bound (the excess is counted as dropped).
fn prepend<T>(newer: &mut Vec<T>, mut older: Vec<T>, dropped: &mut u64) {
    older.append(newer);
    if older.len() > REPORT_EVENTS_MAX {
        *dropped += (older.len() - REPORT_EVENTS_MAX) as u64;
        older.truncate(REPORT_EVENTS_MAX);
    }
    *newer = older;
}
