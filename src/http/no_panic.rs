//! Property-style robustness checks: every parser in this module sees pseudo-random, HTTP-flavoured
//! bytes and must neither panic nor break its own invariants. Deterministic (fixed xorshift seeds)
//! so a failure reproduces; the cargo-fuzz targets go deeper, this only keeps `cargo test` honest.

use super::*;

/// xorshift64: tiny, deterministic and good enough to shuffle fragments.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments that steer random input into the interesting states of each parser; raw bytes cover
/// the rest.
const FRAGMENTS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PRI ",
    b"/v1/chat",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"HTTP/1.1 ",
    b"HTTP/2 ",
    b"200",
    b" 204 ",
    b"100",
    b"\r\n",
    b"\r\n\r\n",
    b"\r",
    b"\n",
    b"\n\n",
    b": ",
    b":",
    b" ",
    b"\t",
    b",",
    b";",
    b"content-length",
    b"Transfer-Encoding",
    b"connection",
    b"chunked",
    b"gzip",
    b"close",
    b"keep-alive",
    b"expect",
    b"100-continue",
    b"0",
    b"5",
    b"fF",
    b"ffffffffffffffffff",
    b"18446744073709551616",
    b"-1",
    b"+5",
    b"data: x",
    b": ping",
    b"event: e",
    b"id: 1",
    b"\x00",
    b"\xff",
    b"=",
    b"\"",
];

fn random_input(rng: &mut XorShift) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(40) {
        if rng.below(4) == 0 {
            out.push(rng.next() as u8);
        } else {
            out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
    }
    out
}

const ROUNDS: usize = 20_000;

#[test]
fn heads_never_panic_and_prefixes_of_valid_heads_are_incomplete() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let methods = [Method::Get, Method::Head, Method::Post, Method::Other];
    for _ in 0..ROUNDS {
        let input = random_input(&mut rng);
        let head_max = rng.below(input.len() + 2);
        let count_max = rng.below(8);
        if let Ok(Some(head)) = parse_request(&input, head_max, count_max) {
            assert!(head.head_len <= input.len().min(head_max));
            assert!(head
                .headers
                .iter()
                .all(|h| h.name.end <= head.head_len && h.value.end <= head.head_len));
            let cut = rng.below(head.head_len);
            assert_eq!(
                parse_request(&input[..cut], head_max, count_max),
                Ok(None),
                "{input:?}"
            );
            for h in &head.headers {
                let _ = is_hop_by_hop(&input[h.name.clone()]);
                connection_tokens(&input[h.value.clone()]).for_each(|t| assert!(!t.is_empty()));
            }
        }
        let method = methods[rng.below(methods.len())];
        if let Ok(Some(head)) = parse_response(&input, method, head_max, count_max) {
            assert!(head.head_len <= input.len().min(head_max) && head.reason.end <= head.head_len);
            let cut = rng.below(head.head_len);
            assert_eq!(
                parse_response(&input[..cut], method, head_max, count_max),
                Ok(None),
                "{input:?}"
            );
        }
    }
}

#[test]
fn chunked_decoder_never_panics_and_is_split_invariant() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    for _ in 0..ROUNDS {
        let mut input = random_input(&mut rng);
        // Often start from a valid chunk prefix so the decoder gets past the first size line.
        if rng.below(2) == 0 {
            input.splice(0..0, b"3\r\nabc\r\n".iter().copied());
        }
        let trailers_max = rng.below(64);
        let decode = |pieces: &mut dyn Iterator<Item = &[u8]>| {
            let mut decoder = ChunkedDecoder::new(trailers_max);
            let (mut consumed, mut payload) = (0, Vec::new());
            for piece in pieces {
                match decoder.decode(piece, &mut |d| payload.extend_from_slice(d)) {
                    Ok(n) => consumed += n,
                    Err(e) => return (consumed, payload, Some(e)),
                }
                if decoder.is_done() {
                    break;
                }
            }
            (consumed, payload, None)
        };
        let whole = decode(&mut std::iter::once(input.as_slice()));
        let step = 1 + rng.below(7);
        let split = decode(&mut input.chunks(step));
        assert!(whole.0 <= input.len());
        // After an error the split run may have consumed fewer bytes of the failing piece, so
        // compare payloads and errors always, counts only on success.
        assert_eq!(
            (&whole.1, &whole.2),
            (&split.1, &split.2),
            "{input:?} step {step}"
        );
        if whole.2.is_none() {
            assert_eq!(whole.0, split.0, "{input:?} step {step}");
        }
    }
}

#[test]
fn sse_scan_never_panics_and_ends_on_a_terminator() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..ROUNDS {
        let input = random_input(&mut rng);
        if let Some(end) = last_event_end(&input) {
            assert!(end >= 1 && end <= input.len());
            assert!(matches!(input[end - 1], b'\r' | b'\n'), "{input:?}");
            // Whatever follows, an event that was complete stays complete.
            let mut longer = input.clone();
            longer.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            assert!(
                last_event_end(&longer).is_some_and(|e| e >= end),
                "{input:?}"
            );
        }
    }
}

#[test]
fn length_body_never_overcounts() {
    let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
    for _ in 0..1000 {
        let total = rng.next() >> rng.below(64);
        let mut body = LengthBody::new(total);
        let mut taken = 0u64;
        while !body.is_done() && taken < 1 << 20 {
            taken += body.take(rng.below(1 << 16)) as u64;
            assert_eq!(taken + body.remaining(), total);
        }
    }
}
