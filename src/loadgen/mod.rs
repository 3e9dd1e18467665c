//! `berry loadtest`: the capacity-planning harness.
//!
//! An open-loop load generator (requests leave on schedule and latency counts from the
//! scheduled time, so a stalled server cannot hide its queue: no coordinated omission), with a
//! closed-loop mode for comparison, driven by scenario files (`loadtest/scenarios/*.toml`). It can
//! start its own `berry mock` and `berry serve`, sweep rates to the highest sustainable one,
//! compare direct-to-mock with through-Berry, and project the cores a target rate needs.
//!
//! - `scenario`: the TOML format and its bounds; `Target` keeps runs on loopback by default.
//! - `client`: the HTTP/1.1 client on the project's codec; SSE event timing.
//! - `pool`: per-thread keep-alive connections with a FIFO wait queue.
//! - `engine`: generator threads and per-second progress; `worker`: one thread's open or closed
//!   loop.
//! - `stats`: hdrhistograms and counters. `harness`: sweeps, comparisons, managed processes;
//!   `step`: one measured step.
//! - `procs`: the mock and Berry child processes, `/proc` CPU and memory readings.
//! - `capacity`: added latency and the cores projection. `report`: text and JSON; `html` and
//!   `svg`: the HTML report and its charts.

pub mod capacity;
pub mod client;
pub mod engine;
pub mod harness;
mod html;
pub mod pool;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod stats;
mod step;
pub mod svg;
mod worker;

use std::path::PathBuf;

use scenario::{Mode, Scenario, Target};

#[derive(clap::Args, Clone, Debug)]
pub struct LoadtestArgs {
    /// Scenario file (loadtest/scenarios/*.toml); without one, a small chat completion.
    pub scenario: Option<PathBuf>,
    /// `mock`, `berry` (both started here, on 127.0.0.1) or `http://IP:PORT` of a running server.
    #[arg(long)]
    pub target: Option<String>,
    /// Allow a target outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Requests per second (open loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Uncounted seconds before the measurement.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Most connections (open loop) or the number of connections (closed loop).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Generator threads (0: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Closed loop: each connection waits for its answer before the next request.
    #[arg(long)]
    pub closed: bool,
    /// Raise the rate step by step until p99 or errors pass the scenario's bounds.
    #[arg(long)]
    pub sweep: bool,
    /// Run direct to the mock and through Berry, and report Berry's added latency and CPU.
    #[arg(long)]
    pub compare: bool,
    /// Target rate for the capacity projection (req/s).
    #[arg(long, default_value_t = 10_000.0)]
    pub capacity_rate: f64,
    /// Pid of a running target, to read its CPU time and memory.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Where report.json and report.html go [default: target/loadtest/NAME].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The berry binary for the processes started here [default: this one].
    #[arg(long)]
    pub berry_bin: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Applies command-line overrides to a scenario and validates it.
pub fn scenario_from(args: &LoadtestArgs) -> Result<Scenario, String> {
    let mut s = match &args.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    if let Some(t) = &args.target {
        s.target = t.clone();
    }
    if let Some(r) = args.rate {
        s.rate = r;
    }
    if let Some(d) = args.duration {
        s.duration_s = d;
    }
    if let Some(w) = args.warmup {
        s.warmup_s = w;
    }
    if let Some(c) = args.connections {
        s.connections = c;
    }
    if let Some(t) = args.threads {
        s.threads = t;
    }
    if args.closed {
        s.mode = Mode::Closed;
    }
    s.validate()?;
    Ok(s)
}

pub fn run_cli(args: LoadtestArgs) -> Result<(), String> {
    let s = scenario_from(&args)?;
    let target = Target::parse(&s.target, args.allow_remote)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/loadtest").join(&s.name));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let berry_bin = match &args.berry_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?,
    };
    let opts = harness::Options {
        target,
        sweep: args.sweep,
        compare: args.compare,
        berry_bin,
        work_dir: out.join("work"),
        target_pid: args.target_pid,
        progress: !args.quiet,
        capacity_rate: args.capacity_rate,
    };
    let report = harness::run(&s, &opts)?;
    print!("{}", report::text(&report));
    let json = out.join("report.json");
    let html = out.join("report.html");
    std::fs::write(&json, report::json(&report)).map_err(|e| format!("{}: {e}", json.display()))?;
    std::fs::write(&html, report::html(&report)).map_err(|e| format!("{}: {e}", html.display()))?;
    println!("\nwrote {} and {}", json.display(), html.display());
    Ok(())
}
