//! Berry's histograms: fixed buckets in atomics, written by the control thread alone and
//! rendered next to the `metrics-exporter-prometheus` output on `/metrics`.
//!
//! Why not the exporter's histograms: they keep every sample in a lock-free bucket list and sort
//! them into buckets when drained. At 90 000 requests/s with six histograms per request that was
//! 2–3 % of Berry's CPU and a burst of draining work on the control thread every upkeep, which
//! showed up as shard latency spikes (see docs/performance.md). Here a sample is a bucket
//! search and three relaxed adds; a scrape reads the counters as they are (monoio-notes §5
//! suggests exactly this: "its own bucket counts").

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One labelled series of a family.
pub struct Series {
    /// Rendered labels, `k="v",k2="v2"` (empty for none).
    labels: String,
    /// Samples per bucket, not cumulative; the last is the `+Inf` overflow.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Series {
    /// Records one sample, in microseconds. There is one writer (the control thread), so a
    /// plain load and store is enough: no locked read-modify-write per sample. Readers (a
    /// render) see each counter whole, at worst one sample behind.
    pub fn record(&self, bounds_us: &[u64], us: u64) {
        let i = bounds_us.partition_point(|&b| b < us);
        let bucket = &self.buckets[i];
        bucket.store(bucket.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed);
        self.sum_us.store(sum + us, Ordering::Relaxed);
    }
}

/// A histogram family: name, help and bucket bounds (µs, rendered in seconds).
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub bounds_us: &'static [u64],
    series: RwLock<Vec<Arc<Series>>>,
}

impl Family {
    pub const fn new(name: &'static str, help: &'static str, bounds_us: &'static [u64]) -> Family {
        Family {
            name,
            help,
            bounds_us,
            series: RwLock::new(Vec::new()),
        }
    }

    /// Registers a series; the caller keeps the handle (registering the same labels twice
    /// makes two series, so callers cache).
    pub fn series(&self, labels: &[(&str, &str)]) -> Arc<Series> {
        let mut rendered = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                rendered.push(',');
            }
            let _ = write!(rendered, "{k}=\"{}\"", escape(v));
        }
        let s = Arc::new(Series {
            labels: rendered,
            buckets: (0..=self.bounds_us.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
        });
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        s
    }

    /// Appends the family in the Prometheus text format (nothing if it has no series).
    pub fn render(&self, out: &mut String) {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for s in series.iter() {
            let sep = if s.labels.is_empty() { "" } else { "," };
            let mut cumulative = 0;
            for (i, b) in s.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                match self.bounds_us.get(i) {
                    Some(&us) => {
                        let le = us as f64 / 1e6;
                        let _ = writeln!(
                            out,
                            "{}_bucket{{{}{sep}le=\"{le}\"}} {cumulative}",
                            self.name, s.labels
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "{}_bucket{{{}{sep}le=\"+Inf\"}} {cumulative}",
                            self.name, s.labels
                        );
                    }
                }
            }
            let sum = s.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let braces = |l: &str| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{{{l}}}")
                }
            };
            let _ = writeln!(out, "{}_sum{} {sum}", self.name, braces(&s.labels));
            // The count is the +Inf bucket, so the two always agree within one scrape.
            let _ = writeln!(out, "{}_count{} {cumulative}", self.name, braces(&s.labels));
        }
        out.push('\n');
    }
}

/// Label values may hold any config id; the text format needs `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_sum_and_count() {
        static BOUNDS: [u64; 3] = [1_000, 10_000, 100_000];
        let f = Family::new("x_seconds", "test", &BOUNDS);
        let s = f.series(&[("model", "a\"b"), ("backend", "p")]);
        for us in [500, 1_000, 1_001, 50_000, 7_000_000] {
            s.record(&BOUNDS, us);
        }
        let _unused = f.series(&[]);
        let mut out = String::new();
        f.render(&mut out);
        let want = "# HELP x_seconds test\n# TYPE x_seconds histogram\n\
            x_seconds_bucket{model=\"a\\\"b\",backend=\"p\",le=\"0.001\"} 2\n\
            x_seconds_bucket{model=\"a\\\"b\",backend=\"p\",le=\"0.01\"} 3\n\
            x_seconds_bucket{model=\"a\\\"b\",backend=\"p\",le=\"0.1\"} 4\n\
            x_seconds_bucket{model=\"a\\\"b\",backend=\"p\",le=\"+Inf\"} 5\n\
            x_seconds_sum{model=\"a\\\"b\",backend=\"p\"} 7.052501\n\
            x_seconds_count{model=\"a\\\"b\",backend=\"p\"} 5\n\
            x_seconds_bucket{le=\"0.001\"} 0\n\
            x_seconds_bucket{le=\"0.01\"} 0\n\
            x_seconds_bucket{le=\"0.1\"} 0\n\
            x_seconds_bucket{le=\"+Inf\"} 0\n\
            x_seconds_sum 0\n\
            x_seconds_count 0\n\n";
        assert_eq!(out, want);
    }

    #[test]
    fn an_empty_family_renders_nothing() {
        static BOUNDS: [u64; 1] = [1];
        let mut out = String::new();
        Family::new("y_seconds", "test", &BOUNDS).render(&mut out);
        assert!(out.is_empty());
    }
}
