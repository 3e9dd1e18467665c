//! Berry's configuration: the public, validated types and the three `load_*` entry points.
//! It owns turning a TOML file into a `Config` that the rest of the gateway can trust without
//! re-checking. It must never hand out raw (unvalidated) types, print a secret, or panic on
//! any input. Depends only on std, serde and toml.

mod cors;
mod env;
mod keys;
mod load;
mod models;
mod observability;
mod providers;
mod raw;
mod url;
mod users;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_examples;
#[cfg(test)]
mod tests_rules;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cors::CorsOrigins;
pub use observability::{Observability, StreamUsage};
pub use validate::parse_bind_address;

/// Reads and validates the config file at `path`; secrets are resolved from the process
/// environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            return Err(ConfigError::single(
                &origin,
                format!("cannot read file: {err}"),
            ))
        }
    };
    // Decode ourselves so a non-UTF-8 file becomes a diagnostic with a position.
    let text = match String::from_utf8(text) {
        Ok(text) => text,
        Err(err) => {
            let offset = err.utf8_error().valid_up_to();
            let bytes = err.into_bytes();
            let (line, column) = keys::line_col_bytes(&bytes, offset);
            return Err(ConfigError {
                origin,
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    line: Some(line),
                    column: Some(column),
                    key: String::new(),
                    message: "file is not valid UTF-8".to_string(),
                }],
            });
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    load_str_with_env(&text, &origin, &env)
}

/// Validates `text`; `origin` is the file name used in messages. Secrets come from the
/// process environment.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    load_str_with_env(text, origin, &env)
}

/// Validates `text`, resolving `env:NAME` / `${NAME}` secret references through `env`, so
/// tests never have to touch the process environment.
pub fn load_str_with_env(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    load::load(text, origin, env)
}

/// Everything that went wrong (and every warning) while loading one file.
#[derive(Debug)]
pub struct ConfigError {
    pub origin: String,
    /// Errors first, then warnings; each group ordered by position in the file.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    fn single(origin: &str, message: String) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                line: None,
                column: None,
                key: String::new(),
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error);
        let warnings = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning);
        for (i, diag) in errors.chain(warnings).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", diag.display(&self.origin))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One finding about the file. `key` is a dotted TOML path such as
/// `models.gpt_4o.backends[1].weight`; it is empty for file-level findings (syntax errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, counted in characters.
    pub column: Option<usize>,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Diagnostic {
    /// Formats as `origin:line:col: error: `key`: message`, the shape editors can jump to.
    pub fn display<'a>(&'a self, origin: &'a str) -> impl fmt::Display + 'a {
        DiagnosticDisplay {
            diag: self,
            origin: Some(origin),
        }
    }
}

/// Without the file name: `12:5: error: `key`: message`. Use [`Diagnostic::display`] to
/// prefix the origin, as `ConfigError`'s `Display` does.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DiagnosticDisplay {
            diag: self,
            origin: None,
        }
        .fmt(f)
    }
}

struct DiagnosticDisplay<'a> {
    diag: &'a Diagnostic,
    origin: Option<&'a str>,
}

impl fmt::Display for DiagnosticDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        let mut position = String::new();
        if let Some(origin) = self.origin {
            position.push_str(origin);
        }
        if let Some(line) = d.line {
            if !position.is_empty() {
                position.push(':');
            }
            position.push_str(&line.to_string());
            if let Some(column) = d.column {
                position.push(':');
                position.push_str(&column.to_string());
            }
        }
        if !position.is_empty() {
            write!(f, "{position}: ")?;
        }
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: ")?;
        if !d.key.is_empty() {
            write!(f, "`{}`: ", d.key)?;
        }
        f.write_str(&d.message)
    }
}

