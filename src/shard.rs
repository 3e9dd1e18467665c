//! `Shard`: everything one core owns, and its accept loop.
//!
//! A shard is one pinned thread running one monoio runtime. Its state (routes snapshot,
//! upstream pools, RNG, counters) lives in `Rc`/`Cell`/`RefCell`: never shared with another
//! thread. New routes or addresses arrive as [`ShardMsg`]s polled by a timer task.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use monoio::io::Canceller;
use monoio::net::TcpListener;

use crate::balance::local::LocalBalance;
use crate::control::ShardMsg;
use crate::health::report::{Recorder, ShardGauges, ShardReport};
use crate::health::snapshot::Snapshot;
use crate::routes::{AddressTable, Routes};
use crate::runtime::Shutdown;
use crate::telemetry::access::{AccessLog, Record};
use crate::telemetry::RequestEvent;
use crate::upstream::pool::Pool;

/// How often a shard polls its inbox and the shutdown flag.
const TICK: Duration = Duration::from_millis(50);
/// After `drain_timeout_ms`, how long streams get to send their `shutting_down` event (each
/// notices at its next upstream read) before the shard closes what is left.
const DRAIN_CUT_GRACE: Duration = Duration::from_secs(1);

pub struct ShardInit {
    pub id: usize,
    pub routes: Arc<Routes>,
    pub addresses: Arc<AddressTable>,
    pub inbox: Receiver<ShardMsg>,
    pub reports: Sender<ShardReport>,
    pub shutdown: Shutdown,
    pub telemetry: ShardTelemetry,
    /// The snapshot to route by until the control thread's first one arrives: every backend
    /// closed and healthy, as the control thread's book starts.
    pub snapshot: Arc<Snapshot>,
}

/// The shard's ends of the observability pipes.
#[derive(Clone, Default)]
pub struct ShardTelemetry {
    /// Renders `/metrics` (the control thread writes it); `None` when metrics are off.
    pub metrics: Option<crate::telemetry::view::MetricsView>,
    pub access: Option<AccessLog>,
}

impl ShardTelemetry {
    /// Does anything read what a request leaves behind (metrics or the access log)?
    pub fn enabled(&self) -> bool {
        self.metrics.is_some() || self.access.is_some()
    }
}

pub struct Shard {
    pub id: usize,
    /// The routes every new request starts from. Swapped whole; a request keeps the `Rc`
    /// it started with, so it sees exactly one snapshot. The `Rc` layer is deliberate: cloning
    /// it per request is a plain increment, where cloning the `Arc` would bounce a cache line
    /// shared by every shard.
    #[allow(clippy::redundant_allocation)]
    routes: RefCell<Rc<Arc<Routes>>>,
    addresses: RefCell<Arc<AddressTable>>,
    pub pool: RefCell<Pool>,
    /// Strategy state, outcome trackers and circuit breakers of every model's backends.
    pub balance: RefCell<LocalBalance>,
    /// The latest health snapshot from the control thread; replaced whole, read per pick.
    pub snapshot: RefCell<Arc<Snapshot>>,
    /// Outcomes not yet reported to the control thread.
    pub recorder: RefCell<Recorder>,
    pub rng: RefCell<fastrand::Rng>,
    /// Client connections open on this shard.
    pub conns_open: Cell<usize>,
    /// Client connections with a request in progress (what draining waits for).
    pub conns_busy: Cell<usize>,
    pub draining: Cell<bool>,
    /// The drain timeout ran out: streams still relaying end with a `shutting_down` event.
    pub drain_expired: Cell<bool>,
    /// Open upstream connections per provider (pooled or in use).
    pub upstream_open: Rc<[Cell<u32>]>,
    /// Proxied requests in progress per route (chat, completions, embeddings).
    pub inflight_by_route: [Cell<usize>; 3],
    pub telemetry: ShardTelemetry,
    /// Access-log lines not yet handed to the writer thread.
    pub access_batch: RefCell<Vec<crate::telemetry::access::Record>>,
    /// The shard's coarse clock and the request path's deadlines (`crate::timer`).
    pub timers: Rc<crate::timer::Timers>,
    /// Request buffers kept between requests (two per request in flight at most), so the
    /// upstream request and its rewritten body are not allocated anew each time.
    spare_bufs: RefCell<Vec<Vec<u8>>>,
}

/// Access-log lines a shard collects before handing them to the writer in one message (the
/// reporter also sends whatever is there every `report_interval_ms`): one channel operation,
/// and at most one writer wake-up, per batch instead of per request.
const ACCESS_BATCH_LINES: usize = 256;

