//! Per-user request limits (`[users.*.rate_limit]`): at most N requests in any minute, hour
//! or day, counted across every shard.
//!
//! Each window is a ring of buckets (a sixtieth of the window each) holding an atomic count,
//! shared by the shards: the one exception to "shards share nothing", with atomics made for it.
//! A request adds itself to the current bucket of each of its user's windows, then sums the
//! window; over the limit, it takes itself back out and is refused. So:
//!
//! * It is strict: the sum covers the whole window plus the part of the oldest bucket still
//!   within it, so no stretch of one window ever holds more than N admitted requests. The
//!   price is that a request may be refused up to one bucket (1 s of a minute) early.
//! * Two shards racing for the last slot may both be refused; neither gets through twice.
//! * Refused requests are not counted, and neither are requests refused before this check
//!   (bad JSON, unknown or forbidden model): only what reaches the upstream stage spends quota.
//!
//! Only users with a limit pay anything: three short atomic scans per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Buckets per window: a minute is counted by the second, an hour by the minute, a day by
/// 24 minutes.
const BUCKETS: u64 = 60;
/// The ring holds one bucket more than the window, the oldest one partly outside it.
const RING: usize = BUCKETS as usize + 1;

/// Which window refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Minute,
    Hour,
    Day,
}

impl Span {
    pub fn name(self) -> &'static str {
        match self {
            Span::Minute => "minute",
            Span::Hour => "hour",
            Span::Day => "day",
        }
    }

    fn length(self) -> Duration {
        Duration::from_secs(match self {
            Span::Minute => 60,
            Span::Hour => 3600,
            Span::Day => 86_400,
        })
    }
}

/// A refusal: the window that is full, its limit, and when a request would next fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    pub span: Span,
    pub limit: u32,
    pub retry_after: Duration,
}

/// One user's windows.
pub struct Limiter {
    origin: Instant,
    windows: Vec<Window>,
}

struct Window {
    span: Span,
    limit: u32,
    bucket_nanos: u64,
    /// Each slot packs the bucket's number since `origin` (high 32 bits) and its count (low
    /// 32 bits), so a slot is reset and counted in one compare-and-swap.
    ring: Box<[AtomicU64]>,
}

fn pack(epoch: u64, count: u64) -> u64 {
    (epoch << 32) | count
}

fn unpack(v: u64) -> (u64, u64) {
    (v >> 32, v & 0xffff_ffff)
}

impl Limiter {
    /// The limiter for a user's `rate_limit`; `origin` is any instant not after the first
    /// request it will see.
    pub fn new(limit: &RateLimit, origin: Instant) -> Limiter {
        let spans = [
            (Span::Minute, limit.requests_per_minute),
            (Span::Hour, limit.requests_per_hour),
            (Span::Day, limit.requests_per_day),
        ];
        let windows = spans
            .into_iter()
            .filter_map(|(span, n)| {
                Some(Window {
                    span,
                    limit: n?,
                    bucket_nanos: (span.length().as_nanos() as u64) / BUCKETS,
                    ring: (0..RING).map(|_| AtomicU64::new(0)).collect(),
                })
            })
            .collect();
        Limiter { origin, windows }
    }

    /// Counts a request at `now` (read when the request is about to be forwarded, not when it
    /// started: a slow upload must not be filed in the past) if every window has room.
    /// Otherwise counts nothing and names the full window that frees up last, with its wait.
    pub fn admit(&self, now: Instant) -> Result<(), Denied> {
        let since = now.saturating_duration_since(self.origin).as_nanos() as u64;
        // The bucket each window counted this request in, to take it back from.
        let mut counted_in = [0u64; 3];
        for (i, w) in self.windows.iter().enumerate() {
            let epoch = since / w.bucket_nanos;
            counted_in[i] = w.add(epoch);
            let total = w.total(epoch);
            if total <= u64::from(w.limit) {
                continue;
            }
            for (taken, &bucket) in self.windows[..=i].iter().zip(&counted_in) {
                taken.remove(bucket);
            }
            let mut denied = w.denied(epoch, since, total - 1);
            // A wider window may be full too, and free up later: waiting for this one alone
            // would only meet that one's refusal.
            for wider in &self.windows[i + 1..] {
                let epoch = since / wider.bucket_nanos;
                let total = wider.total(epoch);
                if total >= u64::from(wider.limit) {
                    let d = wider.denied(epoch, since, total);
                    if d.retry_after > denied.retry_after {
                        denied = d;
                    }
                }
            }
            return Err(denied);
        }
        Ok(())
    }

