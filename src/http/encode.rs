//! Writing HTTP/1.1 wire bytes into a caller-owned `Vec<u8>`: status line, header lines, chunk
//! frames. Appends only (never clears), does no validation of names or values: callers pass bytes
//! that httparse already accepted or that are static, so CR/LF injection cannot reach here.
//! Integers are formatted by hand into stack buffers because `format!` would allocate a `String`
//! per header on the hot path.

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// Ends a head (after the last header line) or a trailer section.
pub const CRLF: &[u8] = b"\r\n";

/// Appends one chunk frame, `{hex len}\r\n{data}\r\n`. Empty `data` writes nothing, since a
/// zero-size chunk would be read as the end of the body; use `LAST_CHUNK` for that.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_chunk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CRLF);
}

/// Just the `{hex len}\r\n` part, for callers that write the payload themselves (e.g. straight from
/// a read buffer with a vectored write) and then `CRLF`. `len` must not be 0.
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    // usize is at most 64 bits on every target we build for, so 16 hex digits always suffice.
    let mut n = len as u64;
    loop {
        start -= 1;
        digits[start] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(CRLF);
}

/// `HTTP/1.1 {status} {reason}\r\n`, with `canonical_reason(status)` when `reason` is empty.
pub fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(status));
    out.push(b' ');
    let reason = if reason.is_empty() {
        canonical_reason(status).as_bytes()
    } else {
        reason
    };
    out.extend_from_slice(reason);
    out.extend_from_slice(CRLF);
}

/// Reason phrase from RFC 9110 §15 (plus 429 from RFC 6585); empty for unregistered codes, which
/// the grammar allows (`HTTP/1.1 599 \r\n`).
pub fn canonical_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// `{name}: {value}\r\n`.
pub fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(CRLF);
}

/// `content-length: {n}\r\n`.
pub fn write_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    write_decimal(out, n);
    out.extend_from_slice(CRLF);
}

/// Appends `n` in decimal, two digits per step from a lookup table, as itoa does.
pub fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = b"prefix|".to_vec();
        f(&mut out);
        String::from_utf8(out).expect("encoder output is ASCII")
    }

    #[test]
    fn chunks_use_lowercase_hex_and_skip_empty_data() {
        assert_eq!(
            written(|o| write_chunk(o, b"hello")),
            "prefix|5\r\nhello\r\n"
        );
        assert_eq!(
            written(|o| write_chunk(o, &[b'x'; 26])),
            format!("prefix|1a\r\n{}\r\n", "x".repeat(26))
        );
        assert_eq!(written(|o| write_chunk(o, b"")), "prefix|");
        assert_eq!(
            written(|o| write_chunk_header(o, 0x1_0000)),
            "prefix|10000\r\n"
        );
        assert_eq!(
            written(|o| write_chunk_header(o, usize::MAX)),
            format!("prefix|{:x}\r\n", usize::MAX)
        );
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    #[test]
    fn status_line_falls_back_to_canonical_reason() {
        assert_eq!(
            written(|o| write_status_line(o, 200, b"")),
            "prefix|HTTP/1.1 200 OK\r\n"
        );
        assert_eq!(
            written(|o| write_status_line(o, 404, b"Nope")),
            "prefix|HTTP/1.1 404 Nope\r\n"
        );
        assert_eq!(
            written(|o| write_status_line(o, 599, b"")),
            "prefix|HTTP/1.1 599 \r\n"
        );
        assert_eq!(canonical_reason(429), "Too Many Requests");
        assert_eq!(canonical_reason(505), "HTTP Version Not Supported");
    }

    #[test]
    fn headers_and_content_length() {
        assert_eq!(
            written(|o| write_header(o, b"x-a", b"1")),
            "prefix|x-a: 1\r\n"
        );
        assert_eq!(
            written(|o| write_content_length(o, 0)),
            "prefix|content-length: 0\r\n"
        );
        assert_eq!(
            written(|o| write_content_length(o, 282)),
            "prefix|content-length: 282\r\n"
        );
    }

    #[test]
    fn decimal_matches_std_formatting() {
        let mut samples = vec![
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            u64::MAX,
            u64::MAX - 1,
        ];
        samples.extend((0..20).map(|p| 10u64.pow(p)));
        samples.extend((1..20).map(|p| 10u64.pow(p) - 1));
        for n in samples {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes(), "n = {n}");
        }
    }
}
