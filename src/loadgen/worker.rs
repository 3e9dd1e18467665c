//! One generator thread: its runtime's tasks for the open loop (a dispatcher plus a task per
//! request) or the closed loop (a task per connection), the per-second ticks, and recording.
//! See `engine.rs` for the timing rules.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;

use super::client::{exchange, Conn, Exchange};
use super::engine::{Msg, RunSpec};
use super::pool::{Grant, Pool};
use super::scenario::{Arrival, Mode};
use super::stats::{histogram, record, ErrorKind, Stats};

/// The dispatcher aims this much before a request is due: monoio's timer rounds up to the
/// millisecond and its wake-ups come up to ~2 ms late.
const TIMER_EARLY: Duration = Duration::from_millis(2);
/// Requests waiting for a connection per thread before new ones are failed on the spot.
const BACKLOG_MAX: usize = 100_000;
/// Extra time after the last send for requests in flight to finish, beyond their timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// One thread's state, shared by its tasks.
struct Ctx {
    spec: RunSpec,
    t0: Instant,
    measure_from: Instant,
    end: Instant,
    pool: Pool<Conn>,
    stats: std::cell::RefCell<Stats>,
    interval: std::cell::RefCell<Histogram<u64>>,
    /// Since the last tick: completed, failed, stream stalls.
    counts: std::cell::Cell<(u64, u64, u64)>,
    /// Closed loop: connections open now.
    conns: std::cell::Cell<usize>,
    in_flight: std::cell::Cell<usize>,
    saturated: std::cell::Cell<bool>,
    rng: std::cell::RefCell<fastrand::Rng>,
}

pub(super) async fn worker(spec: RunSpec, i: usize, threads: usize, t0: Instant, tx: Sender<Msg>) {
    let conns = spec.connections.div_ceil(threads).max(1);
    let measure_from = t0 + spec.warmup;
    let ctx = Rc::new(Ctx {
        pool: Pool::new(conns),
        end: measure_from + spec.duration,
        measure_from,
        t0,
        stats: Default::default(),
        interval: std::cell::RefCell::new(histogram()),
        counts: Default::default(),
        conns: Default::default(),
        in_flight: Default::default(),
        saturated: Default::default(),
        rng: std::cell::RefCell::new(fastrand::Rng::with_seed(
            0x5eed ^ (i as u64) << 32 ^ fastrand::u64(..),
        )),
        spec,
    });
    let ticker = monoio::spawn(ticks(Rc::downgrade(&ctx), tx.clone()));
    wait_until(t0).await;
    match ctx.spec.mode {
        Mode::Open => open_loop(&ctx, i, threads).await,
        Mode::Closed => {
            for j in 0..conns {
                let g = j * threads + i;
                if g >= ctx.spec.connections {
                    break;
                }
                let total = ctx.spec.connections as f64;
                let start = t0 + ctx.spec.ramp.mul_f64(g as f64 / total);
                ctx.in_flight.set(ctx.in_flight.get() + 1);
                monoio::spawn(closed_conn(ctx.clone(), start, threads));
            }
        }
    }
    // Let what is in flight finish; every request has its own timeout, so this ends.
    let drain_until = ctx.end + ctx.spec.timeout + DRAIN_GRACE;
    while ctx.in_flight.get() > 0 && Instant::now() < drain_until {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(ticker);
    // monoio does not drop unfinished tasks with the runtime, and closes sockets through the
    // ring: close kept connections now, and give the ring a moment to submit the closes, or
    // they would stay open (and the target would hold them) until the process exits.
    drop(ctx.pool.take_idle());
    monoio::time::sleep(Duration::from_millis(20)).await;
    let stats = ctx.stats.replace(Stats::default());
    let _ = tx.send(Msg::Done(Box::new(stats), ctx.saturated.get()));
}

async fn wait_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        monoio::time::sleep(t - now).await;
    }
}

