//! Honesty checks of `berry loadtest`: it counts what wrk counts, it does not hide a stalled
//! server (coordinated omission), every fault of the mock lands in the right bucket, and every
//! run is bounded and stays on loopback unless told otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berry::loadgen::harness::{self, Options, Report, Step};
use berry::loadgen::scenario::{Mode, Scenario, Target};
use berry::mock::{self, MockArgs};

/// These tests measure time and throughput: run them one at a time, not against each other.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn mock(args: MockArgs) -> SocketAddr {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    mock::spawn(args, any).expect("mock starts").addr
}

fn scenario(toml: &str) -> Scenario {
    let mut s: Scenario = toml::from_str(toml).expect("scenario parses");
    s.validate().expect("scenario is valid");
    s
}

fn run(s: &Scenario, addr: SocketAddr) -> Report {
    let opts = Options {
        target: Target::Url(addr),
        sweep: false,
        compare: false,
        berry_bin: PathBuf::from(env!("CARGO_BIN_EXE_berry")),
        work_dir: std::env::temp_dir(),
        target_pid: None,
        progress: false,
        capacity_rate: 1000.0,
    };
    harness::run(s, &opts).expect("run completes")
}

fn only_step(r: &Report) -> &Step {
    &r.series[0].steps[0]
}

/// wrk's requests/s against the same mock, or None when wrk is not installed.
fn wrk_rps(addr: SocketAddr, connections: usize, seconds: u32) -> Option<f64> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return None;
    }
    let script = std::env::temp_dir().join(format!("berry-wrk-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"model\":\"bench-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["60", "wrk", "-t2"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}/v1/chat/completions"))
        .output()
        .expect("wrk runs");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    Some(line.split_whitespace().nth(1).unwrap().parse().unwrap())
}

#[test]
fn closed_loop_throughput_agrees_with_wrk() {
    let _serial = serial();
    // A fixed 10 ms upstream makes throughput a property of the loop, not of either tool's CPU
    // cost on a shared machine (or of a debug build): 32 connections / ~10 ms each.
    let addr = mock(MockArgs {
        latency_ms: 10,
        workers: 1,
        ..MockArgs::default()
    });
    let s = scenario(
        "mode = \"closed\"\nconnections = 32\nduration_s = 2\nwarmup_s = 0.5\nthreads = 2\n",
    );
    // Ours, wrk, ours: the mean of the two brackets wrk in time, so drifting load from other
    // tests on the machine cancels out.
    let before = only_step(&run(&s, addr)).clone();
    let Some(wrk) = wrk_rps(addr, 32, 2) else {
        eprintln!("SKIPPED: wrk is not installed (apt-get install -y wrk)");
        return;
    };
    let after = only_step(&run(&s, addr)).clone();
    let ours = (before.achieved_rps + after.achieved_rps) / 2.0;
    let ratio = ours / wrk;
    eprintln!(
        "closed loop, 32 connections: berry loadtest {ours:.0} req/s ({:.0}, {:.0}), wrk {wrk:.0} req/s, ratio {ratio:.3}",
        before.achieved_rps, after.achieved_rps
    );
    assert_eq!(before.error_rate + after.error_rate, 0.0);
    assert!((0.9..=1.1).contains(&ratio), "ratio {ratio}");
}

#[test]
fn open_loop_shows_a_stall_that_closed_loop_hides() {
    let _serial = serial();
    // The whole mock freezes for 100 ms every second, like a GC pause.
    let addr = mock(MockArgs {
        hiccup_every_ms: 1000,
        hiccup_ms: 100,
        ..MockArgs::default()
    });
    let open = scenario("rate = 1000\nduration_s = 2\nwarmup_s = 0.5\nthreads = 1\n");
    let open = only_step(&run(&open, addr)).clone();
    let closed = scenario(
        "mode = \"closed\"\nconnections = 2\nduration_s = 2\nwarmup_s = 0.5\nthreads = 1\n",
    );
    let closed = only_step(&run(&closed, addr)).clone();
    eprintln!(
        "100 ms stall each second: open-loop p99 {:.1} ms (p90 {:.1}), closed-loop p99 {:.2} ms",
        open.latency.p99, open.latency.p90, closed.latency.p99
    );
    assert_eq!(open.error_rate, 0.0);
    // ~10 % of open-loop arrivals land in a freeze and wait 0-100 ms: p99 near 90 ms.
    assert!(open.latency.p99 >= 60.0, "open p99 {}", open.latency.p99);
    assert!(open.latency.max >= 90.0, "open max {}", open.latency.max);
    // The closed loop sends almost nothing during a freeze, so it barely sees it.
    assert!(
        closed.latency.p99 < open.latency.p99 / 3.0,
        "closed p99 {}",
        closed.latency.p99
    );
}

