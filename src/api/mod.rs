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
    /// `/admin/*` and `/smart-ai/*` views (see [`admin_access`]).
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
        // The whole admin namespace: access is checked before the view is looked up, so an
        // outsider cannot learn which views exist from 404 versus 401/403.
        _ if path.starts_with(b"/admin/") || path.starts_with(b"/smart-ai/") => {
            (Endpoint::Admin, false)
        }
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

/// The OpenAI API surface that pages in a browser may call (CORS): `/v1/…` and `/models`,
/// but not Berry's own `/v1/health`, nor admin, metrics or health views, which are for
/// operators and their tools, not for pages. Query ignored.
pub fn is_openai_path(target: &[u8]) -> bool {
    let path = match memchr::memchr(b'?', target) {
        Some(q) => &target[..q],
        None => target,
    };
    path == b"/models" || (path.starts_with(b"/v1/") && path != b"/v1/health")
}

/// Who is asking for a local endpoint, beyond the request itself.
pub struct LocalCtx<'a> {
    pub snapshot: &'a Snapshot,
    /// The client connected from a loopback address (see [`admin_access`]).
    pub loopback: bool,
}

/// A local endpoint's answer.
pub struct LocalAnswer {
    pub status: u16,
    /// JSON.
    pub body: Vec<u8>,
    /// The authenticated user (index into `Config.users`) when the endpoint takes user tokens
    /// (`/v1/models`), so the access log names the caller as it does for proxied requests.
    pub user: Option<usize>,
}

impl From<(u16, Vec<u8>)> for LocalAnswer {
    fn from((status, body): (u16, Vec<u8>)) -> LocalAnswer {
        LocalAnswer {
            status,
            body,
            user: None,
        }
    }
}

/// Answers a local endpoint.
pub fn local(
    routes: &Routes,
    endpoint: Endpoint,
    head: &RequestHead,
    buf: &[u8],
    ctx: &LocalCtx<'_>,
) -> Result<LocalAnswer, GatewayError> {
    match endpoint {
        Endpoint::Models => {
            let caller = auth::authenticate(routes, head, buf)?;
            Ok(LocalAnswer {
                status: 200,
                body: models_body(routes, &caller),
                user: caller.index,
            })
        }
        Endpoint::Health => Ok(health::detailed(routes, ctx.snapshot).into()),
        Endpoint::ShortHealth => Ok(health::short(routes, ctx.snapshot).into()),
        Endpoint::Admin => {
            admin_access(routes, head, buf, ctx.loopback)?;
            match admin::parse(head.path(buf)) {
                Some(view) => admin::render(routes, ctx.snapshot, view).map(LocalAnswer::from),
                None => Err(GatewayError::new(ErrorKind::NotFound, "unknown admin view")),
            }
        }
        Endpoint::Proxy(_) | Endpoint::Metrics => Err(GatewayError::new(
            ErrorKind::NotFound,
            "not a local endpoint",
        )),
    }
}

