//! The kernel's floor for relaying small frames over loopback TCP on this machine: pairs of
//! threads play ping-pong with 200-byte frames (one write and one read per hop, the reader
//! asleep in between, as for a paced token stream) and the process's CPU time per hop is
//! printed. Used to bound what any proxy can do for stream density (loadtest/README.md).
//!
//!     cargo run --release --example loopback_floor -- [pairs=2] [seconds=5]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const FRAME_BYTES: usize = 200;

/// utime + stime of this process, seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for _ in 0..pairs {
        let mut client = TcpStream::connect(addr).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.set_nodelay(true).expect("nodelay");
        server.set_nodelay(true).expect("nodelay");
        std::thread::spawn(move || {
            let mut b = [0u8; FRAME_BYTES];
            while server.read_exact(&mut b).is_ok() && server.write_all(&b).is_ok() {}
        });
        clients.push(std::thread::spawn(move || {
            let mut b = [0u8; FRAME_BYTES];
            let mut rounds = 0u64;
            while Instant::now() < end {
                client.write_all(&b).expect("write");
                client.read_exact(&mut b).expect("read");
                rounds += 1;
            }
            rounds
        }));
    }
    let cpu0 = cpu_seconds();
    let rounds: u64 = clients.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let cpu = cpu_seconds() - cpu0;
    let hops = rounds * 2;
    println!(
        "{pairs} pair(s), {secs} s: {hops} hops, {cpu:.2} CPU-s, {:.2} µs of CPU per hop \
         (write + read of one {FRAME_BYTES}-byte frame), {:.0} hops/s per core",
        cpu * 1e6 / hops.max(1) as f64,
        hops as f64 / cpu.max(1e-9)
    );
}
