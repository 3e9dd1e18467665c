//! Request-body peek and rewrite: the only place Berry looks inside a client's JSON body.
//!
//! Owns: one bounded, iterative pass over the body that validates it as RFC 8259 JSON (UTF-8, string
//! escapes incl. paired surrogates, number grammar, literals, whitespace, nesting up to `depth_max`,
//! nothing but whitespace after the value) while picking out the top-level `model`, `stream`,
//! `backend` and `stream_options.include_usage`; and the byte splice that swaps in the upstream model
//! and drops `backend`. Every other byte is forwarded exactly as the client sent it.
//!
//! Never: builds a DOM or deserializes the body, recurses (deep nesting cannot overflow the stack),
//! panics or allocates in proportion to the input while scanning, or looks at nested keys (a `model`
//! inside `messages` or `tools` is content, not routing).
//!
//! Decisions (each matches what upstream parsers do, so the gateway and the upstream agree on what the
//! body says):
//! - Keys are matched after decoding escapes: `"mod\u0065l"` is `model`. Matching raw bytes would
//!   let a client route on one model while the upstream reads another.
//! - A repeated top-level `model`, `stream`, `backend` or `stream_options` (or a repeated
//!   `include_usage` inside it) is [`PeekError::Duplicate`], for the same reason: parsers disagree on
//!   which copy wins.
//! - Lone surrogate escapes (`"\ud800"`) are rejected anywhere, as serde_json does when decoding to a
//!   `String`; they cannot be represented in UTF-8.
//! - Numbers are checked against the grammar only: `1e999` is valid JSON (serde_json rejects it as out
//!   of range; the upstream gets to decide).
//! - Wrong types and duplicates are reported only once the whole body is known to be valid JSON, so
//!   malformed JSON always gets a syntax error.
//! - UTF-8 is validated per string run, fused with the control-character check: outside strings only
//!   ASCII is legal anyway, and all-ASCII runs (the common case) never reach `from_utf8`. Measured
//!   faster than `std::str::from_utf8` on the whole body up front.

use memchr::{memchr, memchr2};
use std::fmt;
use std::ops::Range;

/// What the gateway needs from a request body. Ranges are byte offsets into the scanned body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peek {
    /// Top-level `"model"` string.
    pub model: Option<Field>,
    /// Top-level `"stream": true` (absent, `false` or `null` → false).
    pub stream: bool,
    /// Top-level `"backend"` string (Berry's forced-provider field).
    pub backend: Option<Field>,
    /// Top-level `"stream_options": {"include_usage": true}`.
    pub stream_options_include_usage: bool,
}

/// A top-level string member found by [`peek`].
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Decoded value (escapes resolved, including `\uXXXX` and surrogate pairs).
    pub value: String,
    /// The string literal including its quotes.
    pub value_range: Range<usize>,
    /// Key, colon, value and exactly one adjoining comma (with the whitespace around it): removing
    /// these bytes leaves valid JSON whether the member is the only, first, middle or last one.
    pub member_range: Range<usize>,
}

/// Why a body was refused; [`fmt::Display`] gives a short message that is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeekError {
    Empty,
    Syntax {
        offset: usize,
        what: &'static str,
    },
    NotObject,
    TooDeep {
        depth_max: usize,
    },
    InvalidUtf8 {
        offset: usize,
    },
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    Duplicate {
        field: &'static str,
    },
    TrailingData {
        offset: usize,
    },
}

impl fmt::Display for PeekError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("request body is empty"),
            Self::Syntax { offset, what } => {
                write!(
                    f,
                    "request body is not valid JSON (at byte {offset}: {what})"
                )
            }
            Self::NotObject => f.write_str("request body must be a JSON object"),
            Self::TooDeep { depth_max } => {
                write!(f, "request body nests deeper than {depth_max} levels")
            }
            Self::InvalidUtf8 { offset } => {
                write!(f, "request body is not valid UTF-8 (at byte {offset})")
            }
            Self::WrongType { field, expected } => write!(f, "`{field}` must be {expected}"),
            Self::Duplicate { field } => write!(f, "`{field}` appears more than once"),
            Self::TrailingData { offset } => {
                write!(
                    f,
                    "request body has data after the JSON value (at byte {offset})"
                )
            }
        }
    }
}

