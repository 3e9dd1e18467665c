//! What a shard tells the control thread: the outcome of every attempt since its last report,
//! in order, as small fixed-size events. Recording one costs a push onto a reused `Vec`; the
//! shard never blocks on sending (a full channel keeps the events for the next report and
//! counts the miss).

use std::time::Duration;

use crate::balance::outcome::OutcomeClass;

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

pub struct ShardReport {
    pub shard: usize,
    pub events: Vec<OutcomeEvent>,
    /// In-flight attempts per model and backend on this shard, now.
    pub inflight: Vec<Vec<u32>>,
    /// Events this shard dropped since the previous successful report.
    pub dropped_events: u64,
    /// Reports this shard could not send (channel full) so far.
    pub dropped_reports: u64,
}

/// The shard-side buffer of events not yet reported.
#[derive(Default)]
pub struct Recorder {
    pub events: Vec<OutcomeEvent>,
    pub dropped_events: u64,
    pub dropped_reports: u64,
}

impl Recorder {
    pub fn record(&mut self, event: OutcomeEvent) {
        if self.events.len() < REPORT_EVENTS_MAX {
            self.events.push(event);
        } else {
            self.dropped_events += 1;
        }
    }
}
