//! The processes a load test starts for itself: a `berry mock` and a `berry serve` in front of
//! it, each a child process on a free 127.0.0.1 port (so their CPU time and memory can be read
//! apart from the generator's), stopped when dropped. Also the `/proc` readings.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::scenario::{BerrySpec, MockSpec};

/// The managed gateway's only API key (loopback only).
pub const TOKEN: &str = "berry-loadtest-token-0123456789";

pub struct Proc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: both drain and exit cleanly; SIGKILL if that takes too long.
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now (another process could still take it before us).
fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

fn spawn(
    name: &'static str,
    bin: &Path,
    args: &[String],
    addr: SocketAddr,
    dir: &Path,
) -> Result<Proc, String> {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut p = Proc {
        name,
        addr,
        child,
        log,
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if !p.alive() {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            return Err(format!("{name} exited during start-up: {}", text.trim()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(p);
        }
        if Instant::now() > until {
            return Err(format!("{name} did not listen on {addr} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn start_mock(bin: &Path, m: &MockSpec, dir: &Path) -> Result<Proc, String> {
    let addr = free_port()?;
    let args: Vec<String> = [
        "mock",
        "--bind",
        &addr.to_string(),
        "--workers",
        &m.workers.max(1).to_string(),
        "--latency",
        &m.latency,
        "--ttft-ms",
        &m.ttft_ms.to_string(),
        "--stream-events",
        &m.tokens.to_string(),
        "--event-delay-ms",
        &m.token_delay_ms.to_string(),
        "--token-bytes",
        &m.token_bytes.to_string(),
        "--response-bytes",
        &m.response_bytes.to_string(),
        "--faults",
        &m.faults,
        "--hiccup-every-ms",
        &m.hiccup_every_ms.to_string(),
        "--hiccup-ms",
        &m.hiccup_ms.to_string(),
        "--name",
        "loadtest-mock",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn("mock", bin, &args, addr, dir)
}

/// The config a managed Berry runs: one provider (the mock), one model, one user.
pub fn berry_config(addr: SocketAddr, mock: SocketAddr, model: &str, max_retries: u32) -> String {
    format!(
        r#"[server]
bind_address = "{addr}"
connections_per_shard_max = 200000

[settings]
max_retries = {max_retries}

[providers.mock]
name = "Load-test mock"
base_url = "http://{mock}"
api_key = "sk-loadtest-mock-000000000000"
models = ["mock-model"]

[models.bench]
name = {model:?}
[[models.bench.backends]]
provider = "mock"
model = "mock-model"

[users.bench]
name = "Load test"
token = "{TOKEN}"
"#
    )
}

pub fn start_berry(
    bin: &Path,
    b: &BerrySpec,
    mock: SocketAddr,
    model: &str,
    dir: &Path,
) -> Result<Proc, String> {
    let addr = free_port()?;
    let config = dir.join("berry.toml");
    std::fs::write(&config, berry_config(addr, mock, model, b.max_retries))
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let args: Vec<String> = vec![
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
        "--workers".into(),
        b.workers.max(1).to_string(),
        "--driver".into(),
        b.driver.clone(),
    ];
    spawn("berry", bin, &args, addr, dir)
}

/// utime + stime of a process, in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm) "; utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000 / hz)
}

/// Machine-wide CPU time in clock ticks, from the first line of /proc/stat.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineTicks {
    /// Time the hypervisor gave this VM's CPUs to someone else.
    pub steal: u64,
    /// idle + iowait.
    pub idle: u64,
    pub total: u64,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some(MachineTicks {
        steal: *f.get(7)?,
        idle: f.get(3)? + f.get(4)?,
        total: f.iter().take(8).sum(),
    })
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's open-file limit (inherited by the children it starts) to at least
/// `want`: the soft limit up to the hard one, and the hard one too when we may (root).
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want.max(lim.rlim_cur),
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: as above; failure leaves the limit unchanged.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let soft = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    lim.rlim_max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_cpu_and_memory() {
        let me = std::process::id();
        assert!(cpu_us(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
    }

    #[test]
    fn managed_config_is_valid() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let text = berry_config(a, a, "bench-model", 0);
        let cfg = crate::config::load_str(&text, "t.toml").expect("valid config");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings.len());
    }
}
