//! `report.html`: one self-contained file (no scripts, no external resources) with the tables
//! and SVG charts: latency percentiles against offered load, stream gaps, latency by
//! percentile, and the last step second by second.

use std::fmt::Write as _;

use super::harness::{Report, Step};
use super::report::{header, opt, pct, text};
use super::svg::{chart, Line, Scale};

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn html(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>berry loadtest: {}</title>\
         <style>body{{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}}\
         table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:8px;white-space:pre-wrap}}\
         .fail{{color:#b00;font-weight:bold}}</style></head><body>",
        esc(&r.scenario)
    );
    let _ = write!(
        o,
        "<h1>berry loadtest: {}</h1><p>{}</p><p>{}</p><p><code>{}</code></p>",
        esc(&r.scenario),
        esc(&r.description),
        esc(&header(r)),
        esc(&r.command)
    );
    // Percentiles against offered load (open loop), one colour per percentile, one dash per
    // target.
    let mut lines = Vec::new();
    type Pick = fn(&Step) -> f64;
    let pcts: [(&str, Pick); 4] = [
        ("p50", |s| s.latency.p50),
        ("p90", |s| s.latency.p90),
        ("p99", |s| s.latency.p99),
        ("p99.9", |s| s.latency.p999),
    ];
    for (si, s) in r.series.iter().enumerate() {
        for (pi, (name, f)) in pcts.iter().enumerate() {
            let points: Vec<(f64, f64)> = s.steps.iter().map(|st| (st.level, f(st))).collect();
            lines.push(Line {
                label: format!("{} {name}", s.target),
                color: COLORS[pi % COLORS.len()],
                dash: si % 2 == 1,
                points,
            });
        }
    }
    let levels: Vec<f64> = r
        .series
        .iter()
        .flat_map(|s| s.steps.iter().map(|st| st.level))
        .collect();
    let (lo, hi) = levels
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    if let (Some(b), false) = (r.p99_bound_ms, levels.is_empty()) {
        lines.push(Line {
            label: format!("p99 bound: {b} ms"),
            color: "#888888",
            dash: true,
            points: vec![(lo, b), (hi, b)],
        });
    }
    let x_name = if r.mode == "open" {
        "offered rate (req/s)"
    } else {
        "connections"
    };
    if lines.iter().any(|l| !l.points.is_empty()) {
        o.push_str("<h2>Latency percentiles against offered load</h2>");
        o.push_str(&chart(
            &format!("latency (ms, log) vs {x_name}"),
            &lines,
            Scale::Linear,
            Scale::Log,
        ));
        if let Some(b) = r.p99_bound_ms {
            let _ = write!(
                o,
                "<p>Sweep bound: p99 ≤ {b} ms (grey line); the knee is where the curves turn up.</p>"
            );
        }
    }
    // Streams: gaps between events and time to first token against load, with the stall line.
    if r.series
        .iter()
        .any(|s| s.steps.iter().any(|st| st.streams > 0))
    {
        type Pick = fn(&Step) -> f64;
        let picks: [(&str, Pick); 4] = [
            ("gap p50", |s| s.gap.p50),
            ("gap p99", |s| s.gap.p99),
            ("gap max", |s| s.gap.max),
            ("TTFT p99", |s| s.ttft.p99),
        ];
        let mut lines = Vec::new();
        for (si, s) in r.series.iter().enumerate() {
            for (pi, (name, f)) in picks.iter().enumerate() {
                lines.push(Line {
                    label: format!("{} {name}", s.target),
                    color: COLORS[pi % COLORS.len()],
                    dash: si % 2 == 1,
                    points: s
                        .steps
                        .iter()
                        .filter(|st| st.streams > 0)
                        .map(|st| (st.level, f(st).max(0.001)))
                        .collect(),
                });
            }
        }
        lines.push(Line {
            label: format!("stall: {} ms", r.stall_ms),
            color: "#888888",
            dash: true,
            points: vec![(lo, r.stall_ms as f64), (hi, r.stall_ms as f64)],
        });
        o.push_str("<h2>Streams: gaps between events, time to first token</h2>");
        o.push_str(&chart(
            &format!("ms (log) vs {x_name}"),
            &lines,
            Scale::Linear,
            Scale::Log,
        ));
    }
    // Latency by percentile, one line per step.
    let mut lines = Vec::new();
    for (si, s) in r.series.iter().enumerate() {
        // At most six steps per target, spread over the sweep, the last one always in.
        let n = s.steps.len();
        let pick: Vec<usize> = if n <= 6 {
            (0..n).collect()
        } else {
            (0..6).map(|k| k * (n - 1) / 5).collect()
        };
        for (k, st) in pick.iter().map(|&i| &s.steps[i]).enumerate() {
            let at = st
                .offered_rate
                .map_or(format!("c={}", st.connections), |x| format!("{x:.0}/s"));
            lines.push(Line {
                label: format!("{} {at}", s.target),
                color: COLORS[k % COLORS.len()],
                dash: si % 2 == 1,
                points: st.spectrum.clone(),
            });
        }
    }
    o.push_str("<h2>Latency by percentile</h2>");
    o.push_str(&chart(
        "latency (ms, log) by percentile",
        &lines,
        Scale::Nines,
        Scale::Log,
    ));
    for s in &r.series {
        let _ = write!(o, "<h2>{}</h2>", esc(&s.target));
        o.push_str(
            "<table><tr><th>offered/s</th><th>done/s</th><th>errors %</th><th>p50 ms</th>\
             <th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>from send p99</th>\
             <th>TTFT p99</th><th>gap p99</th><th>stalls</th><th>CPU µs/req</th><th>RSS peak MiB</th><th>pass</th></tr>",
        );
        for st in &s.steps {
            let pass = match st.passed {
                Some(true) => "yes".to_string(),
                Some(false) => "<span class=fail>no</span>".to_string(),
                None => String::new(),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
                 <td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{pass}</td></tr>",
                st.offered_rate
                    .map_or(format!("c={}", st.connections), |x| format!("{x:.0}")),
                st.achieved_rps,
                pct(st.error_rate),
                st.latency.p50,
                st.latency.p90,
                st.latency.p99,
                st.latency.p999,
                st.latency.max,
                st.service.p99,
                st.ttft.p99,
                st.gap.p99,
                st.stalls,
                opt(st.target_cpu_us_per_req, 1),
                opt(st.rss_peak_kib.map(|k| k as f64 / 1024.0), 1),
            );
        }
        o.push_str("</table>");
        if let Some(last) = s.steps.last() {
            let p99: Vec<(f64, f64)> = last
                .timeline
                .iter()
                .map(|x| (f64::from(x.second) + 1.0, x.p99_ms.max(0.001)))
                .collect();
            let done: Vec<(f64, f64)> = last
                .timeline
                .iter()
                .map(|x| (f64::from(x.second) + 1.0, x.completed.max(1) as f64))
                .collect();
            o.push_str("<h3>Last step, second by second</h3>");
            o.push_str(&chart(
                "p99 ms (log) and completions per second (log), by second of the run",
                &[
                    Line {
                        label: "p99 ms".into(),
                        color: COLORS[1],
                        dash: false,
                        points: p99,
                    },
                    Line {
                        label: "completed/s".into(),
                        color: COLORS[0],
                        dash: true,
                        points: done,
                    },
                ],
                Scale::Linear,
                Scale::Log,
            ));
        }
    }
    let _ = write!(o, "<h2>Summary</h2><pre>{}</pre>", esc(&text(r)));
    o.push_str("</body></html>\n");
    o
}
