//! The circuit breaker of one (model, backend): a pure state machine, `(state, event, now)` in,
//! state out. It decides only whether traffic may go to the backend now; how much traffic a
//! recovering backend gets is the recovery ramp's job (`balance::health_ramp`).
//!
//! ```text
//! Closed --threshold consecutive failures--> Open --timeout--> HalfOpen --probe ok--> Closed
//!    ^                                         ^                  | probe failed
//!    |                                         +------------------+
//! ```
//! A 429 with `Retry-After` is not a failure of the backend's health: it cools the backend down
//! for exactly that long, in any state, and then lets it be.

use std::time::{Duration, Instant};

/// Longest cool-down a `Retry-After` may impose; a larger value is clamped, so a bogus header
/// cannot remove a backend for days.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive backend failures that open the circuit (`circuit_breaker_failure_threshold`).
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe is allowed (`circuit_breaker_timeout_seconds`).
    pub open_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe may go; `probing` once it has been sent and its result is awaited.
    HalfOpen {
        probing: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub circuit: Circuit,
    /// Set by a 429 with `Retry-After`: no traffic before this instant.
    pub cool_until: Option<Instant>,
    /// Successes since the circuit closed after a probe, while traffic ramps back; `None` once
    /// the backend has its full share again.
    pub ramp: Option<u8>,
}

/// Traffic share after a circuit closes, by successes since: Berry API's documented ramp.
/// A failure during the ramp opens the circuit again: the backend has not earned trust yet.
const RAMP: [(u8, f64); 3] = [(0, 0.1), (1, 0.3), (3, 0.5)];
/// Successes after which a recovered backend gets its full share.
const RAMP_DONE: u8 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The backend answered (a 2xx, or a client error that says nothing about it).
    Success,
    /// A failure the backend is to blame for (connect, timeout, 5xx, broken stream, bad key).
    Failure,
    /// A 429; with `Retry-After` when the upstream sent one.
    RateLimited { retry_after: Option<Duration> },
    /// A half-open probe (live request or active check) was sent.
    ProbeSent,
}

/// May a request go to the backend now?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Allowed as the single half-open probe; the caller must report `ProbeSent`.
    Probe,
    Deny,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            circuit: Circuit::Closed {
                consecutive_failures: 0,
            },
            cool_until: None,
            ramp: None,
        }
    }
}

impl Breaker {
    /// The state after `event` at `now`.
    #[must_use]
    pub fn on(self, event: Event, now: Instant, cfg: &BreakerConfig) -> Breaker {
        // Time passes first: an open circuit whose timeout expired is half-open for this event.
        let current = self.advance(now);
        let mut next = current;
        let reopen = Circuit::Open {
            until: now + cfg.open_for,
        };
        match event {
            Event::RateLimited {
                retry_after: Some(d),
            } => {
                next.cool_until = Some(now + d.min(RETRY_AFTER_MAX));
                // A rate limit proves the backend is up: a pending probe succeeded.
                if let Circuit::HalfOpen { .. } = current.circuit {
                    next.circuit = Circuit::Closed {
                        consecutive_failures: 0,
                    };
                }
            }
            // Without a Retry-After, a 429 counts as a failure like any overload signal.
            Event::RateLimited { retry_after: None } | Event::Failure => {
                next.ramp = None;
                next.circuit = match current.circuit {
                    // A failure while traffic ramps back: the backend has not earned trust yet.
                    Circuit::Closed { .. } if current.ramp.is_some() => reopen,
                    Circuit::Closed {
                        consecutive_failures,
                    } => {
                        let n = consecutive_failures.saturating_add(1);
                        if n >= cfg.failure_threshold.max(1) {
                            reopen
                        } else {
                            Circuit::Closed {
                                consecutive_failures: n,
                            }
                        }
                    }
                    Circuit::HalfOpen { .. } => reopen,
                    open @ Circuit::Open { .. } => open,
                };
            }
            Event::Success => match current.circuit {
                // Late successes of requests sent before the circuit opened do not close it:
                // only the probe's result decides.
                Circuit::Open { .. } => {}
                Circuit::HalfOpen { .. } => {
                    next.circuit = Circuit::Closed {
                        consecutive_failures: 0,
                    };
                    next.ramp = Some(0);
                }
                Circuit::Closed { .. } => {
                    next.circuit = Circuit::Closed {
                        consecutive_failures: 0,
                    };
                    next.ramp = current
                        .ramp
                        .map(|n| n.saturating_add(1))
                        .filter(|&n| n < RAMP_DONE);
                }
            },
            Event::ProbeSent => {
                if let Circuit::HalfOpen { .. } = current.circuit {
                    next.circuit = Circuit::HalfOpen { probing: true };
                }
            }
        }
        next
    }

    /// The probe in flight was abandoned (its request was cancelled): another may go.
    #[must_use]
    pub fn release_probe(self, now: Instant) -> Breaker {
        let mut next = self.advance(now);
        if let Circuit::HalfOpen { probing: true } = next.circuit {
            next.circuit = Circuit::HalfOpen { probing: false };
        }
        next
    }

    /// Applies the passage of time: an expired open state becomes half-open, an expired
    /// cool-down ends.
    #[must_use]
    pub fn advance(mut self, now: Instant) -> Breaker {
        if let Circuit::Open { until } = self.circuit {
            if now >= until {
                self.circuit = Circuit::HalfOpen { probing: false };
            }
        }
        if self.cool_until.is_some_and(|t| now >= t) {
            self.cool_until = None;
        }
        self
    }

