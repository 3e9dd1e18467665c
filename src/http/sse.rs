//! Server-sent-event boundaries (WHATWG HTML §9.2.6): find where the last complete event ends so
//! streamed bytes can be flushed or inspected per event. Only scans; never copies, decodes fields
//! or allocates.

/// Returns the end offset (exclusive) of the last complete event in `buf`, or `None` if there is
/// none.
///
/// An event is complete at a blank line, i.e. a line terminator that immediately follows another
/// one. Terminators are CRLF, LF, or a CR not followed by LF. `buf` must start at the beginning of
/// a line (stream start or a previously returned offset), so a terminator at offset 0 is itself a
/// blank line.
///
/// A CR at the very end of `buf` is ambiguous only in where its terminator *ends* (CR, or CRLF if
/// an LF follows); that it *is* a terminator is certain. So:
/// - `…\n\r`, `…\r\r`, `…\r\n\r` at the end: the final CR ends a blank line whatever comes next,
///   and the result is `buf.len()`. If the stream continues with `\n`, the next buffer starts with
///   that LF, which a reader sees as one more blank line: it dispatches nothing (the data buffer is
///   empty), so nothing is lost or duplicated.
/// - `data: x\r` at the end: the CR ends a data line; whether a blank line follows depends on the
///   next byte (`\n` keeps the event open, `\r` would close it), so this CR is not a boundary.
///
/// O(n): memchr jumps between CR/LF bytes, and each terminator is looked at once.
pub fn last_event_end(buf: &[u8]) -> Option<usize> {
    let mut last_end = None;
    // Offset just after the previous terminator: where the current line starts.
    let mut line_start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if buf[i] == b'\n' && i > 0 && buf[i - 1] == b'\r' {
            // Second half of a CRLF, already handled with its CR.
            continue;
        }
        let terminator_end = terminator_end(buf, i);
        if i == line_start {
            last_end = Some(terminator_end);
        }
        line_start = terminator_end;
    }
    last_end
}

/// End (exclusive) of the first complete event in `buf`, by the same rules as
/// [`last_event_end`]: for walking events one by one.
pub fn first_event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', buf) {
        if buf[i] == b'\n' && i > 0 && buf[i - 1] == b'\r' {
            continue;
        }
        let end = terminator_end(buf, i);
        if i == line_start {
            return Some(end);
        }
        line_start = end;
    }
    None
}

/// Offset just after the line terminator starting at `i` (CRLF, LF or a lone CR).
fn terminator_end(buf: &[u8], i: usize) -> usize {
    if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\n') {
        i + 2
    } else {
        i + 1
    }
}

/// Does `events` hold the OpenAI end-of-stream event, a line that is exactly `data: [DONE]`
/// (or `data:[DONE]`)? The text `[DONE]` anywhere else (inside a token, a JSON string) does
/// not count: taking it for the end would make a stream cut after it look complete.
pub fn has_done_event(events: &[u8]) -> bool {
    static DONE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"[DONE]"));
    DONE.find_iter(events).any(|at| {
        let line_start = memchr::memrchr2(b'\n', b'\r', &events[..at]).map_or(0, |i| i + 1);
        let prefix = &events[line_start..at];
        // An unterminated line at the very end is not an event a client would dispatch.
        let line_ends = matches!(events.get(at + 6), Some(b'\n' | b'\r'));
        line_ends && (prefix == b"data: " || prefix == b"data:")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: Option<usize>) {
        assert_eq!(
            last_event_end(input),
            expected,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn first_event_end_walks_events() {
        let buf = b"data: a\r\n\r\ndata: b\n\ndata: c";
        assert_eq!(first_event_end(buf), Some(11));
        assert_eq!(first_event_end(&buf[11..]), Some(9));
        assert_eq!(first_event_end(&buf[20..]), None);
    }

    #[test]
    fn lf_crlf_and_cr_boundaries() {
        check(b"data: a\n\n", Some(9));
        check(b"data: a\r\n\r\n", Some(11));
        check(b"data: a\r\r", Some(9));
        check(b"data: a\n\r\n", Some(10));
        check(b"data: a\r\n\n", Some(10));
        check(b"data: a\r\r\n", Some(10));
    }

    #[test]
    fn returns_the_last_of_several_events() {
        check(b"data: a\n\ndata: b\r\n\r\ndata: c\r\r", Some(29));
        check(b"data: a\n\ndata: b\r\n\r\ndata: partial", Some(20));
        check(b"data: a\n\ndata: b\n", Some(9));
    }

    #[test]
    fn incomplete_events() {
        check(b"", None);
        check(b"data: a", None);
        check(b"data: a\n", None);
        check(b"data: a\r\n", None);
        check(b"data: a\r\ndata: b\r\n", None);
        // Could be the CR of a CRLF, so the event may continue.
        check(b"data: a\r", None);
        check(b"data: a\r\n\r", Some(10));
        check(b"data: a\n\r", Some(9));
    }

    #[test]
    fn lone_cr_in_data_is_a_line_break_not_a_boundary() {
        check(b"data: a\rdata: b\n", None);
        check(b"data: a\rdata: b\n\n", Some(17));
        check(b"data: a\rb", None);
    }

    #[test]
    fn comments_and_fields() {
        check(b": ping\n\n", Some(8));
        check(b": ping\n\ndata: x", Some(8));
        check(b"event: message\nid: 7\ndata: {\"x\":1}\n\n", Some(36));
        check(
            b"retry: 100\r\nevent: done\r\ndata: [DONE]\r\n\r\n",
            Some(41),
        );
    }

    #[test]
    fn leading_terminator_is_a_blank_line() {
        // After a cut at "…\n\r", the stream may go on with the LF of that CRLF.
        check(b"\n", Some(1));
        check(b"\ndata: b", Some(1));
        check(b"\r", Some(1));
        check(b"\r\n", Some(2));
    }

    #[test]
    fn result_always_ends_after_a_terminator() {
        let inputs: [&[u8]; 5] = [
            b"a\n\nb\r\r",
            b"\r\n\r\n\r\n",
            b"x\r\r\r\n\n",
            b"\n\n\n",
            b"a\rb\rc\r\r",
        ];
        for input in inputs {
            let end = last_event_end(input).expect("each input holds an event");
            assert!(matches!(input[end - 1], b'\n' | b'\r'));
        }
    }

    #[test]
    fn only_a_whole_done_line_ends_a_stream() {
        for yes in [
            &b"data: [DONE]\n\n"[..],
            b"data:[DONE]\r\n\r\n",
            b"data: {\"a\":1}\n\ndata: [DONE]\n\n",
            b"event: x\ndata: [DONE]\n",
        ] {
            assert!(has_done_event(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"[DONE]\"}}]}\n\n"[..],
            b"data: [DONE] later\n\n",
            b"data: x[DONE]\n\n",
            b": data: [DONE]\n\n",
            b"data:  [DONE]\n\n",
            b"data: [DONE]",
            b"",
        ] {
            assert!(!has_done_event(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
