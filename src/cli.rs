//! Command line: `berry serve`, `berry demo`, `berry mock`, `berry loadtest`, `berry validate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, DriverChoice};
use crate::routes::{resolve_all, Routes};
use crate::runtime::{self, RunOptions, Server, Shutdown};

#[derive(Parser)]
#[command(
    name = "berry",
    version,
    about = "OpenAI-compatible load-balancing gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Driver {
    Auto,
    Uring,
    Epoll,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file [default: $CONFIG_PATH, else ./config.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Number of shards (one thread per core) [default: config, else all cores]
        #[arg(long)]
        workers: Option<usize>,
        /// I/O driver [default: config, else auto: io_uring, falling back to epoll]
        #[arg(long, value_enum)]
        driver: Option<Driver>,
        /// Listen address [default: config, else $BIND_ADDRESS, else 127.0.0.1:3000]
        #[arg(long)]
        bind: Option<String>,
    },
    /// Run a demo: a mock OpenAI fleet on loopback with Berry in front of it.
    Demo {
        /// Gateway port.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Run a mock OpenAI upstream (for load tests and demos).
    Mock(crate::mock::MockArgs),
    /// Load-test a target with an open-loop generator (see loadtest/README.md).
    Loadtest(crate::loadgen::LoadtestArgs),
    /// Check a config file and print every problem with its line.
    Validate {
        /// Config file [default: $CONFIG_PATH, else ./config.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // Before any thread exists (the log writer included): every thread inherits the mask, so
    // for the servers SIGINT/SIGTERM can only be taken by `wait_for_signal` and always mean
    // "drain and stop", and SIGHUP (whose default action kills the process) is only logged.
    // The other commands keep the default actions: Ctrl-C stops a load test.
    if matches!(
        cli.command,
        Command::Serve { .. } | Command::Demo { .. } | Command::Mock(_)
    ) {
        block_signals();
    }
    crate::logging::init();
    let result = match cli.command {
        Command::Serve {
            config,
            workers,
            driver,
            bind,
        } => serve(config, workers, driver, bind),
        Command::Demo { port } => crate::demo::run(port),
        Command::Mock(args) => crate::mock::run_cli(args),
        Command::Loadtest(args) => crate::loadgen::run_cli(args),
        Command::Validate { config } => validate(config),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berry: {e}");
            1
        }
    }
}

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CONFIG_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config.toml"))
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    let cfg = config::load_file(path).map_err(|e| e.to_string())?;
    for w in &cfg.warnings {
        log::warn!("{}", w.display(&path.display().to_string()));
    }
    Ok(cfg)
}

fn validate(path: Option<PathBuf>) -> Result<(), String> {
    let path = config_path(path);
    let cfg = config::load_file(&path).map_err(|e| e.to_string())?;
    for w in &cfg.warnings {
        println!("{}", w.display(&path.display().to_string()));
    }
    Routes::build(Arc::new(cfg.clone()))?;
    println!("{}: ok ({})", path.display(), summary(&cfg));
    Ok(())
}

/// "1 provider, 2 models, 0 users": what `validate` found, for its last line.
fn summary(cfg: &Config) -> String {
    let count = |n: usize, noun: &str| {
        let s = if n == 1 { "" } else { "s" };
        format!("{n} {noun}{s}")
    };
    format!(
        "{}, {}, {}",
        count(cfg.providers.len(), "provider"),
        count(cfg.models.len(), "model"),
        count(cfg.users.len(), "user")
    )
}

fn serve(
    path: Option<PathBuf>,
    workers: Option<usize>,
    driver: Option<Driver>,
    bind: Option<String>,
) -> Result<(), String> {
    let path = config_path(path);
    let cfg = load(&path)?;
    crate::logging::configure(&cfg.observability.log_level);
    let addr = listen_address(
        bind.as_deref(),
        cfg.server.bind_address.as_deref(),
        std::env::var("BIND_ADDRESS").ok().as_deref(),
    )?;
    let workers = workers
        .or(cfg.server.workers)
        .filter(|&n| n > 0)
        .unwrap_or_else(runtime::default_workers);
    let driver = match driver {
        Some(Driver::Auto) => DriverChoice::Auto,
        Some(Driver::Uring) => DriverChoice::Uring,
        Some(Driver::Epoll) => DriverChoice::Epoll,
        None => cfg.server.driver,
    };
    let shutdown = Shutdown::new();
    let pin = cfg.server.pin_cores;
    let server = start(cfg, addr, workers, driver, pin, shutdown.clone())?;
    wait_for_signal(&shutdown);
    log::info!(
        "shutting down: draining requests in flight (a second SIGINT or SIGTERM stops at once)"
    );
    while !server.is_finished() {
        if next_signal(POLL) == Some(Signal::Stop) {
            log::warn!("second stop signal: exiting without waiting for requests in flight");
            crate::logging::flush();
            std::process::exit(1);
        }
    }
    server.join();
    log::info!("stopped");
    Ok(())
}