/// Every second after `t0`: counts and latencies of the requests that finished in it.
/// Holds the context weakly: this task outlives the run (monoio never drops it).
async fn ticks(ctx: std::rc::Weak<Ctx>, tx: Sender<Msg>) {
    let mut second = 0u32;
    let Some(t0) = ctx.upgrade().map(|c| c.t0) else {
        return;
    };
    loop {
        wait_until(t0 + Duration::from_secs(u64::from(second) + 1)).await;
        let Some(ctx) = ctx.upgrade() else { return };
        let (completed, errors, stalls) = ctx.counts.replace((0, 0, 0));
        let hist = ctx.interval.replace(histogram());
        let msg = Msg::Tick {
            second,
            completed,
            errors,
            stalls,
            in_flight: ctx.in_flight.get() as u64,
            connections: (ctx.pool.open() + ctx.conns.get()) as u64,
            hist,
        };
        if tx.send(msg).is_err() {
            return;
        }
        second += 1;
    }
}

async fn open_loop(ctx: &Rc<Ctx>, i: usize, threads: usize) {
    let spec = &ctx.spec;
    let total = spec.warmup + spec.duration;
    let mean_gap = threads as f64 / spec.rate;
    let mut offset = match spec.arrival {
        Arrival::Constant => i as f64 / spec.rate,
        Arrival::Poisson => exp_gap(ctx, mean_gap),
    };
    let mut k = 0u64;
    while offset < total.as_secs_f64() && k * threads as u64 + (i as u64) < spec.budget {
        let intended = ctx.t0 + Duration::from_secs_f64(offset);
        wait_until(intended - TIMER_EARLY).await;
        let dispatched = Instant::now();
        ctx.in_flight.set(ctx.in_flight.get() + 1);
        monoio::spawn(open_request(ctx.clone(), intended, dispatched));
        k += 1;
        offset = match spec.arrival {
            Arrival::Constant => (i as f64 + (k * threads as u64) as f64) / spec.rate,
            Arrival::Poisson => offset + exp_gap(ctx, mean_gap),
        };
    }
}

fn exp_gap(ctx: &Ctx, mean: f64) -> f64 {
    -mean * (1.0 - ctx.rng.borrow_mut().f64()).ln()
}

/// Returns its pool slot unless the connection went back to the pool.
struct Slot<'a> {
    pool: &'a Pool<Conn>,
    kept: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.pool.closed();
        }
    }
}

async fn open_request(ctx: Rc<Ctx>, intended: Instant, dispatched: Instant) {
    let start = intended.min(dispatched);
    let idx = ctx.spec.requests.pick(&mut ctx.rng.borrow_mut());
    let result = if ctx.pool.waiting() >= BACKLOG_MAX {
        ctx.saturated.set(true);
        Err(ErrorKind::Timeout)
    } else {
        let budget = (start + ctx.spec.timeout).saturating_duration_since(Instant::now());
        let attempt = async {
            let grant = ctx.pool.acquire().await;
            let mut slot = Slot {
                pool: &ctx.pool,
                kept: false,
            };
            let mut conn = match grant {
                Grant::Reuse(c) => c,
                Grant::Open => match Conn::open(ctx.spec.addr).await {
                    Ok(c) => {
                        ctx.stats.borrow_mut().connects += 1;
                        c
                    }
                    Err(_) => return Err(ErrorKind::Connect),
                },
            };
            let x = exchange(&mut conn, &ctx.spec.requests.templates[idx]).await;
            if x.keep_alive && x.error.is_none() {
                slot.kept = true;
                ctx.pool.release(conn);
            }
            Ok(x)
        };
        match monoio::time::timeout(budget, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::Timeout),
        }
    };
    let lag = dispatched.saturating_duration_since(intended);
    finish(&ctx, idx, intended, start, Some(lag), result);
    ctx.in_flight.set(ctx.in_flight.get() - 1);
}

