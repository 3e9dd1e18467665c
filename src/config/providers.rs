//! Stage two for `[providers.*]`: name, URL, API key (possibly from the environment),
//! upstream model list and extra headers. Header values and keys are secrets: no message
//! built here may contain them, only key paths and variable names.

use std::ops::Range;
use std::path::PathBuf;

use super::env;
use super::keys::{index, join};
use super::raw::{Named, RawProvider, S};
use super::url::parse_base_url;
use super::validate::{Ctx, FIRST_BYTE_TIMEOUT_WARN_BELOW_SECS};
use super::{BackendType, Provider, Scheme, Secret, Severity, UpstreamUrl};

/// Berry API rejected shorter provider keys; we only warn, since local servers often take any key.
const API_KEY_CHARS_MIN: usize = 10;
const PROVIDER_TIMEOUT_SECONDS_MAX: u64 = 300;

/// Headers whose values the gateway computes; letting config override them breaks framing.
const MANAGED_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

pub(super) fn providers(cx: &mut Ctx<'_, '_>, raw: Option<Named<RawProvider>>) -> Vec<Provider> {
    let Some(table) = raw else {
        let msg = "missing required table: define at least one `[providers.<id>]`";
        cx.sink
            .push(Severity::Error, None, "providers", msg.to_string());
        return Vec::new();
    };
    if table.get_ref().is_empty() {
        cx.sink.error(
            table.span(),
            "providers",
            "at least one provider is required",
        );
    }
    // BTreeMap iteration is sorted by id, which is the order `Config.providers` promises.
    table
        .into_inner()
        .into_iter()
        .map(|(id, p)| provider(cx, id, p))
        .collect()
}

fn provider(cx: &mut Ctx<'_, '_>, id: S<String>, raw: S<RawProvider>) -> Provider {
    let span = raw.span();
    let raw = raw.into_inner();
    let path = join("providers", id.get_ref());
    let p = |key: &str| join(&path, key);
    if id.get_ref().is_empty() {
        cx.sink
            .error(id.span(), &path, "provider id must not be empty");
    }
    let name = cx.required(raw.name.as_ref(), span.clone(), &p("name"));
    let enabled = raw.enabled.unwrap_or(true);
    let backend_type = match &raw.backend_type {
        None => BackendType::OpenAi,
        Some(v) => match v.get_ref().as_str() {
            "openai" | "open_a_i" | "open_ai" | "OpenAI" | "OpenAi" => BackendType::OpenAi,
            "claude" | "Claude" => {
                warn_not_a_dialect(cx, v, &p("backend_type"), "https://api.anthropic.com/v1");
                BackendType::Claude
            }
            "gemini" | "Gemini" => {
                let example = "https://generativelanguage.googleapis.com/v1beta/openai";
                warn_not_a_dialect(cx, v, &p("backend_type"), example);
                BackendType::Gemini
            }
            other => {
                let msg = format!("must be `openai`, `claude` or `gemini` (got {other:?})");
                cx.sink.error(v.span(), &p("backend_type"), msg);
                BackendType::OpenAi
            }
        },
    };
    let url = match &raw.base_url {
        None => {
            cx.sink
                .error(span.clone(), &p("base_url"), "missing (required)");
            None
        }
        Some(v) => match parse_base_url(v.get_ref(), backend_type) {
            Ok(url) => Some(url),
            Err(msg) => {
                cx.sink.error(v.span(), &p("base_url"), msg);
                None
            }
        },
    };
    let api_key = api_key(
        cx,
        raw.api_key.as_ref(),
        span.clone(),
        &p("api_key"),
        enabled,
    );
    let models = provider_models(cx, raw.models.as_ref(), span, &p("models"));
    let headers = headers(cx, raw.headers, &p("headers"));
    let first_byte_timeout = raw.timeout_seconds.as_ref().map(|v| {
        let why = "a zero timeout would fail every request";
        let secs = cx.int(
            Some(v),
            &p("timeout_seconds"),
            30,
            1,
            PROVIDER_TIMEOUT_SECONDS_MAX,
            why,
        );
        // Berry API used this only as a connect timeout, so its files set it low; here it
        // would cap every non-streaming generation and re-send it to another backend.
        if secs < FIRST_BYTE_TIMEOUT_WARN_BELOW_SECS {
            let msg = format!(
                "bounds the time to the first response byte of every request to this \
                 provider (Berry API used it only as a connect timeout), which for a \
                 non-streaming answer is the whole generation; {secs} s may cut off long \
                 non-streaming completions"
            );
            cx.sink.warn(v.span(), &p("timeout_seconds"), msg);
        }
        std::time::Duration::from_secs(secs)
    });
    let ca_file = raw.ca_file.as_ref().and_then(|v| {
        if v.get_ref().is_empty() {
            cx.sink.error(v.span(), &p("ca_file"), "must not be empty");
            return None;
        }
        if url.as_ref().is_some_and(|u| u.scheme == Scheme::Http) {
            cx.sink
                .warn(v.span(), &p("ca_file"), "ignored: `base_url` is plain http");
        }
        Some(PathBuf::from(v.get_ref()))
    });
    Provider {
        id: id.into_inner(),
        name: name.unwrap_or_default(),
        // A placeholder keeps later cross-checks quiet; the load fails on the error above.
        url: url.unwrap_or_else(|| UpstreamUrl {
            scheme: Scheme::Https,
            host: String::new(),
            port: 443,
            base_path: String::new(),
        }),
        api_key,
        models,
        headers,
        enabled,
        first_byte_timeout,
        backend_type,
        ca_file,
    }
}

