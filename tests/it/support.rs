//! Test harness: the real gateway on 127.0.0.1:0, scripted mock upstreams on plain threads,
//! and a blocking raw-bytes client, so assertions see exactly what crosses the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use berry::config::{self, DriverChoice};
use berry::routes::{resolve_all, Routes};
use berry::runtime::{RunOptions, Server, Shutdown};

pub const TOKEN: &str = "tok-alice-0123456789abcdef";

/// A gateway that shuts down and joins when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    /// One address per shard when each shard has its own listener ([`gateway_shards`]);
    /// just `addr` otherwise.
    pub shards: Vec<SocketAddr>,
    server: Option<Server>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().trigger();
            s.join();
        }
    }
}

pub fn gateway(toml: &str, driver: DriverChoice) -> Gateway {
    // Tests that do not look at the access log keep it off: its lines would flood the output.
    let toml = if toml.contains("[observability]") {
        toml.to_string()
    } else {
        format!("{toml}\n[observability]\naccess_log = \"off\"\n")
    };
    let cfg = config::load_str(&toml, "test.toml")
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let cfg = unless_about_probes(&toml, cfg);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server =
        berry::cli::start(cfg, addr, 1, driver, false, Shutdown::new()).expect("gateway starts");
    Gateway {
        addr: server.local_addr,
        shards: vec![server.local_addr],
        server: Some(server),
    }
}

/// Turns active checks off unless the test's config mentions them (`health_check…`). A round
/// runs at startup, so its requests would reach the mocks of every test, add to the counts of
/// what they received and, against a mock that fails everything, count toward its breaker.
fn unless_about_probes(toml: &str, mut cfg: config::Config) -> config::Config {
    if !toml.contains("health_check") {
        for b in cfg.models.iter_mut().flat_map(|m| m.backends.iter_mut()) {
            b.health_check = config::HealthCheck::None;
        }
    }
    cfg
}

/// A gateway of `n` shards, each accepting on its own port (`shards[i]` reaches shard `i`
/// only), so a test can choose which shard serves a request. `cli::start` binds one
/// SO_REUSEPORT port for all shards, where the kernel picks the shard; this builds the same
/// server from separately bound listeners instead.
pub fn gateway_shards(toml: &str, n: usize, driver: DriverChoice) -> Gateway {
    let cfg =
        config::load_str(toml, "test.toml").unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let cfg = unless_about_probes(toml, cfg);
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            // As `runtime::bind_listeners` leaves them: the shards adopt them into monoio.
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let shards: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let addresses = Arc::new(resolve_all(&cfg));
    let routes = Arc::new(Routes::build(Arc::new(cfg)).expect("routes build"));
    let options = RunOptions {
        driver,
        pin_cores: false,
    };
    let server = berry::runtime::start(routes, addresses, listeners, options, Shutdown::new())
        .expect("shards start");
    Gateway {
        addr: shards[0],
        shards,
        server: Some(server),
    }
}

/// One request as the mock upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream body is JSON")
    }
}

/// What a mock does with a request.
pub enum Reply {
    /// Write these bytes, keep the connection open for the next request.
    Raw(Vec<u8>),
    /// Write these pieces with a pause after each, then close the connection.
    Paced(Vec<Vec<u8>>, Duration),
    /// Close the connection without answering.
    Close,
    /// Never answer (hold the connection for a while).
    Hang(Duration),
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub conns: Arc<AtomicUsize>,
    /// Set when a paced reply found the connection closed by the gateway.
    pub aborted: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

pub fn upstream(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicUsize::new(0));
    let aborted = Arc::new(AtomicUsize::new(0));
    let handler: Arc<Handler> = Arc::new(handler);
    let (s2, c2, a2) = (seen.clone(), conns.clone(), aborted.clone());
    thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(stream) = stream else { return };
            c2.fetch_add(1, Ordering::SeqCst);
            let (h, s, a) = (handler.clone(), s2.clone(), a2.clone());
            thread::spawn(move || serve_upstream(stream, h, s, a));
        }
    });
    Upstream {
        addr,
        seen,
        conns,
        aborted,
    }
}

