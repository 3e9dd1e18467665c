//! The control thread: the only place that talks to every shard.
//!
//! Shards never share mutable state; what must agree across them travels as a closed set of
//! messages. Shards send [`ShardReport`]s (outcomes of their requests); the control thread
//! folds them into the [`HealthBook`] together with active health-check results, and publishes
//! a [`Snapshot`] at most `snapshot_interval_ms` apart. It also refreshes upstream DNS off the
//! shards. Shards poll their inbox on a timer (monoio's cross-thread wakers need its `sync`
//! feature, which costs every task a little).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::health::book::HealthBook;
use crate::health::probe::{self, ProbeResult};
use crate::health::report::{ReportBuffers, ShardReport};
use crate::health::snapshot::Snapshot;
use crate::routes::{resolve_all, AddressTable, Routes};
use crate::runtime::Shutdown;
use crate::telemetry::access::AccessLog;
use crate::telemetry::exporter::Exporter;

/// How often upstream host names are resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(30);
/// Longest wait for a report before checking shutdown and timers.
const TICK: Duration = Duration::from_millis(20);

/// The control thread's share of observability: the metrics writer, and the access log's
/// drop counter.
pub struct Telemetry {
    pub exporter: Option<Exporter>,
    pub access: Option<AccessLog>,
}

/// Messages a shard's inbox holds (it drains it every shard tick).
pub const SHARD_INBOX: usize = 64;

/// Everything a shard can be told.
pub enum ShardMsg {
    /// Fresh upstream addresses, indexed like `Config.providers`.
    Addresses(Arc<AddressTable>),
    /// The latest health snapshot.
    Snapshot(Arc<Snapshot>),
    /// A folded report's buffers, for the shard's next report.
    Recycle(ReportBuffers),
}

