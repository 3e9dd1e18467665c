//! Token usage from upstream answers: the `usage` object of a JSON body or of a stream's final
//! chunk, found without parsing the rest of the body.
//!
//! Why a byte search is safe: in JSON text a string's own quotes are escaped (`\"usage\"`), so
//! the bytes `"usage"` followed by `:` can only be a key. Only the top-level integer members
//! `prompt_tokens` and `completion_tokens` of that object are read; nested details
//! (`prompt_tokens_details`) are skipped by depth.

use std::sync::LazyLock;

use memchr::memmem;

/// Tokens an upstream reported for one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u32,
    pub completion: u32,
}

/// The last `usage` object in `bytes` (a JSON body, or one or more SSE events), if any.
/// `"usage": null` (how streams with `include_usage` mark every chunk but the last) is skipped.
pub fn find(bytes: &[u8]) -> Option<Usage> {
    // Built once: constructing a searcher costs more than scanning a typical answer.
    static USAGE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    let mut found = None;
    for at in USAGE.find_iter(bytes) {
        if let Some(u) = object_at(&bytes[at + 7..]) {
            found = Some(u);
        }
    }
    found
}

/// Parses `: { ... }` at the start of `rest` (after the key) into a [`Usage`].
fn object_at(rest: &[u8]) -> Option<Usage> {
    let mut i = skip_ws(rest, 0);
    if rest.get(i) != Some(&b':') {
        return None;
    }
    i = skip_ws(rest, i + 1);
    if rest.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut usage = Usage::default();
    let mut seen = false;
    let mut depth = 1usize;
    while i < rest.len() {
        match rest[i] {
            b'"' => {
                let start = i + 1;
                i = string_end(rest, start)?;
                let key = &rest[start..i - 1];
                if depth == 1 {
                    let j = skip_ws(rest, i);
                    if rest.get(j) == Some(&b':') {
                        let v = skip_ws(rest, j + 1);
                        let slot = match key {
                            b"prompt_tokens" => Some(&mut usage.prompt),
                            b"completion_tokens" => Some(&mut usage.completion),
                            _ => None,
                        };
                        if let Some(slot) = slot {
                            let (n, end) = integer(rest, v)?;
                            *slot = n;
                            seen = true;
                            i = end;
                        }
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return seen.then_some(usage);
                }
            }
            _ => i += 1,
        }
    }
    // The object did not end within `bytes`: a truncated usage is not trusted.
    None
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// Offset just past the closing quote of a string whose content starts at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let q = memchr::memchr2(b'"', b'\\', b.get(i..)?)? + i;
        if b[q] == b'\\' {
            i = q + 2;
        } else {
            return Some(q + 1);
        }
    }
}

fn integer(b: &[u8], mut i: usize) -> Option<(u32, usize)> {
    let start = i;
    let mut n: u64 = 0;
    while let Some(d @ b'0'..=b'9') = b.get(i) {
        n = (n * 10 + u64::from(d - b'0')).min(u64::from(u32::MAX));
        i += 1;
    }
    (i > start).then_some((n as u32, i))
}

/// Bytes at each end of a streamed-through JSON body searched for its `usage` object.
const BODY_END_BYTES: usize = 4096;

/// Finds the usage of a body relayed piece by piece.
pub struct BodyScan {
    sse: bool,
    /// The first bytes of a JSON body (unused for SSE).
    head: Vec<u8>,
    /// The last bytes of a JSON body seen so far (unused for SSE).
    tail: Vec<u8>,
}

