//! One measured step: build the requests, run the generator, read the target's CPU time and
//! memory around it, print progress, and summarise into a [`Step`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::client::Requests;
use super::engine::{self, RunSpec, Second};
use super::harness::{Aim, Options};
use super::procs;
use super::scenario::Mode;
use super::stats::{spectrum, ErrorKind, Pcts};

/// One measured step.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// What the step loads with: the offered rate (open loop) or the connections (closed loop).
    pub level: f64,
    pub offered_rate: Option<f64>,
    pub connections: usize,
    pub duration_s: f64,
    pub completed: u64,
    pub ok: u64,
    pub achieved_rps: f64,
    pub error_rate: f64,
    pub errors: BTreeMap<&'static str, u64>,
    /// Open loop: from the scheduled time (corrected). Closed loop: from the send.
    pub latency: Pcts,
    /// From the send (what a closed-loop tool reports).
    pub service: Pcts,
    pub ttft: Pcts,
    pub gap: Pcts,
    pub dispatch_lag: Pcts,
    pub streams: u64,
    pub frames: u64,
    pub frames_per_s: f64,
    pub stalls: u64,
    pub stalled_streams: u64,
    pub saturated: bool,
    pub peak_in_flight: u64,
    pub peak_connections: u64,
    pub connects: u64,
    /// Against the sweep's bounds, when sweeping.
    pub passed: Option<bool>,
    /// CPU time of the target process per completed request, and cores it used.
    pub target_cpu_us_per_req: Option<f64>,
    pub target_cores: Option<f64>,
    pub mock_cpu_us_per_req: Option<f64>,
    /// The load generator's own CPU per request (this process).
    pub generator_cpu_us_per_req: Option<f64>,
    /// Share of the machine's CPU time the hypervisor gave to others during the step.
    pub steal_pct: Option<f64>,
    /// Cores busy machine-wide during the step (generator, mock, target, kernel, neighbours).
    pub machine_busy_cores: Option<f64>,
    pub rss_idle_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    /// (peak - before) / requests open at the peak, with at least 100 open: the target's memory
    /// per open request (per open stream in a density run).
    pub rss_per_in_flight_kib: Option<f64>,
    pub spectrum: Vec<(f64, f64)>,
    pub timeline: Vec<Second>,
}

