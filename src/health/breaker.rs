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
}

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
        match event {
            Event::RateLimited {
                retry_after: Some(d),
            } => {
                next.cool_until = Some(now + d.min(RETRY_AFTER_MAX));
                // A rate limit proves the backend is up: a pending probe succeeded.
                if let Circuit::HalfOpen { .. } = self.circuit {
                    next.circuit = Circuit::Closed {
                        consecutive_failures: 0,
                    };
                }
            }
            // Without a Retry-After, a 429 counts as a failure like any overload signal.
            Event::RateLimited { retry_after: None } | Event::Failure => {
                next.circuit = match self.circuit {
                    Circuit::Closed {
                        consecutive_failures,
                    } => {
                        let n = consecutive_failures.saturating_add(1);
                        if n >= cfg.failure_threshold.max(1) {
                            Circuit::Open {
                                until: now + cfg.open_for,
                            }
                        } else {
                            Circuit::Closed {
                                consecutive_failures: n,
                            }
                        }
                    }
                    Circuit::HalfOpen { .. } => Circuit::Open {
                        until: now + cfg.open_for,
                    },
                    open @ Circuit::Open { .. } => open,
                };
            }
            Event::Success => {
                next.circuit = match current.circuit {
                    // Late successes of requests sent before the circuit opened do not close it:
                    // only the probe's result decides.
                    open @ Circuit::Open { .. } => open,
                    _ => Circuit::Closed {
                        consecutive_failures: 0,
                    },
                };
            }
            Event::ProbeSent => {
                if let Circuit::HalfOpen { .. } = current.circuit {
                    next.circuit = Circuit::HalfOpen { probing: true };
                }
            }
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
