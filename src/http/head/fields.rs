//! Header-field semantics the framing decision rests on: Content-Length and Transfer-Encoding
//! syntax, Connection tokens, hop-by-hop names, list splitting. Operates on single values;
//! `head.rs` decides what the combination means for a request or a response.

use super::HeadError;

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1 plus the legacy `keep-alive`,
/// `proxy-connection` and `trailers`). ASCII case-insensitive.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP_BY_HOP: [&[u8]; 10] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP_BY_HOP
        .iter()
        .any(|h| h.len() == name.len() && h.eq_ignore_ascii_case(name))
}

/// Tokens listed in a Connection header value (they name further hop-by-hop headers),
/// whitespace-trimmed, empty list elements skipped: `"keep-alive, X-Foo"` yields `keep-alive`,
/// `X-Foo`.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    list_elements(value)
}

/// Elements of a comma-separated header list (RFC 9110 §5.6.1), trimmed, empty ones skipped.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// What the framing and persistence decisions need from the header list, gathered in one pass.
#[derive(Default)]
pub(super) struct HeaderFacts {
    /// `Some(Err)` once any Content-Length is invalid or disagrees with an earlier one.
    pub(super) content_length: Option<Result<u64, &'static str>>,
    pub(super) te_present: bool,
    /// The last transfer coding listed is `chunked` (which `scan` also guarantees appears only
    /// once).
    pub(super) chunked_final: bool,
    /// Some coding other than `chunked` is listed.
    pub(super) other_codings: bool,
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
    /// Where the `Origin` header is in the list (CORS), found in this pass so that a request
    /// without one costs no second look; `Some(None)` when there are several, which no
    /// browser sends and which answer no single question.
    pub(super) origin: Option<Option<usize>>,
}

impl HeaderFacts {
    pub(super) fn scan(headers: &[httparse::Header<'_>]) -> Result<HeaderFacts, HeadError> {
        let mut facts = HeaderFacts::default();
        let mut chunked_count = 0usize;
        for (i, header) in headers.iter().enumerate() {
            let name = header.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                facts.content_length = Some(match facts.content_length {
                    Some(Err(e)) => Err(e),
                    prior => parse_content_length(header.value, prior.and_then(Result::ok)),
                });
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                facts.te_present = true;
                // Codings accumulate across lines in order (RFC 9110 §5.3), so only the overall
                // last one counts.
                for coding in list_elements(header.value) {
                    let chunked = coding.eq_ignore_ascii_case(b"chunked");
                    chunked_count += usize::from(chunked);
                    facts.other_codings |= !chunked;
                    facts.chunked_final = chunked;
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in connection_tokens(header.value) {
                    facts.close |= token.eq_ignore_ascii_case(b"close");
                    facts.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                facts.expect_continue |= header.value.eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case(b"origin") {
                facts.origin = Some(match facts.origin {
                    None => Some(i),
                    Some(_) => None,
                });
            }
        }
        if chunked_count > 1 {
            // RFC 9112 §7: chunked is never applied twice; two parsers could stop at different
            // last-chunks.
            return Err(HeadError::BadFraming("chunked applied more than once"));
        }
        Ok(facts)
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive` (and not
    /// `close`).
    pub(super) fn persistent(&self, minor_version: u8) -> bool {
        !self.close && (minor_version >= 1 || self.keep_alive)
    }
}

/// Content-Length is `1*DIGIT`; a comma list of identical values ("5, 5") and repeats of the same
/// value across lines are tolerated (RFC 9110 §8.6), anything else is an error, including `+5`,
/// `-1` and u64 overflow.
fn parse_content_length(value: &[u8], prior: Option<u64>) -> Result<u64, &'static str> {
    let mut agreed = prior;
    for element in value.split(|&b| b == b',').map(trim_ows) {
        if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
            return Err("content-length is not a decimal number");
        }
        let n = element.iter().try_fold(0u64, |n, &digit| {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        });
        let n = n.ok_or("content-length overflows u64")?;
        if agreed.is_some_and(|previous| previous != n) {
            return Err("conflicting content-length values");
        }
        agreed = Some(n);
    }
    // `split` yields at least one element, so the loop either returned or set `agreed`.
    agreed.ok_or("content-length is not a decimal number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        let not_number = Err("content-length is not a decimal number");
        let overflow = Err("content-length overflows u64");
        let conflict = Err("conflicting content-length values");
        type Case = (&'static [u8], Option<u64>, Result<u64, &'static str>);
        let cases: [Case; 17] = [
            (b"5", None, Ok(5)),
            (b"  5 \t", None, Ok(5)),
            (b"007", None, Ok(7)),
            (b"18446744073709551615", None, Ok(u64::MAX)),
            (b"5, 5", None, Ok(5)),
            (b"5", Some(5), Ok(5)),
            (b"+5", None, not_number),
            (b"-1", None, not_number),
            (b"0x5", None, not_number),
            (b"5 5", None, not_number),
            (b"5,", None, not_number),
            (b"", None, not_number),
            (b"18446744073709551616", None, overflow),
            (b"99999999999999999999999", None, overflow),
            (b"5, 6", None, conflict),
            (b"6", Some(5), conflict),
            (b"\xd9\xa5", None, not_number),
        ];
        for (value, prior, expected) in cases {
            assert_eq!(
                parse_content_length(value, prior),
                expected,
                "{value:?} after {prior:?}"
            );
        }
    }

    #[test]
    fn connection_tokens_are_trimmed_and_skip_empty_elements() {
        let tokens: Vec<&[u8]> = connection_tokens(b" close ,, X-Foo,\tkeep-alive ,").collect();
        assert_eq!(tokens, [&b"close"[..], b"X-Foo", b"keep-alive"]);
        assert_eq!(connection_tokens(b"").count(), 0);
        assert_eq!(connection_tokens(b" , ").count(), 0);
    }

    #[test]
    fn hop_by_hop_names() {
        for name in [
            "connection",
            "Keep-Alive",
            "PROXY-CONNECTION",
            "proxy-authenticate",
            "Proxy-Authorization",
            "TE",
            "trailer",
            "Trailers",
            "Transfer-Encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in [
            "content-length",
            "tee",
            "t",
            "host",
            "",
            "connectionx",
            "x-connection",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn trim_ows_only_strips_spaces_and_tabs() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\x0ba\x0b"), b"\x0ba\x0b");
    }
}
