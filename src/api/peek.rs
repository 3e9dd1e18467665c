//! Request-body peek and rewrite: the only place Berry looks inside a client's JSON body.
//!
//! Owns: one bounded, iterative pass that validates the whole body as RFC 8259 JSON (UTF-8, escapes
//! incl. paired surrogates, number grammar, literals, whitespace, nesting up to `depth_max`, nothing
//! but whitespace after the value) while picking out the top-level `model`, `stream`, `backend` and
//! `stream_options.include_usage`; and the byte splice that swaps in the upstream model and drops
//! `backend`. Every other byte is forwarded exactly as the client sent it.
//!
//! Never: builds a DOM or deserializes the body, recurses (deep nesting cannot overflow the stack),
//! panics on any input, allocates per byte or per token, or looks at nested keys (a `model` inside
//! `messages` or `tools` is content, not routing).
//!
//! Decisions, all so that the gateway and the upstream read the same body the same way:
//! - Keys are matched after decoding escapes (`"mod\u0065l"` is `model`), as upstream parsers do;
//!   matching raw bytes would let a client route on one model while the upstream reads another.
//! - A repeated top-level `model`, `stream`, `backend` or `stream_options` (or `include_usage` inside
//!   it) is [`PeekError::Duplicate`]: parsers disagree on which copy wins.
//! - Lone surrogate escapes (`"\ud800"`) are rejected anywhere, as serde_json does for `String`s.
//! - Numbers are checked against the grammar only: `1e999` passes (serde_json says out of range).
//! - Wrong types and duplicates are reported only once the body is known to be valid JSON, so
//!   malformed JSON always gets a syntax error.
//! - UTF-8 is validated inside the string scan (outside strings only ASCII is legal anyway): plain
//!   ASCII is skipped 8 bytes a step (SWAR), long plain runs with memchr, and multi-byte characters
//!   are checked as they come. Measured faster than `str::from_utf8` on the whole body up front or per
//!   string run (see `benches/peek.rs`).

mod rewrite;

pub use rewrite::{rewrite, usage_edit, write_json_string, UsageEdit};

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
    /// Offset of the top-level `stream_options` value, and of its `include_usage` value.
    pub stream_options_at: Option<usize>,
    pub include_usage_at: Option<usize>,
    /// Offset of the first top-level `messages`, `prompt` or `input` value: where the prompt
    /// starts, for prefix-affinity routing.
    pub prompt_start: Option<usize>,
}

/// A top-level string member found by [`peek`].
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Decoded value (escapes resolved, including `\uXXXX` and surrogate pairs).
    pub value: String,
    /// The string literal including its quotes.
    pub value_range: Range<usize>,
    /// Key, colon, value and exactly one adjoining comma with its whitespace: removing these bytes
    /// leaves valid JSON whether the member is the only, first, middle or last one.
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
            Self::Syntax { offset: at, what } => {
                write!(f, "request body is not valid JSON (at byte {at}: {what})")
            }
            Self::NotObject => f.write_str("request body must be a JSON object"),
            Self::TooDeep { depth_max: n } => {
                write!(f, "request body nests deeper than {n} levels")
            }
            Self::InvalidUtf8 { offset: at } => {
                write!(f, "request body is not valid UTF-8 (at byte {at})")
            }
            Self::WrongType { field, expected } => write!(f, "`{field}` must be {expected}"),
            Self::Duplicate { field } => write!(f, "`{field}` appears more than once"),
            Self::TrailingData { offset: at } => {
                write!(
                    f,
                    "request body has data after the JSON value (at byte {at})"
                )
            }
        }
    }
}

impl std::error::Error for PeekError {}

/// Scans and validates `body`, returning the routing fields. `depth_max` bounds nesting, the
/// top-level object being level 1 (callers use 128; serde_json's default allows 127).
pub fn peek(body: &[u8], depth_max: usize) -> Result<Peek, PeekError> {
    let mut s = Scanner {
        b: body,
        depth_max,
        ..Scanner::default()
    };
    s.skip_ws();
    let top_is_object = match body.get(s.pos) {
        None => return Err(PeekError::Empty),
        Some(&c) => c == b'{',
    };
    loop {
        if !s.value()? {
            continue; // opened a non-empty container; `pos` is at its first value
        }
        // A value just ended: close containers until a ',' asks for the next value.
        loop {
            if s.nest.depth == 0 {
                s.skip_ws();
                return match s.deferred {
                    _ if s.pos != body.len() => Err(PeekError::TrailingData { offset: s.pos }),
                    _ if !top_is_object => Err(PeekError::NotObject),
                    Some(e) => Err(e),
                    None => Ok(s.out),
                };
            }
            let value_end = s.pos;
            s.skip_ws();
            let (c, obj) = (s.byte()?, s.nest.top_is_obj());
            if c == b',' {
                s.pos += 1;
                s.skip_ws();
                s.member_done(value_end, Some(s.pos));
                if obj {
                    s.key()?;
                }
                break;
            }
            if c != if obj { b'}' } else { b']' } {
                let what = if obj {
                    "expected ',' or '}'"
                } else {
                    "expected ',' or ']'"
                };
                return Err(s.syntax(what));
            }
            s.member_done(value_end, None);
            s.nest.pop();
            s.pos += 1;
        }
    }
}

