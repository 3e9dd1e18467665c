//! What a run measured: hdrhistograms (µs) and counters, kept per generator thread and merged at
//! the end, plus the percentile summaries the reports print.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value a histogram holds: one hour in µs. Larger values are clamped to it.
const HIGHEST_US: u64 = 3_600_000_000;

/// Why a request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    /// The connection failed or closed before a complete response head (a reset, for example).
    Io,
    Status4xx,
    Status429,
    Status5xx,
    /// The body or stream ended early: short body, no final chunk, or no `data: [DONE]`.
    Truncated,
    /// Bad framing, a stream event that is not JSON, or an in-band error event.
    Malformed,
    Timeout,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Connect,
        ErrorKind::Io,
        ErrorKind::Status4xx,
        ErrorKind::Status429,
        ErrorKind::Status5xx,
        ErrorKind::Truncated,
        ErrorKind::Malformed,
        ErrorKind::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status429 => "status_429",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Timeout => "timeout",
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

/// Everything one thread (or, merged, one run) measured.
#[derive(Clone)]
pub struct Stats {
    /// Open loop: from the scheduled send time to the last byte (coordinated omission
    /// corrected). Closed loop: from the actual send. Successes and HTTP errors; a timeout is
    /// recorded at the timeout.
    pub latency: Histogram<u64>,
    /// From the moment the request was written to the last byte: what a closed-loop tool
    /// reports. The difference to `latency` is time spent queued in the generator.
    pub service: Histogram<u64>,
    /// Streams: start (as for `latency`) to the first event.
    pub ttft: Histogram<u64>,
    /// Streams: time between consecutive events (0 for events that arrived in the same read).
    pub gap: Histogram<u64>,
    /// Open loop: how late the generator dispatched requests (its own precision).
    pub lag: Histogram<u64>,
    pub ok: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub streams: u64,
    pub frames: u64,
    /// Gaps over the stall threshold, and streams with at least one.
    pub stalls: u64,
    pub stalled_streams: u64,
    pub bytes_in: u64,
    /// Connections opened (after the first, each is a reconnect or a pool growth).
    pub connects: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: histogram(),
            service: histogram(),
            ttft: histogram(),
            gap: histogram(),
            lag: histogram(),
            ok: 0,
            errors: [0; ErrorKind::ALL.len()],
            streams: 0,
            frames: 0,
            stalls: 0,
            stalled_streams: 0,
            bytes_in: 0,
            connects: 0,
        }
    }
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.min(HIGHEST_US));
}

impl Stats {
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn completed(&self) -> u64 {
        self.ok + self.error_count()
    }

    pub fn error_rate(&self) -> f64 {
        let n = self.completed();
        if n == 0 {
            0.0
        } else {
            self.error_count() as f64 / n as f64
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
        let _ = self.ttft.add(&o.ttft);
        let _ = self.gap.add(&o.gap);
        let _ = self.lag.add(&o.lag);
        self.ok += o.ok;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.streams += o.streams;
        self.frames += o.frames;
        self.stalls += o.stalls;
        self.stalled_streams += o.stalled_streams;
        self.bytes_in += o.bytes_in;
        self.connects += o.connects;
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Pcts {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Pcts {
    pub fn of(h: &Histogram<u64>) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Pcts {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The latency-by-percentile curve (HdrHistogram's "percentile distribution"), for plots:
/// (percentile, ms) at 1 - 10^-k steps.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for q in [
        0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
    ] {
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        record(&mut a.latency, 1000);
        record(&mut b.latency, 3000);
        a.ok = 1;
        b.error(ErrorKind::Timeout);
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.completed(), 2);
        assert!((a.error_rate() - 0.5).abs() < 1e-9);
        let p = Pcts::of(&a.latency);
        assert!((p.max - 3.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn huge_values_are_clamped() {
        let mut s = Stats::default();
        record(&mut s.latency, u64::MAX);
        assert_eq!(s.latency.len(), 1);
    }
}
