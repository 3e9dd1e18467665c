//! Starting and stopping Berry: bound listeners in, shard threads and a control thread out.
//!
//! `start` takes listeners that are already bound and a [`Shutdown`] handle, so tests boot the
//! real server on port 0. Each shard is a pinned OS thread with its own monoio runtime
//! (io_uring, or epoll where io_uring is unavailable) and its own SO_REUSEPORT listener.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::DriverChoice;
use crate::control::{self, ShardMsg};
use crate::routes::{AddressTable, Routes};
use crate::shard;
use crate::telemetry::access;
use crate::telemetry::exporter::Exporter;

/// Entries of each shard's io_uring submission queue.
const URING_ENTRIES: u32 = 1024;
/// Listen backlog per shard socket.
const LISTEN_BACKLOG: i32 = 4096;

/// Nice value of Berry's helper threads (control, probes, log writers).
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority. Helper threads do bursts of work (folding a
/// report of thousands of events, writing a batch of log lines); on a machine whose cores all
/// run shards, those bursts would otherwise preempt a shard in the middle of requests and show
/// up in its tail latency. At nice 10 they still get about a tenth of a contended core, far
/// more than they need. Best effort: failure leaves the default priority.
pub fn background_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions; on Linux a thread id
    // with PRIO_PROCESS addresses just that thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
}

/// Asks the server to drain and stop; cheap to clone and to poll.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The I/O driver a shard actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Uring,
    Epoll,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Uring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

pub struct RunOptions {
    pub driver: DriverChoice,
    /// Pin shard i to core i (off in tests, where many servers share two cores).
    pub pin_cores: bool,
}

/// A running server.
pub struct Server {
    shards: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    pub drivers: Vec<DriverKind>,
    pub local_addr: SocketAddr,
    shutdown: Shutdown,
}

impl Server {
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Have every shard and the control thread stopped?
    pub fn is_finished(&self) -> bool {
        self.shards.iter().all(|h| h.is_finished())
            && self.control.as_ref().is_none_or(|c| c.is_finished())
    }

    /// Waits for every shard to drain and the control thread to stop.
    pub fn join(mut self) {
        for h in self.shards.drain(..) {
            let _ = h.join();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

/// Number of shards when the config does not say: one per available core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Binds `n` SO_REUSEPORT listeners on one address. With port 0 the first socket picks the
/// port and the others join it.
pub fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        refuse_shared_port(addr)?;
    }
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(LISTEN_BACKLOG)?;
        let l: std::net::TcpListener = sock.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// SO_REUSEPORT would let a second Berry on the same port silently take half the traffic;
/// probing with a plain bind first turns that into a clear "address in use".
fn refuse_shared_port(addr: SocketAddr) -> io::Result<()> {
    let probe = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            // The caller says which address; this says why.
            format!("{e} (is another server running?)"),
        )
    })
}