/// Which interesting member the next value belongs to (the discriminant is its `seen` bit).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Slot {
    #[default]
    None,
    Model,
    Stream,
    Backend,
    Options,
    IncludeUsage,
    /// `messages` / `prompt` / `input`: only its start is recorded, duplicates are fine.
    Prompt,
}

const SLOT_NAMES: [&str; 7] = [
    "",
    "model",
    "stream",
    "backend",
    "stream_options",
    "stream_options.include_usage",
    "messages",
];

fn classify(depth: usize, key: &[u8]) -> Slot {
    match (depth, key) {
        (1, b"model") => Slot::Model,
        (1, b"stream") => Slot::Stream,
        (1, b"backend") => Slot::Backend,
        (1, b"stream_options") => Slot::Options,
        (2, b"include_usage") => Slot::IncludeUsage,
        (1, b"messages" | b"prompt" | b"input") => Slot::Prompt,
        _ => Slot::None,
    }
}

/// Open containers, one bit each (1 = object). The first 128 levels live inline so a request never
/// allocates here; deeper nesting (only with a large `depth_max`) spills to the heap.
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

#[derive(Default)]
struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    depth_max: usize,
    nest: Nest,
    out: Peek,
    /// Set by a key we care about, consumed by the value that follows it.
    pending: Slot,
    /// One bit per `Slot` already seen, for `Duplicate`.
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

fn syntax_at(offset: usize, what: &'static str) -> PeekError {
    PeekError::Syntax { offset, what }
}

