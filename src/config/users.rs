//! Stage two for `[users.*]`: tokens (possibly from the environment; unique, never printed),
//! `allowed_models` resolved to model indices by key or display name, and optional
//! per-window rate limits.

use std::collections::HashMap;
use std::ops::Range;

use super::env::{self, SecretSource};
use super::keys::{index, join};
use super::models::tags;
use super::raw::{Named, RawRateLimit, RawUser, S};
use super::validate::Ctx;
use super::{Model, Provider, RateLimit, Secret, Severity, User};

const TOKEN_CHARS_MIN: usize = 16;

pub(super) fn users(
    cx: &mut Ctx<'_, '_>,
    raw: Option<Named<RawUser>>,
    providers: &[Provider],
    models: &[Model],
    allow_anonymous: bool,
) -> Vec<User> {
    let table = raw.map(S::into_inner).unwrap_or_default();
    if table.is_empty() && !allow_anonymous {
        let msg = "no users are defined: every request is anonymous and may use every model; \
                   Berry serves that only on a loopback address unless `server.allow_anonymous` \
                   is true";
        cx.sink
            .push(Severity::Warning, None, "users", msg.to_string());
    }
    // Maps each token to the first user holding it. Only ids are ever printed.
    let mut token_owner: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (id, raw) in table {
        let span = raw.span();
        let raw = raw.into_inner();
        let path = join("users", id.get_ref());
        let p = |k: &str| join(&path, k);
        if id.get_ref().is_empty() {
            cx.sink.error(id.span(), &path, "user id must not be empty");
        }
        let name = cx.required(raw.name.as_ref(), span.clone(), &p("name"));
        let token = token(cx, raw.token.as_ref(), span, &p("token"));
        if let (Some(t), Some(v)) = (&token, &raw.token) {
            match token_owner.get(t.expose()) {
                Some(first) => {
                    let msg = format!(
                        "same token as `{}`; tokens must be unique",
                        join("users", first)
                    );
                    cx.sink.error(v.span(), &p("token"), msg);
                }
                None => {
                    token_owner.insert(t.expose().to_string(), id.get_ref().clone());
                }
            }
        }
        let allowed_models = allowed_models(
            cx,
            raw.allowed_models.as_ref(),
            &p("allowed_models"),
            models,
        );
        let rate_limit = raw
            .rate_limit
            .as_ref()
            .and_then(|r| rate_limit(cx, r.get_ref(), &p("rate_limit")));
        let tags = tags(cx, raw.tags.as_ref(), &p("tags"));
        let enabled = raw.enabled.unwrap_or(true);
        if let (true, Some(first)) = (enabled, raw.tags.as_ref().and_then(|t| t.first())) {
            let ctx = TagCheck {
                user: id.get_ref(),
                tags: &tags,
                providers,
                models,
            };
            tag_trap(
                cx,
                &ctx,
                allowed_models.as_deref(),
                first.span(),
                &p("tags"),
            );
        }
        out.push(User {
            id: id.into_inner(),
            name: name.unwrap_or_default(),
            token: token.unwrap_or_else(|| Secret::new("")),
            allowed_models,
            enabled,
            tags,
            rate_limit,
            allow_backend_override: raw.allow_backend_override.unwrap_or(false),
        });
    }
    out
}

/// What `tag_trap` looks at for one user.
struct TagCheck<'a> {
    user: &'a str,
    tags: &'a [String],
    providers: &'a [Provider],
    models: &'a [Model],
}

/// Warns for each model the user may call whose every live backend (enabled, provider
/// enabled) the user's tags exclude: the model would be listed by /v1/models, and every
/// request for it would get 503. A model with no live backend at all is reported by
/// `models.rs` already.
fn tag_trap(
    cx: &mut Ctx<'_, '_>,
    c: &TagCheck<'_>,
    allowed: Option<&[usize]>,
    span: Range<usize>,
    path: &str,
) {
    let may_use = |i: usize| allowed.is_none_or(|a| a.contains(&i));
    for (i, m) in c.models.iter().enumerate() {
        if !m.enabled || !may_use(i) {
            continue;
        }
        let mut live = m
            .backends
            .iter()
            .filter(|b| b.enabled && c.providers.get(b.provider).is_some_and(|p| p.enabled))
            .peekable();
        if live.peek().is_none() || live.any(|b| b.admits_tags(c.tags)) {
            continue;
        }
        let msg = format!(
            "user `{}` with tags {:?} reaches no backend of model `{}` ({:?}): a caller with tags \
             only reaches untagged backends and those sharing a tag, so every request for it \
             would get 503; tag one of its backends, or drop the model from \
             `allowed_models`",
            c.user, c.tags, m.key, m.name
        );
        cx.sink.warn(span.clone(), path, msg);
    }
}

