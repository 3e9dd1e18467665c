//! The generator's HTTP/1.1 client: prebuilt requests, keep-alive connections, and one
//! request/response exchange read with the project's own codec (`http::head::parse_response`,
//! `ChunkedDecoder`, `last_event_end`). For SSE it timestamps every event as it arrives.

use std::net::SocketAddr;
use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::scenario::{RequestSpec, Scenario};
use super::stats::ErrorKind;
use crate::http::body::ChunkedDecoder;
use crate::http::head::{parse_response, Method, ResponseBody};
use crate::http::sse::last_event_end;

const HEAD_BYTES_MAX: usize = 64 * 1024;
const TRAILER_BYTES_MAX: usize = 16 * 1024;

/// One kind of request, serialised once.
pub struct Template {
    pub bytes: Vec<u8>,
    pub stream: bool,
    /// Cumulative weight, for picking.
    pub until: f64,
}

/// All request kinds of a scenario, ready to send to `host`.
pub struct Requests {
    pub templates: Vec<Template>,
    total: f64,
}

impl Requests {
    pub fn build(s: &Scenario, host: &str, token: Option<&str>) -> Requests {
        let mut specs: Vec<(RequestSpec, f64)> = Vec::new();
        for r in &s.requests {
            let streamable = r.path.ends_with("/completions");
            match s.stream_share {
                Some(share) if streamable => {
                    for (stream, w) in [(true, share), (false, 1.0 - share)] {
                        if w > 0.0 {
                            let spec = RequestSpec {
                                stream,
                                ..r.clone()
                            };
                            specs.push((spec, r.weight * w));
                        }
                    }
                }
                _ => specs.push((r.clone(), r.weight)),
            }
        }
        let mut total = 0.0;
        let templates = specs
            .iter()
            .map(|(spec, w)| {
                total += w;
                Template {
                    bytes: encode(spec, &s.model, host, token),
                    stream: spec.stream,
                    until: total,
                }
            })
            .collect();
        Requests { templates, total }
    }

    /// Index of a template drawn by weight.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let x = rng.f64() * self.total;
        self.templates
            .iter()
            .position(|t| x < t.until)
            .unwrap_or(self.templates.len() - 1)
    }
}

