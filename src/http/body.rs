//! Body framing: where a message body ends. `ChunkedDecoder` tracks chunked framing incrementally
//! (RFC 9112 §7.1) and `LengthBody` counts down a Content-Length. Both only *find* the end; the
//! proxy forwards the raw bytes it was handed, so neither ever copies or buffers payload.

/// Longest chunk-size line accepted, extensions included, CRLF excluded. Public so config
/// validation and docs can cite it; extensions are never used by LLM backends, so 1 KiB is
/// generous.
pub const CHUNK_SIZE_LINE_BYTES_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// No hex digits, or a byte that cannot follow a chunk size.
    BadSize,
    /// Chunk size does not fit in u64.
    SizeOverflow,
    /// Chunk-size line longer than `CHUNK_SIZE_LINE_BYTES_MAX`.
    LineTooLong,
    /// A required CRLF was something else (after the size line, after data, ending trailers).
    BadTerminator,
    /// Trailer field lines exceed `trailer_bytes_max`.
    TrailersTooLarge,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size too large to represent",
            ChunkError::LineTooLong => "chunk-size line too long",
            ChunkError::BadTerminator => "missing CRLF",
            ChunkError::TrailersTooLarge => "trailer fields too large",
        })
    }
}

/// Incremental chunked-transfer decoder. Feeds payload slices to `on_data` and reports how many
/// input bytes belonged to this message: it stops exactly after the last-chunk and trailers, so the
/// rest of `input` is the next message's.
///
/// Line endings must be CRLF. RFC 9112 lets a recipient accept a bare LF, but we forward the raw
/// bytes, and a framing disagreement with the next hop is how request smuggling starts, so the
/// strict reading is the safe one.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current chunk-size line, bounded by `CHUNK_SIZE_LINE_BYTES_MAX`.
    line_bytes: usize,
    /// Bytes of trailer field lines so far (the final empty line is not counted), bounded by
    /// `trailer_bytes_max`.
    trailer_bytes: usize,
    trailer_bytes_max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` is false until the first one.
    Size {
        size: u64,
        digits: bool,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        size: u64,
    },
    /// After `;`: extensions are not interpreted, only skipped up to CR.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Start of a trailer field line, or of the empty line that ends the message.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
    /// A framing error was returned; every later call repeats it.
    Failed(ChunkError),
}

impl ChunkedDecoder {
    pub fn new(trailer_bytes_max: usize) -> Self {
        ChunkedDecoder {
            state: State::Size {
                size: 0,
                digits: false,
            },
            line_bytes: 0,
            trailer_bytes: 0,
            trailer_bytes_max,
        }
    }

    /// Consumes as much of `input` as belongs to this message and returns that count. Payload bytes
    /// go to `on_data` in order, without framing. After an error the decoder stays failed.
    pub fn decode(
        &mut self,
        input: &[u8],
        on_data: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(ref e) => return Err(e.clone()),
                State::Data { remaining } => {
                    // Whole runs of payload are handed over at once; only framing is walked byte by
                    // byte.
                    let available = input.len() - pos;
                    let n = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    on_data(&input[pos..pos + n]);
                    pos += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                _ => {
                    let byte = input[pos];
                    pos += 1;
                    if let Err(e) = self.step(byte) {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
            }
        }
        match self.state {
            State::Failed(ref e) => Err(e.clone()),
            _ => Ok(pos),
        }
    }

    /// The last-chunk and trailers have been consumed; further input is not ours.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes the current chunk has declared and not yet delivered (0 between chunks):
    /// lets a reader refuse an oversized chunk as soon as its size line arrives.
    pub fn declared_pending(&self) -> u64 {
        match self.state {
            State::Data { remaining } => remaining,
            _ => 0,
        }
    }

    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { size, digits } => {
                self.count_line_byte(byte)?;
                match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if size > u64::MAX >> 4 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        State::Size {
                            size: (size << 4) | u64::from(hex_value(byte)),
                            digits: true,
                        }
                    }
                    _ if !digits => return Err(ChunkError::BadSize),
                    b' ' | b'\t' => State::SizeSpace { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkError::BadTerminator),
                    _ => return Err(ChunkError::BadSize),
                }
            }
            State::SizeSpace { size } => {
                self.count_line_byte(byte)?;
                match byte {
                    b' ' | b'\t' => State::SizeSpace { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkError::BadTerminator),
                    _ => return Err(ChunkError::BadSize),
                }
            }
            State::Extension { size } => {
                self.count_line_byte(byte)?;
                match byte {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkError::BadTerminator),
                    _ => State::Extension { size },
                }
            }
            State::SizeLf { size } => match byte {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => State::Data { remaining: size },
                _ => return Err(ChunkError::BadTerminator),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::BadTerminator),
            },
            State::DataLf => match byte {
                b'\n' => {
                    self.line_bytes = 0;
                    State::Size {
                        size: 0,
                        digits: false,
                    }
                }
                _ => return Err(ChunkError::BadTerminator),
            },
            State::TrailerStart => match byte {
                b'\r' => State::EndLf,
                b'\n' => return Err(ChunkError::BadTerminator),
                _ => {
                    self.count_trailer_byte()?;
                    State::TrailerLine
                }
            },
            State::TrailerLine => {
                self.count_trailer_byte()?;
                match byte {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError::BadTerminator),
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLf => {
                self.count_trailer_byte()?;
                match byte {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkError::BadTerminator),
                }
            }
            State::EndLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkError::BadTerminator),
            },
            // `decode` handles these without calling `step`; staying put keeps this total.
            ref other @ (State::Data { .. } | State::Done | State::Failed(_)) => other.clone(),
        };
        Ok(())
    }

    fn count_line_byte(&mut self, byte: u8) -> Result<(), ChunkError> {
        if byte == b'\r' {
            return Ok(());
        }
        self.line_bytes += 1;
        if self.line_bytes > CHUNK_SIZE_LINE_BYTES_MAX {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.trailer_bytes_max {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

/// Countdown for a Content-Length body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthBody {
    remaining: u64,
}

impl LengthBody {
    pub fn new(length: u64) -> Self {
        LengthBody { remaining: length }
    }

    /// Given `available` buffered bytes, returns how many belong to this body and counts them as
    /// consumed.
    pub fn take(&mut self, available: usize) -> usize {
        let n = usize::try_from(self.remaining).map_or(available, |r| r.min(available));
        self.remaining -= n as u64;
        n
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

#[cfg(test)]
mod tests;