/// Spare buffers kept per shard, and the largest one kept (bigger ones are freed).
const SPARE_BUFS_MAX: usize = 256;
const SPARE_BUF_BYTES_MAX: usize = 64 * 1024;

impl Shard {
    /// An empty buffer with at least `capacity`, reused when one is spare.
    pub fn take_buf(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.spare_bufs.borrow_mut().pop().unwrap_or_default();
        b.reserve(capacity);
        b
    }

    /// Returns a buffer for reuse (dropped when the shard keeps enough, or it grew too big).
    pub fn give_buf(&self, mut b: Vec<u8>) {
        if b.capacity() > SPARE_BUF_BYTES_MAX {
            return;
        }
        let mut spare = self.spare_bufs.borrow_mut();
        if spare.len() < SPARE_BUFS_MAX {
            b.clear();
            spare.push(b);
        }
    }

    /// Hands a finished request to the metrics pipeline and the access log.
    pub fn record_request(
        &self,
        event: RequestEvent,
        request_id: String,
        end: Instant,
        client: Option<IpAddr>,
    ) {
        if self.telemetry.metrics.is_some() {
            self.recorder.borrow_mut().request(event);
        }
        if let Some(log) = &self.telemetry.access {
            let mut batch = self.access_batch.borrow_mut();
            batch.push(Record {
                end,
                client,
                request_id,
                event,
            });
            if batch.len() >= ACCESS_BATCH_LINES {
                log.send(&mut batch);
            }
        }
    }

    /// Hands the collected access-log lines to the writer.
    pub fn flush_access_log(&self) {
        if let Some(log) = &self.telemetry.access {
            log.send(&mut self.access_batch.borrow_mut());
        }
    }

    #[allow(clippy::redundant_allocation)]
    pub fn routes(&self) -> Rc<Arc<Routes>> {
        self.routes.borrow().clone()
    }

    /// Resolved addresses of a provider (possibly empty when DNS failed).
    pub fn addresses(&self, provider: usize) -> Vec<std::net::SocketAddr> {
        self.addresses
            .borrow()
            .get(provider)
            .cloned()
            .unwrap_or_default()
    }

    fn apply(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Addresses(table) => *self.addresses.borrow_mut() = table,
            ShardMsg::Snapshot(snap) => *self.snapshot.borrow_mut() = snap,
            ShardMsg::Recycle(bufs) => self.recorder.borrow_mut().recycle(bufs),
        }
    }
}

/// Counts one in a shard counter while alive, so every exit path (including a dropped
/// future) is counted out.
pub struct Gauge<'a>(&'a Cell<usize>);