pub(super) fn step(
    aim: &Aim,
    o: &Options,
    threads: usize,
    rate: f64,
    seconds: f64,
) -> Result<Step, String> {
    let s = aim.scenario;
    let connections = match s.mode {
        Mode::Open => s.connections,
        Mode::Closed => (rate as usize).max(1),
    };
    let host = aim.addr.to_string();
    let requests = Arc::new(Requests::build(s, &host, aim.token.as_deref()));
    let spec = RunSpec {
        addr: aim.addr,
        requests,
        mode: s.mode,
        arrival: s.arrival,
        rate,
        connections,
        warmup: Duration::from_secs_f64(s.warmup_s),
        duration: Duration::from_secs_f64(seconds),
        ramp: Duration::from_secs_f64(s.ramp_s),
        budget: s.request_budget(rate, seconds + s.warmup_s),
        timeout: Duration::from_millis(s.timeout_ms),
        stall: Duration::from_millis(s.stall_ms),
        threads,
    };
    let cpu0 = aim.pid.and_then(procs::cpu_us);
    let mock0 = aim.mock_pid.and_then(procs::cpu_us);
    let gen0 = procs::cpu_us(std::process::id());
    let ticks0 = procs::machine_ticks();
    let rss_idle = aim.pid.and_then(procs::rss_kib);
    let mut rss_peak = rss_idle;
    let mut peak_at_rss = 0u64;
    let tty = std::io::stderr().is_terminal();
    let label = match s.mode {
        Mode::Open => format!("{} {rate}/s", aim.label),
        Mode::Closed => format!("{} c={connections}", aim.label),
    };
    let total = s.warmup_s + seconds;
    let mut on_second = |sec: &Second| {
        if let Some(r) = aim.pid.and_then(procs::rss_kib) {
            if rss_peak.is_none_or(|p| r > p) {
                rss_peak = Some(r);
                peak_at_rss = sec.in_flight;
            }
        }
        if o.progress {
            let phase = if f64::from(sec.second) < s.warmup_s {
                "warm-up"
            } else if f64::from(sec.second) < total {
                "measure"
            } else {
                "drain"
            };
            let mut line = format!(
                "[{label}] {:>3}/{:.0} s {phase:<7} done {:>7}/s  err {:>5}  p50 {:>8.2} ms  p99 {:>8.2} ms  in flight {:>6}  conns {:>6}",
                sec.second + 1,
                total,
                sec.completed,
                sec.errors,
                sec.p50_ms,
                sec.p99_ms,
                sec.in_flight,
                sec.connections
            );
            if sec.stalls > 0 {
                line.push_str(&format!("  stalls {}", sec.stalls));
            }
            let mut e = std::io::stderr();
            if tty {
                let _ = write!(e, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(e, "{line}");
            }
            let _ = e.flush();
        }
    };
    let r = engine::run(&spec, &mut on_second)?;
    if o.progress && tty {
        eprintln!();
    }
    let all_completed: u64 = r.timeline.iter().map(|x| x.completed).sum();
    let per_req = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if all_completed > 0 => Some((b - a) as f64 / all_completed as f64),
        _ => None,
    };
    let cpu1 = aim.pid.and_then(procs::cpu_us);
    let gen1 = procs::cpu_us(std::process::id());
    let (steal_pct, machine_busy_cores) = match (ticks0, procs::machine_ticks()) {
        (Some(a), Some(b)) if b.total > a.total => {
            let total = (b.total - a.total) as f64;
            let busy = total - (b.idle - a.idle) as f64 - (b.steal - a.steal) as f64;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            (
                Some((b.steal - a.steal) as f64 * 100.0 / total),
                Some(busy / total * cores),
            )
        }
        _ => (None, None),
    };
    let run_s = r.timeline.len().max(1) as f64;
    let st = &r.stats;
    let completed = st.completed();
    let errors = ErrorKind::ALL
        .iter()
        .filter(|k| st.errors[**k as usize] > 0)
        .map(|k| (k.name(), st.errors[*k as usize]))
        .collect();
    let rss_per = match (rss_idle, rss_peak) {
        // Only meaningful with many requests open at once (a stream-density run).
        (Some(i), Some(p)) if peak_at_rss >= 100 && p > i => {
            Some((p - i) as f64 / peak_at_rss.max(1) as f64)
        }
        _ => None,
    };
    Ok(Step {
        level: match s.mode {
            Mode::Open => rate,
            Mode::Closed => connections as f64,
        },
        offered_rate: (s.mode == Mode::Open).then_some(rate),
        connections,
        duration_s: seconds,
        completed,
        ok: st.ok,
        achieved_rps: completed as f64 / seconds,
        error_rate: st.error_rate(),
        errors,
        latency: Pcts::of(&st.latency),
        service: Pcts::of(&st.service),
        ttft: Pcts::of(&st.ttft),
        gap: Pcts::of(&st.gap),
        dispatch_lag: Pcts::of(&st.lag),
        streams: st.streams,
        frames: st.frames,
        frames_per_s: st.frames as f64 / seconds,
        stalls: st.stalls,
        stalled_streams: st.stalled_streams,
        saturated: r.saturated,
        peak_in_flight: r.peak_in_flight,
        peak_connections: r.peak_connections,
        connects: st.connects,
        passed: None,
        target_cpu_us_per_req: per_req(cpu0, cpu1),
        target_cores: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a) as f64 / 1e6 / run_s),
            _ => None,
        },
        mock_cpu_us_per_req: per_req(mock0, aim.mock_pid.and_then(procs::cpu_us)),
        generator_cpu_us_per_req: per_req(gen0, gen1),
        steal_pct,
        machine_busy_cores,
        rss_idle_kib: rss_idle,
        rss_peak_kib: rss_peak,
        rss_per_in_flight_kib: rss_per,
        spectrum: spectrum(&st.latency),
        timeline: r.timeline,
    })
}
