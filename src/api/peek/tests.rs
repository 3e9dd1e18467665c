//! Table tests, range/rewrite tests, and a differential test against serde_json.
//!
//! Intentional differences from `serde_json::from_slice::<Value>` (handled in `check`):
//! - `Duplicate` / `WrongType` are refusals of *valid* JSON, so they count as "parses".
//! - Numbers whose value overflows f64 (`1e999`) are valid JSON here; serde_json says out of range.
//! - Nesting: `peek(_, 128)` allows 128 levels, serde_json 127 (the generator stays far below).

use super::*;
use serde_json::Value;

const DEPTH: usize = 128;

/// `write!` for a `Vec<u8>` without `io::Write`'s `Result`.
macro_rules! put {
    ($o:expr, $($t:tt)*) => { $o.extend_from_slice(format!($($t)*).as_bytes()) };
}

fn kind(e: &PeekError) -> &'static str {
    match e {
        PeekError::Empty => "Empty",
        PeekError::Syntax { .. } => "Syntax",
        PeekError::NotObject => "NotObject",
        PeekError::TooDeep { .. } => "TooDeep",
        PeekError::InvalidUtf8 { .. } => "InvalidUtf8",
        PeekError::WrongType { .. } => "WrongType",
        PeekError::Duplicate { .. } => "Duplicate",
        PeekError::TrailingData { .. } => "TrailingData",
    }
}

fn nested(open: &str, close: &str, n: usize) -> Vec<u8> {
    let mut v = b"{\"a\":".to_vec();
    v.extend(open.repeat(n).bytes());
    v.extend(close.repeat(n).bytes());
    v.push(b'}');
    v
}

#[test]
fn valid_bodies() {
    let chat = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are \"helpful\".\n"},
        {"role":"user","content":[{"type":"text","text":"hi \u00e9 \ud83d\ude00 \/ \b\f\r\t"}],"model":"nested"}],
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"model":{"type":"string"}}}}}],
        "temperature":0.7,"stream":true,"stream_options":{"include_usage":true},"backend":"openai-eu"}"#;
    let p = peek(chat, DEPTH).unwrap();
    assert_eq!(p.model.as_ref().unwrap().value, "gpt-4o");
    assert_eq!(p.backend.as_ref().unwrap().value, "openai-eu");
    assert!(p.stream && p.stream_options_include_usage);

    let embed: Vec<u8> = format!(
        r#"{{"model":"text-embedding-3-small","input":[{}],"encoding_format":"float"}}"#,
        (0..50)
            .map(|i| format!("\"item {i}\""))
            .collect::<Vec<_>>()
            .join(",")
    )
    .into_bytes();
    let table: &[&[u8]] = &[
        b"{}",
        b" \t\r\n{ \n } \n",
        &embed,
        "{\"model\":\"模型-日本語\",\"input\":\"😀 é\"}".as_bytes(),
        br#"{"n":[0,-0,1,-1,10,1234567890,0.5,-0.5,1.25e3,1E3,1e+3,1e-3,-2.5E-10,0e0,123456789012345678901234567890]}"#,
        br#"{"l":[true,false,null],"o":{},"a":[],"s":"","k\u0000":"\u0000","\"":"\\"}"#,
        br#"{"stream":null,"stream_options":null}"#,
        br#"{"stream":false,"stream_options":{"include_usage":false,"x":[{"include_usage":true}]}}"#,
        b"{\"a\":\"\x7f\"}",
        &nested("[", "]", 120),
    ];
    for body in table {
        assert!(
            peek(body, DEPTH).is_ok(),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(serde_json::from_slice::<Value>(body).is_ok());
    }
    let p = peek(
        br#"{"stream":false,"stream_options":{"x":{"include_usage":true}}}"#,
        DEPTH,
    )
    .unwrap();
    assert!(
        !p.stream && !p.stream_options_include_usage,
        "nested include_usage is not ours"
    );
}