#[test]
fn every_mock_fault_lands_in_its_bucket() {
    let _serial = serial();
    let addr = mock(MockArgs {
        stream_events: 4,
        event_delay_ms: 5,
        ..MockArgs::default()
    });
    let mut toml = String::from(
        "rate = 300\nduration_s = 1\nwarmup_s = 0\nthreads = 1\ntimeout_ms = 400\nstall_ms = 40\n",
    );
    for fault in [
        "none",
        "429",
        "503",
        "reset",
        "silence",
        "cut",
        "malformed",
        "no-done",
        "pause:80",
    ] {
        toml.push_str("[[requests]]\nstream = true\n");
        if fault != "none" {
            toml.push_str(&format!("headers = {{ x-mock-fault = \"{fault}\" }}\n"));
        }
    }
    let s = scenario(&toml);
    let started = Instant::now();
    let st = only_step(&run(&s, addr)).clone();
    assert!(started.elapsed() < Duration::from_secs(5));
    eprintln!("errors by kind: {:?}", st.errors);
    for kind in [
        "status_429",
        "status_5xx",
        "io",
        "timeout",
        "truncated",
        "malformed",
    ] {
        assert!(st.errors.get(kind).copied().unwrap_or(0) > 0, "{kind}");
    }
    assert!(st.ok > 0 && st.streams > 0);
    // The paused streams succeed, with one 80 ms gap each.
    assert!(st.stalled_streams > 0 && st.gap.max >= 80.0, "{:?}", st.gap);
    // Timeouts (the silent mock) are recorded at the timeout.
    assert!(st.latency.max >= 400.0, "{:?}", st.latency);
}

#[test]
fn runs_are_bounded_and_stay_on_loopback() {
    let _serial = serial();
    // Defaults: the harness's own mock, which listens on 127.0.0.1.
    let s = scenario("");
    assert_eq!(Target::parse(&s.target, false), Ok(Target::Mock));
    assert!(Target::parse("http://192.168.1.10:80", false).is_err());
    assert!(Target::parse("http://192.168.1.10:80", true).is_ok());
    // A server that never answers: the run still ends on time, and within its request budget.
    let addr = mock(MockArgs {
        faults: "silence=1".into(),
        ..MockArgs::default()
    });
    let s = scenario(
        "rate = 200\nduration_s = 1\nwarmup_s = 0\ntimeout_ms = 300\nmax_requests = 50\nthreads = 1\n",
    );
    assert_eq!(s.mode, Mode::Open);
    let started = Instant::now();
    let st = only_step(&run(&s, addr)).clone();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(st.completed <= 50, "{}", st.completed);
    assert_eq!(st.errors.get("timeout").copied(), Some(st.completed));
}

#[test]
fn cli_compares_mock_and_berry_and_writes_reports() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("berry-loadtest-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("tiny.toml");
    std::fs::write(
        &scenario,
        "rate = 200\nduration_s = 1\nwarmup_s = 0.3\nthreads = 1\nstream_share = 0.5\n\
         [mock]\ntokens = 3\ntoken_delay_ms = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berry"))
        .arg("loadtest")
        .arg(&scenario)
        .args(["--compare", "--quiet", "--out"])
        .arg(&dir)
        .output()
        .expect("berry loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("compare at 200 req/s: Berry adds"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["series"][0]["target"], "mock");
    assert_eq!(json["series"][1]["target"], "berry");
    assert_eq!(json["series"][1]["steps"][0]["error_rate"], 0.0);
    assert!(json["series"][1]["steps"][0]["streams"].as_u64().unwrap() > 0);
    assert!(json["compare"]["berry_cpu_us_per_req"].as_f64().unwrap() > 0.0);
    assert!(json["capacity"]["cores_needed"].as_f64().unwrap() > 0.0);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("</html>"));
    let _ = std::fs::remove_dir_all(&dir);
}