impl<'a> Gauge<'a> {
    pub fn enter(c: &'a Cell<usize>) -> Gauge<'a> {
        c.set(c.get() + 1);
        Gauge(c)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The shard's main future: accept until shutdown, then drain.
pub async fn run(init: ShardInit, listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("shard {}: cannot adopt listener: {e}", init.id);
            return;
        }
    };
    let settings = &init.routes.config.settings;
    let pool = Pool::new(
        init.routes.config.providers.len(),
        settings.pool_idle_per_backend_max,
        settings.pool_idle_timeout,
    );
    let shard = Rc::new(Shard {
        id: init.id,
        routes: RefCell::new(Rc::new(init.routes.clone())),
        addresses: RefCell::new(init.addresses.clone()),
        pool: RefCell::new(pool),
        balance: RefCell::new(LocalBalance::new(&init.routes.config)),
        snapshot: RefCell::new(init.snapshot.clone()),
        recorder: RefCell::new(Recorder::default()),
        rng: RefCell::new(fastrand::Rng::new()),
        conns_open: Cell::new(0),
        conns_busy: Cell::new(0),
        draining: Cell::new(false),
        drain_expired: Cell::new(false),
        upstream_open: (0..init.routes.config.providers.len())
            .map(|_| Cell::new(0))
            .collect(),
        inflight_by_route: Default::default(),
        telemetry: init.telemetry.clone(),
        access_batch: RefCell::new(Vec::new()),
        spare_bufs: RefCell::new(Vec::new()),
        timers: crate::timer::Timers::new(Instant::now()),
    });
    monoio::spawn(crate::timer::drive(shard.timers.clone()));
    let accept_stop = Rc::new(RefCell::new(Some(Canceller::new())));
    monoio::spawn(ticker(
        shard.clone(),
        init.inbox,
        init.shutdown,
        accept_stop.clone(),
    ));
    let interval = init.routes.config.settings.report_interval;
    monoio::spawn(reporter(shard.clone(), init.reports, interval));
    accept_loop(&shard, &listener, &accept_stop).await;
    drop(listener);
    let drain_timeout = init.routes.config.server.drain_timeout;
    if !wait_idle(&shard, drain_timeout).await {
        log::warn!(
            "shard {}: {} request(s) still in flight after drain_timeout_ms ({} ms); ending them",
            shard.id,
            shard.conns_busy.get(),
            drain_timeout.as_millis()
        );
        shard.drain_expired.set(true);
        // Wake every request waiting on an upstream: each answers `shutting_down` (a 503,
        // or an in-band event after its first byte) and is logged.
        shard.timers.cut();
        if !wait_idle(&shard, DRAIN_CUT_GRACE).await {
            log::warn!(
                "shard {}: closing {} connection(s) with a request still unanswered",
                shard.id,
                shard.conns_busy.get()
            );
        }
    }
    shard.flush_access_log();
}

/// Waits up to `limit` for the shard's requests in flight to finish; true if they did.
async fn wait_idle(shard: &Shard, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while shard.conns_busy.get() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn accept_loop(
    shard: &Rc<Shard>,
    listener: &TcpListener,
    stop: &Rc<RefCell<Option<Canceller>>>,
) {
    loop {
        let handle = match stop.borrow().as_ref() {
            Some(c) => c.handle(),
            None => return,
        };
        match listener.cancelable_accept(handle).await {
            Ok((stream, _peer)) => {
                shard.recorder.borrow_mut().deltas.accepted += 1;
                monoio::spawn(Guarded(crate::server::conn::serve(shard.clone(), stream)));
            }
            Err(e) => {
                if shard.draining.get() {
                    return;
                }
                // EMFILE and friends: back off briefly instead of spinning.
                log::warn!("shard {}: accept failed: {e}", shard.id);
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn ticker(
    shard: Rc<Shard>,
    inbox: Receiver<ShardMsg>,
    shutdown: Shutdown,
    accept_stop: Rc<RefCell<Option<Canceller>>>,
) {
    let mut last_reap = Instant::now();
    loop {
        monoio::time::sleep(TICK).await;
        while let Ok(msg) = inbox.try_recv() {
            shard.apply(msg);
        }
        let now = Instant::now();
        if now.duration_since(last_reap) >= Duration::from_secs(1) {
            last_reap = now;
            shard.pool.borrow_mut().reap(now);
        }
        if shutdown.is_triggered() && !shard.draining.get() {
            shard.draining.set(true);
            if let Some(c) = accept_stop.borrow_mut().take() {
                c.cancel();
            }
            return;
        }
    }
}

/// Sends this shard's outcomes to the control thread every `interval`, never blocking: when
/// the channel is full the events stay here for the next report and the miss is counted.
async fn reporter(shard: Rc<Shard>, reports: Sender<ShardReport>, interval: Duration) {
    // Runs until the runtime ends, so outcomes of requests finishing during a drain still
    // reach the control thread.
    loop {
        monoio::time::sleep(interval).await;
        shard.flush_access_log();
        let report = {
            let gauges = gauges(&shard);
            let inflight = shard.balance.borrow().inflight();
            shard.recorder.borrow_mut().take(shard.id, inflight, gauges)
        };
        if let Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) =
            reports.try_send(report)
        {
            shard.recorder.borrow_mut().restore(back);
        }
    }
}

/// The shard's levels for its report.
fn gauges(shard: &Shard) -> ShardGauges {
    let pool = shard.pool.borrow();
    ShardGauges {
        conns_open: shard.conns_open.get() as u32,
        pool_idle: (0..shard.upstream_open.len())
            .map(|p| pool.idle(p) as u32)
            .collect(),
        pool_open: shard.upstream_open.iter().map(Cell::get).collect(),
        inflight_by_route: [0, 1, 2].map(|i| shard.inflight_by_route[i].get() as u32),
        snapshot_taken: shard.snapshot.borrow().taken,
    }
}

/// Runs a connection task so that a panic in it ends only that connection. monoio does not
/// catch panics in tasks (for speed); uncaught, one bad request would unwind through the
/// runtime and take down every connection of the shard.
struct Guarded<F>(F);

impl<F: std::future::Future<Output = ()>> std::future::Future for Guarded<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // SAFETY: structural pinning of the only field; `Guarded` never moves it.
        let inner = unsafe { self.map_unchecked_mut(|g| &mut g.0) };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                // The panic hook has already printed the message; the connection is dropped.
                log::error!("a connection task panicked; its connection was closed");
                std::task::Poll::Ready(())
            }
        }
    }
}
