//! What a `berry loadtest` invocation does: one step, a sweep of rising rates, or the same
//! (sweep or step) direct to the mock and through Berry, with CPU and memory readings of the
//! processes it started. Produces the [`Report`] that `report.rs` prints and plots.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::capacity::{self, Capacity, Compare};
use super::client::Requests;
use super::engine::{self, RunSpec, Second};
use super::procs::{self, Proc};
use super::scenario::{Mode, Scenario, Target};
use super::stats::{spectrum, ErrorKind, Pcts};

/// How to run, beyond the scenario file.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub sweep: bool,
    pub compare: bool,
    /// The `berry` binary for managed processes.
    pub berry_bin: PathBuf,
    /// Where managed processes keep their config and logs.
    pub work_dir: PathBuf,
    /// A running target's pid, to read its CPU time and memory.
    pub target_pid: Option<u32>,
    pub progress: bool,
    /// Rate the capacity section projects to.
    pub capacity_rate: f64,
}

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

/// Steps against one target.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub target: String,
    pub steps: Vec<Step>,
    /// Sweeps: the highest level (offered rate, or connections in a closed loop) that met the
    /// bounds.
    pub sustainable_rate: Option<f64>,
    pub stopped_because: Option<String>,
    /// Sweeps: for each p99 bound (ms), the highest rate with p99 under it and errors in bound.
    pub frontier: Vec<(f64, Option<f64>)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub mode: &'static str,
    pub arrival: &'static str,
    pub threads: usize,
    pub warmup_s: f64,
    pub p99_bound_ms: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub stall_ms: u64,
    pub command: String,
    pub unix_time: u64,
    pub cores: usize,
    pub series: Vec<Series>,
    pub compare: Option<Compare>,
    pub capacity: Option<Capacity>,
}

/// What a step runs against.
struct Aim<'a> {
    label: String,
    addr: SocketAddr,
    token: Option<String>,
    pid: Option<u32>,
    mock_pid: Option<u32>,
    scenario: &'a Scenario,
}

pub fn run(s: &Scenario, o: &Options) -> Result<Report, String> {
    let threads = if s.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        s.threads
    };
    let most = s
        .sweep
        .as_ref()
        .filter(|_| o.sweep && s.mode == Mode::Closed)
        .and_then(|sw| sw.rates().into_iter().reduce(f64::max))
        .map_or(s.connections, |x| s.connections.max(x as usize));
    // Generator, Berry (client and upstream side) and mock each hold a descriptor per stream.
    let want = most as u64 * 4 + 4096;
    procs::raise_nofile(want);
    let mut mock: Option<Proc> = None;
    let mut berry: Option<Proc> = None;
    let managed_mock = o.compare || matches!(o.target, Target::Mock | Target::Berry);
    if managed_mock {
        std::fs::create_dir_all(&o.work_dir)
            .map_err(|e| format!("{}: {e}", o.work_dir.display()))?;
        mock = Some(procs::start_mock(&o.berry_bin, &s.mock, &o.work_dir)?);
    }
    if o.compare || o.target == Target::Berry {
        let m = mock.as_ref().map(|m| m.addr).ok_or("no mock")?;
        berry = Some(procs::start_berry(
            &o.berry_bin,
            &s.berry,
            m,
            &s.model,
            &o.work_dir,
        )?);
    }
    let mock_pid = mock.as_ref().map(Proc::pid);
    let mut aims = Vec::new();
    let direct = |m: &Proc| Aim {
        label: "mock".into(),
        addr: m.addr,
        token: s.token.clone(),
        pid: Some(m.pid()),
        mock_pid: None,
        scenario: s,
    };
    let via_berry = |b: &Proc| Aim {
        label: "berry".into(),
        addr: b.addr,
        token: Some(procs::TOKEN.into()),
        pid: Some(b.pid()),
        mock_pid,
        scenario: s,
    };
    match (&o.target, o.compare) {
        (_, true) => {
            aims.push(direct(mock.as_ref().ok_or("no mock")?));
            aims.push(via_berry(berry.as_ref().ok_or("no berry")?));
        }
        (Target::Mock, false) => aims.push(direct(mock.as_ref().ok_or("no mock")?)),
        (Target::Berry, false) => aims.push(via_berry(berry.as_ref().ok_or("no berry")?)),
        (Target::Url(addr), false) => aims.push(Aim {
            label: format!("http://{addr}"),
            addr: *addr,
            token: s.token.clone(),
            pid: o.target_pid,
            mock_pid: None,
            scenario: s,
        }),
    }
    let mut series = Vec::new();
    for aim in &aims {
        series.push(run_series(aim, o, threads)?);
        for p in [mock.as_mut(), berry.as_mut()].into_iter().flatten() {
            if !p.alive() {
                return Err(format!(
                    "{} died during the run; see {}",
                    p.name,
                    p.log.display()
                ));
            }
        }
    }
    let compare = if series.len() == 2 {
        capacity::compare(&series[0], &series[1])
    } else {
        None
    };
    let gateway = series.iter().find(|x| x.target != "mock");
    // A projection to a request rate needs an open-loop measurement.
    let capacity = gateway
        .filter(|_| s.mode == Mode::Open)
        .and_then(|g| capacity::project(g, s, o.capacity_rate));
    let sweep = s.sweep.clone().filter(|_| o.sweep);
    Ok(Report {
        scenario: s.name.clone(),
        description: s.description.clone(),
        mode: match s.mode {
            Mode::Open => "open",
            Mode::Closed => "closed",
        },
        arrival: match s.arrival {
            super::scenario::Arrival::Constant => "constant",
            super::scenario::Arrival::Poisson => "poisson",
        },
        threads,
        warmup_s: s.warmup_s,
        p99_bound_ms: sweep.as_ref().map(|w| w.p99_ms),
        max_error_rate: sweep.as_ref().map(|w| w.max_error_rate),
        stall_ms: s.stall_ms,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        series,
        compare,
        capacity,
    })
}

