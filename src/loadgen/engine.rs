//! Running one load step: generator threads, each a monoio runtime with its own connections.
//!
//! **Open loop.** Thread `i` of `W` sends request `k` at `t0 + (i + k·W) / rate` (or at Poisson
//! arrival times), whether or not earlier requests finished: each send is its own task, and a
//! request that finds no free connection waits for one in FIFO order. Latency counts from the
//! scheduled time, so time queued behind a slow server counts (no coordinated omission). monoio's
//! timer rounds deadlines up to the next millisecond, so the dispatcher aims up to 2 ms early: a
//! request sent early counts from its actual send, one sent late from its scheduled time, and
//! the dispatch lag is reported as its own histogram (the generator's own precision).
//!
//! **Closed loop.** Each connection sends its next request when the previous one finished, and
//! latency counts from the actual send, like wrk or Locust: kept for comparison.
//!
//! Threads report every second over a channel (never blocking) and hand their statistics over
//! when done; the calling thread merges them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;

use super::client::Requests;
use super::scenario::{Arrival, Mode};
use super::stats::Stats;
use super::worker::worker;

/// One measured run at one rate (or one closed-loop concurrency).
#[derive(Clone)]
pub struct RunSpec {
    pub addr: SocketAddr,
    pub requests: Arc<Requests>,
    pub mode: Mode,
    pub arrival: Arrival,
    pub rate: f64,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub ramp: Duration,
    /// Most requests to send, warm-up included.
    pub budget: u64,
    pub timeout: Duration,
    pub stall: Duration,
    pub threads: usize,
}

/// One second of a run, all threads together.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Second {
    pub second: u32,
    pub completed: u64,
    pub errors: u64,
    /// Stream gaps over the stall threshold.
    pub stalls: u64,
    pub in_flight: u64,
    pub connections: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    #[serde(skip)]
    reports: usize,
    #[serde(skip)]
    hist: Option<Histogram<u64>>,
}

pub struct RunResult {
    pub stats: Stats,
    pub timeline: Vec<Second>,
    /// Some request found the generator's backlog full (the target cannot keep up).
    pub saturated: bool,
    pub peak_in_flight: u64,
    pub peak_connections: u64,
}

pub(super) enum Msg {
    Tick {
        second: u32,
        completed: u64,
        errors: u64,
        stalls: u64,
        in_flight: u64,
        connections: u64,
        hist: Histogram<u64>,
    },
    Done(Box<Stats>, bool),
}

/// Runs `spec`, calling `on_second` as each second completes. Blocks the calling thread, which
/// must not be a monoio thread.
pub fn run(spec: &RunSpec, on_second: &mut dyn FnMut(&Second)) -> Result<RunResult, String> {
    let threads = spec.threads.max(1);
    let t0 = Instant::now() + Duration::from_millis(100);
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let mut handles = Vec::new();
    for i in 0..threads {
        let (spec, tx) = (spec.clone(), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("berry-loadgen-{i}"))
            .spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .with_entries(4096)
                    .enable_timer()
                    .build();
                match rt {
                    Ok(mut rt) => rt.block_on(worker(spec, i, threads, t0, tx)),
                    Err(e) => {
                        log::error!("loadgen: cannot start runtime: {e}");
                        let _ = tx.send(Msg::Done(Box::default(), false));
                    }
                }
            })
            .map_err(|e| format!("cannot start generator thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    let out = collect(&rx, threads, on_second);
    for h in handles {
        let _ = h.join();
    }
    Ok(out)
}

fn collect(rx: &Receiver<Msg>, threads: usize, on_second: &mut dyn FnMut(&Second)) -> RunResult {
    let mut timeline: Vec<Second> = Vec::new();
    let mut stats = Stats::default();
    let (mut done, mut saturated) = (0, false);
    let (mut peak_in_flight, mut peak_connections) = (0, 0);
    while done < threads {
        let Ok(msg) = rx.recv() else { break };
        match msg {
            Msg::Tick {
                second,
                completed,
                errors,
                stalls,
                in_flight,
                connections,
                hist,
            } => {
                let i = second as usize;
                while timeline.len() <= i {
                    let second = timeline.len() as u32;
                    timeline.push(Second {
                        second,
                        ..Second::default()
                    });
                }
                let s = &mut timeline[i];
                s.completed += completed;
                s.errors += errors;
                s.stalls += stalls;
                s.in_flight += in_flight;
                s.connections += connections;
                match &mut s.hist {
                    Some(h) => {
                        let _ = h.add(&hist);
                    }
                    None => s.hist = Some(hist),
                }
                s.reports += 1;
                if s.reports == threads {
                    if let Some(h) = s.hist.take() {
                        s.p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0;
                        s.p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
                    }
                    peak_in_flight = peak_in_flight.max(s.in_flight);
                    peak_connections = peak_connections.max(s.connections);
                    on_second(s);
                }
            }
            Msg::Done(s, sat) => {
                stats.merge(&s);
                saturated |= sat;
                done += 1;
            }
        }
    }
    timeline.retain(|s| s.reports == threads);
    RunResult {
        stats,
        timeline,
        saturated,
        peak_in_flight,
        peak_connections,
    }
}