impl std::error::Error for PeekError {}

/// Scans and validates `body`, returning the routing fields. `depth_max` bounds nesting; the
/// top-level object is level 1 (callers use 128; serde_json's default allows 127).
pub fn peek(body: &[u8], depth_max: usize) -> Result<Peek, PeekError> {
    let mut s = Scanner {
        b: body,
        pos: 0,
        depth_max,
        nest: Nest::default(),
        out: Peek::default(),
        pending: Slot::None,
        seen: 0,
        in_options: false,
        key_start: 0,
        open: Slot::None,
        prev_end: None,
        deferred: None,
    };
    s.skip_ws();
    let top_is_object = match body.get(s.pos) {
        None => return Err(PeekError::Empty),
        Some(&c) => c == b'{',
    };
    loop {
        if !s.value()? {
            continue; // opened a non-empty container; positioned at its first value
        }
        // A value just ended: close containers until a ',' asks for the next value.
        loop {
            if s.nest.depth == 0 {
                s.skip_ws();
                if s.pos != body.len() {
                    return Err(PeekError::TrailingData { offset: s.pos });
                }
                if !top_is_object {
                    return Err(PeekError::NotObject);
                }
                return match s.deferred {
                    Some(e) => Err(e),
                    None => Ok(s.out),
                };
            }
            let value_end = s.pos;
            s.skip_ws();
            let c = s.byte()?;
            let obj = s.nest.top_is_obj();
            if c == b',' {
                s.pos += 1;
                s.skip_ws();
                s.member_done(value_end, Some(s.pos));
                if obj {
                    s.key()?;
                }
                break;
            }
            if c == if obj { b'}' } else { b']' } {
                s.member_done(value_end, None);
                s.nest.pop();
                s.pos += 1;
                continue;
            }
            return Err(s.syntax(if obj {
                "expected ',' or '}'"
            } else {
                "expected ',' or ']'"
            }));
        }
    }
}

/// Appends `body` with `model`'s value replaced by `new_model` (JSON-escaped as needed) and, if
/// present and `drop_backend`, the backend member removed; every other byte is copied unchanged.
/// Reserves once and allocates nothing else. Without a `model` field nothing is inserted.
///
/// # Panics
/// If `peek` was not produced by [`peek`] on this very `body` (its ranges would be out of bounds).
pub fn rewrite(body: &[u8], peek: &Peek, new_model: &str, drop_backend: bool, out: &mut Vec<u8>) {
    let model = peek.model.as_ref().map(|f| f.value_range.clone());
    let cut = match &peek.backend {
        Some(f) if drop_backend => Some(f.member_range.clone()),
        _ => None,
    };
    let removed = model.as_ref().map_or(0, |r| r.len()) + cut.as_ref().map_or(0, |r| r.len());
    let added = if model.is_some() {
        escaped_len(new_model)
    } else {
        0
    };
    out.reserve(body.len().saturating_sub(removed) + added);
    // The two ranges are disjoint by construction (a member range ends at the next key or at its own
    // value, and starts at its own key or at the previous value's end), so splice them in order.
    let (first, second) = match (model, cut) {
        (Some(m), Some(c)) if c.start < m.start => (Some((c, false)), Some((m, true))),
        (Some(m), c) => (Some((m, true)), c.map(|c| (c, false))),
        (None, c) => (c.map(|c| (c, false)), None),
    };
    let mut at = 0;
    for (range, is_model) in [first, second].into_iter().flatten() {
        out.extend_from_slice(&body[at..range.start]);
        if is_model {
            write_json_string(out, new_model);
        }
        at = range.end;
    }
    out.extend_from_slice(&body[at..]);
}

/// Appends `s` as a JSON string literal (with quotes), escaping `"`, `\` and control characters.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        run = i + 1;
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        }
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// Exact length of `write_json_string(s)`, so `rewrite` can reserve once.
fn escaped_len(s: &str) -> usize {
    let extra: usize = s
        .bytes()
        .map(|c| match c {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() + extra + 2
}

/// Which interesting member the next value belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    None,
    Model,
    Stream,
    Backend,
    Options,
    IncludeUsage,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::None => "",
            Slot::Model => "model",
            Slot::Stream => "stream",
            Slot::Backend => "backend",
            Slot::Options => "stream_options",
            Slot::IncludeUsage => "stream_options.include_usage",
        }
    }
}

