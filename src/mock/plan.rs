//! What the mock does with one request: its latency distribution, the faults it may inject, and
//! the per-request overrides a client can ask for with `x-mock-*` headers. Pure: parsing and
//! sampling only, no I/O.

use std::fmt;
use std::time::Duration;

/// z-score of the 99th percentile of a standard normal distribution.
const Z99: f64 = 2.326_347_874;
/// No sampled latency exceeds this, whatever the distribution's tail says.
const LATENCY_CAP: Duration = Duration::from_secs(60);

/// How long the mock waits before it answers (before the status line).
#[derive(Clone, Debug, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    /// Uniform between the two bounds, inclusive.
    Uniform(Duration, Duration),
    /// Log-normal, given by its median and 99th percentile.
    LogNormal {
        p50: Duration,
        p99: Duration,
    },
}

impl Latency {
    /// `20` or `fixed:20` (ms), `uniform:10-50`, `lognormal:20,200` (p50,p99 in ms).
    pub fn parse(spec: &str) -> Result<Latency, String> {
        let ms = |s: &str| -> Result<Duration, String> {
            let v: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
            if !(0.0..=LATENCY_CAP.as_millis() as f64).contains(&v) {
                return Err(format!("{v} ms is outside 0..=60000"));
            }
            Ok(Duration::from_secs_f64(v / 1000.0))
        };
        let (kind, args) = spec.split_once(':').unwrap_or(("fixed", spec));
        match kind.trim() {
            "fixed" => Ok(Latency::Fixed(ms(args)?)),
            "uniform" => {
                let (lo, hi) = args
                    .split_once('-')
                    .ok_or("uniform latency is `uniform:MIN-MAX` (ms)")?;
                let (lo, hi) = (ms(lo)?, ms(hi)?);
                if lo > hi {
                    return Err("uniform latency needs MIN <= MAX".into());
                }
                Ok(Latency::Uniform(lo, hi))
            }
            "lognormal" => {
                let (p50, p99) = args
                    .split_once(',')
                    .ok_or("log-normal latency is `lognormal:P50,P99` (ms)")?;
                let (p50, p99) = (ms(p50)?, ms(p99)?);
                if p50.is_zero() || p99 < p50 {
                    return Err("log-normal latency needs 0 < P50 <= P99".into());
                }
                Ok(Latency::LogNormal { p50, p99 })
            }
            other => Err(format!(
                "unknown latency distribution `{other}` (fixed, uniform, lognormal)"
            )),
        }
    }

    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) => {
                let span = (hi - lo).as_nanos() as u64;
                lo + Duration::from_nanos(rng.u64(0..=span))
            }
            Latency::LogNormal { p50, p99 } => {
                let mu = p50.as_secs_f64().ln();
                let sigma = (p99.as_secs_f64() / p50.as_secs_f64()).ln() / Z99;
                let v = (mu + sigma * standard_normal(rng)).exp();
                Duration::from_secs_f64(v.min(LATENCY_CAP.as_secs_f64()))
            }
        }
    }
}

/// Box–Muller; one of the pair is thrown away, which is cheap enough here.
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1], so ln() is finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One injected fault. The optional number after `:` is the fault's argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An error status with an OpenAI error body; `429` carries `Retry-After` (the argument, in
    /// seconds, default 1).
    Status(u16, u32),
    /// Close the connection with a TCP reset before any byte of the answer.
    Reset,
    /// Read the request, never answer; hold the connection until the client closes it.
    Silence,
    /// Stream: send the head and `after` events, then nothing until the client closes.
    Stall { after: u32 },
    /// Stream: pause for `ms` after `after` events, then finish normally (a stall the client
    /// should see as one long gap).
    Pause { after: u32, ms: u32 },
    /// Stream: close the connection after `after` events (no final chunk). A JSON answer is cut
    /// halfway through its body.
    Cut { after: u32 },
    /// Stream: event number `after` is not JSON. A JSON answer has a broken body.
    Malformed { after: u32 },
    /// Stream: end cleanly but without `data: [DONE]`.
    NoDone,
}

