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
struct Failing(
    std::collections::HashSet<(usize, usize)>,
    /// Providers whose models probe said nothing about them (warned once).
    std::collections::HashSet<usize>,
);

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
    let mut models_verdict: Vec<Option<Option<OutcomeClass>>> = vec![None; config.providers.len()];
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
                HealthCheck::Models => {
                    let verdict = *models_verdict[b.provider].get_or_insert_with(|| {
                        models_class(probe(
                            route,
                            &provider.url.host,
                            provider.url.port,
                            &models_request(route, &provider.url.path_for("/models")),
                            timeout,
                        ))
                    });
                    let Some(class) = verdict else {
                        if failing.1.insert(b.provider) {
                            log::warn!(
                                "health check of provider {}: its models list answered 403, 404 \
                                 or 405, which says nothing about serving; ignored (set \
                                 `health_check = \"chat\"` or `\"none\"` on its backends)",
                                provider.id
                            );
                        }
                        continue;
                    };
                    class
                }
                HealthCheck::Chat => {
                    let req =
                        chat_request(route, &provider.url.path_for("/chat/completions"), &b.model);
                    classify_probe(probe(
                        route,
                        &provider.url.host,
                        provider.url.port,
                        &req,
                        timeout,
                    ))
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

fn classify_probe(status: Result<u16, TransportError>) -> OutcomeClass {
    match status {
        Ok(code) => classify(Some(code), None),
        Err(t) => classify(None, Some(t)),
    }
}

/// A models probe's verdict, or `None` when its answer says nothing about serving: 403 (a
/// key may be allowed to chat but not to list models, as OpenAI's restricted keys can be),
/// 404 or 405 (the provider has no models list). A 401 still counts: a key that fails
/// authentication fails for chat too.
fn models_class(status: Result<u16, TransportError>) -> Option<OutcomeClass> {
    match status {
        Ok(403..=405) => None,
        other => Some(classify_probe(other)),
    }
}

/// Sends `req` and returns the status of the answer (only its head is read).
fn probe(
    route: &ProviderRoute,
    host: &str,
    port: u16,
    req: &[u8],
    timeout: Duration,
) -> Result<u16, TransportError> {
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return Err(TransportError::Connect),
    };
    let deadline = Instant::now() + timeout;
    let Some(tcp) = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, timeout).ok())
    else {
        return Err(TransportError::Connect);
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    match &route.tls {
        None => exchange(tcp, req, deadline),
        Some((cfg, name)) => match rustls::ClientConnection::new(cfg.clone(), name.clone()) {
            Ok(conn) => exchange(rustls::StreamOwned::new(conn, tcp), req, deadline),
            Err(_) => Err(TransportError::Connect),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_list_that_is_forbidden_or_missing_says_nothing() {
        for code in [403, 404, 405] {
            assert_eq!(models_class(Ok(code)), None, "{code}");
        }
        assert_eq!(models_class(Ok(200)), Some(OutcomeClass::Success));
        assert_eq!(models_class(Ok(401)), Some(OutcomeClass::AuthError));
        assert_eq!(models_class(Ok(503)), Some(OutcomeClass::ServerError));
        assert_eq!(
            models_class(Err(TransportError::Connect)),
            Some(OutcomeClass::Connect)
        );
        // A chat probe is the real thing: its 403 is the backend's fault.
        assert_eq!(classify_probe(Ok(403)), OutcomeClass::AuthError);
    }
}
