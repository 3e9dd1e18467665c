//! Reading (or skipping) the request body that follows a parsed head, within the limits.
//!
//! Bodies are buffered whole: they are small JSON documents that must be scanned and may be
//! replayed to a second backend on failover. `body_bytes_max` bounds them.

use std::time::Instant;

use crate::config::ServerSettings;
use crate::error::{ErrorKind, GatewayError};
use crate::http::body::ChunkedDecoder;
use crate::http::head::{RequestBody, RequestHead};
use crate::server::conn::ClientReader;

/// Largest body skipped (read and discarded) to keep a connection alive after an early error.
const SKIP_BYTES_MAX: u64 = 64 * 1024;
/// Trailer bytes accepted after a chunked request body.
const TRAILER_BYTES_MAX: usize = 8 * 1024;

/// Why a body could not be read. `None` in the error position means the client went away.
pub type BodyResult = Result<usize, Option<GatewayError>>;

/// Copies the decoded body into `into` and returns how many raw bytes after the head it still
/// occupies in `r.buf` (the caller consumes head + that many; a chunked body's framing is
/// removed from the buffer as it is decoded, so that is 0).
pub async fn read(
    r: &mut ClientReader,
    head: &RequestHead,
    limits: &ServerSettings,
    into: &mut Vec<u8>,
) -> BodyResult {
    let start = r.timer.now();
    let max = limits.body_bytes_max;
    match head.body {
        RequestBody::None => Ok(0),
        RequestBody::Length(n) => {
            if n > max as u64 {
                return Err(Some(too_large(max)));
            }
            let n = n as usize;
            while r.buf.len() < head.head_len + n {
                fill(r, start, limits).await?;
            }
            into.extend_from_slice(&r.buf[head.head_len..head.head_len + n]);
            Ok(n)
        }
        RequestBody::Chunked => {
            let mut dec = ChunkedDecoder::new(TRAILER_BYTES_MAX);
            loop {
                let mut over = false;
                let used = dec
                    .decode(&r.buf[head.head_len..], &mut |data| {
                        if into.len() + data.len() > max {
                            over = true;
                        } else {
                            into.extend_from_slice(data);
                        }
                    })
                    .map_err(|e| {
                        Some(GatewayError::new(
                            ErrorKind::BadRequest,
                            format!("malformed chunked body: {e}"),
                        ))
                    })?;
                // A chunk declared bigger than the room left is refused now, not after the
                // client has sent (or failed to send) all of it.
                let room = max.saturating_sub(into.len()) as u64;
                if over || dec.declared_pending() > room {
                    return Err(Some(too_large(max)));
                }
                // Raw framing is dropped as it is decoded: chunk extensions cannot make the
                // buffer grow beyond the decoded body (plus one partial chunk line).
                r.buf.drain(head.head_len..head.head_len + used);
                if dec.is_done() {
                    return Ok(0);
                }
                fill(r, start, limits).await?;
            }
        }
    }
}

/// Reads and discards a small body so the connection can carry the next request. Returns
/// false when the body is too large or did not arrive (the connection must then close).
pub async fn skip(r: &mut ClientReader, head: &RequestHead, limits: &ServerSettings) -> bool {
    match head.body {
        RequestBody::None => true,
        RequestBody::Length(n) if n <= SKIP_BYTES_MAX => {
            let start = r.timer.now();
            while r.buf.len() < head.head_len + n as usize {
                if fill(r, start, limits).await.is_err() {
                    return false;
                }
            }
            r.buf.drain(head.head_len..head.head_len + n as usize);
            true
        }
        _ => false,
    }
}

async fn fill(
    r: &mut ClientReader,
    start: Instant,
    limits: &ServerSettings,
) -> Result<(), Option<GatewayError>> {
    match r.read_more(start + limits.client_body_timeout).await {
        Ok(0) => Err(None),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(Some(timed_out())),
        Err(_) => Err(None),
    }
}

fn too_large(max: usize) -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        format!("request body is larger than {max} bytes"),
    )
}

fn timed_out() -> GatewayError {
    GatewayError::new(
        ErrorKind::RequestTimeout,
        "request body not received in time",
    )
}