fn encode(r: &RequestSpec, model: &str, host: &str, token: Option<&str>) -> Vec<u8> {
    let prompt: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(r.prompt_bytes)
        .collect();
    let model = serde_json::to_string(model).unwrap_or_default();
    let prompt = serde_json::to_string(&prompt).unwrap_or_default();
    let body = if r.path.ends_with("/chat/completions") {
        format!(
            r#"{{"model":{model},"messages":[{{"role":"user","content":{prompt}}}],"max_tokens":{},"stream":{}}}"#,
            r.max_tokens, r.stream
        )
    } else if r.path.ends_with("/completions") {
        format!(
            r#"{{"model":{model},"prompt":{prompt},"max_tokens":{},"stream":{}}}"#,
            r.max_tokens, r.stream
        )
    } else if r.path.ends_with("/embeddings") {
        format!(r#"{{"model":{model},"input":{prompt}}}"#)
    } else {
        String::new()
    };
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut out = format!("{method} {} HTTP/1.1\r\nhost: {host}\r\n", r.path);
    if let Some(t) = token {
        out.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// A keep-alive connection with its buffers.
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_addr(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(Conn {
            s,
            buf: Vec::with_capacity(8 * 1024),
            out: Vec::with_capacity(1024),
        })
    }

    async fn read(&mut self) -> bool {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let b = std::mem::take(&mut self.buf);
        let len = b.len();
        let (res, slice) = self.s.read(b.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        matches!(res, Ok(n) if n > 0)
    }
}

/// How one exchange went.
#[derive(Debug, Default)]
pub struct Exchange {
    pub error: Option<ErrorKind>,
    pub status: u16,
    pub sent: Option<Instant>,
    /// Streams: arrival of the first event.
    pub first_event: Option<Instant>,
    /// Streams: microseconds between consecutive events.
    pub gaps: Vec<u32>,
    pub frames: u32,
    pub bytes: u64,
    pub keep_alive: bool,
}

/// Sends `t` on `c` and reads the whole response. The caller bounds it with a timeout.
pub async fn exchange(c: &mut Conn, t: &Template) -> Exchange {
    let mut x = Exchange::default();
    c.out.clear();
    c.out.extend_from_slice(&t.bytes);
    let data = std::mem::take(&mut c.out);
    x.sent = Some(Instant::now());
    let (res, data) = c.s.write_all(data).await;
    c.out = data;
    if res.is_err() {
        x.error = Some(ErrorKind::Io);
        return x;
    }
    let head = loop {
        match parse_response(&c.buf, Method::Post, HEAD_BYTES_MAX, 128) {
            Ok(Some(h)) if h.status >= 200 => break h,
            Ok(Some(h)) => {
                c.buf.drain(..h.head_len); // 1xx: the real head follows
            }
            Ok(None) => {
                if !c.read().await {
                    x.error = Some(ErrorKind::Io);
                    return x;
                }
            }
            Err(_) => {
                x.error = Some(ErrorKind::Malformed);
                return x;
            }
        }
    };
    x.status = head.status;
    let sse = head
        .header(&c.buf, "content-type")
        .is_some_and(|v| v.starts_with(b"text/event-stream"));
    let start = head.head_len;
    x.keep_alive = head.keep_alive;
    let body_ok = match head.body {
        ResponseBody::None => Ok(0),
        ResponseBody::Length(n) => read_length(c, start, n as usize).await,
        ResponseBody::Chunked => read_chunked(c, start, sse, &mut x).await,
        ResponseBody::UntilClose => {
            while c.read().await {}
            x.keep_alive = false;
            Ok(c.buf.len())
        }
    };
    let end = match body_ok {
        Ok(end) => end,
        Err(kind) => {
            x.error = Some(kind);
            x.keep_alive = false;
            return x;
        }
    };
    x.bytes += end as u64;
    let body = &c.buf[start.min(end)..end];
    x.error = match head.status {
        200..=299 if !sse && !body.is_empty() && !looks_like_json(body) => {
            Some(ErrorKind::Malformed)
        }
        200..=299 => x.error,
        429 => Some(ErrorKind::Status429),
        400..=499 => Some(ErrorKind::Status4xx),
        _ => Some(ErrorKind::Status5xx),
    };
    c.buf.drain(..end);
    // Bytes after the response mean the server and we disagree on framing.
    x.keep_alive &= c.buf.is_empty();
    x
}

fn looks_like_json(body: &[u8]) -> bool {
    let t = body.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

/// Returns the end offset of the body in `c.buf`.
async fn read_length(c: &mut Conn, start: usize, n: usize) -> Result<usize, ErrorKind> {
    let end = start + n;
    while c.buf.len() < end {
        if !c.read().await {
            return Err(ErrorKind::Truncated);
        }
    }
    Ok(end)
}

/// Decodes a chunked body; for SSE, counts and timestamps events as they arrive. Returns the
/// end offset of the message; the decoded payload is not kept (only SSE events are looked at).
async fn read_chunked(
    c: &mut Conn,
    start: usize,
    sse: bool,
    x: &mut Exchange,
) -> Result<usize, ErrorKind> {
    let mut dec = ChunkedDecoder::new(TRAILER_BYTES_MAX);
    let mut pos = start;
    let mut events: Vec<u8> = Vec::new();
    let mut state = SseState::default();
    loop {
        let used = dec
            .decode(&c.buf[pos..], &mut |d| {
                if sse {
                    events.extend_from_slice(d)
                }
            })
            .map_err(|_| ErrorKind::Malformed)?;
        pos += used;
        if sse {
            if let Some(end) = last_event_end(&events) {
                state.take(&events[..end], Instant::now(), x);
                events.drain(..end);
            }
        }
        if dec.is_done() {
            break;
        }
        // Nothing of the body is needed once decoded: keep the buffer small on long streams.
        c.buf.drain(start..pos);
        x.bytes += (pos - start) as u64;
        pos = start;
        if !c.read().await {
            return Err(ErrorKind::Truncated);
        }
    }
    if sse {
        if state.malformed || state.error_event {
            return Err(ErrorKind::Malformed);
        }
        if !state.done {
            return Err(ErrorKind::Truncated);
        }
    }
    Ok(pos)
}

#[derive(Default)]
struct SseState {
    last: Option<Instant>,
    done: bool,
    malformed: bool,
    error_event: bool,
}

impl SseState {
    /// Looks at complete events that arrived together at `now`.
    fn take(&mut self, events: &[u8], now: Instant, x: &mut Exchange) {
        for line in events.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b"event:") && line[6..].trim_ascii() == b"error" {
                self.error_event = true;
            }
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            if !looks_like_json(data) {
                self.malformed = true;
            }
            x.frames += 1;
            match self.last {
                None => x.first_event = Some(now),
                Some(prev) => {
                    let us = now.duration_since(prev).as_micros();
                    x.gaps.push(us.min(u32::MAX as u128) as u32);
                }
            }
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_follow_weights_and_stream_share() {
        let mut s: Scenario = toml::from_str(
            r#"
            stream_share = 0.25
            [[requests]]
            weight = 3
            [[requests]]
            weight = 1
            path = "/v1/embeddings"
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        let r = Requests::build(&s, "127.0.0.1:1", Some("tok"));
        assert_eq!(r.templates.len(), 3);
        let mut rng = fastrand::Rng::with_seed(5);
        let streams = (0..40_000)
            .filter(|_| r.templates[r.pick(&mut rng)].stream)
            .count();
        // 3/4 of the weight is chat, a quarter of that streams: 3/16.
        assert!((7_000..8_000).contains(&streams), "{streams}");
        let text = String::from_utf8(r.templates[0].bytes.clone()).unwrap();
        assert!(text.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"));
        assert!(text.contains("authorization: Bearer tok\r\n"));
        assert!(text.contains(r#""stream":true"#));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["model"], "bench-model");
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }

    /// loadtest/README.md compares this scenario with wrk running loadtest/post.lua; the
    /// comparison only holds if both send the same body.
    #[test]
    fn wrk_script_posts_the_wrk_parity_body() {
        let mut s: Scenario =
            toml::from_str(include_str!("../../loadtest/scenarios/wrk-parity.toml")).unwrap();
        s.validate().unwrap();
        let r = Requests::build(&s, "127.0.0.1:1", None);
        assert_eq!(r.templates.len(), 1);
        let text = String::from_utf8(r.templates[0].bytes.clone()).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let script = include_str!("../../loadtest/post.lua");
        assert!(
            script.contains(&format!("\nwrk.body = '{body}'\n")),
            "loadtest/post.lua must send {body}"
        );
        assert!(script.contains("\nwrk.method = \"POST\"\n"));
    }

    #[test]
    fn sse_events_are_counted_and_checked() {
        let mut x = Exchange::default();
        let mut st = SseState::default();
        let t0 = Instant::now();
        st.take(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n", t0, &mut x);
        st.take(
            b"data: {\"c\":3}\n\ndata: [DONE]\n\n",
            t0 + std::time::Duration::from_millis(30),
            &mut x,
        );
        assert_eq!(x.frames, 3);
        assert_eq!(x.first_event, Some(t0));
        assert_eq!(x.gaps, vec![0, 30_000]);
        assert!(st.done && !st.malformed);
        st.take(b"data: {broken\n\n", t0, &mut x);
        assert!(st.malformed);
        st.take(b"event: error\ndata: {}\n\n", t0, &mut x);
        assert!(st.error_event);
    }
}