impl Fault {
    /// `500`, `503`, `429`, `429:5`, `reset`, `silence`, `stall`, `stall:3`, `pause:200`,
    /// `cut`, `cut:5`, `malformed`, `no-done`.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let spec = spec.trim();
        let (kind, arg) = match spec.split_once(':') {
            Some((k, a)) => {
                let n: u32 = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("fault `{spec}`: `{a}` is not a whole number"))?;
                (k.trim(), Some(n))
            }
            None => (spec, None),
        };
        let fault = match kind {
            "reset" => Fault::Reset,
            "silence" => Fault::Silence,
            "stall" => Fault::Stall {
                after: arg.unwrap_or(0),
            },
            "pause" => Fault::Pause {
                after: 2,
                ms: arg.unwrap_or(1000),
            },
            "cut" => Fault::Cut {
                after: arg.unwrap_or(2),
            },
            "malformed" => Fault::Malformed {
                after: arg.unwrap_or(1),
            },
            "no-done" => Fault::NoDone,
            code => match code.parse::<u16>() {
                Ok(status @ 400..=599) => Fault::Status(status, arg.unwrap_or(1)),
                _ => {
                    return Err(format!(
                        "unknown fault `{spec}` (4xx/5xx status, reset, silence, stall, pause, \
                         cut, malformed, no-done)"
                    ))
                }
            },
        };
        Ok(fault)
    }

    /// Index into the stats' per-outcome counters.
    pub fn outcome(self) -> Outcome {
        match self {
            Fault::Status(429, _) => Outcome::RateLimited,
            Fault::Status(s, _) if s >= 500 => Outcome::ServerError,
            Fault::Status(..) => Outcome::ClientError,
            Fault::Reset => Outcome::Reset,
            Fault::Silence => Outcome::Silence,
            Fault::Stall { .. } => Outcome::Stall,
            Fault::Pause { .. } => Outcome::Pause,
            Fault::Cut { .. } => Outcome::Cut,
            Fault::Malformed { .. } => Outcome::Malformed,
            Fault::NoDone => Outcome::NoDone,
        }
    }
}

/// Faults injected at random: each request draws at most one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultMix(pub Vec<(Fault, f64)>);

impl FaultMix {
    /// `429=0.01,cut:5=0.002` — fault and probability pairs; the probabilities add up to ≤ 1.
    pub fn parse(spec: &str) -> Result<FaultMix, String> {
        let mut mix = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (fault, rate) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: write FAULT=RATE, e.g. 429=0.01"))?;
            let rate: f64 = rate
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: `{rate}` is not a rate"))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("`{part}`: a rate is between 0 and 1"));
            }
            mix.push((Fault::parse(fault)?, rate));
        }
        if mix.iter().map(|(_, r)| r).sum::<f64>() > 1.0 + 1e-9 {
            return Err("fault rates add up to more than 1".into());
        }
        Ok(FaultMix(mix))
    }

    pub fn draw(&self, rng: &mut fastrand::Rng) -> Option<Fault> {
        if self.0.is_empty() {
            return None;
        }
        let mut x = rng.f64();
        for &(fault, rate) in &self.0 {
            if x < rate {
                return Some(fault);
            }
            x -= rate;
        }
        None
    }
}

/// What the mock counts, one counter per outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Json,
    Stream,
    NotFound,
    RateLimited,
    ClientError,
    ServerError,
    Reset,
    Silence,
    Stall,
    Pause,
    Cut,
    Malformed,
    NoDone,
    /// The client went away before the answer was written whole.
    ClientGone,
}