/// May this request see operator-only views? The admin views ask here; any other view for
/// operators' eyes only (metrics) should ask the same, so there is one rule to audit.
///
/// With `server.admin_token` set: exactly the requests bearing it, from any address, and 401
/// otherwise. Loopback clients need it too: once a token exists, anything local that forwards
/// requests (a sidecar, a reverse proxy on the same host) would otherwise hand the views to
/// whoever can reach it. Without a token: loopback clients only, 403 for the rest.
pub fn admin_access(
    routes: &Routes,
    head: &RequestHead,
    buf: &[u8],
    loopback: bool,
) -> Result<(), GatewayError> {
    let Some(expected) = &routes.config.server.admin_token else {
        return if loopback {
            Ok(())
        } else {
            Err(GatewayError::new(
                ErrorKind::Forbidden,
                "admin views are served only to loopback clients unless `server.admin_token` \
                 is set",
            ))
        };
    };
    let unauthorized = |message: &str| GatewayError::new(ErrorKind::Unauthorized, message);
    let presented = auth::bearer(head, buf)?.ok_or_else(|| {
        unauthorized("missing Authorization header; send `Authorization: Bearer <admin_token>`")
    })?;
    if auth::secret_matches(expected, presented) {
        Ok(())
    } else {
        Err(unauthorized("the provided admin token is invalid"))
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
    use crate::http::head::parse_request;
    use std::sync::Arc;

    const ADMIN: &str = "admin-token-0123456789";

    fn routes(server: &str) -> Routes {
        let toml = format!(
            "[server]\n{server}\n[providers.p]\nname = \"P\"\nbase_url = \"http://127.0.0.1:1\"\n\
             api_key = \"sk-p-0123456789\"\nmodels = [\"m\"]\n[models.m]\nname = \"m\"\n\
             [[models.m.backends]]\nprovider = \"p\"\nmodel = \"m\"\n[users.u]\nname = \"U\"\n\
             token = \"tok-u-0123456789abcdef\"\n"
        );
        let config = crate::config::load_str(&toml, "t.toml").expect("valid");
        Routes::build(Arc::new(config)).expect("routes")
    }

    /// `admin_access` for a GET with these extra header lines, from loopback or not.
    fn access(routes: &Routes, headers: &str, loopback: bool) -> Result<(), u16> {
        let raw = format!("GET /admin/backend-health HTTP/1.1\r\nhost: x\r\n{headers}\r\n");
        let head = parse_request(raw.as_bytes(), 4096, 16).unwrap().unwrap();
        admin_access(routes, &head, raw.as_bytes(), loopback).map_err(|e| {
            assert!(!e.message.contains(ADMIN), "{}", e.message);
            e.status()
        })
    }

    #[test]
    fn admin_access_without_a_token_is_loopback_only() {
        let r = routes("");
        assert_eq!(access(&r, "", true), Ok(()));
        assert_eq!(access(&r, "", false), Err(403));
        // A bearer token changes nothing when none is configured, not even a user's.
        let user = "authorization: Bearer tok-u-0123456789abcdef\r\n";
        assert_eq!(access(&r, user, false), Err(403));
    }

    #[test]
    fn admin_access_with_a_token_needs_it_from_everyone() {
        let r = routes(&format!("admin_token = \"{ADMIN}\""));
        let good = format!("authorization: Bearer {ADMIN}\r\n");
        for loopback in [true, false] {
            assert_eq!(access(&r, &good, loopback), Ok(()));
            assert_eq!(access(&r, "", loopback), Err(401), "missing");
            let wrong = format!("authorization: Bearer {ADMIN}x\r\n");
            assert_eq!(access(&r, &wrong, loopback), Err(401), "wrong");
            let user = "authorization: Bearer tok-u-0123456789abcdef\r\n";
            assert_eq!(access(&r, user, loopback), Err(401), "a user's token");
            let basic = format!("authorization: Basic {ADMIN}\r\n");
            assert_eq!(access(&r, &basic, loopback), Err(401), "malformed");
        }
    }

    /// Outsiders get the same refusal for a view that exists and one that does not.
    #[test]
    fn unknown_admin_views_are_refused_before_they_are_looked_up() {
        let r = routes("");
        let snapshot = Snapshot::default();
        let answer = |path: &str, loopback: bool| {
            let raw = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
            let head = parse_request(raw.as_bytes(), 4096, 16).unwrap().unwrap();
            let endpoint = route(head.method, head.path(raw.as_bytes())).unwrap();
            let ctx = LocalCtx {
                snapshot: &snapshot,
                loopback,
            };
            local(&r, endpoint, &head, raw.as_bytes(), &ctx).map(|a| a.status)
        };
        let status = |res: Result<u16, GatewayError>| res.unwrap_or_else(|e| e.status());
        assert_eq!(status(answer("/admin/backend-health", false)), 403);
        assert_eq!(status(answer("/admin/secret-view", false)), 403);
        assert_eq!(status(answer("/smart-ai/nope", false)), 403);
        assert_eq!(status(answer("/admin/backend-health", true)), 200);
        assert_eq!(status(answer("/admin/secret-view", true)), 404);
    }

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
        for path in [
            "/v1/chat/completions",
            "/v1/models?x",
            "/models",
            "/v1/nope",
        ] {
            assert!(is_openai_path(path.as_bytes()), "{path}");
        }
        for path in [
            "/v1/health",
            "/health",
            "/metrics",
            "/admin/x",
            "/v1",
            "/models/x",
        ] {
            assert!(!is_openai_path(path.as_bytes()), "{path}");
        }
        assert_eq!(
            route(Method::Post, b"/v1/chat/completions/")
                .unwrap_err()
                .status(),
            404
        );
    }
}
