//! Scenario files (`loadtest/scenarios/*.toml`): what to send, how fast, for how long, and to
//! which target. Everything is bounded: a run cannot outlast `DURATION_MAX` nor send more than
//! its request budget, and it targets loopback unless the user allows another address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// Longest measured run (warm-up included) a scenario may ask for.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Most requests one run may send, whatever the rate and duration.
pub const REQUESTS_MAX: u64 = 100_000_000;

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Requests leave on a schedule whether or not earlier ones finished; latency counts from
    /// the scheduled time.
    #[default]
    Open,
    /// Each connection sends its next request when the last one finished (wrk, Locust).
    Closed,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced requests.
    #[default]
    Constant,
    /// Exponentially distributed gaps with the same mean.
    Poisson,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// `mock` (start a mock), `berry` (start a mock and Berry in front of it), or
    /// `http://IP:PORT` of a running server.
    pub target: String,
    pub mode: Mode,
    pub arrival: Arrival,
    /// Open loop: requests per second, all threads together.
    pub rate: f64,
    /// Open loop: most connections open at once; closed loop: the number of connections.
    pub connections: usize,
    pub duration_s: f64,
    /// Uncounted time before the measured window.
    pub warmup_s: f64,
    /// Closed loop: connections start spread over this many seconds.
    pub ramp_s: f64,
    /// Stop after this many requests (default: what the schedule holds, or `REQUESTS_MAX`).
    pub max_requests: Option<u64>,
    pub timeout_ms: u64,
    /// A gap between two stream events longer than this is a stall.
    pub stall_ms: u64,
    /// Generator threads (0: one per core).
    pub threads: usize,
    pub model: String,
    /// Bearer token; with a managed Berry the harness sets its own.
    pub token: Option<String>,
    /// Share of chat and completion requests sent with `"stream": true` (overrides `stream`).
    pub stream_share: Option<f64>,
    pub requests: Vec<RequestSpec>,
    pub sweep: Option<SweepSpec>,
    pub mock: MockSpec,
    pub berry: BerrySpec,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "adhoc".into(),
            description: String::new(),
            target: "mock".into(),
            mode: Mode::Open,
            arrival: Arrival::Constant,
            rate: 1000.0,
            connections: 512,
            duration_s: 10.0,
            warmup_s: 1.0,
            ramp_s: 0.0,
            max_requests: None,
            timeout_ms: 10_000,
            stall_ms: 40,
            threads: 0,
            model: "bench-model".into(),
            token: None,
            stream_share: None,
            requests: Vec::new(),
            sweep: None,
            mock: MockSpec::default(),
            berry: BerrySpec::default(),
        }
    }
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct RequestSpec {
    pub weight: f64,
    pub path: String,
    pub stream: bool,
    /// Bytes of prompt text in the body.
    pub prompt_bytes: usize,
    pub max_tokens: u32,
    /// Extra headers, e.g. `x-mock-fault = "429"` or `x-mock-tokens = "64"`.
    pub headers: BTreeMap<String, String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            weight: 1.0,
            path: "/v1/chat/completions".into(),
            stream: false,
            prompt_bytes: 64,
            max_tokens: 16,
            headers: BTreeMap::new(),
        }
    }
}

/// `--sweep`: raise the load step by step until p99 or the error rate passes its bound. The
/// levels are rates in an open loop and connection counts in a closed loop.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSpec {
    /// Explicit levels; when empty, `start`, then `+ step` (or `× factor`) up to `max`.
    pub rates: Vec<f64>,
    pub start: f64,
    pub step: f64,
    pub factor: f64,
    pub max: f64,
    /// Measured seconds per step (warm-up comes on top).
    pub step_s: f64,
    pub p99_ms: f64,
    pub max_error_rate: f64,
    /// A step with any stream stall fails.
    pub stall_free: bool,
}

impl Default for SweepSpec {
    fn default() -> Self {
        SweepSpec {
            rates: Vec::new(),
            start: 1000.0,
            step: 0.0,
            factor: 1.5,
            max: 200_000.0,
            step_s: 5.0,
            p99_ms: 50.0,
            max_error_rate: 0.01,
            stall_free: false,
        }
    }
}

impl SweepSpec {
    /// The rates to try, in order (at most 64 steps).
    pub fn rates(&self) -> Vec<f64> {
        if !self.rates.is_empty() {
            return self.rates.iter().copied().take(64).collect();
        }
        let mut out = Vec::new();
        let mut r = self.start.max(1.0);
        while r <= self.max && out.len() < 64 {
            out.push(r.round());
            r = if self.step > 0.0 {
                r + self.step
            } else {
                r * self.factor.max(1.05)
            };
        }
        out
    }
}

/// The mock the harness starts for `target = "mock"` or `"berry"` (flags of `berry mock`).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct MockSpec {
    pub workers: usize,
    pub latency: String,
    pub ttft_ms: u64,
    pub tokens: usize,
    pub token_delay_ms: u64,
    pub token_bytes: usize,
    pub response_bytes: usize,
    pub faults: String,
    pub hiccup_every_ms: u64,
    pub hiccup_ms: u64,
}

impl Default for MockSpec {
    fn default() -> Self {
        MockSpec {
            workers: 1,
            latency: "0".into(),
            ttft_ms: 0,
            tokens: 16,
            token_delay_ms: 20,
            token_bytes: 0,
            response_bytes: 0,
            faults: String::new(),
            hiccup_every_ms: 0,
            hiccup_ms: 0,
        }
    }
}

/// The Berry the harness starts for `target = "berry"`.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct BerrySpec {
    pub workers: usize,
    /// `auto`, `uring` or `epoll`.
    pub driver: String,
    /// `settings.max_retries`; 0 by default so that a comparison measures the proxy hop alone.
    pub max_retries: u32,
}

