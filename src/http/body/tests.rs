use super::*;

const TRAILERS_MAX: usize = 1024;

/// Decodes `input` in pieces of `step` bytes, stopping at the first error or once the decoder is
/// done. Returns (consumed, payload, result of the last call).
fn decode_in_steps(input: &[u8], step: usize) -> (usize, Vec<u8>, Result<usize, ChunkError>) {
    let mut decoder = ChunkedDecoder::new(TRAILERS_MAX);
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut last = Ok(0);
    for piece in input.chunks(step.max(1)) {
        last = decoder.decode(piece, &mut |data| payload.extend_from_slice(data));
        match last {
            Ok(n) => consumed += n,
            Err(_) => break,
        }
        if decoder.is_done() {
            break;
        }
    }
    (consumed, payload, last)
}

fn decode_all(input: &[u8]) -> (usize, Vec<u8>, Result<usize, ChunkError>) {
    decode_in_steps(input, input.len())
}

fn error_of(input: &[u8]) -> Option<ChunkError> {
    decode_all(input).2.err()
}

#[test]
fn decodes_a_simple_body() {
    let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let (consumed, payload, result) = decode_all(input);
    assert_eq!(
        (consumed, payload.as_slice(), result),
        (input.len(), &b"hello world"[..], Ok(input.len()))
    );
}

#[test]
fn one_byte_at_a_time_equals_all_at_once() {
    let input = b"1A;name=value;q=\"a b\"\r\nabcdefghijklmnopqrstuvwxyz\r\n3 ; ext\r\n\r\n\n\r\n\
        0\r\nx-usage: {\"tokens\":3}\r\nx-other: 1\r\n\r\nNEXT";
    let whole = decode_all(input);
    assert_eq!(whole.0, input.len() - 4);
    assert_eq!(whole.1, b"abcdefghijklmnopqrstuvwxyz\r\n\n".to_vec());
    for step in 1..input.len() {
        let (consumed, payload, last) = decode_in_steps(input, step);
        assert_eq!((consumed, &payload), (whole.0, &whole.1), "step {step}");
        assert!(last.is_ok(), "step {step}");
    }
}

#[test]
fn stops_exactly_at_the_end_of_the_message() {
    let message = b"3\r\nabc\r\n0\r\n\r\n";
    let input = [&message[..], b"HTTP/1.1 200 OK\r\n\r\n"].concat();
    let mut decoder = ChunkedDecoder::new(TRAILERS_MAX);
    let consumed = decoder.decode(&input, &mut |_| {});
    assert_eq!(consumed, Ok(message.len()));
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(b"more", &mut |_| {}), Ok(0));
}

#[test]
fn not_done_until_the_final_crlf() {
    let mut decoder = ChunkedDecoder::new(TRAILERS_MAX);
    assert_eq!(decoder.decode(b"0\r\n\r", &mut |_| {}), Ok(4));
    assert!(!decoder.is_done());
    assert_eq!(decoder.decode(b"\nX", &mut |_| {}), Ok(1));
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(b"", &mut |_| {}), Ok(0));
}

#[test]
fn chunk_sizes() {
    assert_eq!(
        decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").1,
        b"0123456789".to_vec()
    );
    assert_eq!(
        decode_all(b"a\r\n0123456789\r\n0\r\n\r\n").1,
        b"0123456789".to_vec()
    );
    // Leading zeros do not count towards overflow; only the value does.
    assert_eq!(
        decode_all(b"00000000000000000000003\r\nabc\r\n0\r\n\r\n").1,
        b"abc".to_vec()
    );
    let mut decoder = ChunkedDecoder::new(TRAILERS_MAX);
    assert_eq!(
        decoder.decode(b"FFFFFFFFFFFFFFFF\r\nxy", &mut |_| {}),
        Ok(20)
    );
    assert_eq!(
        error_of(b"10000000000000000\r\n"),
        Some(ChunkError::SizeOverflow)
    );
    assert_eq!(
        error_of(b"fffffffffffffffff\r\n"),
        Some(ChunkError::SizeOverflow)
    );
}

