//! The three outputs of a run: a readable summary, `report.json`, and a self-contained
//! `report.html` whose SVG charts show the latency percentiles against offered load.

use std::fmt::Write as _;

use super::harness::{Report, Series, Step};
pub use super::html::html;

pub(super) fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

pub(super) fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub(super) fn header(r: &Report) -> String {
    let how = match r.mode {
        "open" => format!(
            "open loop, {} arrivals; latency counts from the scheduled send (coordinated omission corrected)",
            r.arrival
        ),
        _ => "closed loop: each connection waits for its answer; latency counts from the send (hides queueing)".into(),
    };
    format!(
        "{how}; {} generator thread(s), {} s warm-up, {} core(s)",
        r.threads, r.warmup_s, r.cores
    )
}

pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n== berry loadtest: {}", r.scenario);
    if !r.description.is_empty() {
        let _ = writeln!(o, "{}", r.description);
    }
    let _ = writeln!(o, "{}\n", header(r));
    let _ = writeln!(
        o,
        "{:<6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>5}",
        "target",
        "offered/s",
        "done/s",
        "err%",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "svc p99",
        "cpu µs",
        "pass"
    );
    for s in &r.series {
        for st in &s.steps {
            let _ = writeln!(
                o,
                "{:<6} {:>9} {:>9.1} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>5}",
                short(&s.target),
                opt(st.offered_rate, 0),
                st.achieved_rps,
                pct(st.error_rate),
                st.latency.p50,
                st.latency.p90,
                st.latency.p99,
                st.latency.p999,
                st.latency.max,
                st.service.p99,
                opt(st.target_cpu_us_per_req, 1),
                st.passed.map_or("", |p| if p { "yes" } else { "NO" }),
            );
        }
    }
    let _ = writeln!(
        o,
        "(latency columns: {}; svc = from the send; cpu = target's CPU per request)",
        if r.mode == "open" {
            "from the scheduled time"
        } else {
            "from the send"
        }
    );
    for s in &r.series {
        for st in &s.steps {
            step_notes(&mut o, s, st, r.stall_ms);
        }
        if let Some(rate) = s
            .sustainable_rate
            .or(s.stopped_because.as_ref().map(|_| 0.0))
        {
            let _ = writeln!(
                o,
                "\nsweep ({}): highest sustainable {} (p99 <= {} ms, errors <= {} %); stopped: {}",
                s.target,
                match (rate > 0.0, r.mode) {
                    (false, _) => "load: none".into(),
                    (true, "open") => format!("rate {rate:.0} req/s"),
                    (true, _) => format!("concurrency {rate:.0} connections"),
                },
                opt(r.p99_bound_ms, 0),
                r.max_error_rate.map_or("-".into(), pct),
                s.stopped_because.as_deref().unwrap_or("-")
            );
            let f: Vec<String> = s
                .frontier
                .iter()
                .map(|(b, v)| format!("p99<={b} ms: {}", opt(*v, 0)))
                .collect();
            let _ = writeln!(o, "  frontier: {}", f.join(", "));
        }
    }
    if let Some(c) = &r.compare {
        let _ = writeln!(
            o,
            "\ncompare at {} req/s: Berry adds p50 {:+.3} ms, p99 {:+.3} ms, p99.9 {:+.3} ms \
             (from the send: {:+.3} / {:+.3} / {:+.3}); Berry CPU {} µs/req, mock {} µs/req",
            opt(c.offered_rate, 0),
            c.added.p50_ms,
            c.added.p99_ms,
            c.added.p999_ms,
            c.added_service.p50_ms,
            c.added_service.p99_ms,
            c.added_service.p999_ms,
            opt(c.berry_cpu_us_per_req, 1),
            opt(c.mock_cpu_us_per_req, 1),
        );
    }
    if let Some(c) = &r.capacity {
        let _ = writeln!(
            o,
            "\ncapacity: {:.1} µs of CPU per request (measured at {} req/s, p99 {:.2} ms) → {:.0} req/s \
             per busy core; {:.0} req/s at {:.0} % utilisation needs {:.2} cores → {} core(s): {}",
            c.cpu_us_per_req,
            opt(c.measured_rate, 0),
            c.measured_p99_ms,
            c.per_core_rps,
            c.target_rate,
            c.utilisation * 100.0,
            c.cores_needed,
            c.cores_rounded,
            c.instances
                .iter()
                .map(|(cores, n)| format!("{n} × {cores}-core"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for a in &c.assumptions {
            let _ = writeln!(o, "  assumes: {a}");
        }
    }
    o
}

fn short(target: &str) -> &str {
    if target.len() > 6 {
        "url"
    } else {
        target
    }
}

fn step_notes(o: &mut String, s: &Series, st: &Step, stall_ms: u64) {
    let at = st
        .offered_rate
        .map_or(format!("c={}", st.connections), |r| format!("{r:.0}/s"));
    if !st.errors.is_empty() {
        let e: Vec<String> = st.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "{} {at}: errors: {}", s.target, e.join(", "));
    }
    if st.streams > 0 {
        let _ = writeln!(
            o,
            "{} {at}: {} streams, {} frames ({:.0}/s); TTFT p50 {:.2} p99 {:.2} ms; gaps p50 {:.2} p99 {:.2} max {:.2} ms; \
             stalls (gap > {stall_ms} ms): {} in {} stream(s)",
            s.target, st.streams, st.frames, st.frames_per_s, st.ttft.p50, st.ttft.p99, st.gap.p50,
            st.gap.p99, st.gap.max, st.stalls, st.stalled_streams
        );
        if let (Some(cpu), true) = (st.target_cpu_us_per_req, st.streams == st.completed) {
            let per_stream = st.frames as f64 / st.streams as f64;
            let _ = writeln!(
                o,
                "{} {at}: target CPU per stream {cpu:.0} µs, per frame {:.1} µs",
                s.target,
                cpu / per_stream.max(1.0)
            );
        }
    }
    let dense = st.rss_per_in_flight_kib.is_some() || s.steps.len() == 1;
    if let (Some(i), Some(p), true) = (st.rss_idle_kib, st.rss_peak_kib, dense) {
        let _ = writeln!(
            o,
            "{} {at}: RSS before {:.1} MiB, peak {:.1} MiB, peak in flight {}{}",
            s.target,
            i as f64 / 1024.0,
            p as f64 / 1024.0,
            st.peak_in_flight,
            st.rss_per_in_flight_kib
                .map_or(String::new(), |k| format!(" → {k:.1} KiB per open request"))
        );
    }
    let _ = writeln!(
        o,
        "{} {at}: CPU per request: target {}, mock {}, generator {} µs; machine busy {} cores, steal {} %",
        s.target,
        opt(st.target_cpu_us_per_req, 1),
        opt(st.mock_cpu_us_per_req, 1),
        opt(st.generator_cpu_us_per_req, 1),
        opt(st.machine_busy_cores, 2),
        opt(st.steal_pct, 1)
    );
    if st.saturated {
        let _ = writeln!(
            o,
            "{} {at}: the generator's backlog overflowed: the target could not keep up",
            s.target
        );
    }
    if st.dispatch_lag.count > 0 && st.dispatch_lag.p99 > 1.0 {
        let _ = writeln!(
            o,
            "{} {at}: generator dispatch lag p99 {:.2} ms (over 1 ms: the generator itself was short of CPU)",
            s.target, st.dispatch_lag.p99
        );
    }
}
