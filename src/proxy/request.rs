//! Building what goes upstream from what the client sent: the request id, the forwarded
//! headers, the rewritten body, and the prefix-affinity key.

use crate::api::peek;
use crate::config::{Config, Model};
use crate::error::{clip, ErrorKind, GatewayError};
use crate::http::encode::write_content_length;
use crate::http::head::{connection_tokens, is_hop_by_hop, RequestHead};
use crate::routes::Routes;
use crate::shard::Shard;

use super::Prepared;

/// Longest client-supplied `x-request-id` that is kept; longer ones are replaced.
const REQUEST_ID_BYTES_MAX: usize = 128;

/// Bytes of the prompt hashed for prefix-affinity routing: enough to cover a shared system
/// prompt, few enough to hash in well under a microsecond.
const PREFIX_AFFINITY_BYTES: usize = 2048;

/// The prefix-affinity key: a hash of the first bytes of the prompt (`messages`, `prompt` or
/// `input`), only for models that route by it.
pub(super) fn prefix_key(model: &Model, p: &Prepared<'_>) -> Option<u64> {
    if model.strategy != crate::config::Strategy::PrefixAffinity {
        return None;
    }
    let start = p.peek.prompt_start?;
    let end = p.body.len().min(start + PREFIX_AFFINITY_BYTES);
    Some(crate::balance::prefix_affinity::key_of(&p.body[start..end]))
}

/// Renders the upstream request: request line, provider headers, the client's end-to-end
/// headers, Berry's request id, and the body with `model` rewritten and `backend` dropped.
pub(super) fn build_request(
    req: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    route: &crate::routes::ProviderRoute,
    p: &Prepared<'_>,
    upstream_model: &str,
) {
    scratch.clear();
    peek::rewrite(
        &p.body,
        &p.peek,
        upstream_model,
        true,
        p.usage_edit.clone(),
        scratch,
    );
    req.clear();
    req.extend_from_slice(&route.request_lines[p.path as usize]);
    req.extend_from_slice(&route.fixed_headers);
    req.extend_from_slice(&p.forwarded);
    req.extend_from_slice(b"x-request-id: ");
    req.extend_from_slice(p.request_id.as_bytes());
    req.extend_from_slice(b"\r\n");
    write_content_length(req, scratch.len() as u64);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(scratch);
}

/// Client headers that travel upstream: end-to-end ones, minus those Berry owns (framing,
/// request id, routing overrides), every credential or account header a client could use to
/// act as someone else upstream (a bad one would also make the upstream answer 401 and open
/// the backend's circuit for everyone), any header a provider sets itself, and
/// `accept-encoding` (Berry reads the bodies it relays: SSE framing, `[DONE]`, usage).
pub(super) fn forwarded_headers(
    head: &RequestHead,
    buf: &[u8],
    routes: &Routes,
    mut out: Vec<u8>,
) -> Vec<u8> {
    const OWNED: [&[u8]; 15] = [
        b"host",
        b"authorization",
        b"content-length",
        b"expect",
        b"x-request-id",
        b"x-berry-backend",
        b"accept-encoding",
        b"cookie",
        b"api-key",
        b"x-api-key",
        b"x-goog-api-key",
        b"openai-organization",
        b"openai-project",
        b"anthropic-version",
        b"anthropic-beta",
    ];
    let listed = head.header(buf, "connection");
    out.clear();
    let mut has_content_type = false;
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        if is_hop_by_hop(name)
            || OWNED.iter().any(|o| o.eq_ignore_ascii_case(name))
            || routes
                .provider_header_names
                .iter()
                .any(|o| o.eq_ignore_ascii_case(name))
            || listed.is_some_and(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case(name)))
        {
            continue;
        }
        has_content_type |= name.eq_ignore_ascii_case(b"content-type");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&buf[h.value.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    if !has_content_type {
        out.extend_from_slice(b"content-type: application/json\r\n");
    }
    out
}

/// The client's `x-request-id` when it is short printable ASCII, else a fresh random one.
pub fn request_id(shard: &Shard, head: &RequestHead, buf: &[u8]) -> String {
    if let Some(v) = head.header(buf, "x-request-id") {
        if !v.is_empty()
            && v.len() <= REQUEST_ID_BYTES_MAX
            && v.iter().all(|b| (0x21..0x7f).contains(b))
        {
            return v.iter().map(|&b| char::from(b)).collect();
        }
    }
    // 32 lowercase hex digits of a random u128, without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = shard.rng.borrow_mut().u128(..);
    (0..32)
        .map(|i| char::from(HEX[((n >> ((31 - i) * 4)) & 0xf) as usize]))
        .collect()
}

/// The provider a forced-backend request names, if it serves this model.
pub(super) fn forced_provider(
    config: &Config,
    model: &Model,
    id: &str,
) -> Result<usize, GatewayError> {
    config
        .provider_index(id)
        .filter(|&p| model.backends.iter().any(|b| b.provider == p))
        .ok_or_else(|| {
            GatewayError::new(
                ErrorKind::BadRequest,
                format!(
                    "backend `{}` does not serve model `{}`",
                    clip(id),
                    model.name
                ),
            )
        })
}