fn run_series(aim: &Aim, o: &Options, threads: usize) -> Result<Series, String> {
    let s = aim.scenario;
    let mut out = Series {
        target: aim.label.clone(),
        steps: Vec::new(),
        sustainable_rate: None,
        stopped_because: None,
        frontier: Vec::new(),
    };
    let sweep = match (&s.sweep, o.sweep) {
        (Some(sw), true) => Some(sw.clone()),
        (None, true) => Some(Default::default()),
        _ => None,
    };
    let Some(sw) = sweep else {
        let level = match s.mode {
            Mode::Open => s.rate,
            Mode::Closed => s.connections as f64,
        };
        out.steps.push(step(aim, o, threads, level, s.duration_s)?);
        return Ok(out);
    };
    let unit = match s.mode {
        Mode::Open => "/s",
        Mode::Closed => " connections",
    };
    for rate in sw.rates() {
        let mut st = step(aim, o, threads, rate, sw.step_s)?;
        let p99_ok = st.latency.p99 <= sw.p99_ms;
        let err_ok = st.error_rate <= sw.max_error_rate;
        let stalls_ok = !sw.stall_free || st.stalls == 0;
        st.passed = Some(p99_ok && err_ok && stalls_ok && !st.saturated);
        let why = if !stalls_ok {
            Some(format!(
                "{} stall(s) in {} stream(s) at {rate}{unit}",
                st.stalls, st.stalled_streams
            ))
        } else if st.saturated {
            Some(format!(
                "the generator's backlog overflowed at {rate}{unit}"
            ))
        } else if !err_ok {
            Some(format!(
                "errors {:.2} % > {:.2} % at {rate}{unit}",
                st.error_rate * 100.0,
                sw.max_error_rate * 100.0
            ))
        } else if !p99_ok {
            Some(format!(
                "p99 {:.2} ms > {} ms at {rate}{unit}",
                st.latency.p99, sw.p99_ms
            ))
        } else {
            None
        };
        out.steps.push(st);
        if why.is_some() {
            out.stopped_because = why;
            break;
        }
        out.sustainable_rate = Some(rate);
    }
    if out.stopped_because.is_none() {
        out.stopped_because = Some("reached the last rate of the sweep".into());
    }
    let mut bounds = vec![1.0, 5.0, 10.0, 50.0, 100.0, 1000.0];
    if !bounds.contains(&sw.p99_ms) {
        bounds.push(sw.p99_ms);
        bounds.sort_by(f64::total_cmp);
    }
    for bound in bounds {
        let best = out
            .steps
            .iter()
            .take_while(|st| st.error_rate <= sw.max_error_rate && !st.saturated)
            .filter(|st| st.latency.p99 <= bound)
            .map(|st| st.level)
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
        out.frontier.push((bound, best));
    }
    Ok(out)
}

fn step(aim: &Aim, o: &Options, threads: usize, rate: f64, seconds: f64) -> Result<Step, String> {
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
