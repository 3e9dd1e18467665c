//! Request and response heads: parse them with `httparse` into byte ranges over the caller's
//! buffer, then decide body framing and connection persistence (RFC 9112 §6 and §9.3). The parsed
//! heads borrow nothing, so the caller keeps ownership of its read buffer; the only allocation is
//! the header `Vec`, which `*_into` reuses. Never does I/O, never decides status codes (`HeadError`
//! only names the fault; `error.rs` maps it).

use std::mem::MaybeUninit;
use std::ops::Range;

mod fields;

use fields::HeaderFacts;
pub use fields::{connection_tokens, is_hop_by_hop, list_elements, trim_ows};

/// Hard ceiling for `headers_count_max`: httparse fills a stack array of this many slots, so a
/// larger request from config is clamped here rather than growing the stack frame.
pub const HEADERS_COUNT_CAP: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    /// Any other token; the exact bytes are at `RequestHead::method_range`.
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRange {
    pub name: Range<usize>,
    /// Leading and trailing whitespace already excluded (httparse trims both).
    pub value: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    /// The de-chunked payload may still carry other transfer codings; see
    /// `ResponseHead::transfer_coded`.
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// No complete head within `head_bytes_max` bytes (431).
    TooLarge,
    /// More than `headers_count_max` header lines (431).
    TooManyHeaders,
    /// Bad request/status line, header syntax (including obs-fold) or version token (400; 502
    /// upstream).
    Malformed(&'static str),
    /// Framing headers that could let two parsers disagree on where the body ends (400; 502
    /// upstream), including a request whose last transfer coding is not `chunked` (RFC 9112
    /// §6.3: its length cannot be determined).
    BadFraming(&'static str),
    /// A request body under a transfer coding besides `chunked` (e.g. `gzip, chunked`): framed
    /// soundly, but Berry could not read the JSON inside (501, RFC 9112 §6.1).
    UnsupportedCoding,
    /// A well-formed `HTTP/x.y` other than 1.0/1.1, e.g. the HTTP/2 preface (505).
    UnsupportedVersion,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("head too large"),
            HeadError::TooManyHeaders => f.write_str("too many header lines"),
            HeadError::Malformed(what) => write!(f, "malformed head: {what}"),
            HeadError::BadFraming(what) => write!(f, "bad framing: {what}"),
            HeadError::UnsupportedVersion => f.write_str("unsupported HTTP version"),
            HeadError::UnsupportedCoding => f.write_str("unsupported transfer coding"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The method token itself; needed to forward `Method::Other` verbatim.
    pub method_range: Range<usize>,
    pub path: Range<usize>,
    pub minor_version: u8,
    pub headers: Vec<HeaderRange>,
    /// Bytes of the head including the final empty line; `buf[head_len..]` is body or the next
    /// request.
    pub head_len: usize,
    pub body: RequestBody,
    pub keep_alive: bool,
    /// `Expect: 100-continue` from an HTTP/1.1 client (RFC 9110 §10.1.1 says to ignore it from
    /// HTTP/1.0). Answer it only when `body` is not `None` and the head passed our checks.
    pub expect_continue: bool,
    /// The `Origin` header's value (a browser's cross-origin request); an empty range when it
    /// appears more than once, which matches no allowed origin.
    pub origin: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    pub reason: Range<usize>,
    pub headers: Vec<HeaderRange>,
    pub head_len: usize,
    pub body: ResponseBody,
    pub keep_alive: bool,
    /// Both `Transfer-Encoding: …chunked` and `Content-Length` were sent; chunked won. A forwarder
    /// must drop the Content-Length, and the connection is not reused (`keep_alive` is false) since
    /// it smells of smuggling.
    pub length_overridden: bool,
    /// Transfer-Encoding listed codings before the final `chunked` (e.g. `gzip, chunked`). We only
    /// strip the chunk framing, so the payload is still gzip: a forwarder must re-declare those
    /// codings or refuse.
    pub transfer_coded: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Method::Get,
            method_range: 0..0,
            path: 0..0,
            minor_version: 1,
            headers: Vec::new(),
            head_len: 0,
            body: RequestBody::None,
            keep_alive: true,
            expect_continue: false,
            origin: None,
        }
    }
}

impl Default for ResponseHead {
    fn default() -> Self {
        ResponseHead {
            status: 0,
            minor_version: 1,
            reason: 0..0,
            headers: Vec::new(),
            head_len: 0,
            body: ResponseBody::None,
            keep_alive: false,
            length_overridden: false,
            transfer_coded: false,
        }
    }
}

impl RequestHead {
    /// First header named `name` (ASCII case-insensitive). `buf` must be the buffer that was
    /// parsed.
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        find_header(&self.headers, buf, name)
    }

    /// The header named `name` when it appears at most once; `Err(())` when it appears more
    /// than once (for fields that are not lists, two lines are two answers to one question).
    #[allow(clippy::result_unit_err)]
    pub fn single_header<'b>(&self, buf: &'b [u8], name: &str) -> Result<Option<&'b [u8]>, ()> {
        let mut named = (self.headers.iter())
            .filter(|h| slice(buf, &h.name).eq_ignore_ascii_case(name.as_bytes()));
        let first = named.next().map(|h| slice(buf, &h.value));
        match named.next() {
            Some(_) => Err(()),
            None => Ok(first),
        }
    }

    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        slice(buf, &self.path)
    }

    /// The `Origin` header's value, if the request has exactly one (empty when repeated).
    pub fn origin<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.origin.as_ref().map(|r| slice(buf, r))
    }

    pub fn method_bytes<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        slice(buf, &self.method_range)
    }

    /// `Content-Type` is `application/json`, ignoring parameters such as `charset`.
    pub fn content_type_is_json(&self, buf: &[u8]) -> bool {
        self.header(buf, "content-type")
            .is_some_and(is_json_media_type)
    }
}

