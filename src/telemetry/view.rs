//! What `/metrics` serves: the exporter's counters and gauges followed by Berry's own histogram
//! families, rendered by the control thread whenever a shard asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::PrometheusHandle;

use super::catalog::{CONNECT_BUCKETS_US, LATENCY_BUCKETS_US, OVERHEAD_BUCKETS_US};
use super::histo::Family;

/// Berry's histogram families (see [`super::histo`]), shared by the control thread (the only
/// writer) and `/metrics` on the shards.
pub struct Histograms {
    pub duration: Family,
    pub ttfb: Family,
    pub overhead: Family,
    pub connect: Family,
    pub legacy_duration: Family,
    pub legacy_backend_latency: Family,
}

impl Histograms {
    pub(super) fn new() -> Histograms {
        Histograms {
            duration: Family::new("berry_request_duration_seconds", "Request received to response complete, by model and backend", &LATENCY_BUCKETS_US),
            ttfb: Family::new("berry_time_to_first_byte_seconds", "Request received to the first response byte sent (a stream's first token), by model, backend and stream", &LATENCY_BUCKETS_US),
            overhead: Family::new("berry_overhead_seconds", "Time spent inside Berry per proxied request: duration minus upstream waits", &OVERHEAD_BUCKETS_US),
            connect: Family::new("berry_upstream_connect_seconds", "Upstream connect time (TCP and TLS), by backend", &CONNECT_BUCKETS_US),
            legacy_duration: Family::new("berry_api_http_request_duration_seconds", "Berry API compatible: request duration by method and endpoint", &LATENCY_BUCKETS_US),
            legacy_backend_latency: Family::new("berry_api_backend_latency_seconds", "Berry API compatible: upstream response-head latency by backend", &LATENCY_BUCKETS_US),
        }
    }

    fn all(&self) -> [&Family; 6] {
        [
            &self.duration,
            &self.ttfb,
            &self.overhead,
            &self.connect,
            &self.legacy_duration,
            &self.legacy_backend_latency,
        ]
    }
}

/// What `/metrics` renders: the exporter's counters and gauges, then Berry's histograms.
///
/// Rendering costs time in proportion to the number of series (tokens per user grow with the
/// users), so shards never do it: a shard takes a ticket and waits (asynchronously) until the
/// control thread has rendered a text at least as new as the ticket.
#[derive(Clone)]
pub struct MetricsView {
    handle: PrometheusHandle,
    histograms: Arc<Histograms>,
    slot: Arc<RenderSlot>,
}

#[derive(Default)]
struct RenderSlot {
    /// Tickets handed out so far.
    wanted: AtomicU64,
    /// The newest render and the last ticket it answers.
    done: Mutex<(u64, Arc<String>)>,
}

impl MetricsView {
    pub(super) fn new(handle: PrometheusHandle, histograms: Arc<Histograms>) -> MetricsView {
        MetricsView {
            handle,
            histograms,
            slot: Arc::default(),
        }
    }

    /// Asks for a render; the answer is ready when [`MetricsView::ready`] returns it.
    pub fn request(&self) -> u64 {
        self.slot.wanted.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The render answering `ticket`, once the control thread has made it.
    pub fn ready(&self, ticket: u64) -> Option<Arc<String>> {
        let done = self.slot.done.lock().unwrap_or_else(|e| e.into_inner());
        (done.0 >= ticket).then(|| done.1.clone())
    }

    /// Control thread: renders if a shard is waiting.
    pub fn serve_pending(&self) {
        let wanted = self.slot.wanted.load(Ordering::Acquire);
        let served = self.slot.done.lock().unwrap_or_else(|e| e.into_inner()).0;
        if wanted > served {
            let text = Arc::new(self.render());
            *self.slot.done.lock().unwrap_or_else(|e| e.into_inner()) = (wanted, text);
        }
    }

    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        for f in self.histograms.all() {
            f.render(&mut out);
        }
        out
    }
}