/// Open containers as one bit each (1 = object). The first 128 levels live inline so the usual
/// request never allocates; deeper nesting (only with a large `depth_max`) spills to the heap.
#[derive(Default)]
struct Nest {
    depth: usize,
    inline: u128,
    spill: Vec<u64>,
}

impl Nest {
    fn push(&mut self, obj: bool) {
        let d = self.depth;
        if d < 128 {
            self.inline = (self.inline & !(1 << d)) | (u128::from(obj) << d);
        } else {
            let (w, bit) = ((d - 128) / 64, (d - 128) % 64);
            if w == self.spill.len() {
                self.spill.push(0);
            }
            if let Some(word) = self.spill.get_mut(w) {
                *word = (*word & !(1 << bit)) | (u64::from(obj) << bit);
            }
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }

    fn top_is_obj(&self) -> bool {
        let d = self.depth.wrapping_sub(1);
        if d < 128 {
            self.inline >> d & 1 == 1
        } else {
            let (w, bit) = ((d - 128) / 64, (d - 128) % 64);
            self.spill.get(w).is_some_and(|word| word >> bit & 1 == 1)
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    depth_max: usize,
    nest: Nest,
    out: Peek,
    /// Set by a key we care about, consumed by the value that follows it.
    pending: Slot,
    /// Bit per `Slot` already seen, for `Duplicate`.
    seen: u8,
    /// The open level-2 container is the top-level `stream_options` object.
    in_options: bool,
    /// Offset of the current top-level key's opening quote.
    key_start: usize,
    /// Field whose `member_range` waits for the separator after its value.
    open: Slot,
    /// End of the previous top-level member's value (where a last member's cut starts).
    prev_end: Option<usize>,
    /// First wrong-type or duplicate error; reported only if the JSON turns out valid.
    deferred: Option<PeekError>,
}

impl Scanner<'_> {
    fn syntax(&self, what: &'static str) -> PeekError {
        let what = if self.pos >= self.b.len() {
            "unexpected end of input"
        } else {
            what
        };
        PeekError::Syntax {
            offset: self.pos,
            what,
        }
    }

    fn defer(&mut self, e: PeekError) {
        self.deferred.get_or_insert(e);
    }

    fn byte(&self) -> Result<u8, PeekError> {
        self.b.get(self.pos).copied().ok_or_else(|| self.syntax(""))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Parses one value at `pos`. Returns false if it opened a non-empty container (`pos` is then at
    /// the container's first value), true if the value is complete.
    fn value(&mut self) -> Result<bool, PeekError> {
        let c = self.byte()?;
        let slot = std::mem::replace(&mut self.pending, Slot::None);
        match slot {
            Slot::Model | Slot::Backend if c == b'"' => {
                let start = self.pos;
                let escaped = self.string()?;
                let raw = &self.b[start + 1..self.pos - 1];
                let field = Field {
                    value: if escaped {
                        decode(raw)
                    } else {
                        String::from_utf8_lossy(raw).into_owned()
                    },
                    value_range: start..self.pos,
                    member_range: self.key_start..self.pos,
                };
                *(if slot == Slot::Model {
                    &mut self.out.model
                } else {
                    &mut self.out.backend
                }) = Some(field);
                self.open = slot;
                return Ok(true);
            }
            Slot::Model | Slot::Backend => self.defer(PeekError::WrongType {
                field: slot.name(),
                expected: "a string",
            }),
            Slot::Stream => match c {
                b't' | b'f' | b'n' => self.out.stream = self.b[self.pos..].starts_with(b"true"),
                _ => self.defer(PeekError::WrongType {
                    field: "stream",
                    expected: "a boolean",
                }),
            },
            Slot::IncludeUsage => {
                self.out.stream_options_include_usage = self.b[self.pos..].starts_with(b"true")
            }
            Slot::Options | Slot::None => {}
        }
        match c {
            b'{' | b'[' => {
                if self.nest.depth >= self.depth_max {
                    return Err(PeekError::TooDeep {
                        depth_max: self.depth_max,
                    });
                }
                if self.nest.depth == 1 {
                    self.in_options = slot == Slot::Options;
                }
                let obj = c == b'{';
                self.nest.push(obj);
                self.pos += 1;
                self.skip_ws();
                if self.byte()? == if obj { b'}' } else { b']' } {
                    self.nest.pop();
                    self.pos += 1;
                    return Ok(true);
                }
                if obj {
                    self.key()?;
                }
                Ok(false)
            }
            b'"' => self.string().map(|_| true),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.syntax("expected value")),
        }
    }

    /// Parses `"key" :` and leaves `pos` at the member's value.
    fn key(&mut self) -> Result<(), PeekError> {
        let start = self.pos;
        if self.byte()? != b'"' {
            return Err(self.syntax("expected string key"));
        }
        let escaped = self.string()?;
        let depth = self.nest.depth;
        if depth == 1 || (depth == 2 && self.in_options) {
            let raw = &self.b[start + 1..self.pos - 1];
            let slot = if escaped {
                classify(depth, decode(raw).as_bytes())
            } else {
                classify(depth, raw)
            };
            if slot != Slot::None {
                let bit = 1 << slot as u8;
                if self.seen & bit != 0 {
                    self.defer(PeekError::Duplicate { field: slot.name() });
                }
                self.seen |= bit;
            }
            self.pending = slot;
            self.key_start = start;
        }
        self.skip_ws();
        if self.byte()? != b':' {
            return Err(self.syntax("expected ':'"));
        }
        self.pos += 1;
        self.skip_ws();
        Ok(())
    }

    /// Bookkeeping after a top-level member's value: `next_key` is where the following key starts
    /// (after a ',') or `None` when the object closes.
    fn member_done(&mut self, value_end: usize, next_key: Option<usize>) {
        if self.nest.depth != 1 || !self.nest.top_is_obj() {
            return;
        }
        let field = match std::mem::replace(&mut self.open, Slot::None) {
            Slot::Model => self.out.model.as_mut(),
            Slot::Backend => self.out.backend.as_mut(),
            _ => None,
        };
        if let Some(f) = field {
            // Middle/first member: take the comma after it. Last member: take the comma before it.
            f.member_range = match (next_key, self.prev_end) {
                (Some(next), _) => f.member_range.start..next,
                (None, Some(prev)) => prev..value_end,
                (None, None) => f.member_range.start..value_end,
            };
        }
        self.prev_end = Some(value_end);
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<bool, PeekError> {
        if !self.b[self.pos..].starts_with(word) {
            return Err(self.syntax("invalid literal"));
        }
        self.pos += word.len();
        Ok(true)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<bool, PeekError> {
        let b = self.b;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = self.pos + usize::from(b.get(self.pos) == Some(&b'-'));
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i + 1),
            _ => {
                return Err(PeekError::Syntax {
                    offset: i,
                    what: "invalid number",
                })
            }
        };
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return Err(PeekError::Syntax {
                    offset: end,
                    what: "invalid number",
                });
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            let end = digits(i);
            if end == i {
                return Err(PeekError::Syntax {
                    offset: end,
                    what: "invalid number",
                });
            }
            i = end;
        }
        self.pos = i;
        Ok(true)
    }

    /// Validates the string whose opening quote is at `pos` and moves past its closing quote.
    /// Returns whether it contains escapes.
    fn string(&mut self) -> Result<bool, PeekError> {
        let b = self.b;
        let mut i = self.pos + 1;
        let (mut escaped, mut bulk) = (false, false);
        loop {
            // SWAR, 8 bytes a step, up to the next special byte; at most 256 bytes while `bulk`.
            let end = if bulk { b.len().min(i + 256) } else { b.len() };
            let mut hit = false;
            while let Some(chunk) = b.get(i..end).and_then(<[u8]>::first_chunk::<8>) {
                let m = special(u64::from_le_bytes(*chunk));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    hit = true;
                    break;
                }
                i += 8;
            }
            if !hit && end < b.len() {
                // A long plain run (base64 image, long paragraph): memchr's wide scan to its end plus
                // one vectorized check beats SWAR. If the check fails, SWAR walks it and reports.
                let k = memchr2(b'"', b'\\', &b[i..]).unwrap_or(b.len() - i);
                bulk = b[i..i + k]
                    .iter()
                    .fold(0, |a, &c| a | u8::from(c < 0x20) | c >> 7)
                    == 0;
                if !bulk {
                    continue;
                }
                i += k;
            }
            let Some(&c) = b.get(i) else {
                return Err(PeekError::Syntax {
                    offset: i,
                    what: "unterminated string",
                });
            };
            i = match c {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    escape(b, i).ok_or(PeekError::Syntax {
                        offset: i,
                        what: "invalid escape",
                    })?
                }
                0..0x20 => {
                    return Err(PeekError::Syntax {
                        offset: i,
                        what: "control character in string",
                    })
                }
                0x80.. => {
                    // Non-ASCII tends to come in runs (CJK, emoji): stay here until it ends.
                    let mut j = i;
                    while b.get(j).is_some_and(|&c| c >= 0x80) {
                        j = utf8_char(b, j).ok_or(PeekError::InvalidUtf8 { offset: j })?;
                    }
                    j
                }
                _ => i + 1,
            };
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;

/// High bit set in each byte of `v` that is '"', '\\', < 0x20 or >= 0x80 (exact for the lowest such
/// byte, which is all we use: borrows only leak upwards from a real hit).
#[inline]
fn special(v: u64) -> u64 {
    let q = v ^ (LO * u64::from(b'"'));
    let s = v ^ (LO * u64::from(b'\\'));
    ((q.wrapping_sub(LO) & !q) | (s.wrapping_sub(LO) & !s) | (v.wrapping_sub(LO * 0x20) & !v) | v)
        & (LO * 0x80)
}

/// Validates the UTF-8 sequence starting at `i` (RFC 3629: no overlongs, surrogates or > U+10FFFF)
/// and returns the offset after it.
#[inline]
fn utf8_char(b: &[u8], i: usize) -> Option<usize> {
    let (len, lo, hi) = match *b.get(i)? {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return None,
    };
    let (first, rest) = b.get(i + 1..i + len)?.split_first()?;
    ((lo..=hi).contains(first) && rest.iter().all(|&c| c & 0xC0 == 0x80)).then_some(i + len)
}

fn classify(depth: usize, key: &[u8]) -> Slot {
    match (depth, key) {
        (1, b"model") => Slot::Model,
        (1, b"stream") => Slot::Stream,
        (1, b"backend") => Slot::Backend,
        (1, b"stream_options") => Slot::Options,
        (2, b"include_usage") => Slot::IncludeUsage,
        _ => Slot::None,
    }
}

/// Validates the escape whose backslash is at `i`; returns the offset after it. A high surrogate
/// must be followed by an escaped low surrogate, and a low surrogate may not stand alone.
fn escape(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 2),
        b'u' => match hex4(b, i + 2)? {
            0xD800..=0xDBFF => match (b.get(i + 6..i + 8)?, hex4(b, i + 8)?) {
                (b"\\u", 0xDC00..=0xDFFF) => Some(i + 12),
                _ => None,
            },
            0xDC00..=0xDFFF => None,
            _ => Some(i + 6),
        },
        _ => None,
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?
        .iter()
        .try_fold(0, |n, &c| Some(n << 4 | char::from(c).to_digit(16)?))
}

/// Decodes validated string content (no quotes). Never fails: anything unexpected becomes U+FFFD.
fn decode(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(k) = memchr(b'\\', raw.get(i..).unwrap_or_default()) {
        s.push_str(&String::from_utf8_lossy(&raw[i..i + k]));
        i += k;
        let (c, len) = match raw.get(i + 1) {
            Some(b'u') => match hex4(raw, i + 2) {
                Some(hi @ 0xD800..=0xDBFF) => match hex4(raw, i + 8) {
                    Some(lo @ 0xDC00..=0xDFFF) => {
                        (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12)
                    }
                    _ => (0xFFFD, 6),
                },
                n => (n.unwrap_or(0xFFFD), 6),
            },
            Some(b'b') => (0x08, 2),
            Some(b'f') => (0x0c, 2),
            Some(b'n') => (0x0a, 2),
            Some(b'r') => (0x0d, 2),
            Some(b't') => (0x09, 2),
            Some(&c) => (u32::from(c), 2),
            None => (0xFFFD, 1),
        };
        s.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
        i += len;
    }
    s.push_str(&String::from_utf8_lossy(raw.get(i..).unwrap_or_default()));
    s
}

#[cfg(test)]
mod tests;
