//! Active health checks, on a thread of their own (never a shard, never the control thread:
//! a probe may wait for its whole timeout). The same thread refreshes upstream DNS. A round
//! runs at startup, then every `health_check_interval_seconds`. Backends with
//! `health_check = "models"` (the default for per-token billing) get `GET {base}/models` with
//! the provider key, free on every API we know; `"chat"` sends a one-token completion;
//! `"none"` (the default for per-request billing, where every probe costs money) is judged by
//! live traffic only.
//!
//! Results go to the control thread, which feeds them to the circuit breaker only: probes are
//! not traffic, so they never inflate request counts or move SmartAI confidence.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::balance::outcome::{classify, OutcomeClass, TransportError};
use crate::config::HealthCheck;
use crate::control::ShardMsg;
use crate::http::head::{parse_response, Method};
use crate::routes::{AddressTable, ProviderRoute, Routes};
use crate::runtime::Shutdown;

/// Largest probe response head read.
const PROBE_HEAD_BYTES_MAX: usize = 64 * 1024;

/// One probe's verdict on one (model, backend).
#[derive(Clone, Copy, Debug)]
pub struct ProbeResult {
    pub model: usize,
    pub backend: usize,
    pub class: OutcomeClass,
}

pub fn spawn(
    routes: Arc<Routes>,
    results: Sender<ProbeResult>,
    shards: Vec<crossbeam_channel::Sender<ShardMsg>>,
    addresses: Arc<AddressTable>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("berry-probe".into())
        .spawn(move || {
            crate::runtime::background_priority();
            let settings = &routes.config.settings;
            // The first round runs at once: waiting a whole interval (30 s by default) would
            // show an unreachable backend as healthy for that long after every start. This
            // thread is not the one starting the server, so startup does not wait for it.
            let mut next = Instant::now();
            let mut table = addresses.as_ref().clone();
            let mut last_dns = Instant::now();
            let mut failing = Failing::default();
            while !shutdown.is_triggered() {
                crate::control::refresh_dns(&routes, &mut table, &mut last_dns, &shards);
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                run_round(&routes, &results, &shutdown, &mut failing);
                next = Instant::now() + settings.health_check_interval;
            }
        })
}

/// The (model, backend) pairs whose last probe failed: a failing check is logged when it
/// starts failing and when it passes again, not once per round for as long as it is down.
#[derive(Default)]
struct Failing(std::collections::HashSet<(usize, usize)>);

/// Probes every backend that asks for it once; a models probe is made once per provider and
/// its verdict applies to each of that provider's backends that use it.
fn run_round(
    routes: &Routes,
    results: &Sender<ProbeResult>,
    shutdown: &Shutdown,
    failing: &mut Failing,
) {
    let config = &routes.config;
    let timeout = config.settings.health_check_timeout;
    let mut models_verdict: Vec<Option<OutcomeClass>> = vec![None; config.providers.len()];
    for (mi, m) in config.models.iter().enumerate() {
        for (bi, b) in m.backends.iter().enumerate() {
            if shutdown.is_triggered() {
                return;
            }
            if !m.enabled || !b.enabled || !config.providers[b.provider].enabled {
                continue;
            }
            let route = &routes.providers[b.provider];
            let provider = &config.providers[b.provider];
            let class = match b.health_check {
                HealthCheck::None => continue,
                HealthCheck::Models => *models_verdict[b.provider].get_or_insert_with(|| {
                    probe(
                        route,
                        &provider.url.host,
                        provider.url.port,
                        &models_request(route, &provider.url.path_for("/models")),
                        timeout,
                    )
                }),
                HealthCheck::Chat => {
                    let req =
                        chat_request(route, &provider.url.path_for("/chat/completions"), &b.model);
                    probe(route, &provider.url.host, provider.url.port, &req, timeout)
                }
            };
            if class.is_backend_failure() {
                if failing.0.insert((mi, bi)) {
                    log::warn!(
                        "health check of {}/{} (model `{}`) failed: {class:?} (logged again \
                         when it passes)",
                        provider.id,
                        b.model,
                        m.name
                    );
                }
            } else if failing.0.remove(&(mi, bi)) {
                log::info!(
                    "health check of {}/{} (model `{}`) passes again",
                    provider.id,
                    b.model,
                    m.name
                );
            }
            let _ = results.send(ProbeResult {
                model: mi,
                backend: bi,
                class,
            });
        }
    }
}

fn models_request(route: &ProviderRoute, path: &str) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    req.extend_from_slice(&route.fixed_headers);
    req.extend_from_slice(b"accept: application/json\r\nconnection: close\r\n\r\n");
    req
}

fn chat_request(route: &ProviderRoute, path: &str, model: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(b"{\"model\":");
    crate::api::peek::write_json_string(&mut body, model);
    body.extend_from_slice(
        b",\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],\"max_tokens\":1}",
    );
    let mut req = format!("POST {path} HTTP/1.1\r\n").into_bytes();
    req.extend_from_slice(&route.fixed_headers);
    req.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(&body);
    req
}

/// Sends `req` and classifies the status of the answer (only its head is read).
fn probe(
    route: &ProviderRoute,
    host: &str,
    port: u16,
    req: &[u8],
    timeout: Duration,
) -> OutcomeClass {
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return classify(None, Some(TransportError::Connect)),
    };
    let deadline = Instant::now() + timeout;
    let Some(tcp) = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, timeout).ok())
    else {
        return classify(None, Some(TransportError::Connect));
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let status = match &route.tls {
        None => exchange(tcp, req, deadline),
        Some((cfg, name)) => match rustls::ClientConnection::new(cfg.clone(), name.clone()) {
            Ok(conn) => exchange(rustls::StreamOwned::new(conn, tcp), req, deadline),
            Err(_) => Err(TransportError::Connect),
        },
    };
    match status {
        Ok(code) => classify(Some(code), None),
        Err(t) => classify(None, Some(t)),
    }
}

fn exchange<S: Read + Write>(
    mut s: S,
    req: &[u8],
    deadline: Instant,
) -> Result<u16, TransportError> {
    s.write_all(req).and_then(|_| s.flush()).map_err(io_class)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(head)) = parse_response(&buf, Method::Get, PROBE_HEAD_BYTES_MAX, 128) {
            return Ok(head.status);
        }
        if buf.len() >= PROBE_HEAD_BYTES_MAX || Instant::now() >= deadline {
            return Err(TransportError::Protocol);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(TransportError::Io),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(io_class(e)),
        }
    }
}

fn io_class(e: std::io::Error) -> TransportError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => TransportError::Timeout,
        _ => TransportError::Io,
    }
}