#[test]
fn invalid_bodies() {
    let deep_obj = {
        let mut v = Vec::new();
        for _ in 0..2000 {
            v.extend_from_slice(b"{\"a\":");
        }
        v
    };
    let table: &[(&[u8], &str)] = &[
        (b"", "Empty"),
        (b" \n\t ", "Empty"),
        (br#"{"a":1,}"#, "Syntax"),
        (br#"{"a":[1,]}"#, "Syntax"),
        (br#"{'a':1}"#, "Syntax"),
        (br#"{"a":NaN}"#, "Syntax"),
        (br#"{"a":Infinity}"#, "Syntax"),
        (br#"{"a":01}"#, "Syntax"),
        (br#"{"a":-01}"#, "Syntax"),
        (br#"{"a":1.}"#, "Syntax"),
        (br#"{"a":.5}"#, "Syntax"),
        (br#"{"a":-}"#, "Syntax"),
        (br#"{"a":1e}"#, "Syntax"),
        (br#"{"a":1e+}"#, "Syntax"),
        (br#"{"a":+1}"#, "Syntax"),
        (br#"{"a":0x10}"#, "Syntax"),
        (br#"{"a":tru}"#, "Syntax"),
        (br#"{"a":True}"#, "Syntax"),
        (br#"{"a":nul"#, "Syntax"),
        (br#"{"a":"\ud800"}"#, "Syntax"),
        (br#"{"a":"\udc00"}"#, "Syntax"),
        (br#"{"a":"\ud800\u0041"}"#, "Syntax"),
        (br#"{"a":"\ud800\n"}"#, "Syntax"),
        (br#"{"a":"\x"}"#, "Syntax"),
        (br#"{"a":"\u12G4"}"#, "Syntax"),
        (br#"{"a":"\u12"}"#, "Syntax"),
        (b"{\"a\":\"x\x01\"}", "Syntax"),
        (b"{\"a\":\"x\ny\"}", "Syntax"),
        (b"{\"a\":\"x\x1f\"}", "Syntax"),
        (br#"{"a":"abc"#, "Syntax"),
        (br#"{"a":"abc\"#, "Syntax"),
        (br#"{"a" 1}"#, "Syntax"),
        (br#"{"a":1 "b":2}"#, "Syntax"),
        (br#"{"a":[1,2}"#, "Syntax"),
        (br#"{"a":1]"#, "Syntax"),
        (br#"{a:1}"#, "Syntax"),
        (br#"{"a":1"#, "Syntax"),
        (b"{", "Syntax"),
        (b"{\x0c}", "Syntax"),
        ("{é:1}".as_bytes(), "Syntax"),
        (b"\xef\xbb\xbf{}", "Syntax"),
        (br#"{"model":1,"#, "Syntax"), // malformed wins over wrong type
        (br#"{"model":"a","model":"b""#, "Syntax"),
        (b"{} {}", "TrailingData"),
        (b"{}x", "TrailingData"),
        (b"{}\x00", "TrailingData"),
        ("{}\u{a0}".as_bytes(), "TrailingData"),
        (b"{\"a\":\"\xff\"}", "InvalidUtf8"),
        (b"{\"a\":\"\xc0\xaf\"}", "InvalidUtf8"),
        (b"{\"a\":\"\xed\xa0\x80\"}", "InvalidUtf8"),
        (b"{\"a\":\"\xc3\"}", "InvalidUtf8"),
        (b"{\"\xe6\x97\":1}", "InvalidUtf8"),
        (&deep_obj, "TooDeep"),
        (&nested("[", "]", 2000), "TooDeep"),
        (b"[1,2]", "NotObject"),
        (b"\"x\"", "NotObject"),
        (b"1", "NotObject"),
        (b"null", "NotObject"),
        (b"[{\"model\":\"x\"}]", "NotObject"),
        (br#"{"model":1}"#, "WrongType"),
        (br#"{"model":null}"#, "WrongType"),
        (br#"{"model":["a"]}"#, "WrongType"),
        (br#"{"backend":null}"#, "WrongType"),
        (br#"{"stream":"yes"}"#, "WrongType"),
        (br#"{"stream":1}"#, "WrongType"),
        (br#"{"model":"a","model":"b"}"#, "Duplicate"),
        (br#"{"model":"a","mod\u0065l":"b"}"#, "Duplicate"),
        (br#"{"stream":true,"stream":false}"#, "Duplicate"),
        (br#"{"backend":"a","\u0062ackend":"a"}"#, "Duplicate"),
        (br#"{"stream_options":{},"stream_options":{}}"#, "Duplicate"),
        (
            br#"{"stream_options":{"include_usage":false,"include_usage":true}}"#,
            "Duplicate",
        ),
    ];
    for (body, want) in table {
        let got = peek(body, DEPTH);
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]);
        assert_eq!(
            got.as_ref().err().map(kind),
            Some(*want),
            "{shown}: {got:?}"
        );
        if *want != "WrongType" && *want != "Duplicate" && *want != "NotObject" {
            assert!(
                serde_json::from_slice::<Value>(body).is_err(),
                "serde accepts {shown}"
            );
        }
    }
}

#[test]
fn error_offsets_and_messages() {
    let e = peek(br#"{"model" "x"}"#, DEPTH).unwrap_err();
    assert_eq!(
        e,
        PeekError::Syntax {
            offset: 9,
            what: "expected ':'"
        }
    );
    assert_eq!(
        e.to_string(),
        "request body is not valid JSON (at byte 9: expected ':')"
    );
    assert_eq!(
        peek(b"{\"a\":", DEPTH).unwrap_err().to_string(),
        "request body is not valid JSON (at byte 5: unexpected end of input)"
    );
    assert_eq!(
        peek(b"{\"a\":\"\xff\"}", DEPTH),
        Err(PeekError::InvalidUtf8 { offset: 6 })
    );
    assert_eq!(
        peek(b"{} x", DEPTH),
        Err(PeekError::TrailingData { offset: 3 })
    );
    assert_eq!(
        peek(br#"{"model":2}"#, DEPTH).unwrap_err().to_string(),
        "`model` must be a string"
    );
    assert_eq!(
        peek(br#"{"stream":2}"#, DEPTH).unwrap_err().to_string(),
        "`stream` must be a boolean"
    );
    assert_eq!(
        peek(br#"{"model":"a","model":"a"}"#, DEPTH)
            .unwrap_err()
            .to_string(),
        "`model` appears more than once"
    );
    assert_eq!(
        PeekError::TooDeep { depth_max: 128 }.to_string(),
        "request body nests deeper than 128 levels"
    );
    assert_eq!(
        PeekError::NotObject.to_string(),
        "request body must be a JSON object"
    );
    assert_eq!(PeekError::Empty.to_string(), "request body is empty");
}

#[test]
fn depth_limit_is_exact_and_iterative() {
    assert!(peek(b"{\"a\":{\"b\":[]}}", 3).is_ok());
    assert_eq!(
        peek(b"{\"a\":{\"b\":[[]]}}", 3),
        Err(PeekError::TooDeep { depth_max: 3 })
    );
    assert_eq!(peek(b"{}", 0), Err(PeekError::TooDeep { depth_max: 0 }));
    assert!(peek(&nested("[", "]", 127), DEPTH).is_ok());
    assert!(peek(&nested("[", "]", 128), DEPTH).is_err());
    // Far past the inline bit stack, with mixed containers: exercises the spill words and proves
    // there is no recursion.
    let n = 200_000;
    let deep = [
        &b"{\"a\":"[..],
        &b"[{\"k\":".repeat(n),
        b"0",
        &b"}]".repeat(n),
        b"}",
    ]
    .concat();
    assert_eq!(peek(&deep, usize::MAX), Ok(Peek::default()));
    assert_eq!(peek(&deep, n), Err(PeekError::TooDeep { depth_max: n }));
    let mut open_only = nested("[{\"k\":", "", n);
    open_only.truncate(open_only.len() - 1);
    assert!(matches!(
        peek(&open_only, usize::MAX),
        Err(PeekError::Syntax { .. })
    ));
    assert!(matches!(
        peek(&nested("[{\"k\":", "]}", n), usize::MAX),
        Err(PeekError::Syntax { .. })
    ));
}

#[test]
fn fields_are_decoded_with_exact_ranges() {
    let body = br#"{ "mod\u0065l" : "gpt\u002d4o \ud83d\ude00 \"q\"" , "backend":"b\\x" }"#;
    let p = peek(body, DEPTH).unwrap();
    let m = p.model.unwrap();
    assert_eq!(m.value, "gpt-4o 😀 \"q\"");
    assert_eq!(
        &body[m.value_range.clone()],
        br#""gpt\u002d4o \ud83d\ude00 \"q\"""#
    );
    assert_eq!(
        &body[m.member_range],
        br#""mod\u0065l" : "gpt\u002d4o \ud83d\ude00 \"q\"" , "#
    );
    let b = p.backend.unwrap();
    assert_eq!(b.value, "b\\x");
    assert_eq!(&body[b.member_range], br#" , "backend":"b\\x""#);
}

fn remove(body: &[u8], r: &Range<usize>) -> Vec<u8> {
    [&body[..r.start], &body[r.end..]].concat()
}

#[test]
fn member_removal_leaves_valid_json() {
    let cases: &[(&str, &str)] = &[
        (r#"{"backend":"x"}"#, "{}"),
        ("{ \n \"backend\" : \"x\" \n }", "{ \n  \n }"),
        (r#"{"backend":"x","a":1}"#, r#"{"a":1}"#),
        (
            "{\n  \"backend\": \"x\",\n  \"a\": 1\n}",
            "{\n  \"a\": 1\n}",
        ),
        (r#"{"a":1,"backend":"x","b":2}"#, r#"{"a":1,"b":2}"#),
        (
            "{\"a\":1 ,\n\t\"backend\":\"x\"\r\n,\n\"b\":2}",
            "{\"a\":1 ,\n\t\"b\":2}",
        ),
        (r#"{"a":1,"backend":"x"}"#, r#"{"a":1}"#),
        ("{\"a\":[1] ,\n \"backend\" :\"x\"\n}", "{\"a\":[1]\n}"),
        (r#"{"model":"m","backend":"x"}"#, r#"{"model":"m"}"#),
        (r#"{"backend":"x","model":"m"}"#, r#"{"model":"m"}"#),
    ];
    for (body, want) in cases {
        let p = peek(body.as_bytes(), DEPTH).unwrap();
        let got = remove(body.as_bytes(), &p.backend.unwrap().member_range);
        assert_eq!(String::from_utf8(got).unwrap(), *want, "{body}");
    }
}

#[test]
fn rewrite_splices_only_model_and_backend() {
    let cases: &[(&str, &str, bool, &str)] = &[
        (
            r#"{"model":"alias","backend":"b","x":[1, 2]}"#,
            "gpt-4o",
            true,
            r#"{"model":"gpt-4o","x":[1, 2]}"#,
        ),
        (
            r#"{"backend":"b" , "model" : "alias"}"#,
            "up",
            true,
            r#"{"model" : "up"}"#,
        ),
        (
            r#"{"model":"alias","backend":"b"}"#,
            "a\"b\\c\n\u{1}",
            true,
            r#"{"model":"a\"b\\c\n\u0001"}"#,
        ),
        (
            r#"{"model":"alias","backend":"b"}"#,
            "long-upstream-model",
            false,
            r#"{"model":"long-upstream-model","backend":"b"}"#,
        ),
        (
            r#"{"x":1,"backend":"b","model":"m"}"#,
            "m2",
            true,
            r#"{"x":1,"model":"m2"}"#,
        ),
        (
            r#"{"x":1,"model":"m","backend":"b"}"#,
            "m2",
            true,
            r#"{"x":1,"model":"m2"}"#,
        ),
        (r#"{"x":1,"backend":"b"}"#, "ignored", true, r#"{"x":1}"#),
        (r#"{"model":"m"}"#, "", true, r#"{"model":""}"#),
    ];
    for (body, model, drop, want) in cases {
        let p = peek(body.as_bytes(), DEPTH).unwrap();
        let mut out = b"prefix:".to_vec();
        rewrite(body.as_bytes(), &p, model, *drop, None, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("prefix:{want}"));
    }
}

#[test]
fn write_json_string_round_trips() {
    for s in [
        "",
        "plain",
        "q\"b\\s/",
        "\u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}",
        "模型 😀",
        "\u{2028}",
    ] {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        assert_eq!(out.len(), escaped_len(s));
        assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        assert_eq!(
            serde_json::to_vec(s).unwrap(),
            out,
            "same escaping as serde_json"
        );
    }
}

#[test]
fn rewrite_reserves_exactly_once() {
    let body = br#"{"backend":"b","model":"m","x":"\u0000"}"#;
    let p = peek(body, DEPTH).unwrap();
    for (model, drop) in [
        ("gpt-4o", true),
        ("\u{1}\"tiny", false),
        ("a-very-long-upstream-model-name", true),
    ] {
        let mut out = Vec::new();
        rewrite(body, &p, model, drop, None, &mut out);
        assert_eq!(
            out.capacity(),
            out.len(),
            "reserve must be exact so nothing grows later"
        );
    }
}

/// Every short byte sequence over the UTF-8 boundary values, at every 8-byte alignment: the fused
/// validator must agree with `std::str::from_utf8`.
#[test]
fn utf8_validation_matches_std() {
    const A: &[u8] = &[
        0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec,
        0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
    ];
    let mut n = 0usize;
    for len in 1..=4u32 {
        for mut code in 0..A.len().pow(len) {
            let mut seq = Vec::new();
            for _ in 0..len {
                seq.push(A[code % A.len()]);
                code /= A.len();
            }
            n += 1;
            let pad = "x".repeat(n % 9);
            let body = [format!("{{\"a\":\"{pad}").as_bytes(), &seq, b"x\"}"].concat();
            let want = std::str::from_utf8(&seq).is_ok();
            let got = peek(&body, DEPTH);
            assert_eq!(got.is_ok(), want, "{seq:x?}: {got:?}");
            if !want {
                assert!(
                    matches!(got, Err(PeekError::InvalidUtf8 { .. })),
                    "{seq:x?}"
                );
            }
        }
    }
}

/// A control character, quote, backslash or bad UTF-8 byte at every offset of a long string, on
/// both the SWAR and the memchr paths.
#[test]
fn long_strings_find_every_special_byte() {
    let plain = "p".repeat(700);
    for at in (0..700).step_by(7).chain(250..270) {
        for (bad, kind_want) in [
            ("\u{1}", "Syntax"),
            ("\u{1f}", "Syntax"),
            ("é", ""),
            ("\\n", ""),
            ("\\q", "Syntax"),
        ] {
            let body = format!("{{\"a\":\"{}{bad}{}\"}}", &plain[..at], &plain[at..]);
            let got = peek(body.as_bytes(), DEPTH);
            assert_eq!(
                got.as_ref().err().map(kind).unwrap_or(""),
                kind_want,
                "{bad:?} at {at}"
            );
            if let Err(PeekError::Syntax { offset, .. }) = got {
                assert_eq!(offset, 6 + at, "{bad:?} at {at}");
            }
        }
        let mut raw = format!("{{\"a\":\"{plain}\"}}").into_bytes();
        raw[6 + at] = 0xff;
        assert_eq!(
            peek(&raw, DEPTH),
            Err(PeekError::InvalidUtf8 { offset: 6 + at })
        );
        raw[6 + at] = b'"';
        assert!(matches!(peek(&raw, DEPTH), Err(PeekError::Syntax { .. })));
    }
    let unterminated = format!("{{\"a\":\"{plain}");
    assert_eq!(
        peek(unterminated.as_bytes(), DEPTH),
        Err(PeekError::Syntax {
            offset: 706,
            what: "unterminated string"
        })
    );
}

// ---- differential test -------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64: tiny, seeded, reproducible.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pct(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    fn pick<'a, T: ?Sized>(&mut self, xs: &[&'a T]) -> &'a T {
        xs[self.below(xs.len())]
    }
}

const STRINGS: &[&str] = &[
    "",
    "hello",
    "gpt-4o",
    "é",
    "日本語",
    "😀",
    r"\n",
    r"\u00e9",
    r"\ud83d\ude00",
    r#"\"q\""#,
    r"\t",
    r"\/",
    r"a\\b",
    r"\u0000",
    "model",
    "\u{7f}",
    " ",
    r"\b\f\r",
];
const KEYS: &[&str] = &[
    "model",
    "stream",
    "backend",
    "stream_options",
    "include_usage",
    "messages",
    "role",
    "content",
    r"mod\u0065l",
    r"\u0062ackend",
    r"stre\u0061m",
    "a",
    "",
    "é",
];

fn ws(r: &mut Rng, o: &mut Vec<u8>) {
    if r.pct(30) {
        o.extend_from_slice(r.pick(&[" ", "\n", "\t", "\r\n  ", "  "]).as_bytes());
    }
}

fn string(r: &mut Rng, o: &mut Vec<u8>) {
    o.push(b'"');
    // Now and then a long one, to cross the 8-byte SWAR steps and the 256-byte memchr runs.
    let pieces = if r.pct(5) {
        20 + r.below(200)
    } else {
        r.below(3)
    };
    if r.pct(3) {
        o.extend_from_slice(&b"abcdefghijklmnopqrstuvwxyz".repeat(r.below(30)));
    }
    for _ in 0..pieces {
        o.extend_from_slice(r.pick(STRINGS).as_bytes());
    }
    o.push(b'"');
}

fn number(r: &mut Rng, o: &mut Vec<u8>) {
    if r.pct(30) {
        o.push(b'-');
    }
    if r.pct(25) {
        o.push(b'0');
    } else {
        o.push(b'1' + r.below(9) as u8);
        (0..r.below(6)).for_each(|_| o.push(b'0' + r.below(10) as u8));
    }
    if r.pct(30) {
        o.push(b'.');
        (0..1 + r.below(4)).for_each(|_| o.push(b'0' + r.below(10) as u8));
    }
    if r.pct(20) {
        o.extend_from_slice(r.pick(&["e", "E", "e+", "e-", "E-"]).as_bytes());
        (0..1 + r.below(2)).for_each(|_| o.push(b'0' + r.below(10) as u8));
    }
}

/// A valid JSON value; bounded depth keeps the (test-only) recursion shallow.
fn value(r: &mut Rng, o: &mut Vec<u8>, depth: usize) {
    match if depth >= 4 {
        2 + r.below(3)
    } else {
        r.below(5)
    } {
        0 => {
            o.push(b'{');
            ws(r, o);
            for i in 0..r.below(4) {
                if i > 0 {
                    o.push(b',');
                    ws(r, o);
                }
                put!(o, "\"{}\"", r.pick(KEYS));
                ws(r, o);
                o.push(b':');
                ws(r, o);
                value(r, o, depth + 1);
                ws(r, o);
            }
            o.push(b'}');
        }
        1 => {
            o.push(b'[');
            for i in 0..r.below(4) {
                if i > 0 {
                    o.push(b',');
                }
                ws(r, o);
                value(r, o, depth + 1);
                ws(r, o);
            }
            o.push(b']');
        }
        2 => string(r, o),
        3 => number(r, o),
        _ => o.extend_from_slice(r.pick(&["true", "false", "null"]).as_bytes()),
    }
}

/// A top-level object whose routing members are mostly well-typed and unique, in random order.
fn request(r: &mut Rng) -> Vec<u8> {
    let mut members: Vec<Vec<u8>> = Vec::new();
    for key in [
        "model",
        "backend",
        "stream",
        "stream_options",
        "a",
        "messages",
    ] {
        for _ in 0..(r.pct(70) as usize + r.pct(3) as usize) {
            let mut m = Vec::new();
            let k = if r.pct(10) { KEYS[8 + r.below(3)] } else { key };
            put!(&mut m, "\"{k}\"");
            ws(r, &mut m);
            m.push(b':');
            ws(r, &mut m);
            match key {
                "model" | "backend" if r.pct(92) => string(r, &mut m),
                "stream" if r.pct(92) => {
                    m.extend_from_slice(r.pick(&["true", "false", "null"]).as_bytes())
                }
                "stream_options" if r.pct(80) => {
                    let iu = r.pick(&["true", "false", "null", "1"]);
                    put!(&mut m, "{{\"x\":[],\"include_usage\":{iu}}}");
                }
                _ => value(r, &mut m, 1),
            }
            members.push(m);
        }
    }
    for i in (1..members.len()).rev() {
        members.swap(i, r.below(i + 1));
    }
    let mut o = Vec::new();
    ws(r, &mut o);
    o.push(b'{');
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            ws(r, &mut o);
            o.push(b',');
        }
        ws(r, &mut o);
        o.extend_from_slice(m);
    }
    ws(r, &mut o);
    o.push(b'}');
    ws(r, &mut o);
    o
}

fn mutate(r: &mut Rng, body: &mut Vec<u8>) {
    const BYTES: &[u8] =
        b"{}[],:\"\\ -0123456789.eE+tfnrulax\t\n\x00\x1f\x7f\x80\xc3\xa9\xff\xed\xa0";
    for _ in 0..1 + r.below(3) {
        let at = r.below(body.len() + 1);
        match r.below(4) {
            0 if at < body.len() => body[at] ^= 1 << r.below(8),
            1 if at < body.len() => drop(body.remove(at)),
            2 if at < body.len() => body[at] = BYTES[r.below(BYTES.len())],
            _ => body.insert(at, BYTES[r.below(BYTES.len())]),
        }
    }
}

fn soup(r: &mut Rng) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        ":",
        ",",
        r#""model""#,
        r#""backend""#,
        r#""stream""#,
        r#""x""#,
        "true",
        "false",
        "null",
        "nul",
        "1",
        "-",
        "0.5",
        "1e",
        "01",
        "-0",
        r#""\u12""#,
        r#""\ud800""#,
        r#""\ud800\udc00""#,
        " ",
        "\n",
        r#""a\q""#,
        "'a'",
        "NaN",
        "\"unterminated",
        "\"é\"",
        "\"\x01\"",
    ];
    let mut o = b"{".to_vec();
    for _ in 0..r.below(16) {
        o.extend_from_slice(r.pick(TOKENS).as_bytes());
    }
    if r.pct(70) {
        o.push(b'}');
    }
    o
}

/// Compares `peek` with serde_json on one body and, when it passes, checks fields and rewrites.
fn check(body: &[u8], r: &mut Rng, stats: &mut [usize; 2]) {
    let ours = peek(body, DEPTH);
    let theirs = serde_json::from_slice::<Value>(body);
    let shown = String::from_utf8_lossy(body);
    let json_ok = match &ours {
        Ok(_) => true,
        Err(e) => matches!(kind(e), "WrongType" | "Duplicate" | "NotObject"),
    };
    if let Err(e) = &theirs {
        if json_ok && e.to_string().starts_with("number out of range") {
            return; // documented difference
        }
    }
    assert_eq!(
        json_ok,
        theirs.is_ok(),
        "ours {ours:?} theirs {theirs:?} on {shown}"
    );
    stats[usize::from(json_ok)] += 1;
    let object_top = body.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{');
    assert_eq!(
        ours == Err(PeekError::NotObject),
        json_ok && !object_top,
        "{shown}"
    );
    let (Ok(p), Ok(v)) = (ours, theirs) else {
        return;
    };

    let str_of = |k: &str| v.get(k).and_then(Value::as_str);
    assert_eq!(
        p.model.as_ref().map(|f| f.value.as_str()),
        str_of("model"),
        "{shown}"
    );
    assert_eq!(
        p.backend.as_ref().map(|f| f.value.as_str()),
        str_of("backend"),
        "{shown}"
    );
    assert_eq!(p.stream, v.get("stream") == Some(&Value::Bool(true)));
    assert_eq!(
        p.stream_options_include_usage,
        v.pointer("/stream_options/include_usage") == Some(&Value::Bool(true))
    );
    for (f, key) in [(&p.model, "model"), (&p.backend, "backend")] {
        let Some(f) = f else { continue };
        let lit: String = serde_json::from_slice(&body[f.value_range.clone()]).unwrap();
        assert_eq!(lit, f.value);
        let mut want = v.clone();
        want.as_object_mut().unwrap().remove(key);
        let cut = remove(body, &f.member_range);
        assert_eq!(
            serde_json::from_slice::<Value>(&cut).ok(),
            Some(want),
            "cut {key} from {shown}"
        );
    }

    let new_model = r.pick(&["gpt-4o", "a\"b\\c\n\u{1}", "模型", "", "x/y:z"]);
    let drop_backend = r.pct(70);
    let mut out = Vec::new();
    rewrite(body, &p, new_model, drop_backend, None, &mut out);
    let mut want = v.clone();
    let obj = want.as_object_mut().unwrap();
    if p.model.is_some() {
        obj.insert("model".into(), Value::String(new_model.into()));
    }
    if drop_backend {
        obj.remove("backend");
    }
    let got: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
    assert_eq!(got, want, "rewrite of {shown}");
}

#[test]
fn differential_against_serde_json() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut stats = [0usize; 2]; // [rejected, accepted]
    for _ in 0..30_000 {
        let body = request(&mut r);
        check(&body, &mut r, &mut stats);
        for _ in 0..4 {
            let mut m = body.clone();
            mutate(&mut r, &mut m);
            check(&m, &mut r, &mut stats);
        }
        let s = soup(&mut r);
        check(&s, &mut r, &mut stats);
    }
    // Both sides of the comparison must be well exercised for the test to mean anything.
    assert!(stats[0] > 50_000 && stats[1] > 30_000, "{stats:?}");
}

/// `stream_usage = "inject"`: every shape of `stream_options` ends with `include_usage: true`,
/// the client's other options and fields intact, and valid JSON.
#[test]
fn usage_edit_turns_include_usage_on_and_keeps_the_rest() {
    let cases: [(&str, Option<Value>); 7] = [
        (
            r#"{"model":"m","stream":true}"#,
            Some(serde_json::json!({"include_usage": true})),
        ),
        (
            r#" { "stream":true, "model":"m" }"#,
            Some(serde_json::json!({"include_usage": true})),
        ),
        (
            r#"{"model":"m","stream_options":{}}"#,
            Some(serde_json::json!({"include_usage": true})),
        ),
        (
            r#"{"model":"m","stream_options":{ "continuous_usage_stats":true }}"#,
            Some(serde_json::json!({"include_usage": true, "continuous_usage_stats": true})),
        ),
        (
            r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#,
            Some(serde_json::json!({"include_usage": true, "x": 1})),
        ),
        (
            r#"{"model":"m","stream_options":null,"backend":"b"}"#,
            Some(serde_json::json!({"include_usage": true})),
        ),
        // Already on: nothing to do.
        (
            r#"{"model":"m","stream_options":{"include_usage":true}}"#,
            None,
        ),
    ];
    for (body, want) in cases {
        let p = peek(body.as_bytes(), 128).unwrap();
        let edit = usage_edit(body.as_bytes(), &p);
        assert_eq!(edit.is_some(), want.is_some(), "{body}");
        let mut out = Vec::new();
        rewrite(body.as_bytes(), &p, "up", true, edit, &mut out);
        let v: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        assert_eq!(v["model"], "up", "{body}");
        assert!(v.get("backend").is_none());
        if let Some(want) = want {
            assert_eq!(v["stream_options"], want, "{body}");
        }
    }
    // A type Berry will not touch (the upstream rejects it as the client sent it).
    let body = br#"{"model":"m","stream_options":"yes"}"#;
    assert_eq!(usage_edit(body, &peek(body, 128).unwrap()), None);
}
