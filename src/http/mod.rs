//! Hand-rolled HTTP/1.1 codec shared by the client-facing server and the upstream client. We own it
//! because monoio-http buffers streamed bodies and ignores `Expect: 100-continue` (monoio notes §3,
//! §6). Everything here is pure: bytes in, decisions and byte ranges out. It must never do I/O, own
//! a socket, allocate per byte, or panic on input from the network.
//!
//! - `head`: parse request/response heads, decide framing and keep-alive, hop-by-hop rules.
//! - `body`: find where a body ends (chunked state machine, Content-Length countdown).
//! - `encode`: write status lines, headers and chunk frames.
//! - `sse`: find server-sent-event boundaries in a streamed body.

pub mod body;
pub mod encode;
pub mod head;
pub mod sse;

pub use body::{ChunkError, ChunkedDecoder, LengthBody, CHUNK_SIZE_LINE_BYTES_MAX};
pub use encode::{
    canonical_reason, write_chunk, write_chunk_header, write_content_length, write_decimal,
    write_header, write_status_line, CRLF, LAST_CHUNK,
};
pub use head::{
    connection_tokens, is_hop_by_hop, list_elements, parse_request, parse_request_into,
    parse_response, parse_response_into, trim_ows, HeadError, HeaderRange, Method, RequestBody,
    RequestHead, ResponseBody, ResponseHead, HEADERS_COUNT_CAP,
};
pub use sse::last_event_end;

#[cfg(test)]
mod no_panic;