    /// Each window's span, limit and the requests it counts at `now` (what the next request
    /// would be checked against).
    pub fn usage(&self, now: Instant) -> Vec<(Span, u32, u64)> {
        let since = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.windows
            .iter()
            .map(|w| (w.span, w.limit, w.total(since / w.bucket_nanos)))
            .collect()
    }
}

impl Window {
    fn slot(&self, epoch: u64) -> &AtomicU64 {
        &self.ring[(epoch % RING as u64) as usize]
    }

    /// Adds one to the bucket of `epoch`, resetting a slot left over from an older turn, and
    /// returns the bucket counted in. A slot already holding a newer bucket (another shard's
    /// clock read came later) is counted in as it is, never moved back.
    fn add(&self, epoch: u64) -> u64 {
        let slot = self.slot(epoch);
        let mut v = slot.load(Ordering::SeqCst);
        loop {
            let (e, c) = unpack(v);
            let (bucket, next) = if e >= epoch {
                (e, pack(e, c + 1))
            } else {
                (epoch, pack(epoch, 1))
            };
            // SeqCst here and in `total`: two requests adding to different buckets must not
            // both miss the other's add when they sum (a store-load order AcqRel leaves open).
            match slot.compare_exchange_weak(v, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return bucket,
                Err(seen) => v = seen,
            }
        }
    }

    /// Takes back one from the bucket of `epoch` (nothing if the slot moved on meanwhile).
    fn remove(&self, epoch: u64) {
        let slot = self.slot(epoch);
        let mut v = slot.load(Ordering::SeqCst);
        loop {
            let (e, c) = unpack(v);
            if e != epoch || c == 0 {
                return;
            }
            match slot.compare_exchange_weak(v, pack(e, c - 1), Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return,
                Err(seen) => v = seen,
            }
        }
    }

    /// Buckets still in the window at `epoch`: the window's own, the partly covered oldest,
    /// and any newer one a shard with a later clock read has already started.
    fn counted(&self, epoch: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ring.iter().filter_map(move |slot| {
            let (e, c) = unpack(slot.load(Ordering::SeqCst));
            (epoch.saturating_sub(e) < RING as u64).then_some((e, c))
        })
    }

    fn total(&self, epoch: u64) -> u64 {
        self.counted(epoch).map(|(_, c)| c).sum()
    }

    /// The refusal of a request that found `others` requests counted.
    fn denied(&self, epoch: u64, since: u64, others: u64) -> Denied {
        Denied {
            span: self.span,
            limit: self.limit,
            retry_after: self.retry_after(epoch, since, others),
        }
    }

