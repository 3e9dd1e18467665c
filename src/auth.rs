//! Who is calling: `Authorization: Bearer <token>` against `[users.*]`.
//!
//! Never logs or echoes a token. Lookup is by SHA-256 digest plus a constant-time compare (see
//! [`Routes::user_by_token`]), so response timing does not reveal how much of a guess matched.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Secret, User};
use crate::error::{ErrorKind, GatewayError};
use crate::http::head::RequestHead;
use crate::routes::Routes;

/// The caller of a request. `None` inside means anonymous mode (no users configured).
pub struct Caller<'a> {
    pub user: Option<&'a User>,
    /// Index of `user` in `Config.users` (metrics and the access log name users by it).
    pub index: Option<usize>,
}

impl Caller<'_> {
    /// May this caller use the model at `index` of `Config.models`?
    pub fn may_use(&self, model: usize) -> bool {
        match self.user.and_then(|u| u.allowed_models.as_ref()) {
            None => true,
            Some(list) => list.contains(&model),
        }
    }

    pub fn tags(&self) -> &[String] {
        self.user.map_or(&[], |u| u.tags.as_slice())
    }

    pub fn may_override_backend(&self) -> bool {
        self.user.is_none_or(|u| u.allow_backend_override)
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user.map(|u| u.id.as_str())
    }
}

/// Authenticates a request head (whose bytes are in `buf`).
pub fn authenticate<'r>(
    routes: &'r Routes,
    head: &RequestHead,
    buf: &[u8],
) -> Result<Caller<'r>, GatewayError> {
    if routes.anonymous() {
        return Ok(Caller {
            user: None,
            index: None,
        });
    }
    let token = bearer(head, buf)?.ok_or_else(|| {
        unauthorized("missing Authorization header; send `Authorization: Bearer <token>`")
    })?;
    match routes.user_by_token(token) {
        Some((i, user)) => Ok(Caller {
            user: Some(user),
            index: Some(i),
        }),
        None => Err(unauthorized("the provided API key is invalid or disabled")),
    }
}

/// The bearer token a request carries: `Ok(None)` without an `Authorization` header, `Err`
/// for a malformed one (any scheme but `Bearer`, or more than one word) or for two of them
/// (which one counts would be a guess; a proxy in front might have checked the other).
pub fn bearer<'b>(head: &RequestHead, buf: &'b [u8]) -> Result<Option<&'b [u8]>, GatewayError> {
    let only = head.single_header(buf, "authorization").map_err(|()| {
        GatewayError::new(
            crate::error::ErrorKind::BadRequest,
            "more than one Authorization header",
        )
    })?;
    match only {
        None => Ok(None),
        Some(value) => bearer_token(value).map(Some).ok_or_else(|| {
            unauthorized("malformed Authorization header; expected `Bearer <token>`")
        }),
    }
}

/// Is `presented` exactly the secret `expected`? Compares SHA-256 digests in constant time, so
/// the time taken reveals neither how much of a guess matched nor the secret's length.
pub fn secret_matches(expected: &Secret, presented: &[u8]) -> bool {
    let want: [u8; 32] = Sha256::digest(expected.expose().as_bytes()).into();
    let got: [u8; 32] = Sha256::digest(presented).into();
    want.ct_eq(&got).into()
}

/// The token of a `Bearer` credential; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty() && !token.iter().any(|b| b.is_ascii_whitespace())).then_some(token)
}

fn unauthorized(message: &str) -> GatewayError {
    GatewayError::new(ErrorKind::Unauthorized, message)
}

/// Model indices a caller may see, in the config's stable (name) order.
pub fn visible_models<'c>(
    config: &'c Config,
    caller: &'c Caller<'_>,
) -> impl Iterator<Item = usize> + 'c {
    (0..config.models.len()).filter(move |&i| config.models[i].enabled && caller.may_use(i))
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, secret_matches};
    use crate::config::Secret;

    #[test]
    fn secrets_match_exactly() {
        let s = Secret::new("admin-0123456789abcdef");
        assert!(secret_matches(&s, b"admin-0123456789abcdef"));
        assert!(!secret_matches(&s, b"admin-0123456789abcdeF"));
        assert!(!secret_matches(&s, b"admin-0123456789abcde"));
        assert!(!secret_matches(&s, b"admin-0123456789abcdef0"));
        assert!(!secret_matches(&s, b""));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer a b"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
    }
}
