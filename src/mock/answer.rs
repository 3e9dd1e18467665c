//! Writing the mock's answers: JSON bodies with `usage`, paced SSE streams, error envelopes,
//! and the stream faults (stall, pause, cut, malformed event, no `[DONE]`).

use std::fmt::Write as _;
use std::time::Duration;

use monoio::net::TcpStream;

use super::io::{hold, write};
use super::plan::{Fault, Outcome};
use crate::http::encode::{
    write_chunk, write_content_length, write_header, write_status_line, LAST_CHUNK,
};

/// Everything that shapes one answer, after CLI defaults and `x-mock-*` overrides.
pub struct Shape {
    pub path: Vec<u8>,
    pub stream: bool,
    /// The request asked for `stream_options.include_usage`: end the stream with a usage
    /// chunk, as OpenAI does (and only then).
    pub include_usage: bool,
    pub model: String,
    pub name: String,
    pub seq: u64,
    pub ttft: Duration,
    pub tokens: u32,
    pub token_delay: Duration,
    pub token_bytes: usize,
    pub response_bytes: usize,
    pub fault: Option<Fault>,
}

/// Text of token `i`, padded with `x` to `bytes` when that is longer.
fn token_text(i: u32, bytes: usize, out: &mut String) {
    let start = out.len();
    let _ = write!(out, "tok{i} ");
    while out.len() - start < bytes {
        out.push('x');
    }
}

/// Writes the answer; returns whether the connection may carry another request, and what the
/// stats should count.
pub async fn answer(s: &mut TcpStream, out: &mut Vec<u8>, sh: &Shape) -> (bool, Outcome) {
    let chat = match sh.path.as_slice() {
        b"/v1/chat/completions" => true,
        b"/v1/completions" => false,
        b"/v1/embeddings" => return json(s, out, sh, &embedding(sh)).await,
        b"/v1/models" => {
            let body = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#;
            return json(s, out, sh, body).await;
        }
        _ => {
            error(out, 404, "unknown path", 0);
            return (write(s, out).await, Outcome::NotFound);
        }
    };
    if sh.stream {
        return stream(s, out, sh, chat).await;
    }
    let mut text = format!("Hello from {}.", sh.name);
    while text.len() < sh.response_bytes {
        text.push('x');
    }
    let n = sh.seq;
    let body = if chat {
        format!(
            r#"{{"id":"chatcmpl-{n}","object":"chat.completion","created":1700000000,"model":"{}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":9,"completion_tokens":{t},"total_tokens":{}}}}}"#,
            sh.model,
            9 + sh.tokens,
            t = sh.tokens,
        )
    } else {
        format!(
            r#"{{"id":"cmpl-{n}","object":"text_completion","created":1700000000,"model":"{}","choices":[{{"index":0,"text":"{text}","finish_reason":"stop"}}],"usage":{{"prompt_tokens":9,"completion_tokens":{t},"total_tokens":{}}}}}"#,
            sh.model,
            9 + sh.tokens,
            t = sh.tokens,
        )
    };
    json(s, out, sh, &body).await
}

fn embedding(sh: &Shape) -> String {
    format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}}],"model":"{}","usage":{{"prompt_tokens":3,"total_tokens":3}}}}"#,
        sh.model
    )
}

/// A JSON answer with Content-Length, or its fault: cut halfway, malformed, head then silence.
async fn json(s: &mut TcpStream, out: &mut Vec<u8>, sh: &Shape, body: &str) -> (bool, Outcome) {
    write_status_line(out, 200, b"");
    write_header(out, b"content-type", b"application/json");
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    match sh.fault {
        Some(Fault::Cut { .. }) => {
            out.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
            let _ = write(s, out).await;
            (false, Outcome::Cut)
        }
        Some(Fault::Malformed { .. }) => {
            // Same length, so the framing holds and only the JSON is broken.
            out.extend(body.bytes().map(|b| if b == b'"' { b'\'' } else { b }));
            (write(s, out).await, Outcome::Malformed)
        }
        Some(Fault::Stall { .. }) => {
            let _ = write(s, out).await;
            hold(s).await;
            (false, Outcome::Stall)
        }
        Some(Fault::Pause { ms, .. }) => {
            if !write(s, out).await {
                return (false, Outcome::ClientGone);
            }
            monoio::time::sleep(Duration::from_millis(ms.into())).await;
            out.extend_from_slice(body.as_bytes());
            (write(s, out).await, Outcome::Pause)
        }
        _ => {
            out.extend_from_slice(body.as_bytes());
            let ok = write(s, out).await;
            (
                ok,
                if ok {
                    Outcome::Json
                } else {
                    Outcome::ClientGone
                },
            )
        }
    }
}