/// Starts one shard per listener and the control thread.
pub fn start(
    routes: Arc<Routes>,
    addresses: Arc<AddressTable>,
    listeners: Vec<std::net::TcpListener>,
    opts: RunOptions,
    shutdown: Shutdown,
) -> io::Result<Server> {
    let local_addr = listeners
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no listener"))?
        .local_addr()?;
    let cores = if opts.pin_cores {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let config = routes.config.clone();
    let telemetry = control::Telemetry {
        exporter: config
            .observability
            .metrics
            .then(|| Exporter::new(config.clone(), listeners.len())),
        access: access::start(config.clone())?,
    };
    let shard_telemetry = shard::ShardTelemetry {
        metrics: telemetry.exporter.as_ref().map(Exporter::view),
        access: telemetry.access.clone(),
    };
    // What shards route by before the control thread publishes (so an admin view or a pick in
    // the first milliseconds sees every backend, not none).
    let first_snapshot = Arc::new(
        crate::health::book::HealthBook::new(config.clone(), listeners.len(), Instant::now())
            .snapshot(Instant::now()),
    );
    let (driver_tx, driver_rx) = mpsc::channel::<io::Result<DriverKind>>();
    let mut inboxes = Vec::with_capacity(listeners.len());
    // Bounded: a stalled control thread makes shards keep (and count) their events instead of
    // queueing without limit.
    let (report_tx, report_rx) = crossbeam_channel::bounded(4 * listeners.len().max(1));
    let mut shards = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded::<ShardMsg>(control::SHARD_INBOX);
        inboxes.push(tx);
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[i % cores.len()])
        };
        let (routes, addresses, shutdown, driver_tx, reports, telemetry) = (
            routes.clone(),
            addresses.clone(),
            shutdown.clone(),
            driver_tx.clone(),
            report_tx.clone(),
            shard_telemetry.clone(),
        );
        let snapshot = first_snapshot.clone();
        let driver = opts.driver;
        let h = std::thread::Builder::new()
            .name(format!("berry-shard-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let ctx = shard::ShardInit {
                    id: i,
                    routes,
                    addresses,
                    inbox: rx,
                    reports,
                    shutdown,
                    telemetry,
                    snapshot,
                };
                run_on_driver(driver, &driver_tx, move || shard::run(ctx, listener));
            })?;
        shards.push(h);
    }
    drop(driver_tx);
    let mut drivers = Vec::with_capacity(shards.len());
    for _ in 0..shards.len() {
        match driver_rx.recv() {
            Ok(Ok(kind)) => drivers.push(kind),
            Ok(Err(e)) => {
                shutdown.trigger();
                for h in shards {
                    let _ = h.join();
                }
                return Err(e);
            }
            Err(_) => return Err(io::Error::other("a shard thread died during startup")),
        }
    }
    drop(report_tx);
    if let (Some(x), Some(d)) = (telemetry.exporter.as_ref(), drivers.first()) {
        x.set_build_info(d.name());
    }
    let control = control::spawn(
        routes,
        addresses,
        inboxes,
        report_rx,
        telemetry,
        shutdown.clone(),
    )?;
    Ok(Server {
        shards,
        control: Some(control),
        drivers,
        local_addr,
        shutdown,
    })
}

/// Builds the runtime the driver choice asks for and runs the shard's future on it. `Auto`
/// tries io_uring and falls back to epoll when the kernel or a seccomp profile refuses it.
fn run_on_driver<F, Fut>(choice: DriverChoice, report: &mpsc::Sender<io::Result<DriverKind>>, f: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let forced_epoll = std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some();
    if choice != DriverChoice::Epoll && !(choice == DriverChoice::Auto && forced_epoll) {
        let tuned = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .uring_builder(uring_flags())
            .enable_timer()
            .build();
        // Kernels older than 6.0 reject the tuning flags: retry with a plain ring.
        let built = tuned.or_else(|_| {
            RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(URING_ENTRIES)
                .enable_timer()
                .build()
        });
        match built {
            Ok(mut rt) => {
                let _ = report.send(Ok(DriverKind::Uring));
                rt.block_on(f());
                return;
            }
            Err(e) if choice == DriverChoice::Uring => {
                let _ = report.send(Err(io::Error::new(
                    e.kind(),
                    format!("io_uring unavailable: {e}"),
                )));
                return;
            }
            Err(_) => {}
        }
    }
    match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
        Ok(mut rt) => {
            let _ = report.send(Ok(DriverKind::Epoll));
            rt.block_on(f());
        }
        Err(e) => {
            let _ = report.send(Err(e));
        }
    }
}

/// Ring setup flags for a thread-per-core server. `COOP_TASKRUN` lets the kernel run
/// completion work when the shard next enters the ring instead of interrupting it with an
/// inter-processor interrupt; `SINGLE_ISSUER` holds because each ring lives on one shard thread.
/// Measured: 11.0 → 9.1 µs of proxy CPU per request (docs/performance.md). `DEFER_TASKRUN`
/// measured no better and would delay completions while a busy shard never waits for events.
fn uring_flags() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun().setup_single_issuer();
    b
}
