//! The one error type of the request path, and the one place it becomes an HTTP response.
//!
//! Every failure knows whose fault it is (client, gateway, upstream), whether another backend
//! may be tried, and which status and OpenAI error envelope the client gets. Messages are
//! written for clients: they never carry upstream bodies, addresses or secrets.

use std::fmt;

/// Whose fault a failure is; decides logging level and whether a backend's health is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Gateway,
    Upstream,
}

/// What went wrong. Each kind maps to exactly one status code in [`ErrorKind::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Body is not valid JSON, or a field has the wrong type.
    InvalidJson,
    /// `model` is missing from the body.
    MissingModel,
    /// The request line, headers or framing are malformed.
    BadRequest,
    /// No or malformed `Authorization` header, or an unknown or disabled token.
    Unauthorized,
    /// The token is valid but may not use this model or feature.
    Forbidden,
    /// Unknown path.
    NotFound,
    /// Unknown (or disabled) model.
    ModelNotFound,
    /// Known path, wrong method.
    MethodNotAllowed,
    /// POST without Content-Length or chunked body.
    LengthRequired,
    /// Body larger than `body_bytes_max`.
    PayloadTooLarge,
    /// Content-Type is not JSON.
    UnsupportedMediaType,
    /// Request head larger than `header_bytes_max` or too many headers.
    HeadersTooLarge,
    /// A request feature we do not implement (a transfer coding besides chunked).
    NotImplemented,
    /// HTTP version other than 1.0/1.1.
    VersionNotSupported,
    /// The client was too slow sending its request.
    RequestTimeout,
    /// The upstream failed (connect refused, reset, cut short).
    UpstreamFailed,
    /// The upstream answered something that is not the HTTP Berry relays: an unparseable or
    /// oversized head, a status outside 100–599, a protocol switch, broken chunked framing.
    UpstreamMalformed,
    /// The upstream did not answer in time (connect, first byte or total).
    UpstreamTimeout,
    /// The upstream's answer outgrew a limit of Berry's before anything could be sent (an SSE
    /// event over `response_buffer_bytes_max`): another backend would meet the same limit.
    ResponseTooLarge,
    /// No backend of the model can take the request.
    NoBackend,
    /// The shard is at `connections_per_shard_max` or draining.
    Overloaded,
    /// The server stopped, and `drain_timeout_ms` ran out before this request finished.
    ShuttingDown,
    /// The user's `rate_limit` has no room for this request.
    RateLimited,
    /// The client did not accept its answer within `client_send_timeout_ms`. Only recorded
    /// (the answer had begun, or the client is not reading): never sent as a response.
    ClientSendTimeout,
}

impl ErrorKind {
    /// Every kind, for documentation checks.
    pub const ALL: [ErrorKind; 24] = [
        ErrorKind::InvalidJson,
        ErrorKind::MissingModel,
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::ModelNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::LengthRequired,
        ErrorKind::PayloadTooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::HeadersTooLarge,
        ErrorKind::NotImplemented,
        ErrorKind::VersionNotSupported,
        ErrorKind::RequestTimeout,
        ErrorKind::UpstreamFailed,
        ErrorKind::UpstreamMalformed,
        ErrorKind::UpstreamTimeout,
        ErrorKind::ResponseTooLarge,
        ErrorKind::NoBackend,
        ErrorKind::Overloaded,
        ErrorKind::ShuttingDown,
        ErrorKind::RateLimited,
        ErrorKind::ClientSendTimeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidJson | ErrorKind::MissingModel | ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound | ErrorKind::ModelNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout | ErrorKind::ClientSendTimeout => 408,
            ErrorKind::LengthRequired => 411,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::RateLimited => 429,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::NotImplemented => 501,
            ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamMalformed
            | ErrorKind::ResponseTooLarge => 502,
            ErrorKind::NoBackend | ErrorKind::Overloaded | ErrorKind::ShuttingDown => 503,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::VersionNotSupported => 505,
        }
    }

    /// OpenAI's `error.type` vocabulary.
    fn type_name(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::NotFound | ErrorKind::ModelNotFound => "not_found_error",
            ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamMalformed
            | ErrorKind::UpstreamTimeout => "upstream_error",
            ErrorKind::NoBackend | ErrorKind::Overloaded | ErrorKind::ShuttingDown => {
                "service_unavailable_error"
            }
            ErrorKind::ResponseTooLarge => "server_error",
            // OpenAI's type for a request-count limit (`tokens` is the other kind).
            ErrorKind::RateLimited => "requests",
            _ => "invalid_request_error",
        }
    }

    /// Stable machine-readable `error.code`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::MissingModel => "missing_model",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "invalid_api_key",
            ErrorKind::Forbidden => "model_access_denied",
            ErrorKind::NotFound => "unknown_url",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::LengthRequired => "length_required",
            ErrorKind::PayloadTooLarge => "body_too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::VersionNotSupported => "http_version_not_supported",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::UpstreamFailed => "upstream_failed",
            ErrorKind::UpstreamMalformed => "upstream_malformed",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::ResponseTooLarge => "response_too_large",
            ErrorKind::NoBackend => "no_available_backend",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::ClientSendTimeout => "client_send_timeout",
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamMalformed
            | ErrorKind::UpstreamTimeout => Fault::Upstream,
            ErrorKind::NoBackend
            | ErrorKind::Overloaded
            | ErrorKind::ShuttingDown
            | ErrorKind::ResponseTooLarge => Fault::Gateway,
            _ => Fault::Client,
        }
    }
}

