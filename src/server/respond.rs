//! Writing responses that Berry itself generates (errors, JSON views).
//!
//! Every gateway-generated error goes through [`error`]: one place decides its status line,
//! headers and OpenAI-shaped body. Such responses carry `x-berry-error` so a client can tell
//! them from an upstream's own errors.

use crate::cors::{self, Cors};
use crate::error::GatewayError;
use crate::http::encode::{write_content_length, write_header, write_status_line};

/// Appends a complete JSON response to `out`.
pub fn json(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    request_id: Option<&str>,
    keep_alive: bool,
    cors: Cors<'_>,
) {
    typed(
        out,
        status,
        b"application/json",
        body,
        request_id,
        keep_alive,
        cors,
    );
}

/// Appends a complete response with the given content type to `out`.
pub fn typed(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &[u8],
    body: &[u8],
    request_id: Option<&str>,
    keep_alive: bool,
    cors: Cors<'_>,
) {
    write_status_line(out, status, b"");
    write_header(out, b"content-type", content_type);
    write_common(out, request_id, keep_alive, cors);
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends a complete error response to `out`.
pub fn error(
    out: &mut Vec<u8>,
    err: &GatewayError,
    request_id: Option<&str>,
    keep_alive: bool,
    cors: Cors<'_>,
) {
    let mut body = Vec::with_capacity(128 + err.message.len());
    err.write_body(&mut body);
    write_status_line(out, err.status(), b"");
    write_header(out, b"content-type", b"application/json");
    write_header(out, b"x-berry-error", err.kind.code().as_bytes());
    if err.kind == crate::error::ErrorKind::Unauthorized {
        write_header(out, b"www-authenticate", b"Bearer");
    }
    if err.degraded {
        write_header(
            out,
            b"x-berry-degraded",
            crate::error::DEGRADED_HEADER_VALUE,
        );
    }
    if let Some(allow) = err.allow {
        write_header(out, b"allow", allow.as_bytes());
    }
    if let Some(secs) = err.retry_after_secs {
        out.extend_from_slice(b"retry-after: ");
        crate::http::encode::write_decimal(out, secs);
        out.extend_from_slice(b"\r\n");
    }
    write_common(out, request_id, keep_alive, cors);
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
}

/// Appends the answer to a CORS preflight from an allowed `origin`: 204, no body (so no
/// `content-length`, RFC 9110 §8.6), with what the page may send. `requested` is the
/// preflight's `access-control-request-headers`.
pub fn preflight(out: &mut Vec<u8>, origin: &str, requested: Option<&[u8]>, keep_alive: bool) {
    write_status_line(out, 204, b"");
    cors::write_preflight(out, origin, requested);
    write_common(out, None, keep_alive, Cors::None);
    out.extend_from_slice(b"\r\n");
}

fn write_common(out: &mut Vec<u8>, request_id: Option<&str>, keep_alive: bool, cors: Cors<'_>) {
    if let Some(id) = request_id {
        write_header(out, b"x-request-id", id.as_bytes());
    }
    cors.write(out);
    if !keep_alive {
        write_header(out, b"connection", b"close");
    }
}