async fn closed_conn(ctx: Rc<Ctx>, first: Instant, threads: usize) {
    wait_until(first).await;
    let mut conn: Option<Conn> = None;
    let budget_per_thread = ctx.spec.budget.div_ceil(threads as u64);
    let mut sent = 0u64;
    let mut counted = false;
    while Instant::now() < ctx.end && sent < budget_per_thread {
        let start = Instant::now();
        let idx = ctx.spec.requests.pick(&mut ctx.rng.borrow_mut());
        let attempt = async {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match Conn::open(ctx.spec.addr).await {
                    Ok(c) => {
                        ctx.stats.borrow_mut().connects += 1;
                        c
                    }
                    Err(_) => return Err(ErrorKind::Connect),
                },
            };
            let x = exchange(&mut c, &ctx.spec.requests.templates[idx]).await;
            if x.keep_alive && x.error.is_none() {
                conn = Some(c);
            }
            Ok(x)
        };
        let result = match monoio::time::timeout(ctx.spec.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::Timeout),
        };
        // Kept connections, for the progress line.
        if conn.is_some() != counted {
            counted = conn.is_some();
            let n = ctx.conns.get();
            ctx.conns.set(if counted { n + 1 } else { n - 1 });
        }
        let failed_to_connect = matches!(result, Err(ErrorKind::Connect));
        finish(&ctx, idx, start, start, None, result);
        sent += 1;
        if failed_to_connect {
            // Do not spin on a refused port.
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if counted {
        ctx.conns.set(ctx.conns.get() - 1);
    }
    ctx.in_flight.set(ctx.in_flight.get() - 1);
}

/// Records one finished request. `intended` decides whether it is in the measured window;
/// `start` is where its latency begins.
fn finish(
    ctx: &Ctx,
    idx: usize,
    intended: Instant,
    start: Instant,
    lag: Option<Duration>,
    result: Result<Exchange, ErrorKind>,
) {
    let now = Instant::now();
    let latency = now.saturating_duration_since(start).as_micros() as u64;
    let (mut completed, mut errors, mut stalls) = ctx.counts.get();
    completed += 1;
    let error = match &result {
        Ok(x) => x.error,
        Err(kind) => Some(*kind),
    };
    errors += u64::from(error.is_some());
    if let Ok(x) = &result {
        let stall_us = ctx.spec.stall.as_micros() as u32;
        stalls += x.gaps.iter().filter(|&&g| g > stall_us).count() as u64;
    }
    ctx.counts.set((completed, errors, stalls));
    // Only answers and timeouts have a latency; a refused connection or a reset does not.
    let has_latency = match &result {
        Ok(x) => x.status > 0,
        Err(kind) => *kind == ErrorKind::Timeout,
    };
    if has_latency {
        record(&mut ctx.interval.borrow_mut(), latency);
    }
    if intended < ctx.measure_from || intended >= ctx.end {
        return;
    }
    let mut st = ctx.stats.borrow_mut();
    if let Some(lag) = lag {
        record(&mut st.lag, lag.as_micros() as u64);
    }
    match error {
        None => st.ok += 1,
        Some(kind) => st.error(kind),
    }
    if has_latency {
        record(&mut st.latency, latency);
    }
    let Ok(x) = result else { return };
    st.bytes_in += x.bytes;
    if let Some(sent) = x.sent {
        if x.status > 0 {
            record(
                &mut st.service,
                now.saturating_duration_since(sent).as_micros() as u64,
            );
        }
    }
    if ctx.spec.requests.templates[idx].stream && (200..300).contains(&x.status) {
        st.streams += 1;
        st.frames += u64::from(x.frames);
        if let Some(first) = x.first_event {
            record(
                &mut st.ttft,
                first.saturating_duration_since(start).as_micros() as u64,
            );
        }
        let stall_us = ctx.spec.stall.as_micros() as u32;
        let mut stalls = 0;
        for &g in &x.gaps {
            record(&mut st.gap, u64::from(g));
            stalls += u64::from(g > stall_us);
        }
        st.stalls += stalls;
        st.stalled_streams += u64::from(stalls > 0);
    }
}
