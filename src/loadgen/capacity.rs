//! The answers drawn from measured steps: Berry's added latency against a direct-to-mock
//! baseline, and how many cores a target rate needs at the measured CPU cost per request.

use serde::Serialize;

use super::harness::{Series, Step};
use super::scenario::Scenario;

/// Share of each core a projection plans to use; the rest is headroom for bursts, GC-free as
/// Berry is, and for the kernel's network stack, which `/proc` charges partly elsewhere.
pub const UTILISATION: f64 = 0.7;

#[derive(Clone, Debug, Serialize)]
pub struct Added {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Berry minus direct, at the same offered load.
#[derive(Clone, Debug, Serialize)]
pub struct Compare {
    pub offered_rate: Option<f64>,
    /// From the scheduled time (open loop), so queueing counts.
    pub added: Added,
    /// From the send.
    pub added_service: Added,
    pub berry_cpu_us_per_req: Option<f64>,
    pub mock_cpu_us_per_req: Option<f64>,
}

fn added(b: &super::stats::Pcts, d: &super::stats::Pcts) -> Added {
    Added {
        p50_ms: b.p50 - d.p50,
        p99_ms: b.p99 - d.p99,
        p999_ms: b.p999 - d.p999,
    }
}

/// The step pair to compare: the highest rate both passed in a sweep, else the first pair.
fn pair<'a>(direct: &'a Series, berry: &'a Series) -> Option<(&'a Step, &'a Step)> {
    let both = direct
        .steps
        .iter()
        .zip(&berry.steps)
        .filter(|(d, b)| d.offered_rate == b.offered_rate);
    let passed = both
        .clone()
        .rfind(|(d, b)| d.passed != Some(false) && b.passed != Some(false));
    passed.or_else(|| both.clone().next())
}

pub fn compare(direct: &Series, berry: &Series) -> Option<Compare> {
    let (d, b) = pair(direct, berry)?;
    Some(Compare {
        offered_rate: b.offered_rate,
        added: added(&b.latency, &d.latency),
        added_service: added(&b.service, &d.service),
        berry_cpu_us_per_req: b.target_cpu_us_per_req,
        mock_cpu_us_per_req: d.target_cpu_us_per_req,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// The step the figures come from.
    pub measured_rate: Option<f64>,
    pub measured_p99_ms: f64,
    pub cpu_us_per_req: f64,
    /// Requests per second one fully busy core sustains at that cost.
    pub per_core_rps: f64,
    pub utilisation: f64,
    pub target_rate: f64,
    pub cores_needed: f64,
    /// Whole cores, rounded up, and instances of 2, 4 and 8 cores.
    pub cores_rounded: u64,
    pub instances: Vec<(u64, u64)>,
    /// The highest rate this machine sustained in the sweep (generator and mock included).
    pub sustained_here: Option<f64>,
    pub assumptions: Vec<String>,
}

pub fn project(g: &Series, s: &Scenario, target_rate: f64) -> Option<Capacity> {
    let step = g
        .steps
        .iter()
        .rev()
        .find(|st| st.passed != Some(false) && st.target_cpu_us_per_req.is_some())
        .or_else(|| g.steps.iter().find(|st| st.target_cpu_us_per_req.is_some()))?;
    let cpu = step.target_cpu_us_per_req?;
    if cpu <= 0.0 || target_rate <= 0.0 {
        return None;
    }
    let per_core_rps = 1e6 / cpu;
    let cores_needed = target_rate / (per_core_rps * UTILISATION);
    let cores_rounded = cores_needed.ceil().max(1.0) as u64;
    let instances = [2u64, 4, 8]
        .iter()
        .map(|&c| (c, cores_rounded.div_ceil(c)))
        .collect();
    let stream_note = match s.stream_share {
        Some(x) if x > 0.0 => format!(
            "mix ({:.0} % of chat requests streamed; a stream's cost grows with its token count)",
            x * 100.0
        ),
        _ => "request mix".into(),
    };
    Some(Capacity {
        measured_rate: step.offered_rate,
        measured_p99_ms: step.latency.p99,
        cpu_us_per_req: cpu,
        per_core_rps,
        utilisation: UTILISATION,
        target_rate,
        cores_needed,
        cores_rounded,
        instances,
        sustained_here: g.sustainable_rate,
        assumptions: vec![
            "CPU is the limit: cost per request is utime+stime of the gateway process over the \
             step, divided by completed requests; it includes the kernel's socket work done in \
             the gateway's own threads, not network softirq work charged elsewhere (covered by \
             the headroom below)"
                .into(),
            "cost scales linearly with shards: thread-per-core, no shared state on the request \
             path, one SO_REUSEPORT listener per shard"
                .into(),
            format!(
                "{:.0} % target utilisation per core, leaving headroom for bursts",
                UTILISATION * 100.0
            ),
            format!("the same {stream_note}, body sizes and keep-alive clients"),
            "plain HTTP on loopback: TLS, real network latency and connection churn cost more"
                .into(),
            "upstream latency costs memory (open requests), not CPU: waiting is free on io_uring"
                .into(),
            "measured with generator and mock sharing the same cores, so the rate sustained \
             here is a floor, not the gateway's ceiling"
                .into(),
        ],
    })
}