impl Default for BerrySpec {
    fn default() -> Self {
        BerrySpec {
            workers: 2,
            driver: "auto".into(),
            max_retries: 0,
        }
    }
}

/// Where the load goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A mock the harness starts.
    Mock,
    /// A mock plus Berry in front of it, both started by the harness.
    Berry,
    /// A server that is already running.
    Url(SocketAddr),
}

impl Target {
    /// `mock`, `berry` or `http://IP:PORT` (`localhost` means 127.0.0.1; no DNS). An address
    /// outside loopback needs `allow_remote`: a load test must never hit a machine by accident.
    pub fn parse(s: &str, allow_remote: bool) -> Result<Target, String> {
        match s.trim() {
            "mock" => return Ok(Target::Mock),
            "berry" => return Ok(Target::Berry),
            _ => {}
        }
        let rest = s
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| format!("target `{s}`: use mock, berry or http://IP:PORT"))?;
        let hostport = rest.trim_end_matches('/');
        let addr: SocketAddr = match hostport.strip_prefix("localhost:") {
            Some(port) => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port.parse()
                    .map_err(|_| format!("target `{s}`: bad port"))?,
            ),
            None => hostport
                .parse()
                .map_err(|_| format!("target `{s}`: write an IP address and a port"))?,
        };
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(format!(
                "target {addr} is not a loopback address; pass --allow-remote to load it on purpose"
            ));
        }
        Ok(Target::Url(addr))
    }
}

impl Scenario {
    pub fn load(path: &std::path::Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut s: Scenario =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if s.name == "adhoc" {
            if let Some(stem) = path.file_stem() {
                s.name = stem.to_string_lossy().into_owned();
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks bounds; fills an empty request list with one small chat completion.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.requests.is_empty() {
            self.requests.push(RequestSpec::default());
        }
        let positive = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{what} must be positive"))
            }
        };
        positive(self.duration_s, "duration_s")?;
        if self.mode == Mode::Open {
            positive(self.rate, "rate")?;
        }
        if !(0.0..=3600.0).contains(&self.warmup_s) || !(0.0..=3600.0).contains(&self.ramp_s) {
            return Err("warmup_s and ramp_s must be between 0 and 3600".into());
        }
        if self.duration_s + self.warmup_s > DURATION_MAX.as_secs_f64() {
            return Err(format!(
                "duration_s + warmup_s is over the {} s limit",
                DURATION_MAX.as_secs()
            ));
        }
        if !(1..=200_000).contains(&self.connections) {
            return Err("connections must be between 1 and 200000".into());
        }
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err("timeout_ms must be between 1 and 600000".into());
        }
        if self.rate > 2_000_000.0 {
            return Err("rate is over 2,000,000 req/s".into());
        }
        if let Some(s) = self.stream_share {
            if !(0.0..=1.0).contains(&s) {
                return Err("stream_share must be between 0 and 1".into());
            }
        }
        for r in &self.requests {
            positive(r.weight, "a request's weight")?;
            if !r.path.starts_with('/') {
                return Err(format!("request path `{}` must start with /", r.path));
            }
        }
        if let Some(sw) = &self.sweep {
            positive(sw.step_s, "sweep.step_s")?;
            positive(sw.p99_ms, "sweep.p99_ms")?;
        }
        Ok(())
    }

    /// The request budget of one run of `seconds` (warm-up included) at `rate`.
    pub fn request_budget(&self, rate: f64, seconds: f64) -> u64 {
        let schedule = match self.mode {
            Mode::Open => (rate * seconds).ceil() as u64,
            Mode::Closed => REQUESTS_MAX,
        };
        schedule
            .min(self.max_requests.unwrap_or(REQUESTS_MAX))
            .min(REQUESTS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_target_loopback() {
        let mut s: Scenario = toml::from_str("rate = 10").unwrap();
        s.validate().unwrap();
        assert_eq!(Target::parse(&s.target, false), Ok(Target::Mock));
        assert_eq!(s.requests.len(), 1);
        assert!(s.request_budget(s.rate, s.duration_s + s.warmup_s) <= 110);
    }

    #[test]
    fn remote_targets_need_permission() {
        assert!(Target::parse("http://10.1.2.3:80", false).is_err());
        assert!(Target::parse("http://10.1.2.3:80", true).is_ok());
        assert_eq!(
            Target::parse("http://localhost:3000", false),
            Ok(Target::Url("127.0.0.1:3000".parse().unwrap()))
        );
        assert!(Target::parse("https://127.0.0.1:1", false).is_err());
        assert!(Target::parse("http://example.com:80", true).is_err());
    }

    #[test]
    fn bounds_are_enforced() {
        for bad in [
            "duration_s = 4000",
            "duration_s = 0",
            "rate = -1",
            "connections = 0",
            "timeout_ms = 0",
            "stream_share = 2.0",
            "nonsense = 1",
        ] {
            let parsed: Result<Scenario, _> = toml::from_str(bad);
            let ok = parsed
                .map_err(|e| e.to_string())
                .and_then(|mut s| s.validate());
            assert!(ok.is_err(), "{bad}");
        }
    }

    #[test]
    fn sweep_rates() {
        let sw = SweepSpec {
            start: 100.0,
            step: 100.0,
            max: 400.0,
            ..SweepSpec::default()
        };
        assert_eq!(sw.rates(), vec![100.0, 200.0, 300.0, 400.0]);
        let sw = SweepSpec {
            start: 100.0,
            factor: 2.0,
            max: 1000.0,
            ..SweepSpec::default()
        };
        assert_eq!(sw.rates(), vec![100.0, 200.0, 400.0, 800.0]);
    }
}