/// `x-berry-degraded`: the answer (relayed, or Berry's own error) came from a backend known to
/// be down, tried because none of the model's was up.
pub const DEGRADED_HEADER_VALUE: &[u8] = b"no available backend; tried an unavailable one";

/// A failure on the request path: kind plus a client-safe message.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// Another backend may be tried (only meaningful for upstream faults before any byte was sent).
    pub retryable: bool,
    /// For 405: the `allow` header value.
    pub allow: Option<&'static str>,
    /// For 429: whole seconds until the request would fit (`retry-after`).
    pub retry_after_secs: Option<u64>,
    /// The failed attempt went to a backend known to be down, because none of the model's
    /// was up (`x-berry-degraded`, as on relayed answers).
    pub degraded: bool,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            retryable: false,
            allow: None,
            retry_after_secs: None,
            degraded: false,
        }
    }

    /// 429: the user's `rate_limit` window `denied.span` is full.
    pub fn rate_limited(denied: crate::ratelimit::Denied) -> Self {
        // Rounded up: a client that waits exactly this long finds room.
        let secs = (denied.retry_after.as_secs()
            + u64::from(denied.retry_after.subsec_nanos() > 0))
        .max(1);
        GatewayError {
            retry_after_secs: Some(secs),
            ..GatewayError::new(
                ErrorKind::RateLimited,
                format!(
                    "rate limit reached: {} requests per {}; retry in {} s",
                    denied.limit,
                    denied.span.name(),
                    secs
                ),
            )
        }
    }

    /// An upstream failure that happened before any byte reached the client: failover may try
    /// another backend.
    pub fn upstream(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            retryable: true,
            allow: None,
            retry_after_secs: None,
            degraded: false,
        }
    }

    /// 405 for a known path; `allow` lists the methods it takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        GatewayError {
            kind: ErrorKind::MethodNotAllowed,
            message: format!("method not allowed; this endpoint takes {allow}"),
            retryable: false,
            allow: Some(allow),
            retry_after_secs: None,
            degraded: false,
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// Appends the OpenAI error envelope to `out`.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"error\":{\"message\":");
        crate::api::peek::write_json_string(out, &self.message);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.kind.type_name().as_bytes());
        out.extend_from_slice(b"\",\"code\":\"");
        out.extend_from_slice(self.kind.code().as_bytes());
        out.extend_from_slice(b"\"}}");
    }

    /// The whole body as a string (for SSE error events and tests).
    pub fn body_string(&self) -> String {
        let mut out = Vec::with_capacity(96 + self.message.len());
        self.write_body(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.code(),
            self.status(),
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

/// Echoes at most 100 characters of client input in messages, with control characters
/// escaped: the message also goes to the log, where a raw newline or escape sequence from a
/// client could forge a line or recolour a terminal.
pub fn clip(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(100));
    for c in s.chars().take(100) {
        // Controls, plus the characters that move or reorder text without being controls:
        // line and paragraph separators, bidi embeddings, overrides and isolates.
        if c.is_control() || matches!(c, '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_openai_shaped_and_escaped() {
        let e = GatewayError::new(ErrorKind::ModelNotFound, "model \"x\" not found");
        let v: serde_json::Value = serde_json::from_str(&e.body_string()).unwrap();
        assert_eq!(v["error"]["message"], "model \"x\" not found");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn statuses_follow_the_contract() {
        use ErrorKind::*;
        let table = [
            (InvalidJson, 400),
            (MissingModel, 400),
            (Unauthorized, 401),
            (Forbidden, 403),
            (NotFound, 404),
            (MethodNotAllowed, 405),
            (LengthRequired, 411),
            (PayloadTooLarge, 413),
            (UnsupportedMediaType, 415),
            (HeadersTooLarge, 431),
            (UpstreamFailed, 502),
            (UpstreamMalformed, 502),
            (ResponseTooLarge, 502),
            (NoBackend, 503),
            (ShuttingDown, 503),
            (UpstreamTimeout, 504),
        ];
        for (k, s) in table {
            assert_eq!(k.status(), s, "{k:?}");
        }
    }

    #[test]
    fn every_error_code_is_documented_with_its_status() {
        let doc = include_str!("../docs/observability.md");
        for k in ErrorKind::ALL {
            let row = format!("| `{}` | {} |", k.code(), k.status());
            assert!(
                doc.contains(&row),
                "docs/observability.md lacks the row {row}"
            );
        }
    }

    #[test]
    fn client_text_is_clipped_and_cannot_forge_log_lines() {
        let forged = "zz\nFAKE 2026-01-01 ERROR berry: injected\u{1b}[31m";
        let shown = clip(forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("zz\\nFAKE"), "{shown}");
        assert!(shown.contains("\\u{1b}[31m"), "{shown}");
        assert_eq!(clip(&"é".repeat(150)).chars().count(), 100);
    }
}