/// The first of `--bind`, the config's `bind_address` and `BIND_ADDRESS` that is given, else
/// 127.0.0.1:3000. An unparsable value is an error naming where it came from, since the
/// config file's own value has a line but the other two have none.
fn listen_address(
    flag: Option<&str>,
    file: Option<&str>,
    env: Option<&str>,
) -> Result<SocketAddr, String> {
    let (source, text) = match (flag, file, env) {
        (Some(v), _, _) => ("option `--bind`", v),
        (None, Some(v), _) => ("`server.bind_address`", v),
        (None, None, Some(v)) => ("environment variable `BIND_ADDRESS`", v),
        (None, None, None) => return Ok(SocketAddr::from(([127, 0, 0, 1], 3000))),
    };
    config::parse_bind_address(text).map_err(|e| format!("{source}: {e}"))
}

/// Validates the protected-mode rule, binds, and starts shards; shared by `serve` and `demo`.
pub fn start(
    cfg: Config,
    addr: SocketAddr,
    workers: usize,
    driver: DriverChoice,
    pin: bool,
    shutdown: Shutdown,
) -> Result<Server, String> {
    protected_mode(&cfg, addr)?;
    let addresses = Arc::new(resolve_all(&cfg));
    let routes = Arc::new(Routes::build(Arc::new(cfg))?);
    let listeners = runtime::bind_listeners(addr, workers)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let server = runtime::start(
        routes,
        addresses,
        listeners,
        RunOptions {
            driver,
            pin_cores: pin,
        },
        shutdown,
    )
    .map_err(|e| format!("cannot start shards: {e}"))?;
    let drivers: Vec<&str> = server.drivers.iter().map(|d| d.name()).collect();
    log::info!(
        "listening on http://{} with {} shard(s), I/O driver: {}",
        server.local_addr,
        drivers.len(),
        drivers.join(",")
    );
    Ok(server)
}

/// With no users every request is anonymous; allow that only on loopback or when the config
/// says so explicitly (like Redis's protected mode).
pub fn protected_mode(cfg: &Config, addr: SocketAddr) -> Result<(), String> {
    if cfg.users.is_empty() && !addr.ip().is_loopback() && !cfg.server.allow_anonymous {
        return Err(format!(
            "refusing to listen on {addr} without authentication: the config has no [users.*]. \
             Add users, listen on a loopback address, or set `allow_anonymous = true` in [server]"
        ));
    }
    Ok(())
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// How long one wait for a signal lasts before the caller looks at its own state again.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Signal {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP: by habit (nginx, HAProxy, systemd's `ExecReload`) it means "reload".
    Hangup,
}

/// Takes the next blocked signal of [`signal_set`], waiting at most `wait`. SIGHUP is answered
/// here: Berry cannot reload its configuration yet, and must not die of it.
fn next_signal(wait: std::time::Duration) -> Option<Signal> {
    let set = signal_set();
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timeout; a null siginfo pointer is allowed.
    match unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) } {
        libc::SIGHUP => {
            log::warn!(
                "SIGHUP ignored: Berry does not reload its configuration yet; \
                 restart it to apply a changed config"
            );
            Some(Signal::Hangup)
        }
        n if n > 0 => Some(Signal::Stop),
        _ => None,
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it spawns
/// afterwards, so they can only be taken by [`wait_for_signal`]. Call before starting shards.
pub fn block_signals() {
    let set = signal_set();
    // SAFETY: a valid, initialised signal set; changing this thread's mask has no other effect.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until SIGINT or SIGTERM arrives (or `shutdown` is triggered elsewhere), then triggers
/// `shutdown`. SIGHUP is logged and ignored.
pub fn wait_for_signal(shutdown: &Shutdown) {
    while !shutdown.is_triggered() {
        if next_signal(POLL) == Some(Signal::Stop) {
            shutdown.trigger();
        }
    }
}

#[cfg(test)]
mod tests;
