//! A `log` backend that never blocks the caller: records go through a bounded queue to one
//! writer thread that owns stderr. When the queue is full the record is dropped and counted.
//!
//! Filtering follows `RUST_LOG` (env_logger syntax); the default is `info`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

/// Records buffered between the shards and the writer thread.
const QUEUE_RECORDS_MAX: usize = 16 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUE: OnceLock<Sender<String>> = OnceLock::new();

static FILTER: RwLock<Option<env_filter::Filter>> = RwLock::new(None);

struct QueueLogger {
    tx: Sender<String>,
}

impl log::Log for QueueLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let f = FILTER.read().unwrap_or_else(|e| e.into_inner());
        f.as_ref().is_some_and(|f| f.enabled(metadata))
    }

    fn log(&self, record: &log::Record<'_>) {
        {
            let f = FILTER.read().unwrap_or_else(|e| e.into_inner());
            if !f.as_ref().is_some_and(|f| f.matches(record)) {
                return;
            }
        }
        let line = format!(
            "{} {:<5} {}: {}\n",
            rfc3339(SystemTime::now()),
            record.level(),
            record.target(),
            record.args()
        );
        if self.tx.try_send(line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once per process; later calls are no-ops (tests boot many servers).
pub fn init() {
    if QUEUE.get().is_some() {
        return;
    }
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let (tx, rx) = crossbeam_channel::bounded::<String>(QUEUE_RECORDS_MAX);
    if QUEUE.set(tx.clone()).is_err() {
        return;
    }
    if log::set_boxed_logger(Box::new(QueueLogger { tx })).is_ok() {
        set_filter(&spec);
        let _ = std::thread::Builder::new()
            .name("berry-log".into())
            .spawn(move || {
                crate::runtime::background_priority();
                writer(rx)
            });
    }
}

/// Replaces the filter (env_logger syntax).
fn set_filter(spec: &str) {
    let mut builder = env_filter::Builder::new();
    builder.parse(spec);
    let filter = builder.build();
    log::set_max_level(filter.filter());
    *FILTER.write().unwrap_or_else(|e| e.into_inner()) = Some(filter);
}

/// Applies the config's `log_level` unless `RUST_LOG` is set (the environment wins).
pub fn configure(level: &str) {
    if std::env::var_os("RUST_LOG").is_none() && QUEUE.get().is_some() {
        set_filter(level);
    }
}

fn writer(rx: Receiver<String>) {
    let stderr = std::io::stderr();
    while let Ok(line) = rx.recv() {
        let mut out = stderr.lock();
        let _ = out.write_all(line.as_bytes());
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

/// Waits (bounded) until queued records are written; call before the process exits.
pub fn flush() {
    if let Some(tx) = QUEUE.get() {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while !tx.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The writer may still hold the last batch.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Records dropped because the queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// `2026-11-26T07:01:02.123Z` without a date-time dependency.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(&mut out, t);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends `t` as [`rfc3339`] does, without allocating (the access log writes one per line).
pub fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let digits = |out: &mut Vec<u8>, v: u64, width: u32| {
        for i in (0..width).rev() {
            out.push(b'0' + (v / 10u64.pow(i) % 10) as u8);
        }
    };
    digits(out, y.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    digits(out, m.into(), 2);
    out.push(b'-');
    digits(out, day.into(), 2);
    out.push(b'T');
    digits(out, rem / 3600, 2);
    out.push(b':');
    digits(out, (rem / 60) % 60, 2);
    out.push(b':');
    digits(out, rem % 60, 2);
    out.push(b'.');
    digits(out, d.subsec_millis().into(), 3);
    out.push(b'Z');
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
