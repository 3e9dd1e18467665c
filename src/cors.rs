//! CORS, so that pages in a browser can call the OpenAI API paths (`/v1/…`, `/models`): what a
//! request's `Origin` earns its answer, and the header lines that say so. Decided once per
//! request from the `Origin` found in the head's single header pass; a request without one is
//! answered exactly as if CORS did not exist. Credentials are never allowed
//! (`access-control-allow-credentials` is never sent): tokens are bearer headers a page must
//! be given, not cookies a browser attaches on its own.

use crate::config::CorsOrigins;
use crate::http::encode::{write_decimal, write_header};
use crate::http::head::{trim_ows, RequestHead};

/// Methods a preflight allows: everything the OpenAI API paths take.
const ALLOW_METHODS: &[u8] = b"GET, POST, OPTIONS";

/// Request headers a preflight allows when the browser did not list the ones it wants.
const DEFAULT_ALLOW_HEADERS: &[u8] = b"authorization, content-type, accept";

/// Response headers a page's script may read besides the CORS-safelisted ones: every header
/// Berry itself adds that a client acts on (`x-request-id` to report a problem,
/// `x-berry-backend`, `x-berry-error` to tell Berry's errors from an upstream's,
/// `x-berry-degraded`, `x-upstream-request-id`, `retry-after` after a 429), and the rate-limit
/// headers OpenAI-style upstreams send and Berry relays, which client libraries pace by.
const EXPOSE_HEADERS: &[u8] = b"x-request-id, x-berry-backend, x-berry-error, x-berry-degraded, \
                                x-upstream-request-id, retry-after, retry-after-ms, \
                                x-should-retry, x-ratelimit-limit-requests, \
                                x-ratelimit-remaining-requests, x-ratelimit-reset-requests, \
                                x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, \
                                x-ratelimit-reset-tokens";

/// How long a browser may reuse a preflight's answer, seconds (browsers cap it lower:
/// Chromium at 2 h, Firefox at 24 h).
const PREFLIGHT_MAX_AGE_SECS: u64 = 86_400;

/// What one request's answer owes the page that sent it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cors<'r> {
    /// No `Origin` (with `*` or CORS off), or a path outside the OpenAI API: the answer is
    /// what it would be without CORS, byte for byte.
    #[default]
    None,
    /// No `Origin`, with a list of origins: no CORS headers, but `vary: Origin`, so a cache
    /// never hands this answer to a page the list allows (it would lack their grant), and an
    /// upstream's own `access-control-*` headers are dropped as for any listed answer.
    Varies,
    /// Any origin with CORS off (`[]`): no CORS headers, and an upstream's own
    /// `access-control-*` headers are dropped, so they cannot grant what the operator refused.
    Refused,
    /// An origin the list does not name: as `Refused`, with `vary: Origin`.
    NotListed,
    /// An allowed origin; the value of `access-control-allow-origin`: `*`, or the origin
    /// itself (entries are stored as browsers send them, so this equals the request's bytes).
    Allowed(&'r str),
}