/// A paced SSE stream: head, time to first token, `tokens` content events `token_delay` apart,
/// then a `finish_reason` event, a `usage` event when the request asked for one, and
/// `data: [DONE]`.
async fn stream(s: &mut TcpStream, out: &mut Vec<u8>, sh: &Shape, chat: bool) -> (bool, Outcome) {
    write_status_line(out, 200, b"");
    write_header(out, b"content-type", b"text/event-stream");
    write_header(out, b"cache-control", b"no-cache");
    write_header(out, b"transfer-encoding", b"chunked");
    out.extend_from_slice(b"\r\n");
    if !sh.ttft.is_zero() {
        if !write(s, out).await {
            return (false, Outcome::ClientGone);
        }
        monoio::time::sleep(sh.ttft).await;
    }
    let n = sh.seq;
    let tokens = sh.tokens.max(1);
    let mut ev = String::with_capacity(256 + sh.token_bytes);
    let mut text = String::with_capacity(16 + sh.token_bytes);
    let mut outcome = Outcome::Stream;
    for i in 0..tokens {
        match sh.fault {
            Some(Fault::Cut { after }) if i == after => {
                let _ = write(s, out).await;
                return (false, Outcome::Cut);
            }
            Some(Fault::Stall { after }) if i == after => {
                let _ = write(s, out).await;
                hold(s).await;
                return (false, Outcome::Stall);
            }
            Some(Fault::Pause { after, ms }) if i == after => {
                monoio::time::sleep(Duration::from_millis(ms.into())).await;
                outcome = Outcome::Pause;
            }
            _ => {}
        }
        if i > 0 && !sh.token_delay.is_zero() {
            monoio::time::sleep(sh.token_delay).await;
        }
        ev.clear();
        text.clear();
        token_text(i, sh.token_bytes, &mut text);
        if matches!(sh.fault, Some(Fault::Malformed { after }) if i == after) {
            let _ = write!(
                ev,
                "data: {{\"id\":\"chatcmpl-{n}\",\"choices\":[{{\"delta\":\n\n"
            );
            outcome = Outcome::Malformed;
        } else if chat {
            let _ = write!(
                ev,
                "data: {{\"id\":\"chatcmpl-{n}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n",
                sh.model
            );
        } else {
            let _ = write!(
                ev,
                "data: {{\"id\":\"cmpl-{n}\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"finish_reason\":null}}]}}\n\n",
                sh.model
            );
        }
        write_chunk(out, ev.as_bytes());
        if !write(s, out).await {
            return (false, Outcome::ClientGone);
        }
    }
    if !sh.token_delay.is_zero() {
        monoio::time::sleep(sh.token_delay).await;
    }
    ev.clear();
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    // As OpenAI: the last content chunk carries `finish_reason`; a stream that asked for usage
    // then gets one more chunk with empty `choices` and the `usage`.
    let _ = write!(
        ev,
        "data: {{\"id\":\"chatcmpl-{n}\",\"object\":\"{object}\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n",
        sh.model,
    );
    if sh.include_usage {
        let _ = write!(
            ev,
            "data: {{\"id\":\"chatcmpl-{n}\",\"object\":\"{object}\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":{tokens},\"total_tokens\":{}}}}}\n\n",
            sh.model,
            9 + tokens
        );
    }
    write_chunk(out, ev.as_bytes());
    if sh.fault == Some(Fault::NoDone) {
        outcome = Outcome::NoDone;
    } else {
        write_chunk(out, b"data: [DONE]\n\n");
    }
    out.extend_from_slice(LAST_CHUNK);
    let ok = write(s, out).await;
    (ok, if ok { outcome } else { Outcome::ClientGone })
}

/// An OpenAI error envelope; 429 and 503 carry `Retry-After`.
pub fn error(out: &mut Vec<u8>, status: u16, message: &str, retry_after_s: u32) {
    let body =
        format!(r#"{{"error":{{"message":"{message}","type":"mock_error","code":{status}}}}}"#);
    write_status_line(out, status, b"");
    write_header(out, b"content-type", b"application/json");
    if status == 429 || status == 503 {
        write_header(
            out,
            b"retry-after",
            retry_after_s.max(1).to_string().as_bytes(),
        );
    }
    write_content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}
