//! `Routes`: everything the request path needs, derived once from a validated [`Config`].
//!
//! Built off the shards (at startup, later on reload), then shared read-only by every shard.
//! Pre-renders each provider's fixed upstream header block so a request only appends its own
//! headers and body; resolves nothing and reads no file on a shard thread.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Provider, Scheme, User};
use crate::ratelimit::Limiter;

/// The upstream endpoints Berry forwards to, in the order of [`UpstreamPath`] indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamPath {
    ChatCompletions = 0,
    Completions = 1,
    Embeddings = 2,
}

impl UpstreamPath {
    pub fn suffix(self) -> &'static str {
        match self {
            UpstreamPath::ChatCompletions => "/chat/completions",
            UpstreamPath::Completions => "/completions",
            UpstreamPath::Embeddings => "/embeddings",
        }
    }
}

/// How to reach one provider.
pub struct ProviderRoute {
    /// The provider's config id (for logs; never a secret).
    pub id: String,
    /// `POST <path> HTTP/1.1\r\n` per [`UpstreamPath`].
    pub request_lines: [Vec<u8>; 3],
    /// `host`, `authorization` and the provider's own headers, each ending in CRLF.
    pub fixed_headers: Vec<u8>,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub first_byte_timeout: Duration,
}

pub struct Routes {
    pub config: Arc<Config>,
    pub providers: Vec<ProviderRoute>,
    /// SHA-256 of a token → user index. Looking up by digest means the lookup's timing depends
    /// on the digest, not on how many leading bytes of a guess match a real token.
    tokens: HashMap<[u8; 32], usize>,
    /// Header names some provider sets itself (lowercase): never taken from clients.
    pub provider_header_names: Vec<Vec<u8>>,
    /// When this snapshot was built (Unix seconds): the `created` of listed models.
    pub loaded_at_unix: u64,
    /// When the process started serving, for `uptime_seconds`.
    pub started: std::time::Instant,
    /// Per user (index of `Config.users`): its request limits, counted by every shard.
    limiters: Vec<Option<Limiter>>,
}

/// Resolved socket addresses per provider index; refreshed by the control thread.
pub type AddressTable = Vec<Vec<SocketAddr>>;

impl Routes {
    /// Builds the routes; fails when a provider's TLS setup (e.g. its `ca_file`) is unusable.
    pub fn build(config: Arc<Config>) -> Result<Routes, String> {
        let default_tls = Arc::new(tls_config(None)?);
        let mut providers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            providers.push(provider_route(p, &config, &default_tls)?);
        }
        let mut tokens = HashMap::with_capacity(config.users.len());
        for (i, u) in config.users.iter().enumerate() {
            tokens.insert(digest(u.token.expose().as_bytes()), i);
        }
        let mut provider_header_names: Vec<Vec<u8>> = Vec::new();
        for p in &config.providers {
            for (name, _) in &p.headers {
                let lower = name.to_ascii_lowercase().into_bytes();
                if !provider_header_names.contains(&lower) {
                    provider_header_names.push(lower);
                }
            }
        }
        let loaded_at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let started = std::time::Instant::now();
        let limiters = config
            .users
            .iter()
            .map(|u| u.rate_limit.as_ref().map(|l| Limiter::new(l, started)))
            .collect();
        Ok(Routes {
            provider_header_names,
            config,
            providers,
            tokens,
            loaded_at_unix,
            started,
            limiters,
        })
    }

    /// The request limits of the user at `index`, if it has any.
    pub fn limiter(&self, user: usize) -> Option<&Limiter> {
        self.limiters.get(user)?.as_ref()
    }

    /// The enabled user whose token this is, if any.
    pub fn user_by_token(&self, token: &[u8]) -> Option<(usize, &User)> {
        let idx = *self.tokens.get(&digest(token))?;
        let user = &self.config.users[idx];
        // The digest matched; compare the real bytes too, in constant time, so a digest
        // collision can never authenticate.
        let same: bool = user.token.expose().as_bytes().ct_eq(token).into();
        (same && user.enabled).then_some((idx, user))
    }

    /// True when no users are configured: every request is anonymous and may use every model.
    pub fn anonymous(&self) -> bool {
        self.config.users.is_empty()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn provider_route(
    p: &Provider,
    config: &Config,
    default_tls: &Arc<rustls::ClientConfig>,
) -> Result<ProviderRoute, String> {
    let request_lines = [
        UpstreamPath::ChatCompletions,
        UpstreamPath::Completions,
        UpstreamPath::Embeddings,
    ]
    .map(|path| format!("POST {} HTTP/1.1\r\n", p.url.path_for(path.suffix())).into_bytes());
    let mut fixed = Vec::with_capacity(128);
    fixed.extend_from_slice(b"host: ");
    fixed.extend_from_slice(p.url.host_header().as_bytes());
    fixed.extend_from_slice(b"\r\n");
    if let Some(key) = &p.api_key {
        fixed.extend_from_slice(b"authorization: Bearer ");
        fixed.extend_from_slice(key.expose().as_bytes());
        fixed.extend_from_slice(b"\r\n");
    }
    for (name, value) in &p.headers {
        fixed.extend_from_slice(name.as_bytes());
        fixed.extend_from_slice(b": ");
        fixed.extend_from_slice(value.expose().as_bytes());
        fixed.extend_from_slice(b"\r\n");
    }
    let tls = match p.url.scheme {
        Scheme::Http => None,
        Scheme::Https => {
            let cfg = match &p.ca_file {
                None => default_tls.clone(),
                Some(path) => Arc::new(
                    tls_config(Some(path))
                        .map_err(|e| format!("provider `{}`: ca_file: {e}", p.id))?,
                ),
            };
            let name = ServerName::try_from(p.url.host.clone())
                .map_err(|e| format!("provider `{}`: host is not a valid TLS name: {e}", p.id))?;
            Some((cfg, name))
        }
    };
    Ok(ProviderRoute {
        id: p.id.clone(),
        request_lines,
        fixed_headers: fixed,
        tls,
        first_byte_timeout: p
            .first_byte_timeout
            .unwrap_or(config.settings.first_byte_timeout),
    })
}

/// A rustls client config with the bundled web PKI roots, or only the CAs in `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut found = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                found += 1;
            }
            if found == 0 {
                return Err(format!("{}: no PEM certificates found", path.display()));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Resolves every provider's host (blocking: call only off the shards).
pub fn resolve_all(config: &Config) -> AddressTable {
    config
        .providers
        .iter()
        .map(
            |p| match (p.url.host.as_str(), p.url.port).to_socket_addrs() {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    log::warn!("provider `{}`: cannot resolve {}: {e}", p.id, p.url.host);
                    Vec::new()
                }
            },
        )
        .collect()
}