impl<'r> Cors<'r> {
    /// The decision for a request on an OpenAI API path.
    pub fn of(origins: &'r CorsOrigins, head: &RequestHead, buf: &[u8]) -> Cors<'r> {
        let Some(origin) = head.origin(buf) else {
            return match origins {
                CorsOrigins::Only(_) => Cors::Varies,
                _ => Cors::None,
            };
        };
        match origins {
            CorsOrigins::Off => Cors::Refused,
            CorsOrigins::Any => Cors::Allowed("*"),
            CorsOrigins::Only(list) => list
                .iter()
                .find(|o| o.as_bytes() == origin)
                .map_or(Cors::NotListed, |o| Cors::Allowed(o)),
        }
    }

    /// Berry, not the upstream, answers for CORS: the upstream's `access-control-*` headers
    /// are dropped (two `access-control-allow-origin` lines make a browser refuse the answer).
    pub fn owns_headers(self) -> bool {
        self != Cors::None
    }

    /// Appends the lines every answer to an allowed origin carries, preflights aside, and
    /// `vary: Origin` wherever a list decided.
    pub fn write(self, out: &mut Vec<u8>) {
        match self {
            Cors::Allowed(origin) => {
                write_allow_origin(out, origin);
                write_header(out, b"access-control-expose-headers", EXPOSE_HEADERS);
            }
            Cors::Varies | Cors::NotListed => write_header(out, b"vary", b"Origin"),
            Cors::Refused | Cors::None => {}
        }
    }
}

/// Appends a preflight's CORS lines for an allowed `origin`. `requested` is the browser's
/// `access-control-request-headers`: echoed when it is a plain list of header names, so any
/// header a client library adds (`openai-beta`, `x-stainless-*`) passes without a list to
/// keep up to date.
pub fn write_preflight(out: &mut Vec<u8>, origin: &str, requested: Option<&[u8]>) {
    write_allow_origin(out, origin);
    write_header(out, b"access-control-allow-methods", ALLOW_METHODS);
    let headers = requested
        .filter(|v| is_name_list(v))
        .unwrap_or(DEFAULT_ALLOW_HEADERS);
    write_header(out, b"access-control-allow-headers", headers);
    out.extend_from_slice(b"access-control-max-age: ");
    write_decimal(out, PREFLIGHT_MAX_AGE_SECS);
    out.extend_from_slice(b"\r\n");
}

fn write_allow_origin(out: &mut Vec<u8>, origin: &str) {
    write_header(out, b"access-control-allow-origin", origin.as_bytes());
    if origin != "*" {
        // The answer names who asked: a cache must not hand it to a page of another origin.
        write_header(out, b"vary", b"Origin");
    }
}

/// A CORS response header (`access-control-…`), ASCII case-insensitive.
pub fn is_cors_header(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"access-control-";
    name.len() > PREFIX.len() && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
}

/// A comma-separated list of header names (RFC 9110 tokens) with optional whitespace, as
/// browsers send it. Anything else is not echoed: Berry would be vouching for bytes it does
/// not understand.
fn is_name_list(value: &[u8]) -> bool {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    value.split(|&b| b == b',').all(|element| {
        let name = trim_ows(element);
        !name.is_empty() && name.iter().all(is_tchar)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request;

    fn decide<'r>(origins: &'r CorsOrigins, headers: &str) -> Cors<'r> {
        let raw = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
        let head = parse_request(raw.as_bytes(), 4096, 16).unwrap().unwrap();
        Cors::of(origins, &head, raw.as_bytes())
    }

    #[test]
    fn the_origin_decides() {
        let only = CorsOrigins::Only(vec!["https://app.example".into()]);
        let app = "origin: https://app.example\r\n";
        assert_eq!(decide(&CorsOrigins::Any, app), Cors::Allowed("*"));
        assert_eq!(decide(&only, app), Cors::Allowed("https://app.example"));
        assert_eq!(
            decide(&only, "origin: https://evil.example\r\n"),
            Cors::NotListed
        );
        assert_eq!(
            decide(&only, "origin: https://app.example.evil\r\n"),
            Cors::NotListed
        );
        assert_eq!(decide(&only, &format!("{app}{app}")), Cors::NotListed);
        assert_eq!(decide(&CorsOrigins::Off, app), Cors::Refused);
        for origins in [&CorsOrigins::Any, &CorsOrigins::Off] {
            assert_eq!(decide(origins, ""), Cors::None);
        }
        assert_eq!(decide(&only, ""), Cors::Varies);
    }

    #[test]
    fn requested_headers_are_echoed_only_when_they_are_names() {
        let allowed = |requested: &[u8]| {
            let mut out = Vec::new();
            write_preflight(&mut out, "*", Some(requested));
            let text = String::from_utf8(out).unwrap();
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("access-control-allow-headers: "))
                .unwrap()
                .to_string();
            line
        };
        assert_eq!(
            allowed(b"authorization,content-type, x-stainless-os"),
            "authorization,content-type, x-stainless-os"
        );
        for bad in [&b""[..], b"a,,b", b"a b", b"a;b", b"\xff"] {
            assert_eq!(
                allowed(bad),
                "authorization, content-type, accept",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cors_header_names() {
        assert!(is_cors_header(b"Access-Control-Allow-Origin"));
        assert!(is_cors_header(b"access-control-max-age"));
        assert!(!is_cors_header(b"access-control-"));
        assert!(!is_cors_header(b"vary"));
    }
}
