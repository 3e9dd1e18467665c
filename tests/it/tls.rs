//! HTTPS upstreams: a private CA (rcgen) signs a `localhost` leaf; a rustls mock upstream on std
//! threads serves JSON and a gated SSE stream; the provider trusts only its `ca_file`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::both_drivers;
use crate::support::*;

const JSON_BODY: &str =
    r#"{"id":"tls-1","model":"up-model","choices":[{"message":{"content":"héllo \"tls\""}}]}"#;
const EVENTS: [&str; 3] = [
    "data: {\"n\":1}\n\n",
    "data: {\"n\":2}\n\n",
    "data: {\"n\":3}\n\n",
];
const DONE: &str = "data: [DONE]\n\n";
/// How long the mock waits for the client to see an event before it gives up and sends on.
const ACK_WAIT: Duration = Duration::from_secs(3);

/// A CA certificate (PEM, what `ca_file` holds) and a server config whose chain is a leaf for
/// `localhost` / 127.0.0.1 signed by that CA (rustls refuses a CA used as an end entity).
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Berry test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::NoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// Method, path and (lower-cased) headers of one request the TLS mock read.
type TlsSeen = (String, String, Vec<(String, String)>);

/// The TLS mock upstream and what it observed.
#[derive(Clone, Default)]
struct Observed {
    /// TCP connections accepted.
    conns: Arc<AtomicUsize>,
    /// Requests read (method, path, headers) after a completed handshake.
    requests: Arc<Mutex<Vec<TlsSeen>>>,
    /// Server-side TLS errors (e.g. the client's alert on an untrusted chain).
    tls_errors: Arc<Mutex<Vec<String>>>,
    /// SSE events the test client has seen so far (set by [`Watch`]).
    acks: Arc<AtomicUsize>,
    /// Events the client had not seen within [`ACK_WAIT`]: the gateway buffered them.
    stalls: Arc<AtomicUsize>,
}

struct TlsUpstream {
    addr: SocketAddr,
    seen: Observed,
}

fn tls_upstream(server: Arc<rustls::ServerConfig>) -> TlsUpstream {
    tls_upstream_serving(server, serve_tls)
}

/// A TLS upstream whose connections are each served by `serve` on a thread of their own.
fn tls_upstream_serving(
    server: Arc<rustls::ServerConfig>,
    serve: fn(TcpStream, Arc<rustls::ServerConfig>, Observed),
) -> TlsUpstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Observed::default();
    let obs = seen.clone();
    thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(stream) = stream else { return };
            obs.conns.fetch_add(1, Ordering::SeqCst);
            let (cfg, obs) = (server.clone(), obs.clone());
            thread::spawn(move || serve(stream, cfg, obs));
        }
    });
    TlsUpstream { addr, seen }
}

fn serve_tls(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>, obs: Observed) {
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                obs.tls_errors.lock().unwrap().push(e.to_string());
                return;
            }
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').expect("header has a colon");
            headers.push((n.trim().to_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        obs.requests.lock().unwrap().push((method, path, headers));
        let w = r.get_mut();
        let ok = if String::from_utf8_lossy(&body).contains(r#""stream":true"#) {
            write_sse(w, &obs)
        } else {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                JSON_BODY.len()
            );
            w.write_all(head.as_bytes())
                .and_then(|_| w.write_all(JSON_BODY.as_bytes()))
                .and_then(|_| w.flush())
                .is_ok()
        };
        if !ok {
            return;
        }
    }
}

/// A chunked SSE response, kept alive afterwards. Each event is sent only once the client has
/// seen the previous one (or [`ACK_WAIT`] passed, which counts as a stall), with a small pause.
fn write_sse(w: &mut impl Write, obs: &Observed) -> bool {
    let mut send = |bytes: &[u8]| w.write_all(bytes).and_then(|_| w.flush()).is_ok();
    if !send(SSE_HEAD.as_bytes()) {
        return false;
    }
    for (i, ev) in EVENTS.iter().enumerate() {
        if !send(&chunk(ev)) {
            return false;
        }
        let start = Instant::now();
        while obs.acks.load(Ordering::SeqCst) < i + 1 {
            if start.elapsed() > ACK_WAIT {
                obs.stalls.fetch_add(1, Ordering::SeqCst);
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(30));
    }
    send(&chunk(DONE)) && send(b"0\r\n\r\n")
}

/// A reader that counts the SSE events that have crossed the wire into `acks`, so the mock only
/// produces the next event once the client has really received the previous one.
struct Watch<R> {
    inner: R,
    raw: Vec<u8>,
    acks: Arc<AtomicUsize>,
}

impl<R: Read> Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.raw.extend_from_slice(&buf[..n]);
        let events = self.raw.windows(6).filter(|w| w == b"data: ").count();
        self.acks.store(events, Ordering::SeqCst);
        Ok(n)
    }
}

