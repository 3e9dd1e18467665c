//! A small SVG line chart (no scripts, no external files) for the HTML report.

use std::fmt::Write as _;

pub struct Line {
    pub label: String,
    pub color: &'static str,
    pub dash: bool,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
    /// Percentiles on a "number of nines" axis: 0, 90, 99, 99.9, ...
    Nines,
}

const W: f64 = 900.0;
const H: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const NINES_MAX: f64 = 5.0;

fn transform(s: Scale, v: f64) -> f64 {
    match s {
        Scale::Linear => v,
        Scale::Log => v.max(1e-3).log10(),
        Scale::Nines => {
            let rest = 1.0 - v / 100.0;
            if rest <= 0.0 {
                NINES_MAX
            } else {
                (-rest.log10()).min(NINES_MAX)
            }
        }
    }
}

/// The axis range (in transformed units) and its ticks (position, label).
fn axis(s: Scale, values: &[f64]) -> (f64, f64, Vec<(f64, String)>) {
    let (mut lo, mut hi) = values
        .iter()
        .map(|&v| transform(s, v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    match s {
        Scale::Nines => {
            let ticks = (0..=NINES_MAX as i32)
                .map(|k| {
                    let p = 100.0 - 100.0 * 10f64.powi(-k);
                    (f64::from(k), format!("{}%", trim(p)))
                })
                .collect();
            (0.0, NINES_MAX, ticks)
        }
        Scale::Log => {
            let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
            let mut ticks = Vec::new();
            let mut k = lo;
            while k <= hi + 1e-9 {
                ticks.push((k, trim(10f64.powf(k))));
                if hi - lo <= 2.0 && k < hi {
                    for m in [2.0f64, 5.0] {
                        ticks.push((k + m.log10(), trim(m * 10f64.powf(k))));
                    }
                }
                k += 1.0;
            }
            (lo, hi, ticks)
        }
        Scale::Linear => {
            if hi - lo < 1e-9 {
                (lo, hi) = (lo * 0.8, hi * 1.2 + 1e-9);
            }
            lo = lo.min(0.0);
            let raw = (hi - lo) / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| *s >= raw)
                .unwrap_or(raw);
            let hi = (hi / step).ceil() * step;
            let mut ticks = Vec::new();
            let mut v = lo;
            while v <= hi + step * 1e-6 {
                ticks.push((v, trim(v)));
                v += step;
            }
            (lo, hi, ticks)
        }
    }
}

fn trim(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub fn chart(title: &str, lines: &[Line], xs: Scale, ys: Scale) -> String {
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|l| l.points.clone()).collect();
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"11\"><rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"13\">{}</text>",
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    if all.is_empty() {
        o.push_str("<text x=\"80\" y=\"80\">no data</text></svg>");
        return o;
    }
    let (x0, x1, xt) = axis(xs, &all.iter().map(|p| p.0).collect::<Vec<_>>());
    let (y0, y1, yt) = axis(ys, &all.iter().map(|p| p.1).collect::<Vec<_>>());
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |v: f64| LEFT + (transform(xs, v) - x0) / (x1 - x0).max(1e-12) * pw;
    let py = |v: f64| TOP + ph - (transform(ys, v) - y0) / (y1 - y0).max(1e-12) * ph;
    for (t, label) in &xt {
        let x = LEFT + (t - x0) / (x1 - x0).max(1e-12) * pw;
        let _ = write!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            TOP + ph,
            TOP + ph + 15.0
        );
    }
    for (t, label) in &yt {
        let y = TOP + ph - (t - y0) / (y1 - y0).max(1e-12) * ph;
        let _ = write!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = write!(
        o,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for (i, l) in lines.iter().enumerate() {
        if l.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = l
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if l.dash {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = write!(
            o,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dash}/>",
            pts.join(" "),
            l.color
        );
        if l.points.len() <= 24 {
            for &(x, y) in &l.points {
                let _ = write!(
                    o,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>",
                    px(x),
                    py(y),
                    l.color
                );
            }
        }
        let ly = TOP + 10.0 + i as f64 * 15.0;
        let lx = LEFT + pw + 12.0;
        let _ = write!(
            o,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 22.0,
            l.color,
            lx + 28.0,
            ly + 4.0,
            l.label.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_and_axes() {
        let svg = chart(
            "t",
            &[Line {
                label: "p99".into(),
                color: "#000",
                dash: false,
                points: vec![(1000.0, 0.5), (2000.0, 3.0), (4000.0, 80.0)],
            }],
            Scale::Linear,
            Scale::Log,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains(">100<"), "a decade tick: {svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn nines_axis_and_empty_chart() {
        assert_eq!(transform(Scale::Nines, 99.0).round(), 2.0);
        assert_eq!(transform(Scale::Nines, 100.0), NINES_MAX);
        assert!(chart("t", &[], Scale::Nines, Scale::Log).contains("no data"));
    }
}