    pub fn admission(&self, now: Instant) -> Admission {
        if self.cool_until.is_some_and(|t| now < t) {
            return Admission::Deny;
        }
        match self.advance(now).circuit {
            Circuit::Closed { .. } => Admission::Allow,
            Circuit::HalfOpen { probing: false } => Admission::Probe,
            Circuit::HalfOpen { probing: true } | Circuit::Open { .. } => Admission::Deny,
        }
    }

    /// Share of its normal traffic the backend gets now: 1.0, or the ramp's step after a
    /// recovery.
    pub fn traffic_factor(&self) -> f64 {
        match self.ramp {
            None => 1.0,
            Some(n) => RAMP
                .iter()
                .rev()
                .find(|(from, _)| n >= *from)
                .map_or(RAMP[0].1, |(_, f)| *f),
        }
    }

    pub fn name(&self) -> &'static str {
        match self.circuit {
            Circuit::Closed { .. } => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: BreakerConfig = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(60),
    };

    fn run(events: &[(Event, u64)]) -> (Breaker, Instant) {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for &(e, at) in events {
            b = b.on(e, t0 + Duration::from_secs(at), &CFG);
        }
        (b, t0)
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let (b, t0) = run(&[
            (Event::Failure, 0),
            (Event::Failure, 1),
            (Event::Success, 2),
            (Event::Failure, 3),
            (Event::Failure, 4),
        ]);
        assert_eq!(
            b.circuit,
            Circuit::Closed {
                consecutive_failures: 2
            }
        );
        assert_eq!(b.admission(t0 + Duration::from_secs(5)), Admission::Allow);
        let b = b.on(Event::Failure, t0 + Duration::from_secs(5), &CFG);
        assert_eq!(
            b.circuit,
            Circuit::Open {
                until: t0 + Duration::from_secs(65)
            }
        );
        assert_eq!(b.admission(t0 + Duration::from_secs(64)), Admission::Deny);
    }

    #[test]
    fn half_open_allows_exactly_one_probe_then_closes_or_reopens() {
        let (b, t0) = run(&[
            (Event::Failure, 0),
            (Event::Failure, 0),
            (Event::Failure, 0),
        ]);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(b.admission(at(59)), Admission::Deny);
        assert_eq!(b.admission(at(60)), Admission::Probe);
        let probing = b.on(Event::ProbeSent, at(60), &CFG);
        assert_eq!(
            probing.admission(at(61)),
            Admission::Deny,
            "only one probe at a time"
        );
        let closed = probing.on(Event::Success, at(62), &CFG);
        assert_eq!(closed.admission(at(62)), Admission::Allow);
        let reopened = probing.on(Event::Failure, at(62), &CFG);
        assert_eq!(reopened.circuit, Circuit::Open { until: at(122) });
        assert_eq!(reopened.admission(at(121)), Admission::Deny);
        assert_eq!(reopened.admission(at(122)), Admission::Probe);
    }

    #[test]
    fn after_closing_traffic_ramps_10_30_50_100_and_a_failure_reopens() {
        let (b, t0) = run(&[
            (Event::Failure, 0),
            (Event::Failure, 0),
            (Event::Failure, 0),
        ]);
        let at = |s| t0 + Duration::from_secs(s);
        let mut b = b
            .on(Event::ProbeSent, at(60), &CFG)
            .on(Event::Success, at(61), &CFG);
        let mut factors = vec![b.traffic_factor()];
        for i in 0..5 {
            b = b.on(Event::Success, at(62 + i), &CFG);
            factors.push(b.traffic_factor());
        }
        assert_eq!(factors, [0.1, 0.3, 0.3, 0.5, 0.5, 1.0]);
        let mut r = Breaker::default().on(Event::Failure, at(0), &CFG);
        r.ramp = Some(2);
        let r = r.on(Event::Failure, at(1), &CFG);
        assert!(
            matches!(r.circuit, Circuit::Open { .. }),
            "a failure while ramping reopens"
        );
    }

    #[test]
    fn failure_after_the_open_timeout_reopens_without_a_probe_sent() {
        let (b, t0) = run(&[
            (Event::Failure, 0),
            (Event::Failure, 0),
            (Event::Failure, 0),
        ]);
        let b = b.on(Event::Failure, t0 + Duration::from_secs(61), &CFG);
        assert_eq!(
            b.circuit,
            Circuit::Open {
                until: t0 + Duration::from_secs(121)
            }
        );
    }

    #[test]
    fn late_success_does_not_close_an_open_circuit() {
        let (b, t0) = run(&[
            (Event::Failure, 0),
            (Event::Failure, 0),
            (Event::Failure, 0),
            (Event::Success, 1),
        ]);
        assert_eq!(b.admission(t0 + Duration::from_secs(2)), Admission::Deny);
    }

    #[test]
    fn retry_after_cools_down_for_exactly_that_long() {
        let (b, t0) = run(&[(
            Event::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            },
            10,
        )]);
        assert_eq!(
            b.admission(t0 + Duration::from_millis(16_999)),
            Admission::Deny
        );
        assert_eq!(b.admission(t0 + Duration::from_secs(17)), Admission::Allow);
        assert_eq!(
            b.circuit,
            Circuit::Closed {
                consecutive_failures: 0
            },
            "not a health failure"
        );
        let (b, t0) = run(&[(
            Event::RateLimited {
                retry_after: Some(Duration::from_secs(86_400)),
            },
            0,
        )]);
        assert_eq!(
            b.admission(t0 + RETRY_AFTER_MAX),
            Admission::Allow,
            "clamped"
        );
    }

    #[test]
    fn rate_limit_without_retry_after_counts_as_failure() {
        let r = Event::RateLimited { retry_after: None };
        let (b, _) = run(&[(r, 0), (r, 0), (r, 0)]);
        assert!(matches!(b.circuit, Circuit::Open { .. }));
    }
}