impl BodyScan {
    pub fn new(sse: bool) -> BodyScan {
        BodyScan {
            sse,
            head: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// Takes the next piece sent on (`finished`: the body's last). SSE pieces are whole events,
    /// which a `usage` object never spans, so each is searched. A JSON body arrives in arbitrary
    /// pieces that may split its `usage`, so both of its ends are kept and searched once the
    /// body has ended: OpenAI puts `usage` last, some servers put it before a long `data`
    /// array. The tail wins when both have one.
    pub fn feed(&mut self, piece: &[u8], finished: bool) -> Option<Usage> {
        if self.sse {
            return find(piece);
        }
        let room = BODY_END_BYTES - self.head.len();
        self.head.extend_from_slice(&piece[..piece.len().min(room)]);
        self.tail.extend_from_slice(piece);
        let excess = self.tail.len().saturating_sub(BODY_END_BYTES);
        self.tail.drain(..excess);
        if finished {
            find(&self.tail).or_else(|| find(&self.head))
        } else {
            None
        }
    }
}

/// Copies the SSE events of `events` (complete events only) to `out`, leaving out the chunk a
/// stream sends only because Berry asked for `include_usage`: the one with `"choices":[]` and a
/// `usage` object. Returns the usage found in `events`, if any.
pub fn strip_usage_chunk(events: &[u8], out: &mut Vec<u8>) -> Option<Usage> {
    let mut found = None;
    let mut start = 0;
    while start < events.len() {
        let end = start
            + crate::http::sse::first_event_end(&events[start..]).unwrap_or(events.len() - start);
        let event = &events[start..end];
        match find(event) {
            Some(u) if is_usage_only(event) => found = Some(u),
            Some(u) => {
                found = Some(u);
                out.extend_from_slice(event);
            }
            None => out.extend_from_slice(event),
        }
        start = end;
    }
    found
}

/// Is this event a chunk that carries nothing but usage: a JSON object whose `choices` is empty
/// or absent and whose other members are only the envelope every chunk has? Parsed properly
/// (it is one event per stream); anything else it carries (content-filter results, a provider
/// extension) keeps the chunk, since dropping it would lose data the client may want.
fn is_usage_only(event: &[u8]) -> bool {
    const ENVELOPE: [&str; 8] = [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
        "system_fingerprint",
        "service_tier",
    ];
    let Ok(text) = std::str::from_utf8(event) else {
        return false;
    };
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if !line.is_empty() && !line.starts_with(':') {
            // An `event:`/`id:` field: not a plain data chunk.
            return false;
        }
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&data) else {
        return false;
    };
    let choices_empty = match map.get("choices") {
        None => true,
        Some(serde_json::Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    choices_empty
        && map.get("usage").is_some_and(serde_json::Value::is_object)
        && map.keys().all(|k| ENVELOPE.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_usage() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 5}"}}],"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":3,"completion_tokens":77},"completion_tokens":12,"total_tokens":21}}"#;
        assert_eq!(
            find(body),
            Some(Usage {
                prompt: 9,
                completion: 12
            })
        );
    }

    #[test]
    fn embeddings_have_prompt_tokens_only() {
        let body = br#"{"data":[],"usage": {"prompt_tokens": 3, "total_tokens": 3}}"#;
        assert_eq!(
            find(body),
            Some(Usage {
                prompt: 3,
                completion: 0
            })
        );
    }

    #[test]
    fn null_usage_truncated_usage_and_no_usage() {
        assert_eq!(find(br#"{"choices":[],"usage":null}"#), None);
        assert_eq!(find(br#"{"usage":{"prompt_tokens":9,"comp"#), None);
        assert_eq!(find(br#"{"usage":{}}"#), None);
        assert_eq!(find(b"no json here"), None);
    }

    #[test]
    fn cut_inside_an_escape_is_not_a_panic() {
        assert_eq!(find(br#"{"usage":{"a\"#), None);
        assert_eq!(find(br#"{"usage":{"a\""#), None);
        for cut in 0..60 {
            let body = br#"{"usage":{"x\"y":1,"prompt_tokens":3,"completion_tokens":4}}"#;
            let _ = find(&body[..cut.min(body.len())]);
        }
    }

    /// Feeds `body` to a JSON `BodyScan` in pieces of `step` bytes.
    fn scan_in_pieces(body: &str, step: usize) -> Option<Usage> {
        let mut scan = BodyScan::new(false);
        let pieces: Vec<&[u8]> = body.as_bytes().chunks(step).collect();
        let mut found = None;
        for (i, p) in pieces.iter().enumerate() {
            found = scan.feed(p, i + 1 == pieces.len());
        }
        found
    }

    #[test]
    fn a_large_json_body_has_its_usage_found_at_either_end_across_pieces() {
        let data = format!("[{}0]", "0.125,".repeat(20_000));
        let usage = r#""usage":{"prompt_tokens":11,"total_tokens":11}"#;
        let first = format!(r#"{{"object":"list",{usage},"data":{data},"model":"e"}}"#);
        let last = format!(r#"{{"object":"list","data":{data},"model":"e",{usage}}}"#);
        let want = Some(Usage {
            prompt: 11,
            completion: 0,
        });
        // Piece sizes that cut the usage object in two at different places.
        for step in [7, 1000, 4093, 65_536] {
            assert_eq!(scan_in_pieces(&first, step), want, "first, step {step}");
            assert_eq!(scan_in_pieces(&last, step), want, "last, step {step}");
        }
        let none = format!(r#"{{"object":"list","data":{data}}}"#);
        assert_eq!(scan_in_pieces(&none, 1000), None);
    }

    #[test]
    fn the_last_usage_of_a_stream_wins() {
        let events = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":8}}\n\n\
            data: [DONE]\n\n";
        assert_eq!(
            find(events),
            Some(Usage {
                prompt: 4,
                completion: 8
            })
        );
    }

    #[test]
    fn strips_only_the_usage_only_chunk() {
        let content =
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\r\n\r\n";
        let usage_only =
            "data: {\"choices\": [ ],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":8}}\n\n";
        let done = "data: [DONE]\n\n";
        let events = format!("{content}{usage_only}{done}");
        let mut out = Vec::new();
        let u = strip_usage_chunk(events.as_bytes(), &mut out);
        assert_eq!(
            u,
            Some(Usage {
                prompt: 4,
                completion: 8
            })
        );
        assert_eq!(String::from_utf8(out).unwrap(), format!("{content}{done}"));
    }

    #[test]
    fn a_usage_chunk_without_choices_is_stripped_one_with_more_payload_is_kept() {
        let bare =
            "data: {\"id\":\"x\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
        let mut out = Vec::new();
        assert!(strip_usage_chunk(bare.as_bytes(), &mut out).is_some());
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        let extra = "data: {\"choices\":[],\"prompt_filter_results\":[{}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
        out.clear();
        assert!(strip_usage_chunk(extra.as_bytes(), &mut out).is_some());
        assert_eq!(out, extra.as_bytes());
    }

    #[test]
    fn a_chunk_with_choices_and_usage_is_kept() {
        // Some servers put usage on the last content chunk; that chunk is content, not extra.
        let ev = "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
        let mut out = Vec::new();
        assert!(strip_usage_chunk(ev.as_bytes(), &mut out).is_some());
        assert_eq!(out, ev.as_bytes());
    }
}