pub fn spawn(
    routes: Arc<Routes>,
    addresses: Arc<AddressTable>,
    shards: Vec<Sender<ShardMsg>>,
    reports: Receiver<ShardReport>,
    telemetry: Telemetry,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let (probe_tx, probes) = crossbeam_channel::unbounded::<ProbeResult>();
    // Blocking work (probes, DNS) runs on the probe thread, so snapshots are never late.
    let prober = probe::spawn(
        routes.clone(),
        probe_tx,
        shards.clone(),
        addresses,
        shutdown.clone(),
    )?;
    std::thread::Builder::new()
        .name("berry-control".into())
        .spawn(move || {
            crate::runtime::background_priority();
            let settings = &routes.config.settings;
            let mut book = HealthBook::new(routes.config.clone(), shards.len(), Instant::now());
            let mut next_snapshot = Instant::now();
            let Telemetry {
                mut exporter,
                access,
            } = telemetry;
            let view = exporter.as_ref().map(Exporter::view);
            let mut last_snap: Option<Arc<Snapshot>> = None;
            let fold = |book: &mut HealthBook, x: &mut Option<Exporter>, report: &ShardReport| {
                let now = Instant::now();
                book.apply(report, now);
                if let Some(x) = x.as_mut() {
                    x.apply(report, now);
                }
            };
            while !shutdown.is_triggered() {
                let wait = next_snapshot
                    .saturating_duration_since(Instant::now())
                    .min(TICK);
                match reports.recv_timeout(wait) {
                    Ok(report) => {
                        fold(&mut book, &mut exporter, &report);
                        recycle(&shards, report);
                        // Drain what else is queued before publishing: one snapshot per burst.
                        while let Ok(more) = reports.try_recv() {
                            fold(&mut book, &mut exporter, &more);
                            recycle(&shards, more);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if let Some(v) = &view {
                    v.serve_pending();
                }
                let now = Instant::now();
                while let Ok(p) = probes.try_recv() {
                    book.apply_probe(p.model, p.backend, p.class, now);
                }
                if now >= next_snapshot {
                    next_snapshot = now + settings.snapshot_interval;
                    let snap = Arc::new(book.snapshot(now));
                    log_circuit_changes(&routes.config, last_snap.as_deref(), &snap, now);
                    last_snap = Some(snap.clone());
                    broadcast(&shards, || ShardMsg::Snapshot(snap.clone()));
                    if let Some(x) = exporter.as_mut() {
                        let access_dropped = access.as_ref().map_or(0, AccessLog::dropped);
                        x.apply_snapshot(&snap, now, crate::logging::dropped(), access_dropped);
                    }
                }
            }
            let _ = prober.join();
        })
}

/// Logs each backend whose circuit changed state since the previous snapshot, so an operator
/// reads a backend leaving and coming back once, not a line per failed request.
fn log_circuit_changes(
    config: &crate::config::Config,
    prev: Option<&Snapshot>,
    next: &Snapshot,
    now: Instant,
) {
    for (mi, m) in config.models.iter().enumerate() {
        for (bi, b) in m.backends.iter().enumerate() {
            let Some(s) = next.backend(mi, bi) else {
                continue;
            };
            // Each as of when it was taken: an open circuit whose timeout has passed reads
            // half-open, as the shards treat it.
            let was = prev.and_then(|p| {
                let at = p.taken.unwrap_or(now);
                p.backend(mi, bi).map(|b| b.breaker.advance(at).name())
            });
            let was = was.unwrap_or("closed");
            let is = s.breaker.advance(now).name();
            if was == is {
                continue;
            }
            let provider = &config.providers[b.provider].id;
            if is == "open" {
                // Either rule may have opened it: consecutive failures, or the error rate.
                log::warn!(
                    "circuit of {provider}/{} (model `{}`) {was} -> open ({} consecutive \
                     failure(s); {} of {} requests failed in the window)",
                    b.model,
                    m.name,
                    s.consecutive_failures,
                    s.failures_window,
                    s.requests_window
                );
            } else {
                log::info!(
                    "circuit of {provider}/{} (model `{}`) {was} -> {is}",
                    b.model,
                    m.name
                );
            }
        }
    }
}

/// Re-resolves upstream hosts every [`DNS_REFRESH`] and tells the shards when anything
/// changed; called from the probe thread's loop.
pub fn refresh_dns(
    routes: &Routes,
    table: &mut AddressTable,
    last: &mut Instant,
    shards: &[Sender<ShardMsg>],
) {
    if last.elapsed() < DNS_REFRESH {
        return;
    }
    *last = Instant::now();
    if refresh(table, resolve_all(&routes.config)) {
        let shared = Arc::new(table.clone());
        broadcast(shards, || ShardMsg::Addresses(shared.clone()));
    }
}

/// Merges a fresh resolution into `table`: a provider whose lookup failed (empty) keeps its
/// previous addresses, so one DNS hiccup never empties a working provider. True if changed.
fn refresh(table: &mut AddressTable, fresh: AddressTable) -> bool {
    let mut changed = false;
    for (old, new) in table.iter_mut().zip(fresh) {
        if !new.is_empty() && *old != new {
            *old = new;
            changed = true;
        }
    }
    changed
}

/// Sends a folded report's buffers back to its shard (dropped if its inbox is full).
fn recycle(shards: &[Sender<ShardMsg>], report: ShardReport) {
    // Only into a half-empty inbox: snapshots and addresses must always find room.
    if let Some(s) = shards
        .get(report.shard)
        .filter(|s| s.len() < SHARD_INBOX / 2)
    {
        let _ = s.try_send(ShardMsg::Recycle(report.into_buffers()));
    }
}

/// Sends to every shard without blocking: a full inbox means the shard is stuck; addresses are
/// sent again on the next change, snapshots every period.
fn broadcast(shards: &[Sender<ShardMsg>], msg: impl Fn() -> ShardMsg) {
    for s in shards {
        let _ = s.try_send(msg());
    }
}

#[cfg(test)]
mod tests {
    use super::refresh;

    #[test]
    fn failed_lookups_keep_the_previous_addresses() {
        let a = "127.0.0.1:1".parse().unwrap();
        let b = "127.0.0.1:2".parse().unwrap();
        let mut table = vec![vec![a], vec![a]];
        assert!(!refresh(&mut table, vec![vec![], vec![a]]));
        assert_eq!(table, vec![vec![a], vec![a]]);
        assert!(refresh(&mut table, vec![vec![b], vec![]]));
        assert_eq!(table, vec![vec![b], vec![a]]);
    }
}
