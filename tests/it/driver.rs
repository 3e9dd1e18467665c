//! The real binary under a seccomp filter that refuses io_uring the way Docker's default profile
//! does (EPERM): `auto` must fall back to epoll and serve, `--driver uring` must fail clearly.
//! Also the process's signals: SIGTERM drains, a second one stops at once, SIGHUP is ignored.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::*;

/// `AUDIT_ARCH_*` from linux/audit.h: the ELF machine | 64-bit | little-endian.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64 (EM_X86_64 = 62)
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64 (EM_AARCH64 = 183)

/// Offsets into `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// io_uring_setup/enter/register → EPERM; every other syscall (and any other arch) → allowed.
/// Jump offsets count instructions skipped after the current one.
static DENY_IO_URING: [libc::sock_filter; 8] = [
    /* 0 */ insn(LD_ABS, 0, 0, ARCH_OFFSET), // A = seccomp_data.arch
    /* 1 */ insn(JEQ, 0, 5, AUDIT_ARCH), // not our ABI → 7 (allow)
    /* 2 */ insn(LD_ABS, 0, 0, NR_OFFSET), // A = seccomp_data.nr
    /* 3 */ insn(JEQ, 2, 0, libc::SYS_io_uring_setup as u32), // → 6 (deny)
    /* 4 */ insn(JEQ, 1, 0, libc::SYS_io_uring_enter as u32), // → 6 (deny)
    /* 5 */ insn(JEQ, 0, 1, libc::SYS_io_uring_register as u32), // → 6 (deny) / 7
    /* 6 */ insn(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    /* 7 */ insn(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
];

/// Installs [`DENY_IO_URING`] in the calling (forked, not yet exec'd) process. Only
/// async-signal-safe calls: no allocation, no locks.
fn deny_io_uring() -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: DENY_IO_URING.len() as libc::c_ushort,
        filter: DENY_IO_URING.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; `prog` points at a static filter and outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A running `berry serve`; killed and reaped on drop so a failed assertion never leaks it.
struct Berry {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    _config: TempFile,
}

impl Drop for Berry {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Berry {
    fn spawn(config: &str, seccomp: bool, extra_args: &[&str]) -> Berry {
        let config = temp_file("berry.toml", config);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berry"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config.path)
            .args(["--workers", "2"])
            .args(extra_args)
            .env("RUST_LOG", "info")
            .env_remove("MONOIO_FORCE_LEGACY_DRIVER")
            .env_remove("CONFIG_PATH")
            .env_remove("BIND_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if seccomp {
            // SAFETY: the hook only calls prctl (async-signal-safe) between fork and exec.
            unsafe {
                cmd.pre_exec(deny_io_uring);
            }
        }
        let mut child = cmd.spawn().expect("berry binary starts");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Berry {
            child,
            stderr,
            reader: Some(reader),
            _config: config,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Polls until berry has logged that it listens (start-up is over, the main thread waits
    /// for signals) and `addr` accepts; panics (with stderr) if berry exits first.
    fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("berry exited early ({status}):\n{}", self.finish_stderr());
            }
            if self.stderr().contains("listening on") && TcpStream::connect(addr).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "berry never accepted on {addr}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "berry did not exit within {limit:?}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// All of stderr, once the process has exited (the pipe reaches EOF).
    fn finish_stderr(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.stderr()
    }

    fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child by pid; it is not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }
}

/// A loopback address that was free a moment ago (bound to port 0, then released).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// No users (anonymous is allowed on loopback), one plain-HTTP provider, no active checks.
fn serve_config(bind: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
bind_address = "{bind}"

[providers.up]
name = "Up"
base_url = "http://{upstream}"
api_key = "sk-up-secret-0000000000"
models = ["up-model"]

[models.chat]
name = "gpt-test"
[[models.chat.backends]]
provider = "up"
model = "up-model"
# No startup probe: the tests count the requests the upstream received.
health_check = "none"
"#
    )
}

/// Boots berry (auto driver), proxies one chat request, stops it with SIGTERM, and returns
/// everything it wrote to stderr.
fn serve_one_request_then_sigterm(seccomp: bool) -> String {
    let up = upstream(|_| json_reply(200, r#"{"ok":"driver"}"#));
    let addr = free_addr();
    let mut berry = Berry::spawn(&serve_config(addr, up.addr), seccomp, &[]);
    berry.wait_ready(addr);
    let r = send_raw(
        addr,
        &post_with(
            "/v1/chat/completions",
            r#"{"model":"gpt-test","messages":[]}"#,
            "",
        ),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), berry.stderr());
    assert_eq!(r.text(), r#"{"ok":"driver"}"#);
    assert_eq!(up.count(), 1);
    berry.sigterm();
    let status = berry.wait_exit(Duration::from_secs(5));
    let stderr = berry.finish_stderr();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status}:\n{stderr}"
    );
    stderr
}

#[test]
fn auto_falls_back_to_epoll_when_seccomp_refuses_io_uring() {
    let stderr = serve_one_request_then_sigterm(true);
    assert!(stderr.contains("I/O driver: epoll,epoll"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn auto_uses_io_uring_when_allowed() {
    if !monoio::utils::detect_uring() {
        eprintln!("skipped: io_uring is not available to this test process");
        return;
    }
    let stderr = serve_one_request_then_sigterm(false);
    assert!(stderr.contains("I/O driver: io_uring,io_uring"), "{stderr}");
}

#[test]
fn forced_uring_fails_clearly_when_seccomp_refuses_it() {
    let up = upstream(|_| json_reply(200, "{}"));
    let addr = free_addr();
    let mut berry = Berry::spawn(&serve_config(addr, up.addr), true, &["--driver", "uring"]);
    let status = berry.wait_exit(Duration::from_secs(5));
    let stderr = berry.finish_stderr();
    assert!(!status.success(), "must fail, got {status}:\n{stderr}");
    assert!(stderr.contains("io_uring unavailable"), "{stderr}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing may keep listening"
    );
    assert_eq!(up.count(), 0);
}

/// Regression: SIGTERM right after start-up must drain, never kill. The log writer thread used
/// to be spawned before signals were blocked, so the kernel could hand it the signal (exit 143).
#[test]
fn sigterm_at_any_moment_after_start_exits_cleanly() {
    let up = upstream(|_| json_reply(200, "{}"));
    for _ in 0..5 {
        let addr = free_addr();
        let mut berry = Berry::spawn(&serve_config(addr, up.addr), false, &[]);
        // Only wait for the port: the signal arrives while start-up may still be logging.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "berry never listened:\n{}",
                berry.stderr()
            );
            thread::sleep(Duration::from_millis(5));
        }
        berry.sigterm();
        let status = berry.wait_exit(Duration::from_secs(5));
        assert!(
            status.success(),
            "exit status {status}:\n{}",
            berry.finish_stderr()
        );
    }
}

/// SIGHUP's default action kills a process; operators send it out of habit (nginx reloads on
/// it, systemd's `ExecReload` often does). Berry says it cannot reload and keeps serving.
#[test]
fn sighup_is_logged_and_ignored() {
    let up = upstream(|_| json_reply(200, "{}"));
    let addr = free_addr();
    let mut berry = Berry::spawn(&serve_config(addr, up.addr), false, &[]);
    berry.wait_ready(addr);
    berry.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !berry.stderr().contains("SIGHUP ignored") {
        assert!(Instant::now() < deadline, "{}", berry.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let body = r#"{"model":"gpt-test","messages":[]}"#;
    let r = send_raw(addr, &post_with("/v1/chat/completions", body, ""));
    assert_eq!(
        r.status,
        200,
        "still serving after SIGHUP:\n{}",
        berry.stderr()
    );
    berry.sigterm();
    let status = berry.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}:\n{}", berry.finish_stderr());
}

/// During a drain a second SIGTERM (or Ctrl-C) means "now": Berry exits at once instead of
/// waiting `drain_timeout_ms` for a long stream.
#[test]
fn a_second_stop_signal_during_a_drain_exits_at_once() {
    let mut pieces = vec![SSE_HEAD.as_bytes().to_vec()];
    for i in 0..200 {
        pieces.push(chunk(&format!("data: {{\"n\":{i}}}\n\n")));
    }
    let up = upstream(move |_| Reply::Paced(pieces.clone(), Duration::from_millis(50)));
    let addr = free_addr();
    let mut berry = Berry::spawn(&serve_config(addr, up.addr), false, &[]);
    berry.wait_ready(addr);
    let mut s = TcpStream::connect(addr).unwrap();
    let body = r#"{"model":"gpt-test","stream":true}"#;
    std::io::Write::write_all(&mut s, &post_with("/v1/chat/completions", body, "")).unwrap();
    let mut first = [0u8; 64];
    s.read_exact(&mut first).unwrap();
    berry.sigterm();
    thread::sleep(Duration::from_millis(300));
    assert!(
        berry.child.try_wait().unwrap().is_none(),
        "one SIGTERM drains: the stream is still being served"
    );
    let second = Instant::now();
    berry.sigterm();
    let status = berry.wait_exit(Duration::from_secs(3));
    let stderr = berry.finish_stderr();
    assert!(second.elapsed() < Duration::from_secs(2), "{stderr}");
    assert!(
        !status.success(),
        "a forced stop is not a clean exit: {status}"
    );
    assert!(stderr.contains("second stop signal"), "{stderr}");
}

/// What a dead backend leaves in the log: its failing check once (not every round), the
/// circuit opening once, and both again when it comes back.
#[test]
fn a_dead_backend_is_logged_once_when_it_goes_and_once_when_it_returns() {
    let addr = free_addr();
    let up_addr = free_addr();
    let config = serve_config(addr, up_addr)
        .replace("health_check = \"none\"", "")
        .replace(
            "[providers.up]",
            "[settings]\nhealth_check_interval_seconds = 1\ncircuit_breaker_failure_threshold = 1\n\
             circuit_breaker_timeout_seconds = 1\n\n[providers.up]",
        );
    let mut berry = Berry::spawn(&config, false, &[]);
    berry.wait_ready(addr);
    let opened = "circuit of up/up-model (model `gpt-test`) closed -> open";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !berry.stderr().contains(opened) {
        assert!(Instant::now() < deadline, "{}", berry.stderr());
        thread::sleep(Duration::from_millis(50));
    }
    // Three more rounds while it stays down: still one line for the failing check.
    thread::sleep(Duration::from_millis(3200));
    let log = berry.stderr();
    assert_eq!(
        log.matches("health check of up/up-model").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches(opened).count(), 1, "{log}");
    // It comes back: the check passes and the circuit closes, each said once.
    let up = TcpListener::bind(up_addr).expect("the upstream's port is still free");
    let serving = thread::spawn(move || {
        for mut s in up.incoming().flatten().take(3) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = r#"{"object":"list","data":[]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut s, format!("{head}{body}").as_bytes());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(6);
    while !berry.stderr().contains("-> closed") {
        assert!(Instant::now() < deadline, "{}", berry.stderr());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(berry
        .stderr()
        .contains("health check of up/up-model (model `gpt-test`) passes again"));
    berry.sigterm();
    let status = berry.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}:\n{}", berry.finish_stderr());
    drop(serving);
}

/// The CPUs each shard thread may run on, from /proc (`Cpus_allowed_list`).
fn shard_cpus(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("berry-shard") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(l) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            out.push(l["Cpus_allowed_list:".len()..].trim().to_string());
        }
    }
    out
}

/// Shards are pinned one per core by default; `pin_cores = false` leaves them to the scheduler.
#[test]
fn pin_cores_false_leaves_shards_unpinned() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs two CPUs to tell pinned from unpinned");
        return;
    }
    let up = upstream(|_| json_reply(200, "{}"));
    for (pin, expect_pinned) in [("", true), ("pin_cores = false\n", false)] {
        let addr = free_addr();
        let config =
            serve_config(addr, up.addr).replacen("[server]\n", &format!("[server]\n{pin}"), 1);
        let mut berry = Berry::spawn(&config, false, &[]);
        berry.wait_ready(addr);
        let sets = shard_cpus(berry.child.id());
        assert_eq!(sets.len(), 2, "{sets:?}");
        for set in &sets {
            let single = !set.contains(['-', ',']);
            assert_eq!(single, expect_pinned, "shard CPUs {sets:?} with `{pin}`");
        }
        berry.sigterm();
        assert!(berry.wait_exit(Duration::from_secs(5)).success());
    }
}