#[test]
fn bad_sizes() {
    for input in [
        &b"\r\n"[..],
        b";ext\r\n",
        b"g\r\n",
        b"5x\r\n",
        b" 5\r\n",
        b"-5\r\n",
        b"+5\r\n",
        b"5 x\r\n",
    ] {
        assert_eq!(
            error_of(input),
            Some(ChunkError::BadSize),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn bad_terminators() {
    let cases: [&[u8]; 8] = [
        b"5\r\nhelloX",
        b"5\r\nhello\rX",
        b"5\r\nhello\n",
        b"5\nhello\r\n",
        b"5\rhello",
        b"5;ext\n",
        b"0\r\n\rX",
        b"0\r\nx-a: 1\n\r\n",
    ];
    for input in cases {
        assert_eq!(
            error_of(input),
            Some(ChunkError::BadTerminator),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn size_line_length_limit_includes_extensions() {
    let at_limit = [
        &b"5;"[..],
        &[b'a'; CHUNK_SIZE_LINE_BYTES_MAX - 2],
        b"\r\nhello\r\n0\r\n\r\n",
    ]
    .concat();
    assert_eq!(decode_all(&at_limit).1, b"hello".to_vec());
    let over = [&b"5;"[..], &[b'a'; CHUNK_SIZE_LINE_BYTES_MAX - 1], b"\r\n"].concat();
    assert_eq!(error_of(&over), Some(ChunkError::LineTooLong));
    let zeros = [&[b'0'; CHUNK_SIZE_LINE_BYTES_MAX + 1][..], b"\r\n"].concat();
    assert_eq!(error_of(&zeros), Some(ChunkError::LineTooLong));
}

#[test]
fn trailer_limit() {
    let input = b"0\r\nx-a: 12\r\n\r\n";
    let trailer_line_len = b"x-a: 12\r\n".len();
    let mut decoder = ChunkedDecoder::new(trailer_line_len);
    assert_eq!(decoder.decode(input, &mut |_| {}), Ok(input.len()));
    let mut decoder = ChunkedDecoder::new(trailer_line_len - 1);
    assert_eq!(
        decoder.decode(input, &mut |_| {}),
        Err(ChunkError::TrailersTooLarge)
    );
    // Zero allows a body without trailers.
    let mut decoder = ChunkedDecoder::new(0);
    assert_eq!(decoder.decode(b"0\r\n\r\n", &mut |_| {}), Ok(5));
}

#[test]
fn errors_are_sticky() {
    let mut decoder = ChunkedDecoder::new(TRAILERS_MAX);
    assert_eq!(decoder.decode(b"zz", &mut |_| {}), Err(ChunkError::BadSize));
    assert_eq!(
        decoder.decode(b"0\r\n\r\n", &mut |_| {}),
        Err(ChunkError::BadSize)
    );
    assert_eq!(decoder.decode(b"", &mut |_| {}), Err(ChunkError::BadSize));
    assert!(!decoder.is_done());
}

#[test]
fn data_is_handed_over_in_runs_not_bytes() {
    let mut decoder = ChunkedDecoder::new(TRAILERS_MAX);
    let mut calls = Vec::new();
    let input = b"400\r\n"
        .iter()
        .copied()
        .chain([b'x'; 0x400])
        .chain(*b"\r\n0\r\n\r\n")
        .collect::<Vec<_>>();
    assert_eq!(
        decoder.decode(&input, &mut |data| calls.push(data.len())),
        Ok(input.len())
    );
    assert_eq!(calls, [0x400]);
}

#[test]
fn length_body_counts_down() {
    let mut body = LengthBody::new(10);
    assert_eq!(
        (body.take(4), body.remaining(), body.is_done()),
        (4, 6, false)
    );
    assert_eq!(
        (body.take(100), body.remaining(), body.is_done()),
        (6, 0, true)
    );
    assert_eq!(body.take(5), 0);
    assert!(LengthBody::new(0).is_done());
    let mut huge = LengthBody::new(u64::MAX);
    assert_eq!(huge.take(usize::MAX), usize::MAX);
    assert_eq!(huge.remaining(), u64::MAX - usize::MAX as u64);
}
