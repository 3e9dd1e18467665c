//! The OpenAI-facing surface: which method + path is which endpoint, and the endpoints Berry
//! answers itself (model list, health). Proxied endpoints continue in `proxy.rs`.

pub mod admin;
pub mod health;
pub mod peek;

use serde_json::json;

use crate::auth;
use crate::error::{ErrorKind, GatewayError};
use crate::health::snapshot::Snapshot;
use crate::http::head::{Method, RequestHead};
use crate::routes::{Routes, UpstreamPath};

/// A recognised endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Proxy(UpstreamPath),
    Models,
    /// Berry's detailed `/health`.
    Health,
    /// Berry's short `/v1/health`.
    ShortHealth,
    /// `/admin/*` and `/smart-ai/*` views (loopback clients only).
    Admin,
    /// Prometheus exposition.
    Metrics,
}

/// Maps method and path (query ignored) to an endpoint, or a 404/405.
pub fn route(method: Method, target: &[u8]) -> Result<Endpoint, GatewayError> {
    let path = match memchr::memchr(b'?', target) {
        Some(q) => &target[..q],
        None => target,
    };
    let (endpoint, post) = match path {
        b"/v1/chat/completions" => (Endpoint::Proxy(UpstreamPath::ChatCompletions), true),
        b"/v1/completions" => (Endpoint::Proxy(UpstreamPath::Completions), true),
        b"/v1/embeddings" => (Endpoint::Proxy(UpstreamPath::Embeddings), true),
        b"/v1/models" | b"/models" => (Endpoint::Models, false),
        b"/health" => (Endpoint::Health, false),
        b"/v1/health" => (Endpoint::ShortHealth, false),
        b"/metrics" => (Endpoint::Metrics, false),
        _ if admin::parse(path).is_some() => (Endpoint::Admin, false),
        _ => {
            let shown = String::from_utf8_lossy(&path[..path.len().min(200)]).into_owned();
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("unknown path `{shown}`"),
            ));
        }
    };
    match (post, method) {
        (true, Method::Post) | (false, Method::Get | Method::Head) => Ok(endpoint),
        (true, _) => Err(GatewayError::method_not_allowed("POST")),
        (false, _) => Err(GatewayError::method_not_allowed("GET, HEAD")),
    }
}

/// Who is asking for a local endpoint, beyond the request itself.
pub struct LocalCtx<'a> {
    pub snapshot: &'a Snapshot,
    /// The client connected from a loopback address (admin views are served only then).
    pub loopback: bool,
}

/// Answers a local endpoint: status and JSON body.
pub fn local(
    routes: &Routes,
    endpoint: Endpoint,
    head: &RequestHead,
    buf: &[u8],
    ctx: &LocalCtx<'_>,
) -> Result<(u16, Vec<u8>), GatewayError> {
    match endpoint {
        Endpoint::Models => {
            let caller = auth::authenticate(routes, head, buf)?;
            Ok((200, models_body(routes, &caller)))
        }
        Endpoint::Health => Ok(health::detailed(routes, ctx.snapshot)),
        Endpoint::ShortHealth => Ok(health::short(routes, ctx.snapshot)),
        Endpoint::Admin if !ctx.loopback => Err(GatewayError::new(
            ErrorKind::Forbidden,
            "admin views are served only to loopback clients",
        )),
        Endpoint::Admin => match admin::parse(head.path(buf)) {
            Some(view) => admin::render(routes, ctx.snapshot, view),
            None => Err(GatewayError::new(ErrorKind::NotFound, "unknown admin view")),
        },
        Endpoint::Proxy(_) | Endpoint::Metrics => Err(GatewayError::new(
            ErrorKind::NotFound,
            "not a local endpoint",
        )),
    }
}

/// OpenAI's list shape, in the config's stable order, with only what the caller may use.
fn models_body(routes: &Routes, caller: &auth::Caller<'_>) -> Vec<u8> {
    let config = &routes.config;
    let data: Vec<_> = auth::visible_models(config, caller)
        .map(|i| {
            json!({
                "id": config.models[i].name,
                "object": "model",
                "created": routes.loaded_at_unix,
                "owned_by": "berry",
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "object": "list", "data": data })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        assert_eq!(
            route(Method::Post, b"/v1/chat/completions").unwrap(),
            Endpoint::Proxy(UpstreamPath::ChatCompletions)
        );
        assert_eq!(
            route(Method::Post, b"/v1/embeddings?x=1").unwrap(),
            Endpoint::Proxy(UpstreamPath::Embeddings)
        );
        assert_eq!(route(Method::Get, b"/models").unwrap(), Endpoint::Models);
        assert_eq!(route(Method::Head, b"/health").unwrap(), Endpoint::Health);
        assert_eq!(
            route(Method::Get, b"/v1/chat/completions")
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            route(Method::Post, b"/v1/models").unwrap_err().status(),
            405
        );
        assert_eq!(route(Method::Get, b"/nope").unwrap_err().status(), 404);
        assert_eq!(
            route(Method::Post, b"/v1/chat/completions/")
                .unwrap_err()
                .status(),
            404
        );
    }
}