/// A bearer token: resolved from the environment if it is a reference, long enough to resist
/// guessing, free of whitespace. Also `server.admin_token`'s rules.
pub(super) fn token(
    cx: &mut Ctx<'_, '_>,
    v: Option<&S<String>>,
    table_span: Range<usize>,
    path: &str,
) -> Option<Secret> {
    let Some(v) = v else {
        cx.sink.error(table_span, path, "missing (required)");
        return None;
    };
    let source: SecretSource = match env::resolve(v.get_ref(), cx.env) {
        Ok(source) => source,
        Err(err) => {
            cx.sink.error(v.span(), path, err.message());
            return None;
        }
    };
    let note = source.origin_note();
    let value = source.value();
    let chars = value.chars().count();
    if chars < TOKEN_CHARS_MIN {
        let msg = format!("must be at least {TOKEN_CHARS_MIN} characters (got {chars}){note}");
        cx.sink.error(v.span(), path, msg);
        return None;
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        cx.sink
            .error(v.span(), path, format!("must not contain whitespace{note}"));
        return None;
    }
    Some(Secret::new(value))
}

fn allowed_models(
    cx: &mut Ctx<'_, '_>,
    raw: Option<&Vec<S<String>>>,
    path: &str,
    models: &[Model],
) -> Option<Vec<usize>> {
    let list = raw?;
    if list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let e = entry.get_ref();
        // Berry API wanted keys; users wrote display names. Accept both, key first.
        let found = models
            .iter()
            .position(|m| m.key == *e)
            .or_else(|| models.iter().position(|m| m.name == *e));
        match found {
            Some(idx) => out.push(idx),
            None => {
                let msg = format!("unknown model {e:?}: not the key or name of any model");
                cx.sink.error(entry.span(), &index(path, i), msg);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

fn rate_limit(cx: &mut Ctx<'_, '_>, raw: &RawRateLimit, path: &str) -> Option<RateLimit> {
    let p = |k: &str| join(path, k);
    let why = "use `enabled = false` to block a user, or omit the field for no limit";
    let mut field = |v: Option<&S<i64>>, key: &str| {
        v.map(|v| cx.int(Some(v), &p(key), 1, 1, u64::from(u32::MAX), why) as u32)
    };
    let minute = field(raw.requests_per_minute.as_ref(), "requests_per_minute");
    let hour = field(raw.requests_per_hour.as_ref(), "requests_per_hour");
    let day = field(raw.requests_per_day.as_ref(), "requests_per_day");
    // Each wider window must allow at least as much as a narrower one.
    let order = [
        (
            minute,
            hour,
            &raw.requests_per_hour,
            "requests_per_hour",
            "requests_per_minute",
        ),
        (
            hour,
            day,
            &raw.requests_per_day,
            "requests_per_day",
            "requests_per_hour",
        ),
    ];
    for (narrow, wide, wide_raw, wide_key, narrow_key) in order {
        if let (Some(n), Some(w), Some(v)) = (narrow, wide, wide_raw) {
            if w < n {
                let msg = format!("must be >= {narrow_key} ({n}) (got {w})");
                cx.sink.error(v.span(), &p(wide_key), msg);
            }
        }
    }
    if let (Some(n), None, Some(w), Some(v)) = (minute, hour, day, &raw.requests_per_day) {
        if w < n {
            let msg = format!("must be >= requests_per_minute ({n}) (got {w})");
            cx.sink.error(v.span(), &p("requests_per_day"), msg);
        }
    }
    if minute.is_none() && hour.is_none() && day.is_none() {
        return None;
    }
    Some(RateLimit {
        requests_per_minute: minute,
        requests_per_hour: hour,
        requests_per_day: day,
    })
}
