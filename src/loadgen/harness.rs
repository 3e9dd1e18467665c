//! What a `berry loadtest` invocation does: one step, a sweep of rising rates, or the same
//! (sweep or step) direct to the mock and through Berry, with CPU and memory readings of the
//! processes it started. Produces the [`Report`] that `report.rs` prints and plots.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::capacity::{self, Capacity, Compare};
use super::procs::{self, Proc};
use super::scenario::{Mode, Scenario, Target};
use super::step::step;
pub use super::step::Step;

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
pub(super) struct Aim<'a> {
    pub(super) label: String,
    pub(super) addr: SocketAddr,
    pub(super) token: Option<String>,
    pub(super) pid: Option<u32>,
    pub(super) mock_pid: Option<u32>,
    pub(super) scenario: &'a Scenario,
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