/// A credential from the config (provider key, user token, header value). Its `Debug` and
/// `Display` never show the value, so a `Config` can be logged whole.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The only way to read the value; grep for `expose(` to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub settings: Settings,
    pub observability: Observability,
    /// Sorted by id, so `provider_index` can binary-search.
    pub providers: Vec<Provider>,
    /// Sorted by client-facing name.
    pub models: Vec<Model>,
    /// Sorted by id.
    pub users: Vec<User>,
    /// Non-fatal findings (deprecated keys, suspicious values) for the caller to log.
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// Finds the model a request's `model` field names: config key first, then display name,
    /// as Berry API did. Disabled models are returned too; the caller decides what "disabled"
    /// means for the response. Linear scan: model lists are small, and a hot path that needs
    /// more can build its own index once per snapshot.
    pub fn model_by_request_name(&self, s: &str) -> Option<usize> {
        self.models
            .iter()
            .position(|m| m.key == s)
            .or_else(|| self.models.iter().position(|m| m.name == s))
    }

    pub fn provider_index(&self, id: &str) -> Option<usize> {
        self.providers
            .binary_search_by(|p| p.id.as_str().cmp(id))
            .ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    Uring,
    Epoll,
}

/// The `[server]` table (new in Berry, absent from Berry API; the listener and client-facing limits).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `ip:port` (checked to parse). `None` leaves the choice to the caller (BIND_ADDRESS,
    /// then 127.0.0.1:3000).
    pub bind_address: Option<String>,
    /// `None` = one shard per core (`workers = 0` in the file is normalised to `None`).
    pub workers: Option<usize>,
    /// Pin shard `i` to core `i`. Off for several instances on one host, or a container
    /// limited by CPU quota rather than a cpuset: they would all pin to cores 0..N-1.
    pub pin_cores: bool,
    pub driver: DriverChoice,
    /// Serve requests without a user token. Off by default: a gateway holding paid keys
    /// should not be open by accident.
    pub allow_anonymous: bool,
    /// When set, the admin views (`/admin/*`, `/smart-ai/*`) require
    /// `Authorization: Bearer <admin_token>` from every client, loopback included; when not,
    /// they are served to loopback clients only.
    pub admin_token: Option<Secret>,
    pub header_bytes_max: usize,
    pub headers_count_max: usize,
    pub body_bytes_max: usize,
    pub connections_per_shard_max: usize,
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// How long a client may take to accept one write of its answer (a buffered body, or the
    /// events of a stream that arrived together).
    pub client_send_timeout: Duration,
    /// How long a stopping server waits for requests in flight before it ends them.
    pub drain_timeout: Duration,
    /// Which browser origins may call the OpenAI API paths (`cors_allow_origins`).
    pub cors_allow_origins: CorsOrigins,
}

/// The `[settings]` table: Berry API's keys plus the upstream timeouts and pool limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Failover retries after the first attempt.
    pub max_retries: u32,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub total_timeout: Duration,
    /// 0 disables connection reuse.
    pub pool_idle_per_backend_max: usize,
    /// Below uvicorn/vLLM's 5 s keep-alive, so we close before the server does.
    pub pool_idle_timeout: Duration,
    pub response_buffer_bytes_max: usize,
    /// How often each shard reports outcomes to the control thread.
    pub report_interval: Duration,
    /// Longest gap between two published health snapshots.
    pub snapshot_interval: Duration,
    pub health_check_interval: Duration,
    pub recovery_check_interval: Duration,
    pub circuit_breaker_failure_threshold: u32,
    pub circuit_breaker_timeout: Duration,
    /// Open the circuit when this share of the window's requests failed (0 = only consecutive
    /// failures open it).
    pub circuit_breaker_error_rate: f64,
    /// Requests the window must hold before the error rate can open the circuit.
    pub circuit_breaker_min_requests: u32,
    pub max_internal_retries: u32,
    pub health_check_timeout: Duration,
    pub smart_ai: SmartAi,
}

#[derive(Debug, Clone)]
pub struct SmartAi {
    pub initial_confidence: f64,
    pub min_confidence: f64,
    pub enable_time_decay: bool,
    pub lightweight_check_interval: Duration,
    pub exploration_ratio: f64,
    pub non_premium_stability_bonus: f64,
    pub adjustments: ConfidenceAdjustments,
}

