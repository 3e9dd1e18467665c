//! The byte splice that turns a client's body into the upstream's: the model swapped, Berry's
//! `backend` member dropped, and (with `stream_usage = "inject"`) `include_usage` turned on.
//! Every other byte is copied as the client sent it.

use std::ops::Range;

use memchr::memchr;

use super::Peek;

/// Appends `body` with `model`'s value replaced by `new_model` (JSON-escaped as needed) and, if
/// present and `drop_backend`, the backend member removed; every other byte is copied unchanged.
/// Reserves once and allocates nothing else. A body without `model` gets none inserted.
///
/// # Panics
/// If `peek` was not produced by [`peek`] from this very `body` (its ranges would be out of bounds).
pub fn rewrite(
    body: &[u8],
    peek: &Peek,
    new_model: &str,
    drop_backend: bool,
    usage: Option<UsageEdit>,
    out: &mut Vec<u8>,
) {
    let model = peek.model.as_ref().map(|f| f.value_range.clone());
    let cut = peek
        .backend
        .as_ref()
        .filter(|_| drop_backend)
        .map(|f| f.member_range.clone());
    let removed = model.as_ref().map_or(0, Range::len)
        + cut.as_ref().map_or(0, Range::len)
        + usage.as_ref().map_or(0, |u| u.range.len());
    let added = model.as_ref().map_or(0, |_| escaped_len(new_model))
        + usage.as_ref().map_or(0, |u| u.text.len());
    out.reserve(body.len().saturating_sub(removed) + added);
    // The ranges are disjoint by construction (a member range runs from its key or the previous
    // value's end to the next key or its own value's end; the usage edit sits right after an
    // opening brace or on an `include_usage`/`stream_options` value), so splicing them in order
    // is enough. An empty insertion range sorts before an edit starting at the same offset.
    let mut edits = [
        model.map(|r| (r, Edit::Model)),
        cut.map(|r| (r, Edit::Cut)),
        usage.map(|u| (u.range, Edit::Text(u.text))),
    ];
    edits.sort_unstable_by_key(|e| e.as_ref().map(|(r, _)| (r.start, r.end)));
    let mut at = 0;
    for (range, edit) in edits.into_iter().flatten() {
        out.extend_from_slice(&body[at..range.start]);
        match edit {
            Edit::Model => write_json_string(out, new_model),
            Edit::Cut => {}
            Edit::Text(t) => out.extend_from_slice(t),
        }
        at = range.end;
    }
    out.extend_from_slice(&body[at..]);
}

enum Edit {
    Model,
    Cut,
    Text(&'static [u8]),
}

/// A splice that makes a streamed request ask for its token usage
/// (`stream_options.include_usage = true`), keeping every other option the client set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEdit {
    pub range: Range<usize>,
    pub text: &'static [u8],
}

/// How to turn `include_usage` on in `body`, or `None` when it is already on or the client's
/// `stream_options` is of a type Berry will not touch (the upstream rejects it anyway).
pub fn usage_edit(body: &[u8], peek: &Peek) -> Option<UsageEdit> {
    if peek.stream_options_include_usage {
        return None;
    }
    let word_at = |at: usize, w: &[u8]| body[at..].starts_with(w).then(|| at..at + w.len());
    if let Some(at) = peek.include_usage_at {
        // Present but false or null: replace the value.
        let range = word_at(at, b"false").or_else(|| word_at(at, b"null"))?;
        return Some(UsageEdit {
            range,
            text: b"true",
        });
    }
    match peek.stream_options_at {
        None => {
            // No `stream_options`: add one as the first member (the object has a `model`, so a
            // comma always follows).
            let open = memchr(b'{', body)? + 1;
            Some(UsageEdit {
                range: open..open,
                text: b"\"stream_options\":{\"include_usage\":true},",
            })
        }
        Some(at) if body[at] == b'{' => {
            let mut next = at + 1;
            while matches!(body.get(next), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                next += 1;
            }
            let text: &'static [u8] = if body.get(next) == Some(&b'}') {
                b"\"include_usage\":true"
            } else {
                b"\"include_usage\":true,"
            };
            Some(UsageEdit {
                range: at + 1..at + 1,
                text,
            })
        }
        Some(at) => word_at(at, b"null").map(|range| UsageEdit {
            range,
            text: b"{\"include_usage\":true}",
        }),
    }
}

/// Appends `s` as a JSON string literal (with quotes), escaping `"`, `\` and control characters.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    let hex = |n: u8| b"0123456789abcdef"[usize::from(n & 15)];
    let b = s.as_bytes();
    let len = escaped_len(s);
    out.reserve(len);
    out.push(b'"');
    if len == b.len() + 2 {
        // Model names never need escaping: one vectorized count, one copy.
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let short = match c {
            b'"' | b'\\' => c,
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..0x20 => 0,
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        run = i + 1;
        match short {
            0 => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(c >> 4), hex(c)]),
            _ => out.extend_from_slice(&[b'\\', short]),
        }
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// Exact length of `write_json_string(s)`, so `rewrite` can reserve once.
pub(super) fn escaped_len(s: &str) -> usize {
    let extra = |c| match c {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
        0..0x20 => 5,
        _ => 0,
    };
    s.len() + 2 + s.bytes().map(extra).sum::<usize>()
}