fn serve_upstream(
    stream: TcpStream,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Seen>>>,
    aborted: Arc<AtomicUsize>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').expect("header has a colon");
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Seen {
            method,
            path,
            headers,
            body,
        };
        seen.lock().unwrap().push(req.clone());
        match handler(&req) {
            Reply::Raw(bytes) => {
                if w.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Paced(pieces, pause) => {
                for p in pieces {
                    if w.write_all(&p).and_then(|_| w.flush()).is_err() {
                        aborted.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    thread::sleep(pause);
                }
                let _ = w.shutdown(NetShutdown::Both);
                return;
            }
            Reply::Close => {
                let _ = w.shutdown(NetShutdown::Both);
                return;
            }
            Reply::Hang(d) => {
                thread::sleep(d);
                return;
            }
        }
    }
}

/// A complete JSON response with content-length.
pub fn json_reply(status: u16, body: &str) -> Reply {
    Reply::Raw(
        format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-request-id: up-123\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            .into_bytes(),
    )
}

/// A chunk of a chunked body.
pub fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

pub const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// A parsed response from the gateway.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body with chunked framing removed.
    pub body: Vec<u8>,
    /// True when a chunked body ended with its last-chunk (a clean end).
    pub clean_end: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("body is JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts an OpenAI-shaped gateway error with this status.
    pub fn assert_error(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        assert!(v["error"]["code"].is_string(), "{v}");
        assert!(self.header("x-berry-error").is_some());
        v
    }
}

/// Sends raw bytes and reads one response (the connection is then dropped).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut BufReader::new(s))
}

/// Reads one response from a buffered stream (works on keep-alive connections).
pub fn read_response<R: Read>(r: &mut BufReader<R>) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_lowercase(), v.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let mut clean_end = false;
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 {
                let mut end = String::new();
                let _ = r.read_line(&mut end);
                clean_end = true;
                break;
            }
            let mut data = vec![0; n + 2];
            if r.read_exact(&mut data).is_err() {
                break;
            }
            body.extend_from_slice(&data[..n]);
        }
    } else if let Some(len) = get("content-length") {
        body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        clean_end = true;
    } else if status != 100 && status != 204 && status != 304 {
        let _ = r.read_to_end(&mut body);
    }
    Resp {
        status,
        headers,
        body,
        clean_end,
    }
}

/// A POST with a JSON body and the test user's token.
pub fn post(path: &str, body: &str) -> Vec<u8> {
    post_with(path, body, &format!("authorization: Bearer {TOKEN}\r\n"))
}

pub fn post_with(path: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: berry\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The usual two-provider config, with `extra` appended (more settings, users, …).
pub fn config_two(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[settings]
max_retries = 2
first_byte_timeout_ms = 1500
stream_idle_timeout_ms = 1500

[providers.alpha]
name = "Alpha"
base_url = "http://{a}"
api_key = "sk-alpha-secret-000000"
models = ["up-model-a"]
headers = {{ "X-Org" = "org-alpha" }}

[providers.beta]
name = "Beta"
base_url = "http://{b}/v1"
api_key = "sk-beta-secret-0000000"
models = ["up-model-b"]

[models.chat]
name = "gpt-test"
[[models.chat.backends]]
provider = "alpha"
model = "up-model-a"
weight = 1
[[models.chat.backends]]
provider = "beta"
model = "up-model-b"
weight = 1

[users.alice]
name = "Alice"
token = "{TOKEN}"
allow_backend_override = true
{extra}
"#
    )
}

/// A port that was free a moment ago, for a child process to listen on.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An address that refuses connections: a port bound but never listened on, and kept bound
/// for the rest of the process, so that no other test's listener can be given the same port
/// (a bound-and-released port could be, and then "dead" would answer).
pub fn dead_addr() -> SocketAddr {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.bind(&any.into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    // Leaked on purpose: the port stays reserved until the test process exits.
    std::mem::forget(s);
    addr
}

/// Generates one test per I/O driver from a body taking the driver.
#[macro_export]
macro_rules! both_drivers {
    ($(fn $name:ident($d:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn run($d: berry::config::DriverChoice) $body
                #[test]
                fn uring() { run(berry::config::DriverChoice::Uring) }
                #[test]
                fn epoll() { run(berry::config::DriverChoice::Epoll) }
            }
        )*
    };
}

/// A file in the temp dir, removed when dropped (CA bundles, config files for child processes).
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `contents` to a fresh file whose name ends with `suffix` (unique per process and call).
pub fn temp_file(suffix: &str, contents: &str) -> TempFile {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("berry-it-{}-{n}-{suffix}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    TempFile { path }
}