impl Outcome {
    pub const ALL: [Outcome; 14] = [
        Outcome::Json,
        Outcome::Stream,
        Outcome::NotFound,
        Outcome::RateLimited,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Reset,
        Outcome::Silence,
        Outcome::Stall,
        Outcome::Pause,
        Outcome::Cut,
        Outcome::Malformed,
        Outcome::NoDone,
        Outcome::ClientGone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Json => "ok_json",
            Outcome::Stream => "ok_stream",
            Outcome::NotFound => "not_found",
            Outcome::RateLimited => "status_429",
            Outcome::ClientError => "status_4xx",
            Outcome::ServerError => "status_5xx",
            Outcome::Reset => "reset",
            Outcome::Silence => "silence",
            Outcome::Stall => "stall",
            Outcome::Pause => "pause",
            Outcome::Cut => "cut",
            Outcome::Malformed => "malformed",
            Outcome::NoDone => "no_done",
            Outcome::ClientGone => "client_gone",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A periodic whole-server freeze (like a GC pause): every `every`, nothing is answered for
/// `length`. Requests that arrive in the window wait for its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hiccup {
    pub every: Duration,
    pub length: Duration,
}

impl Hiccup {
    /// How long a request arriving `since_start` after the mock started must wait.
    pub fn wait(&self, since_start: Duration) -> Duration {
        if self.every.is_zero() || self.length.is_zero() {
            return Duration::ZERO;
        }
        let phase = since_start.as_nanos() % self.every.as_nanos();
        let length = self.length.as_nanos();
        if phase < length {
            Duration::from_nanos((length - phase) as u64)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn latency_specs() {
        assert_eq!(Latency::parse("20"), Ok(Latency::Fixed(ms(20))));
        assert_eq!(Latency::parse("fixed:5"), Ok(Latency::Fixed(ms(5))));
        assert_eq!(
            Latency::parse("uniform:10-50"),
            Ok(Latency::Uniform(ms(10), ms(50)))
        );
        assert_eq!(
            Latency::parse("lognormal:20,200"),
            Ok(Latency::LogNormal {
                p50: ms(20),
                p99: ms(200)
            })
        );
        for bad in [
            "",
            "x",
            "uniform:5",
            "uniform:9-1",
            "lognormal:0,5",
            "gauss:1",
        ] {
            assert!(Latency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lognormal_hits_its_percentiles() {
        let d = Latency::parse("lognormal:20,200").unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut v: Vec<f64> = (0..200_000)
            .map(|_| d.sample(&mut rng).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        let p50 = v[v.len() / 2];
        let p99 = v[v.len() * 99 / 100];
        assert!((p50 - 20.0).abs() < 1.0, "p50 {p50}");
        assert!((p99 - 200.0).abs() < 15.0, "p99 {p99}");
    }

    #[test]
    fn uniform_stays_in_bounds() {
        let d = Latency::parse("uniform:10-12").unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..1000 {
            let s = d.sample(&mut rng);
            assert!(s >= ms(10) && s <= ms(12));
        }
    }

    #[test]
    fn fault_specs() {
        assert_eq!(Fault::parse("429"), Ok(Fault::Status(429, 1)));
        assert_eq!(Fault::parse("429:5"), Ok(Fault::Status(429, 5)));
        assert_eq!(Fault::parse("503"), Ok(Fault::Status(503, 1)));
        assert_eq!(Fault::parse("cut"), Ok(Fault::Cut { after: 2 }));
        assert_eq!(Fault::parse("cut:7"), Ok(Fault::Cut { after: 7 }));
        assert_eq!(Fault::parse("stall"), Ok(Fault::Stall { after: 0 }));
        assert_eq!(
            Fault::parse("pause:100"),
            Ok(Fault::Pause { after: 2, ms: 100 })
        );
        assert_eq!(Fault::parse("no-done"), Ok(Fault::NoDone));
        for bad in ["", "200", "600", "cut:x", "boom"] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_mix_draws_at_its_rates() {
        let mix = FaultMix::parse("429=0.1, reset=0.2").unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let (mut a, mut b) = (0, 0);
        for _ in 0..100_000 {
            match mix.draw(&mut rng) {
                Some(Fault::Status(429, _)) => a += 1,
                Some(Fault::Reset) => b += 1,
                _ => {}
            }
        }
        assert!((9_000..11_000).contains(&a), "{a}");
        assert!((19_000..21_000).contains(&b), "{b}");
        assert!(FaultMix::parse("500=0.7,429=0.5").is_err());
        assert!(FaultMix::parse("500").is_err());
        assert_eq!(FaultMix::parse(""), Ok(FaultMix::default()));
    }

    #[test]
    fn hiccup_window() {
        let h = Hiccup {
            every: ms(1000),
            length: ms(100),
        };
        assert_eq!(h.wait(ms(0)), ms(100));
        assert_eq!(h.wait(ms(1030)), ms(70));
        assert_eq!(h.wait(ms(1100)), ms(0));
        assert_eq!(h.wait(ms(1999)), ms(0));
    }
}