/// A `Content-Type` value names `application/json`, whatever its parameters (`charset`).
pub fn is_json_media_type(value: &[u8]) -> bool {
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    trim_ows(media_type).eq_ignore_ascii_case(b"application/json")
}

impl ResponseHead {
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        find_header(&self.headers, buf, name)
    }

    pub fn reason<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        slice(buf, &self.reason)
    }
}

/// `Ok(None)`: incomplete, read more (only while `buf.len() < head_bytes_max`).
///
/// Each call parses from the start of `buf`, so a client trickling one byte per read costs
/// O(head_bytes_max²) in total; call again only after a read added bytes, and let the head read
/// timeout bound the rest.
pub fn parse_request(
    buf: &[u8],
    head_bytes_max: usize,
    headers_count_max: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let mut head = RequestHead::default();
    let complete = parse_request_into(buf, head_bytes_max, headers_count_max, &mut head)?;
    Ok(complete.then_some(head))
}

/// Like `parse_request`, but fills `head` in place so a connection can keep one header `Vec` for
/// its lifetime. Returns `Ok(false)` when incomplete; `head` is then unspecified.
pub fn parse_request_into(
    buf: &[u8],
    head_bytes_max: usize,
    headers_count_max: usize,
    head: &mut RequestHead,
) -> Result<bool, HeadError> {
    // Parsing only the allowed window makes the limit exact and keeps a slow client from making us
    // rescan megabytes: anything past `head_bytes_max` is either body/pipelined bytes or an
    // oversized head.
    let window = &buf[..buf.len().min(head_bytes_max)];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_COUNT_CAP];
    let slots = &mut slots[..headers_count_max.min(HEADERS_COUNT_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= head_bytes_max => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(e) => return Err(map_error(e, window, StartLine::Request)),
    };
    // httparse fills every field before reporting Complete; the fallbacks only keep this
    // panic-free.
    let method = req.method.unwrap_or_default().as_bytes();
    let minor_version = req.version.unwrap_or(1);
    let facts = HeaderFacts::scan(req.headers)?;

    head.body = if facts.te_present {
        if minor_version == 0 {
            // RFC 9112 §6.1: an HTTP/1.0 sender cannot have meant chunked framing.
            return Err(HeadError::BadFraming(
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        if facts.content_length.is_some() {
            return Err(HeadError::BadFraming(
                "both content-length and transfer-encoding",
            ));
        }
        if !facts.chunked_final {
            return Err(HeadError::BadFraming(
                "request transfer-encoding that does not end with chunked",
            ));
        }
        if facts.other_codings {
            return Err(HeadError::UnsupportedCoding);
        }
        RequestBody::Chunked
    } else {
        match facts.content_length {
            Some(length) => RequestBody::Length(length.map_err(HeadError::BadFraming)?),
            None => RequestBody::None,
        }
    };
    head.method = Method::from_token(method);
    head.method_range = range_of(buf, method);
    head.path = range_of(buf, req.path.unwrap_or_default().as_bytes());
    head.minor_version = minor_version;
    head.head_len = head_len;
    head.keep_alive = facts.persistent(minor_version);
    head.expect_continue = minor_version == 1 && facts.expect_continue;
    fill_ranges(&mut head.headers, buf, req.headers);
    head.origin = facts
        .origin
        .map(|at| at.map_or(0..0, |i| head.headers[i].value.clone()));
    Ok(true)
}

/// `request_method` decides HEAD → no body; 1xx/204/304 → no body. Chunked wins over Content-Length
/// (reported in `length_overridden`). `keep_alive` is false for `UntilClose`, 101 and any framing
/// we distrust.
pub fn parse_response(
    buf: &[u8],
    request_method: Method,
    head_bytes_max: usize,
    headers_count_max: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut head = ResponseHead::default();
    let complete = parse_response_into(
        buf,
        request_method,
        head_bytes_max,
        headers_count_max,
        &mut head,
    )?;
    Ok(complete.then_some(head))
}

pub fn parse_response_into(
    buf: &[u8],
    request_method: Method,
    head_bytes_max: usize,
    headers_count_max: usize,
    head: &mut ResponseHead,
) -> Result<bool, HeadError> {
    let window = &buf[..buf.len().min(head_bytes_max)];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_COUNT_CAP];
    let slots = &mut slots[..headers_count_max.min(HEADERS_COUNT_CAP)];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, window, slots);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= head_bytes_max => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(e) => return Err(map_error(e, window, StartLine::Response)),
    };
    let status = resp.code.unwrap_or_default();
    // RFC 9110 §15 defines 100–599 only: anything else is not relayed as if it meant something.
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code outside 100-599"));
    }
    let minor_version = resp.version.unwrap_or(1);
    let facts = HeaderFacts::scan(resp.headers)?;

    let bodiless = request_method == Method::Head || status < 200 || status == 204 || status == 304;
    let mut trusted = true;
    head.length_overridden = false;
    head.transfer_coded = false;
    head.body = if bodiless {
        ResponseBody::None
    } else if facts.te_present {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a final coding other than
        // chunked means the body runs to EOF. An HTTP/1.0 sender using it is suspect, so we decode
        // but never reuse the connection.
        head.length_overridden = facts.content_length.is_some();
        trusted = !head.length_overridden && minor_version == 1;
        if facts.chunked_final {
            head.transfer_coded = facts.other_codings;
            ResponseBody::Chunked
        } else {
            ResponseBody::UntilClose
        }
    } else {
        match facts.content_length {
            Some(length) => ResponseBody::Length(length.map_err(HeadError::BadFraming)?),
            None => ResponseBody::UntilClose,
        }
    };
    head.status = status;
    head.minor_version = minor_version;
    head.reason = range_of(buf, resp.reason.unwrap_or_default().as_bytes());
    head.head_len = head_len;
    head.keep_alive = facts.persistent(minor_version)
        && trusted
        && status != 101
        && head.body != ResponseBody::UntilClose;
    fill_ranges(&mut head.headers, buf, resp.headers);
    Ok(true)
}

