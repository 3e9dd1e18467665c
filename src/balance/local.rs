//! One shard's balancing state for every model: a [`Balancer`] per model, and per backend the
//! outcome tracker and the circuit breaker. Owned by the shard (no locks); rebuilt with the
//! routes. When the shared snapshot lands, breakers and the cross-shard parts of the trackers
//! move there and this keeps what is truly local (in-flight counts, strategy state).

use std::time::{Duration, Instant};

use super::outcome::OutcomeClass;
use super::tracker::BackendStats;
use super::{filter, BackendView, Balancer, Choice, PickRequest};
use crate::config::Config;
use crate::health::breaker::{Admission, Breaker, BreakerConfig, Event};
use crate::health::snapshot::Snapshot;

pub struct LocalBalance {
    balancers: Vec<Balancer>,
    stats: Vec<Vec<BackendStats>>,
    breakers: Vec<Vec<Breaker>>,
    breaker_cfg: BreakerConfig,
    /// Reused per pick so that picking never allocates.
    candidates: Vec<usize>,
    views: Vec<BackendView>,
}

/// What became of one attempt, for the tracker and the breaker.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub class: OutcomeClass,
    /// From sending the request to the response head (or to the failure).
    pub elapsed: Duration,
    /// A 429's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl LocalBalance {
    pub fn new(config: &Config) -> LocalBalance {
        let knobs = &config.settings.smart_ai;
        let widest = config
            .models
            .iter()
            .map(|m| m.backends.len())
            .max()
            .unwrap_or(0);
        LocalBalance {
            balancers: config
                .models
                .iter()
                .map(|m| Balancer::new(m.strategy, m, &config.settings))
                .collect(),
            stats: config
                .models
                .iter()
                .map(|m| {
                    m.backends
                        .iter()
                        .map(|_| BackendStats::new(knobs))
                        .collect()
                })
                .collect(),
            breakers: config
                .models
                .iter()
                .map(|m| vec![Breaker::default(); m.backends.len()])
                .collect(),
            breaker_cfg: BreakerConfig {
                failure_threshold: config.settings.circuit_breaker_failure_threshold,
                open_for: config.settings.circuit_breaker_timeout,
            },
            candidates: Vec::with_capacity(widest),
            views: Vec::with_capacity(widest),
        }
    }

    /// Picks a backend of `model` among those `filter` admits, and counts it in flight.
    /// `None` when no backend is admitted at all.
    ///
    /// The strategy inputs that must agree across shards (confidence, recovery stage, latency
    /// estimates, breaker state) come from the control thread's `snapshot`; this shard's own
    /// breaker additionally reacts at once to failures it saw itself, before the next snapshot
    /// could; in-flight counts are this shard's.
    #[allow(clippy::too_many_arguments)]
    pub fn pick(
        &mut self,
        config: &Config,
        model: usize,
        filter: &filter::Filter<'_>,
        req: &PickRequest,
        snapshot: &Snapshot,
        shard: usize,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Option<Choice> {
        let m = &config.models[model];
        filter::collect(config, m, filter, &mut self.candidates);
        if self.candidates.is_empty() {
            return None;
        }
        let knobs = &config.settings.smart_ai;
        self.views.clear();
        for (i, b) in m.backends.iter().enumerate() {
            let local_ok = self.breakers[model][i].admission(now) != Admission::Deny;
            let stats = &self.stats[model][i];
            // After a circuit closes the backend's weight ramps back (10/30/50/100 %).
            let local_factor = self.breakers[model][i].traffic_factor();
            let view = match snapshot.backend(model, i) {
                Some(snap) => {
                    let factor = snap.breaker.traffic_factor().min(local_factor);
                    BackendView {
                        available: self.available(model, i, snapshot, shard, now),
                        inflight: stats.inflight,
                        weight: super::ramped_weight(m.strategy, b.weight, factor),
                        ..snap.view.clone()
                    }
                }
                None => BackendView {
                    weight: super::ramped_weight(m.strategy, b.weight, local_factor),
                    ..stats.view(b, local_ok, now, knobs)
                },
            };
            self.views.push(view);
        }
        let choice = self.balancers[model].pick(&self.candidates, &self.views, req, rng)?;
        let breaker = &mut self.breakers[model][choice.backend];
        if breaker.admission(now) == Admission::Probe {
            *breaker = breaker.on(Event::ProbeSent, now, &self.breaker_cfg);
        }
        self.stats[model][choice.backend].begin();
        Some(choice)
    }

    /// May this shard send backend `i` of `model` traffic now? Its own breaker must allow it,
    /// and the snapshot's; a half-open backend takes only the one probe, from the designated
    /// shard (the book hears its result within a report, and the next snapshot closes or
    /// reopens the circuit).
    fn available(
        &self,
        model: usize,
        i: usize,
        snapshot: &Snapshot,
        shard: usize,
        now: Instant,
    ) -> bool {
        let local_ok = self.breakers[model][i].admission(now) != Admission::Deny;
        match snapshot.backend(model, i) {
            Some(snap) => {
                let probing_here = snap.is_probe_for(shard, now);
                local_ok
                    && snap.admits(shard, now)
                    && !(probing_here && self.stats[model][i].inflight > 0)
            }
            None => local_ok,
        }
    }

    /// Would [`pick`](Self::pick) find a backend `filter` admits that may take traffic now
    /// (rather than a degraded choice among unavailable ones)?
    pub fn has_available(
        &self,
        config: &Config,
        model: usize,
        filter: &filter::Filter<'_>,
        snapshot: &Snapshot,
        shard: usize,
        now: Instant,
    ) -> bool {
        let m = &config.models[model];
        (m.backends.iter().enumerate()).any(|(i, b)| {
            filter.admits(config, i, b) && self.available(model, i, snapshot, shard, now)
        })
    }

    /// Records how an attempt picked by [`pick`](Self::pick) ended; exactly once per pick.
    pub fn finish(
        &mut self,
        config: &Config,
        model: usize,
        backend: usize,
        outcome: Outcome,
        now: Instant,
    ) {
        // Confidence, recovery stage and latency are learned once, on the control thread, from
        // this shard's report (the snapshot carries them back); here only the count changes.
        let _ = config;
        let stats = &mut self.stats[model][backend];
        stats.inflight = stats.inflight.saturating_sub(1);
        let event = match outcome.class {
            OutcomeClass::ClientError => {
                // The client's mistake is no verdict on the backend; a probe it answered may go
                // again.
                let b = &mut self.breakers[model][backend];
                *b = b.release_probe(now);
                return;
            }
            OutcomeClass::Success => Event::Success,
            OutcomeClass::RateLimited => Event::RateLimited {
                retry_after: outcome.retry_after,
            },
            _ => Event::Failure,
        };
        let b = &mut self.breakers[model][backend];
        *b = b.on(event, now, &self.breaker_cfg);
    }

    /// An attempt that ended without an outcome (the client went away): out of flight, no
    /// blame, and a half-open probe it held may be sent again.
    pub fn cancel(&mut self, model: usize, backend: usize, now: Instant) {
        if let Some(s) = self.stats.get_mut(model).and_then(|m| m.get_mut(backend)) {
            s.inflight = s.inflight.saturating_sub(1);
        }
        if let Some(b) = self
            .breakers
            .get_mut(model)
            .and_then(|m| m.get_mut(backend))
        {
            *b = b.release_probe(now);
        }
    }

    /// In-flight attempts per model and backend, for the shard's report.
    pub fn inflight(&self) -> Vec<Vec<u32>> {
        self.stats
            .iter()
            .map(|m| m.iter().map(|s| s.inflight).collect())
            .collect()
    }
}