/// One HTTPS provider at `localhost:port`, trusting only `ca_file` when given.
fn https_config(port: u16, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("ca_file = {}", toml_str(&p.display().to_string()))
    });
    format!(
        r#"
[settings]
max_retries = 0
first_byte_timeout_ms = 5000
stream_idle_timeout_ms = 5000

[providers.secure]
name = "Secure"
base_url = "https://localhost:{port}"
api_key = "sk-secure-secret-00000"
models = ["up-model"]
{ca}

[models.chat]
name = "gpt-test"
[[models.chat.backends]]
provider = "secure"
model = "up-model"

[users.alice]
name = "Alice"
token = "{TOKEN}"
"#
    )
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Serves one JSON answer, then drops the connection without `close_notify` (a bare TCP FIN),
/// as many servers close idle keep-alive connections.
fn serve_tls_once_then_drop(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>, obs: Observed) {
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    obs.requests.lock().unwrap().push(Default::default());
    let w = r.get_mut();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        JSON_BODY.len()
    );
    let _ = w
        .write_all(head.as_bytes())
        .and_then(|_| w.write_all(JSON_BODY.as_bytes()))
        .and_then(|_| w.flush());
}

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-test","stream":true,"messages":[]}"#;

both_drivers! {
    fn json_is_relayed_byte_exact_over_tls(driver) {
        let pki = pki();
        let ca = temp_file("ca.pem", &pki.ca_pem);
        let up = tls_upstream(pki.server.clone());
        let gw = gateway(&https_config(up.addr.port(), Some(&ca.path)), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, JSON_BODY.as_bytes());
        assert_eq!(r.header("x-berry-backend"), Some("secure"));
        let reqs = up.seen.requests.lock().unwrap();
        assert_eq!(reqs.len(), 1);
        let (method, path, headers) = &reqs[0];
        assert_eq!((method.as_str(), path.as_str()), ("POST", "/v1/chat/completions"));
        let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(h("host"), Some(format!("localhost:{}", up.addr.port()).as_str()));
        assert_eq!(h("authorization"), Some("Bearer sk-secure-secret-00000"));
        assert!(up.seen.tls_errors.lock().unwrap().is_empty());
    }

    fn sse_streams_event_by_event_and_the_tls_connection_is_reused(driver) {
        let pki = pki();
        let ca = temp_file("ca.pem", &pki.ca_pem);
        let up = tls_upstream(pki.server.clone());
        let gw = gateway(&https_config(up.addr.port(), Some(&ca.path)), driver);

        // One keep-alive client connection, so each request starts only after the previous
        // response (and its upstream connection's return to the pool) is complete.
        let s = TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rd = BufReader::new(Watch { inner: &s, raw: Vec::new(), acks: up.seen.acks.clone() });

        // 1: JSON, on a fresh TLS connection that then goes to the pool.
        (&s).write_all(&post("/v1/chat/completions", CHAT)).unwrap();
        let r = read_response(&mut rd);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, JSON_BODY.as_bytes());

        // 2: SSE. The mock sends each event only after the client has received the previous
        // one, so a relay that buffers shows up as a stall.
        (&s).write_all(&post("/v1/chat/completions", STREAM)).unwrap();
        let r = read_response(&mut rd);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert!(r.clean_end, "the stream ends with the last chunk");
        assert_eq!(r.text(), format!("{}{DONE}", EVENTS.concat()));
        assert_eq!(up.seen.stalls.load(Ordering::SeqCst), 0, "events were relayed as produced");

        // 3: JSON again, after the stream ended cleanly.
        (&s).write_all(&post("/v1/chat/completions", CHAT)).unwrap();
        let r = read_response(&mut rd);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, JSON_BODY.as_bytes());

        assert_eq!(up.seen.requests.lock().unwrap().len(), 3);
        assert_eq!(up.seen.conns.load(Ordering::SeqCst), 1, "one pooled TLS connection for all three");
        assert!(up.seen.tls_errors.lock().unwrap().is_empty());
    }

    fn bundled_roots_reject_a_private_ca_with_502(driver) {
        let pki = pki();
        let up = tls_upstream(pki.server.clone());
        // No ca_file: only the bundled web PKI roots, which do not know the test CA.
        let gw = gateway(&https_config(up.addr.port(), None), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        let v = r.assert_error(502);
        assert_eq!(v["error"]["code"], "upstream_failed", "{v}");
        assert_eq!(v["error"]["type"], "upstream_error", "{v}");
        assert!(up.seen.requests.lock().unwrap().is_empty(), "no request may cross an untrusted channel");
        assert!(up.seen.conns.load(Ordering::SeqCst) >= 1, "the handshake was attempted");
        // The gateway hung up inside the handshake (monoio-rustls sends no alert, so the mock
        // sees an EOF): the failure is the untrusted chain, not the TCP connection.
        let deadline = Instant::now() + Duration::from_secs(5);
        while up.seen.tls_errors.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(!up.seen.tls_errors.lock().unwrap().is_empty(), "the handshake never completed");
        // The shard survived: the next request is answered too.
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        r.assert_error(502);
    }

    fn a_pooled_tls_connection_closed_without_close_notify_is_retried_as_stale(driver) {
        let pki = pki();
        let ca = temp_file("ca.pem", &pki.ca_pem);
        let TlsUpstream { addr, seen: obs } =
            tls_upstream_serving(pki.server.clone(), serve_tls_once_then_drop);
        let gw = gateway(&https_config(addr.port(), Some(&ca.path)), driver);
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200, "{}", r.text());
        thread::sleep(Duration::from_millis(200)); // the upstream has closed the pooled connection
        let r = send_raw(gw.addr, &post("/v1/chat/completions", CHAT));
        assert_eq!(r.status, 200, "sent again on a fresh connection: {}", r.text());
        assert_eq!(obs.requests.lock().unwrap().len(), 2);
        assert_eq!(obs.conns.load(Ordering::SeqCst), 2);
    }
}