impl Scanner<'_> {
    fn syntax(&self, what: &'static str) -> PeekError {
        syntax_at(
            self.pos,
            if self.pos >= self.b.len() {
                "unexpected end of input"
            } else {
                what
            },
        )
    }

    fn byte(&self) -> Result<u8, PeekError> {
        self.b.get(self.pos).copied().ok_or_else(|| self.syntax(""))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Parses one value at `pos`. Returns false if it opened a non-empty container (`pos` is then
    /// at the container's first value), true if the value is complete.
    fn value(&mut self) -> Result<bool, PeekError> {
        let c = self.byte()?;
        let slot = std::mem::replace(&mut self.pending, Slot::None);
        let wrong = match slot {
            Slot::Model | Slot::Backend if c == b'"' => {
                let start = self.pos;
                let escaped = self.string()?;
                let raw = &self.b[start + 1..self.pos - 1];
                let value = if escaped {
                    decode(raw)
                } else {
                    utf8(raw).to_owned()
                };
                let (value_range, member_range) = (start..self.pos, self.key_start..self.pos);
                let field = Some(Field {
                    value,
                    value_range,
                    member_range,
                });
                match slot {
                    Slot::Model => self.out.model = field,
                    _ => self.out.backend = field,
                }
                self.open = slot;
                return Ok(true);
            }
            Slot::Model | Slot::Backend => Some("a string"),
            Slot::Stream if matches!(c, b't' | b'f' | b'n') => {
                self.out.stream = self.b[self.pos..].starts_with(b"true");
                None
            }
            Slot::Stream => Some("a boolean"),
            Slot::IncludeUsage => {
                self.out.stream_options_include_usage = self.b[self.pos..].starts_with(b"true");
                self.out.include_usage_at = Some(self.pos);
                None
            }
            Slot::Options => {
                self.out.stream_options_at = Some(self.pos);
                None
            }
            Slot::Prompt => {
                self.out.prompt_start.get_or_insert(self.pos);
                None
            }
            Slot::None => None,
        };
        if let Some(expected) = wrong {
            let field = SLOT_NAMES[slot as usize];
            self.deferred
                .get_or_insert(PeekError::WrongType { field, expected });
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
            let bit = 1u8 << slot as u8;
            if !matches!(slot, Slot::None | Slot::Prompt) && self.seen & bit != 0 {
                let field = SLOT_NAMES[slot as usize];
                self.deferred.get_or_insert(PeekError::Duplicate { field });
            }
            self.seen |= bit;
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

    /// Bookkeeping after a member's value: `next_key` is where the following key starts (after a
    /// ',') or `None` when the container closes. Only top-level object members matter.
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
            // Not last: take the comma after it. Last: the comma before it. Only: no comma.
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
        let some_digits = |i: usize| match digits(i) {
            end if end == i => Err(syntax_at(i, "invalid number")),
            end => Ok(end),
        };
        let mut i = self.pos + usize::from(b.get(self.pos) == Some(&b'-'));
        i = if b.get(i) == Some(&b'0') {
            i + 1
        } else {
            some_digits(i)?
        };
        if b.get(i) == Some(&b'.') {
            i = some_digits(i + 1)?;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i = some_digits(i + 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-'))))?;
        }
        self.pos = i;
        Ok(true)
    }

    /// Validates the string whose opening quote is at `pos` (escapes, control characters, UTF-8)
    /// and moves past its closing quote. Returns whether it contains escapes.
    fn string(&mut self) -> Result<bool, PeekError> {
        let b = self.b;
        let mut i = self.pos + 1;
        let (mut escaped, mut bulk) = (false, true);
        loop {
            // SWAR to the next byte that needs a look; while `bulk`, at most 256 bytes of it.
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
                // A long plain run (base64 image, long paragraph): memchr's wide scan to its end
                // plus one vectorized check is ~2x SWAR. If the check fails, SWAR walks it instead.
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
                return Err(syntax_at(i, "unterminated string"));
            };
            i = match c {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    escape(b, i).ok_or(syntax_at(i, "invalid escape"))?
                }
                0..0x20 => return Err(syntax_at(i, "control character in string")),
                0x80.. => {
                    // Non-ASCII comes in runs (CJK, emoji): stay here until this one ends.
                    let mut j = i;
                    while b.get(j).is_some_and(|&c| c >= 0x80) {
                        j = utf8_char(b, j).ok_or(PeekError::InvalidUtf8 { offset: j })?;
                    }
                    j
                }
                _ => i + 1, // the last few bytes, too few for a SWAR step
            };
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;

/// High bit set in each byte of `v` that is '"', '\\', < 0x20 or >= 0x80. Exact for the lowest such
/// byte, which is all we use (the subtraction borrows only leak upwards from a real hit).
#[inline]
fn special(v: u64) -> u64 {
    let (q, s) = (v ^ (LO * 0x22), v ^ (LO * 0x5c));
    let hits =
        (q.wrapping_sub(LO) & !q) | (s.wrapping_sub(LO) & !s) | (v.wrapping_sub(LO * 0x20) & !v);
    (hits | v) & (LO * 0x80)
}

/// Validates the UTF-8 character at `i` (RFC 3629: no overlongs, surrogates or > U+10FFFF) and
/// returns the offset after it.
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
    let (second, rest) = b.get(i + 1..i + len)?.split_first()?;
    ((lo..=hi).contains(second) && rest.iter().all(|&c| c & 0xC0 == 0x80)).then_some(i + len)
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
    let digits = b.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0, |n, &c| Some(n << 4 | char::from(c).to_digit(16)?))
}

/// `raw` was validated by the scan; the fallback is unreachable and only avoids a panic path.
fn utf8(raw: &[u8]) -> &str {
    std::str::from_utf8(raw).unwrap_or("\u{FFFD}")
}

/// Decodes validated string content (without quotes). Never fails: anything malformed (which the
/// scan has already excluded) becomes U+FFFD.
fn decode(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(k) = memchr(b'\\', raw.get(i..).unwrap_or_default()) {
        s.push_str(utf8(&raw[i..i + k]));
        i += k;
        let (c, len) = match raw.get(i + 1) {
            Some(b'u') => match (hex4(raw, i + 2), hex4(raw, i + 8)) {
                (Some(hi @ 0xD800..=0xDBFF), Some(lo @ 0xDC00..=0xDFFF)) => {
                    (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12)
                }
                (n, _) => (n.unwrap_or(0xFFFD), 6),
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
    s.push_str(utf8(raw.get(i..).unwrap_or_default()));
    s
}

#[cfg(test)]
use rewrite::escaped_len;
#[cfg(test)]
mod tests;