    /// How long until enough of the `others` counted requests leave the window for one more
    /// to fit: buckets leave oldest first, each when its last instant is a whole window ago.
    fn retry_after(&self, epoch: u64, since: u64, others: u64) -> Duration {
        let must_leave = others + 1 - u64::from(self.limit);
        let mut buckets: Vec<(u64, u64)> = self.counted(epoch).collect();
        buckets.sort_unstable();
        let mut left = 0;
        for (e, c) in buckets {
            left += c;
            if left >= must_leave {
                let gone_at = (e + RING as u64) * self.bucket_nanos;
                return Duration::from_nanos(gone_at.saturating_sub(since));
            }
        }
        // Everything counted now is gone after one ring, whatever raced in meanwhile.
        Duration::from_nanos(RING as u64 * self.bucket_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(minute: Option<u32>, hour: Option<u32>, day: Option<u32>) -> RateLimit {
        RateLimit {
            requests_per_minute: minute,
            requests_per_hour: hour,
            requests_per_day: day,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn admits_the_limit_then_refuses_until_the_oldest_leave() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(3), None, None), t0);
        for i in 0..3 {
            assert_eq!(l.admit(t0 + secs(0.5 + f64::from(i))), Ok(()));
        }
        let denied = l.admit(t0 + secs(10.0)).unwrap_err();
        assert_eq!((denied.span, denied.limit), (Span::Minute, 3));
        // The first request (bucket 0) stops counting when bucket 61 starts: at 61 s.
        assert_eq!(denied.retry_after, secs(51.0));
        // Refusals are not counted: after the first request leaves, exactly one fits.
        assert!(
            l.admit(t0 + secs(60.9)).is_err(),
            "one bucket early at most"
        );
        assert_eq!(l.admit(t0 + secs(61.0)), Ok(()));
        assert!(l.admit(t0 + secs(61.1)).is_err());
    }

    #[test]
    fn no_stretch_of_a_window_ever_holds_more_than_the_limit() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(10), None, None), t0);
        // Ten minutes of irregular arrivals (gaps of 0 to 1.2 s, bursts included) from a
        // fixed pseudo-random sequence; the admitted ones are remembered.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut at = Duration::ZERO;
        let mut admitted = Vec::new();
        while at < secs(600.0) {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let gap = (state >> 33) % 1200;
            at += Duration::from_millis(if gap < 300 { 0 } else { gap });
            if l.admit(t0 + at).is_ok() {
                admitted.push(at);
            }
        }
        for (i, &a) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|&&b| b < a + secs(60.0))
                .count();
            assert!(within <= 10, "{within} admitted in the minute from {a:?}");
        }
        // And not much stricter: close to 10 a minute over the ten minutes.
        assert!(admitted.len() >= 90, "{}", admitted.len());
    }

    #[test]
    fn every_window_counts_and_a_refusal_takes_back_what_the_narrower_ones_counted() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(2), Some(3), None), t0);
        assert!(l.admit(t0).is_ok());
        assert!(l.admit(t0 + secs(1.0)).is_ok());
        assert_eq!(l.admit(t0 + secs(2.0)).unwrap_err().span, Span::Minute);
        assert!(l.admit(t0 + secs(70.0)).is_ok());
        let denied = l.admit(t0 + secs(130.0)).unwrap_err();
        assert_eq!((denied.span, denied.limit), (Span::Hour, 3));
        // The hour's refusal took back what the minute had counted: only the request at 70 s
        // is in the minute now.
        let minute = &l.windows[0];
        assert_eq!(minute.total(130), 1);
        assert_eq!(l.windows[1].total(2), 3);
    }

    #[test]
    fn a_later_check_with_an_earlier_clock_read_still_sees_the_newer_bucket() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(1), None, None), t0);
        assert!(l.admit(t0 + secs(1.2)).is_ok());
        // Another shard read its clock a little earlier but checks after.
        assert!(l.admit(t0 + secs(0.5)).is_err());
    }

    #[test]
    fn a_clock_read_a_whole_ring_old_never_rewinds_a_slot() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(2), None, None), t0);
        assert!(l.admit(t0 + secs(61.5)).is_ok());
        assert!(l.admit(t0 + secs(61.6)).is_ok());
        let _ = l.admit(t0 + secs(0.5));
        assert!(l.admit(t0 + secs(61.7)).is_err());
        assert_eq!(l.windows[0].total(61), 2);
    }

    #[test]
    fn retry_after_waits_for_the_window_that_frees_up_last() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(1), Some(1), None), t0);
        assert!(l.admit(t0).is_ok());
        let d = l.admit(t0 + secs(10.0)).unwrap_err();
        assert_eq!(d.span, Span::Hour);
        assert!(l.admit(t0 + secs(10.0) + d.retry_after).is_ok());
    }

    #[test]
    fn usage_reports_what_each_window_counts() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(Some(2), None, Some(5)), t0);
        assert!(l.admit(t0).is_ok());
        assert!(l.admit(t0 + secs(1.0)).is_ok());
        assert!(l.admit(t0 + secs(2.0)).is_err());
        assert_eq!(
            l.usage(t0 + secs(2.0)),
            vec![(Span::Minute, 2, 2), (Span::Day, 5, 2)]
        );
        assert_eq!(
            l.usage(t0 + secs(90.0)),
            vec![(Span::Minute, 2, 0), (Span::Day, 5, 2)]
        );
    }

    #[test]
    fn a_day_limit_alone_counts_by_24_minute_buckets() {
        let t0 = Instant::now();
        let l = Limiter::new(&limit(None, None, Some(1)), t0);
        assert!(l.admit(t0 + secs(5.0)).is_ok());
        let denied = l.admit(t0 + Duration::from_secs(3600)).unwrap_err();
        assert_eq!(denied.span, Span::Day);
        // Bucket 0 leaves when bucket 61 starts: 61 × 24 min.
        assert_eq!(denied.retry_after, Duration::from_secs(61 * 24 * 60 - 3600));
        assert!(l.admit(t0 + Duration::from_secs(61 * 24 * 60)).is_ok());
    }

    #[test]
    fn shards_racing_never_admit_more_than_the_limit() {
        let t0 = Instant::now();
        let l = std::sync::Arc::new(Limiter::new(&limit(Some(1000), None, None), t0));
        let now = t0 + secs(1.0);
        let admitted: usize = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..2000).filter(|_| l.admit(now).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert!(admitted <= 1000, "{admitted}");
        assert!(admitted >= 990, "{admitted}");
        assert_eq!(
            l.windows[0]
                .total(now.duration_since(t0).as_nanos() as u64 / l.windows[0].bucket_nanos),
            admitted as u64
        );
    }
}