#[derive(Clone, Copy)]
enum StartLine {
    Request,
    Response,
}

fn map_error(e: httparse::Error, window: &[u8], start_line: StartLine) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version if names_other_version(window, start_line) => {
            HeadError::UnsupportedVersion
        }
        httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name or line folding"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid request line"),
    }
}

/// Whether httparse's version error is about a syntactically fine `HTTP/<digit>…` we just don't
/// speak (→ 505, e.g. `PRI * HTTP/2.0`) rather than garbage (→ 400).
fn names_other_version(window: &[u8], start_line: StartLine) -> bool {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let rest = &window[start..];
    let line = &rest[..memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len())];
    let version = match start_line {
        StartLine::Request => line.rsplit(|&b| b == b' ').next(),
        StartLine::Response => line.split(|&b| b == b' ').next(),
    };
    matches!(version, Some([b'H', b'T', b'T', b'P', b'/', major, ..]) if major.is_ascii_digit())
}

fn fill_ranges(out: &mut Vec<HeaderRange>, buf: &[u8], headers: &[httparse::Header<'_>]) {
    out.clear();
    out.extend(headers.iter().map(|h| HeaderRange {
        name: range_of(buf, h.name.as_bytes()),
        value: range_of(buf, h.value),
    }));
}

/// Position of `part` inside `buf`. httparse hands back subslices of the input, so this is pointer
/// arithmetic; anything else (httparse's static `""` for a missing reason) maps to an empty range.
fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if start <= buf.len() && part.len() <= buf.len() - start {
        start..start + part.len()
    } else {
        0..0
    }
}

/// Bounds-checked so a caller handing in the wrong buffer gets garbage, not a panic.
fn slice<'b>(buf: &'b [u8], range: &Range<usize>) -> &'b [u8] {
    buf.get(range.clone()).unwrap_or_default()
}

fn find_header<'b>(headers: &[HeaderRange], buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| slice(buf, &h.name).eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| slice(buf, &h.value))
}

#[cfg(test)]
mod tests;
