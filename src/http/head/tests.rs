use super::*;

const HEAD_MAX: usize = 64 * 1024;
const COUNT_MAX: usize = 64;

fn req(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    parse_request(buf, HEAD_MAX, COUNT_MAX)
}

fn req_ok(buf: &[u8]) -> RequestHead {
    match req(buf) {
        Ok(Some(head)) => head,
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn resp_ok(buf: &[u8], method: Method) -> ResponseHead {
    match parse_response(buf, method, HEAD_MAX, COUNT_MAX) {
        Ok(Some(head)) => head,
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn req_body(headers: &str) -> Result<RequestBody, HeadError> {
    let buf = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
    req(buf.as_bytes()).map(|head| head.expect("complete").body)
}

fn resp_body(status_line: &str, headers: &str, method: Method) -> Result<ResponseHead, HeadError> {
    let buf = format!("{status_line}\r\n{headers}\r\n");
    parse_response(buf.as_bytes(), method, HEAD_MAX, COUNT_MAX).map(|head| head.expect("complete"))
}

mod response;

#[test]
fn parses_a_simple_request_into_ranges() {
    let buf = b"GET /v1/models?x=1 HTTP/1.1\r\nHost: api\r\nX-Empty:\r\nAccept:  */*  \r\n\r\n";
    let head = req_ok(buf);
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.method_bytes(buf), b"GET");
    assert_eq!(head.path(buf), b"/v1/models?x=1");
    assert_eq!(head.minor_version, 1);
    assert_eq!(head.head_len, buf.len());
    assert_eq!(head.body, RequestBody::None);
    assert!(head.keep_alive && !head.expect_continue);
    assert_eq!(head.headers.len(), 3);
    assert_eq!(head.header(buf, "host"), Some(&b"api"[..]));
    assert_eq!(head.header(buf, "x-empty"), Some(&b""[..]));
    assert_eq!(head.header(buf, "ACCEPT"), Some(&b"*/*"[..]));
    assert_eq!(head.header(buf, "missing"), None);
}

#[test]
fn methods_are_case_sensitive_tokens() {
    let cases: [(&[u8], Method); 9] = [
        (b"GET", Method::Get),
        (b"HEAD", Method::Head),
        (b"POST", Method::Post),
        (b"PUT", Method::Put),
        (b"DELETE", Method::Delete),
        (b"OPTIONS", Method::Options),
        (b"PATCH", Method::Patch),
        (b"get", Method::Other),
        (b"TRACE", Method::Other),
    ];
    for (token, method) in cases {
        let buf = [token, b" / HTTP/1.1\r\n\r\n"].concat();
        let head = req_ok(&buf);
        assert_eq!(head.method, method);
        assert_eq!(head.method_bytes(&buf), token);
    }
}

#[test]
fn leading_empty_lines_are_skipped() {
    let buf = b"\r\n\r\nPUT /a HTTP/1.1\r\n\r\n";
    let head = req_ok(buf);
    assert_eq!(head.method_bytes(buf), b"PUT");
    assert_eq!(head.path(buf), b"/a");
    assert_eq!(head.head_len, buf.len());
}

#[test]
fn header_lookup_is_first_match_and_never_panics_on_a_foreign_buffer() {
    let buf = b"GET / HTTP/1.1\r\nX-A: one\r\nx-a: two\r\n\r\n";
    let head = req_ok(buf);
    assert_eq!(head.header(buf, "X-a"), Some(&b"one"[..]));
    assert_eq!(head.header(b"short", "x-a"), None);
    assert_eq!(head.path(b""), b"");
}

#[test]
fn pipelined_requests_parse_one_after_another() {
    let first = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    let second = b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
    let buf = [&first[..], b"hello", second, b"GET /c"].concat();

    let head = req_ok(&buf);
    assert_eq!(
        (head.head_len, head.body),
        (first.len(), RequestBody::Length(5))
    );
    let rest = &buf[head.head_len + 5..];
    let head = req_ok(rest);
    assert_eq!(head.path(rest), b"/b");
    assert!(!head.keep_alive);
    assert_eq!(req(&rest[head.head_len..]), Ok(None));
}

#[test]
fn expect_continue_only_for_http_1_1() {
    let head = req_ok(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    assert!(head.expect_continue);
    let head = req_ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(!head.expect_continue);
    let head = req_ok(b"POST / HTTP/1.1\r\nExpect: something-else\r\n\r\n");
    assert!(!head.expect_continue);
}

#[test]
fn origin_is_found_in_the_framing_pass() {
    let buf = b"POST / HTTP/1.1\r\nHost: x\r\nORIGIN:  https://app.example \r\n\r\n";
    assert_eq!(req_ok(buf).origin(buf), Some(&b"https://app.example"[..]));
    let buf = b"POST / HTTP/1.1\r\nHost: x\r\norigins: x\r\n\r\n";
    assert_eq!(req_ok(buf).origin(buf), None);
    // Two answers to one question: present, but matching nothing.
    let buf = b"POST / HTTP/1.1\r\nOrigin: https://a.example\r\nOrigin: https://b.example\r\n\r\n";
    assert_eq!(req_ok(buf).origin(buf), Some(&b""[..]));
}

#[test]
fn content_type_json_check_ignores_parameters() {
    let buf = b"POST / HTTP/1.1\r\nContent-Type: Application/JSON ; charset=utf-8\r\n\r\n";
    assert!(req_ok(buf).content_type_is_json(buf));
    let buf = b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n";
    assert!(!req_ok(buf).content_type_is_json(buf));
    let buf = b"POST / HTTP/1.1\r\n\r\n";
    assert!(!req_ok(buf).content_type_is_json(buf));
}

#[test]
fn request_content_length_framing() {
    // Value syntax is covered in `fields`; here: it reaches the head, also across repeated lines.
    assert_eq!(
        req_body("Content-Length:    5   \r\n"),
        Ok(RequestBody::Length(5))
    );
    assert_eq!(
        req_body("Content-Length: 0\r\n"),
        Ok(RequestBody::Length(0))
    );
    assert_eq!(
        req_body("Content-Length: 5\r\ncontent-length: 5\r\n"),
        Ok(RequestBody::Length(5))
    );
    let conflict = Err(HeadError::BadFraming("conflicting content-length values"));
    assert_eq!(
        req_body("Content-Length: 5\r\nContent-Length: 6\r\n"),
        conflict
    );
    let not_number = Err(HeadError::BadFraming(
        "content-length is not a decimal number",
    ));
    assert_eq!(req_body("Content-Length: +5\r\n"), not_number);
    // The first bad value wins even if a later line looks fine.
    assert_eq!(
        req_body("Content-Length: x\r\nContent-Length: 5\r\n"),
        not_number
    );
}

#[test]
fn request_transfer_encoding_must_be_exactly_chunked() {
    assert_eq!(
        req_body("Transfer-Encoding: chunked\r\n"),
        Ok(RequestBody::Chunked)
    );
    assert_eq!(
        req_body("Transfer-Encoding: Chunked \r\n"),
        Ok(RequestBody::Chunked)
    );
    assert_eq!(
        req_body("Transfer-Encoding: ,chunked,\r\n"),
        Ok(RequestBody::Chunked)
    );
    let not_chunked = Err(HeadError::BadFraming(
        "request transfer-encoding that does not end with chunked",
    ));
    // We could forward gzip bytes, but we could not read the JSON inside them.
    assert_eq!(
        req_body("Transfer-Encoding: gzip, chunked\r\n"),
        Err(HeadError::UnsupportedCoding)
    );
    assert_eq!(
        req_body("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        Err(HeadError::UnsupportedCoding)
    );
    assert_eq!(
        req_body("Transfer-Encoding: chunked, gzip\r\n"),
        not_chunked
    );
    assert_eq!(req_body("Transfer-Encoding: identity\r\n"), not_chunked);
    assert_eq!(req_body("Transfer-Encoding:\r\n"), not_chunked);
    assert_eq!(
        req_body("Transfer-Encoding: chunked, chunked\r\n"),
        Err(HeadError::BadFraming("chunked applied more than once"))
    );
    assert_eq!(
        req_body("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        Err(HeadError::BadFraming(
            "both content-length and transfer-encoding"
        ))
    );
    assert_eq!(
        req(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Err(HeadError::BadFraming(
            "transfer-encoding in an HTTP/1.0 request"
        ))
    );
}

#[test]
fn malformed_heads() {
    let cases: [&[u8]; 8] = [
        b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\n A: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nA\x01: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nA : 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / FOO/1.1\r\n\r\n",
    ];
    for buf in cases {
        assert!(
            matches!(req(buf), Err(HeadError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn other_http_versions_are_unsupported_not_malformed() {
    let cases: [&[u8]; 5] = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"PRI * HTTP/2",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / HTTP/0.9\r\n\r\n",
    ];
    for buf in cases {
        assert_eq!(
            req(buf),
            Err(HeadError::UnsupportedVersion),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
    let result = parse_response(b"HTTP/2 200 OK\r\n\r\n", Method::Get, HEAD_MAX, COUNT_MAX);
    assert_eq!(result, Err(HeadError::UnsupportedVersion));
    let result = parse_response(b"HTTX/1.1 200 OK\r\n\r\n", Method::Get, HEAD_MAX, COUNT_MAX);
    assert_eq!(result, Err(HeadError::Malformed("invalid HTTP version")));
}

#[test]
fn head_split_at_every_byte_parses_identically() {
    let head =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, X-Trace\r\n\
        Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let buf = [&head[..], b"{}GET / HTTP/1.1\r\n\r\n"].concat();
    let full = req_ok(&buf);
    assert_eq!(full.head_len, head.len());
    for end in 0..head.len() {
        assert_eq!(req(&buf[..end]), Ok(None), "prefix of {end} bytes");
    }
    for end in head.len()..=buf.len() {
        assert_eq!(req_ok(&buf[..end]), full, "prefix of {end} bytes");
    }

    let resp =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let full = resp_ok(resp, Method::Post);
    for end in 0..full.head_len {
        assert_eq!(
            parse_response(&resp[..end], Method::Post, HEAD_MAX, COUNT_MAX),
            Ok(None),
            "{end}"
        );
    }
    for end in full.head_len..=resp.len() {
        assert_eq!(resp_ok(&resp[..end], Method::Post), full, "{end}");
    }
}

#[test]
fn head_size_limit() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let n = head.len();
    assert!(parse_request(head, n, COUNT_MAX).is_ok_and(|h| h.is_some()));
    assert_eq!(
        parse_request(head, n - 1, COUNT_MAX),
        Err(HeadError::TooLarge)
    );
    // Pipelined bytes past the limit do not count against the head.
    let pipelined = [&head[..], &[b'x'; 100]].concat();
    assert!(parse_request(&pipelined, n, COUNT_MAX).is_ok_and(|h| h.is_some()));
    // No terminator ever arrives: incomplete below the limit, TooLarge from the limit on.
    let endless = [&b"GET / HTTP/1.1\r\nX-Long: "[..], &[b'a'; 200]].concat();
    assert_eq!(
        parse_request(&endless, endless.len() + 1, COUNT_MAX),
        Ok(None)
    );
    assert_eq!(
        parse_request(&endless[..100], 100, COUNT_MAX),
        Err(HeadError::TooLarge)
    );
    assert_eq!(
        parse_request(&endless, 100, COUNT_MAX),
        Err(HeadError::TooLarge)
    );
    assert_eq!(parse_request(b"", 0, COUNT_MAX), Err(HeadError::TooLarge));
    let resp = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 200]].concat();
    assert_eq!(
        parse_response(&resp, Method::Get, 64, COUNT_MAX),
        Err(HeadError::TooLarge)
    );
}

#[test]
fn header_count_limit_is_clamped_to_the_cap() {
    let with_headers = |n: usize| {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            buf.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        buf
    };
    assert!(parse_request(&with_headers(2), HEAD_MAX, 2).is_ok_and(|h| h.is_some()));
    assert_eq!(
        parse_request(&with_headers(3), HEAD_MAX, 2),
        Err(HeadError::TooManyHeaders)
    );
    assert_eq!(
        parse_request(&with_headers(1), HEAD_MAX, 0),
        Err(HeadError::TooManyHeaders)
    );
    let head = parse_request(&with_headers(HEADERS_COUNT_CAP), HEAD_MAX, 10_000);
    assert_eq!(
        head.map(|h| h.map(|h| h.headers.len())),
        Ok(Some(HEADERS_COUNT_CAP))
    );
    let too_many = with_headers(HEADERS_COUNT_CAP + 1);
    assert_eq!(
        parse_request(&too_many, HEAD_MAX, 10_000),
        Err(HeadError::TooManyHeaders)
    );
    let resp = [&b"HTTP/1.1 200 OK\r\n"[..], &with_headers(3)[16..]].concat();
    assert_eq!(
        parse_response(&resp, Method::Get, HEAD_MAX, 2),
        Err(HeadError::TooManyHeaders)
    );
}

#[test]
fn parse_into_reuses_the_header_vec() {
    let mut head = RequestHead::default();
    let first = b"GET /a HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        parse_request_into(first, HEAD_MAX, COUNT_MAX, &mut head),
        Ok(true)
    );
    let capacity = head.headers.capacity();
    let second = b"GET /b HTTP/1.0\r\nA: 1\r\n\r\n";
    assert_eq!(
        parse_request_into(second, HEAD_MAX, COUNT_MAX, &mut head),
        Ok(true)
    );
    assert_eq!((head.headers.len(), head.headers.capacity()), (1, capacity));
    assert_eq!(head, req_ok(second));
    assert_eq!(
        parse_request_into(b"GET /c HTTP/1.1\r\n", HEAD_MAX, COUNT_MAX, &mut head),
        Ok(false)
    );

    let mut resp = ResponseHead::default();
    let buf = b"HTTP/1.1 204 No Content\r\n\r\n";
    assert_eq!(
        parse_response_into(buf, Method::Get, HEAD_MAX, COUNT_MAX, &mut resp),
        Ok(true)
    );
    assert_eq!(resp, resp_ok(buf, Method::Get));
}

#[test]
fn bare_lf_line_endings_in_heads_are_accepted() {
    // httparse accepts them and we rebuild heads before forwarding, so no framing ambiguity reaches
    // upstream.
    let buf = b"GET / HTTP/1.1\nHost: x\n\n";
    assert_eq!(req_ok(buf).head_len, buf.len());
}