#[derive(Debug, Clone)]
pub struct ConfidenceAdjustments {
    pub success_boost: f64,
    pub network_error_penalty: f64,
    pub auth_error_penalty: f64,
    pub rate_limit_penalty: f64,
    pub server_error_penalty: f64,
    pub model_error_penalty: f64,
    pub timeout_penalty: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A provider's normalised `base_url`.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    /// IPv6 literals are stored without brackets.
    pub host: String,
    /// 80/443 when the URL gives none.
    pub port: u16,
    /// Such as `/v1`; never ends with `/` (empty for the root).
    pub base_path: String,
}

impl UpstreamUrl {
    /// `suffix` is an API path such as `/chat/completions`.
    pub fn path_for(&self, suffix: &str) -> String {
        let mut path = String::with_capacity(self.base_path.len() + suffix.len());
        path.push_str(&self.base_path);
        path.push_str(suffix);
        path
    }

    /// The `Host` header value: the default port is omitted, IPv6 gets its brackets back.
    pub fn host_header(&self) -> String {
        let default_port = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    OpenAi,
    Claude,
    Gemini,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub url: UpstreamUrl,
    /// Always `Some` (and non-empty) for enabled providers.
    pub api_key: Option<Secret>,
    /// Upstream model ids this provider serves.
    pub models: Vec<String>,
    /// Extra upstream headers; values may hold credentials, hence `Secret`.
    pub headers: Vec<(String, Secret)>,
    pub enabled: bool,
    /// From Berry API's `timeout_seconds`; overrides `settings.first_byte_timeout` when set.
    pub first_byte_timeout: Option<Duration>,
    pub backend_type: BackendType,
    /// PEM CA bundle for this provider's TLS (replaces the default roots); relative paths
    /// resolve against the working directory. Not opened here: loading stays side-effect free.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    WeightedRandom,
    RoundRobin,
    Random,
    LeastLatency,
    Failover,
    WeightedFailover,
    SmartWeightedFailover,
    SmartAi,
    LeastRequest,
    PrefixAffinity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingMode {
    PerToken,
    PerRequest,
}

#[derive(Debug, Clone)]
pub struct Model {
    /// The table key (`[models.<key>]`); also accepted as a request's `model`.
    pub key: String,
    /// The client-facing name.
    pub name: String,
    pub strategy: Strategy,
    pub enabled: bool,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// Index into `Config.providers`.
    pub provider: usize,
    /// Upstream model id, written into the forwarded body.
    pub model: String,
    /// In (0, 100].
    pub weight: f64,
    /// 0..=10, lower is preferred.
    pub priority: u8,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub billing_mode: BillingMode,
    /// How the control thread checks this backend while it gets no traffic.
    pub health_check: HealthCheck,
}

impl Backend {
    /// Berry API's tag rule: a caller with tags reaches untagged backends and backends
    /// sharing at least one tag; a caller without tags reaches every backend. Shared by the
    /// request path (`balance::filter`) and validation, so the two cannot disagree.
    #[inline]
    pub fn admits_tags(&self, user_tags: &[String]) -> bool {
        user_tags.is_empty()
            || self.tags.is_empty()
            || self.tags.iter().any(|t| user_tags.contains(t))
    }
}

/// Active health check of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// Never probed: judged by live traffic only.
    None,
    /// `GET {base}/models` with the provider key: free on every API we know.
    Models,
    /// A one-token chat completion: proves the model really answers, and costs a token.
    Chat,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub token: Secret,
    /// `None` = every model. Indices into `Config.models`, sorted, without duplicates.
    pub allowed_models: Option<Vec<usize>>,
    pub enabled: bool,
    pub tags: Vec<String>,
    /// `None` = unlimited (an empty `rate_limit` table also means unlimited).
    pub rate_limit: Option<RateLimit>,
    /// May this user force a provider with the request's `backend` field.
    pub allow_backend_override: bool,
}

/// Each window is independent; `None` = unlimited in that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests_per_minute: Option<u32>,
    pub requests_per_hour: Option<u32>,
    pub requests_per_day: Option<u32>,
}