/// Berry API's `claude` and `gemini` read like a choice of protocol, but Berry speaks only
/// the OpenAI API; the value only changes how `base_url` is completed (`url.rs`). Pointing
/// such a provider at the vendor's native API would fail every request.
fn warn_not_a_dialect(cx: &mut Ctx<'_, '_>, v: &S<String>, path: &str, example: &str) {
    let msg = format!(
        "Berry sends OpenAI-format requests (Bearer key, `/chat/completions`) to every \
         provider; {:?} only changes how `base_url` is completed, so `base_url` must be the \
         vendor's OpenAI-compatible endpoint, such as `{example}`",
        v.get_ref()
    );
    cx.sink.warn(v.span(), path, msg);
}

fn api_key(
    cx: &mut Ctx<'_, '_>,
    v: Option<&S<String>>,
    table_span: Range<usize>,
    path: &str,
    enabled: bool,
) -> Option<Secret> {
    let Some(v) = v else {
        if enabled {
            let msg = "missing: required for an enabled provider (or set `enabled = false`)";
            cx.sink.error(table_span, path, msg);
        }
        return None;
    };
    let source = match env::resolve(v.get_ref(), cx.env) {
        Ok(source) => source,
        Err(err) if enabled => {
            cx.sink.error(v.span(), path, err.message());
            return None;
        }
        Err(err) => {
            let msg = format!(
                "{}; ignored because the provider is disabled",
                err.message()
            );
            cx.sink.warn(v.span(), path, msg);
            return None;
        }
    };
    let value = source.value();
    let note = source.origin_note();
    if value.is_empty() {
        if enabled {
            cx.sink.error(
                v.span(),
                path,
                format!("must not be empty for an enabled provider{note}"),
            );
        }
        return None;
    }
    if value.chars().any(char::is_control) {
        cx.sink.error(
            v.span(),
            path,
            format!("contains a control character{note}"),
        );
    } else if value.chars().count() < API_KEY_CHARS_MIN {
        let msg = format!("is shorter than {API_KEY_CHARS_MIN} characters{note}; is it complete?");
        cx.sink.warn(v.span(), path, msg);
    }
    Some(Secret::new(value))
}

fn provider_models(
    cx: &mut Ctx<'_, '_>,
    v: Option<&S<Vec<S<String>>>>,
    table_span: Range<usize>,
    path: &str,
) -> Vec<String> {
    let Some(list) = v else {
        cx.sink.error(
            table_span,
            path,
            "missing (required): the upstream model ids it serves",
        );
        return Vec::new();
    };
    if list.get_ref().is_empty() {
        cx.sink.error(
            list.span(),
            path,
            "must list at least one upstream model id",
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, m) in list.get_ref().iter().enumerate() {
        if m.get_ref().trim().is_empty() {
            cx.sink
                .error(m.span(), &index(path, i), "must not be empty");
        } else if out.contains(m.get_ref()) {
            cx.sink.warn(
                m.span(),
                &index(path, i),
                format!("duplicate model id {:?}", m.get_ref()),
            );
        } else {
            out.push(m.get_ref().clone());
        }
    }
    out
}

fn headers(
    cx: &mut Ctx<'_, '_>,
    raw: Option<std::collections::BTreeMap<S<String>, S<String>>>,
    path: &str,
) -> Vec<(String, Secret)> {
    let mut out: Vec<(String, Secret)> = Vec::new();
    for (name, value) in raw.unwrap_or_default() {
        let hpath = join(path, name.get_ref());
        let n = name.get_ref();
        if n.is_empty() || !n.bytes().all(is_tchar) {
            let msg = "header name must be a non-empty HTTP token (letters, digits, `-`, …)";
            cx.sink.error(name.span(), &hpath, msg);
            continue;
        }
        let lower = n.to_ascii_lowercase();
        if MANAGED_HEADERS.contains(&lower.as_str()) {
            cx.sink.error(
                name.span(),
                &hpath,
                "is set by the gateway and cannot be configured",
            );
            continue;
        }
        if out.iter().any(|(other, _)| other.eq_ignore_ascii_case(n)) {
            cx.sink.error(
                name.span(),
                &hpath,
                "duplicate header (names are case-insensitive)",
            );
            continue;
        }
        match env::resolve(value.get_ref(), cx.env) {
            Err(err) => cx.sink.error(value.span(), &hpath, err.message()),
            Ok(source) => {
                let note = source.origin_note();
                let v = source.value();
                if v.is_empty() {
                    cx.sink
                        .error(value.span(), &hpath, format!("must not be empty{note}"));
                } else if v.chars().any(|c| c.is_control() && c != '\t') {
                    let msg = format!("contains a control character{note}");
                    cx.sink.error(value.span(), &hpath, msg);
                } else {
                    out.push((n.clone(), Secret::new(v)));
                }
            }
        }
    }
    out
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
