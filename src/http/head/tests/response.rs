//! Response-side framing and persistence; helpers come from the parent test module.

use super::*;

#[test]
fn keep_alive_rules() {
    let cases = [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "Connection: close\r\n", false),
        ("HTTP/1.1", "Connection: close, foo\r\n", false),
        ("HTTP/1.1", "Connection: foo,  CLOSE \r\n", false),
        (
            "HTTP/1.1",
            "Connection: foo\r\nConnection: close\r\n",
            false,
        ),
        ("HTTP/1.1", "Connection: closed\r\n", true),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ("HTTP/1.0", "Connection: Keep-Alive, X-Foo\r\n", true),
        ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
        ("HTTP/1.0", "Keep-Alive: timeout=5\r\n", false),
    ];
    for (version, headers, keep_alive) in cases {
        let buf = format!("GET / {version}\r\n{headers}\r\n");
        assert_eq!(req_ok(buf.as_bytes()).keep_alive, keep_alive, "{buf:?}");
        let buf = format!("{version} 200 OK\r\ncontent-length: 0\r\n{headers}\r\n");
        assert_eq!(
            resp_ok(buf.as_bytes(), Method::Get).keep_alive,
            keep_alive,
            "{buf:?}"
        );
    }
}

#[test]
fn bodiless_responses_ignore_framing_headers() {
    for status in [100, 101, 103, 204, 304] {
        let head = resp_body(
            &format!("HTTP/1.1 {status} X"),
            "Content-Length: 10\r\n",
            Method::Get,
        );
        assert_eq!(head.map(|h| h.body), Ok(ResponseBody::None), "{status}");
    }
    let head = resp_body("HTTP/1.1 200 OK", "Content-Length: 10\r\n", Method::Head).expect("valid");
    assert_eq!(head.body, ResponseBody::None);
    assert!(head.keep_alive);
    let head = resp_body(
        "HTTP/1.1 200 OK",
        "Transfer-Encoding: chunked\r\n",
        Method::Head,
    )
    .expect("valid");
    assert_eq!(head.body, ResponseBody::None);
    let head = resp_body(
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket\r\n",
        Method::Get,
    );
    assert!(
        !head.expect("valid").keep_alive,
        "the connection now speaks another protocol"
    );
}

#[test]
fn response_framing() {
    let framing = |headers: &str| {
        let head = resp_body("HTTP/1.1 200 OK", headers, Method::Post).expect("valid");
        (head.body, head.keep_alive)
    };
    assert_eq!(framing(""), (ResponseBody::UntilClose, false));
    assert_eq!(
        framing("Content-Length: 282\r\n"),
        (ResponseBody::Length(282), true)
    );
    assert_eq!(
        framing("Transfer-Encoding: chunked\r\n"),
        (ResponseBody::Chunked, true)
    );
    assert_eq!(
        framing("Transfer-Encoding: chunked, gzip\r\n"),
        (ResponseBody::UntilClose, false)
    );
    assert_eq!(
        framing("Transfer-Encoding: gzip\r\n"),
        (ResponseBody::UntilClose, false)
    );

    let head = resp_body(
        "HTTP/1.1 200 OK",
        "Transfer-Encoding: chunked\r\n",
        Method::Post,
    );
    assert!(!head.expect("valid").transfer_coded);
    // The chunk framing is removed, the gzip coding is not: the payload passes through still
    // compressed.
    let head = resp_body(
        "HTTP/1.1 200 OK",
        "Transfer-Encoding: gzip, chunked\r\n",
        Method::Post,
    );
    let head = head.expect("valid");
    assert_eq!(
        (head.body, head.keep_alive, head.transfer_coded),
        (ResponseBody::Chunked, true, true)
    );

    let headers = "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n";
    let head = resp_body("HTTP/1.1 200 OK", headers, Method::Post).expect("valid");
    assert_eq!(
        (head.body, head.keep_alive, head.length_overridden),
        (ResponseBody::Chunked, false, true)
    );

    // RFC 9112 §6.1: chunked from an HTTP/1.0 peer is decoded, but the connection is not trusted
    // afterwards.
    let headers = "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n";
    let head = resp_body("HTTP/1.0 200 OK", headers, Method::Get).expect("valid");
    assert_eq!((head.body, head.keep_alive), (ResponseBody::Chunked, false));

    let err = resp_body("HTTP/1.1 200 OK", "Content-Length: -1\r\n", Method::Get);
    assert_eq!(
        err,
        Err(HeadError::BadFraming(
            "content-length is not a decimal number"
        ))
    );
    let headers = "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n";
    let err = resp_body("HTTP/1.1 200 OK", headers, Method::Get);
    assert_eq!(
        err,
        Err(HeadError::BadFraming("chunked applied more than once"))
    );
}

#[test]
fn response_status_line_details() {
    let buf = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
    let head = resp_ok(buf, Method::Get);
    assert_eq!(
        (head.status, head.minor_version, head.head_len),
        (404, 1, buf.len())
    );
    assert_eq!(head.reason(buf), b"Not Found");
    assert_eq!(head.header(buf, "Content-Length"), Some(&b"0"[..]));

    let buf = b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(resp_ok(buf, Method::Get).reason(buf), b"");
    let result = parse_response(
        b"HTTP/1.1 099 Odd\r\n\r\n",
        Method::Get,
        HEAD_MAX,
        COUNT_MAX,
    );
    assert_eq!(
        result,
        Err(HeadError::Malformed("status code outside 100-599"))
    );
}

#[test]
fn response_obs_fold_is_malformed() {
    let folded = b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n";
    let result = parse_response(folded, Method::Get, HEAD_MAX, COUNT_MAX);
    assert!(matches!(result, Err(HeadError::Malformed(_))));
}

#[test]
fn status_codes_outside_100_to_599_are_malformed() {
    for line in [
        "HTTP/1.1 099 Low",
        "HTTP/1.1 600 High",
        "HTTP/1.1 999 Weird",
    ] {
        let got = resp_body(line, "content-length: 0\r\n", Method::Post);
        assert!(
            matches!(got, Err(HeadError::Malformed(_))),
            "{line}: {got:?}"
        );
    }
    for line in ["HTTP/1.1 100 Continue", "HTTP/1.1 599 Edge"] {
        assert!(
            resp_body(line, "content-length: 0\r\n", Method::Post).is_ok(),
            "{line}"
        );
    }
}
