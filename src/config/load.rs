//! Stage one and the frame around stage two: size check, TOML parse, the unknown-key walk,
//! serde into the raw mirror (reporting every wrongly typed value, not just the first), then
//! `validate::build`, and the sorted diagnostics. Must never put a secret value into a
//! diagnostic.

use serde::Deserialize;
use toml::de::DeTable;

use super::keys::{self, Sink};
use super::raw::RawConfig;
use super::validate::{build, Ctx};
use super::{Config, ConfigError, Severity};

/// Larger files are refused before parsing; a real config is a few KiB, and this keeps a
/// hostile or mistaken input (a log file, a binary) from costing much.
const CONFIG_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Wrong-typed values reported before giving up on the file (each costs a deserialization).
const TYPE_ERRORS_MAX: usize = 64;

pub(super) fn load(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut cx = Ctx {
        sink: Sink::new(text),
        env,
    };
    if text.len() > CONFIG_BYTES_MAX {
        let message = format!(
            "file is {} bytes; a config may be at most {CONFIG_BYTES_MAX} bytes",
            text.len()
        );
        cx.sink.push(Severity::Error, None, "", message);
        return finish(cx.sink, origin, None);
    }
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            let mut message = format!("invalid TOML: {}", err.message().trim_end());
            // The parser points at the repeated key (or table) without naming it. A key is
            // never a secret; values are not quoted here.
            let named = err.span().and_then(|s| text.get(s)).map(str::trim);
            if let Some(key) = named.filter(|k| message.ends_with("duplicate key") && k.len() <= 80)
            {
                message.push_str(&format!(" `{key}`"));
            }
            cx.sink.push(Severity::Error, err.span(), "", message);
            return finish(cx.sink, origin, None);
        }
    };
    keys::walk_table(doc.get_ref(), &keys::ROOT, "", &mut cx.sink);
    // Serde stops at the first value of the wrong type. Each one is reported, taken out of
    // the document, and deserialization tried again, so every wrong value is reported at once.
    let mut doc = doc;
    let mut refused: Vec<String> = Vec::new();
    let raw = loop {
        // A clone keeps the parsed tree for mapping a serde error's span back to its key path.
        let err = match RawConfig::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(raw) => break Some(raw),
            Err(err) => err,
        };
        let span = err.span();
        let key = span
            .clone()
            .map(|s| keys::locate(doc.get_ref(), s.start))
            .unwrap_or_default();
        // Serde quotes the offending value; for a secret key that value may be the secret,
        // and a secret written one level too high (`[users] u = "tok…"`) sits under no
        // secret key at all: strings are never echoed.
        let message = if holds_secret(&key) {
            "wrong type (value not shown: this key holds a secret)".to_string()
        } else {
            without_quoted_string(err.message().trim_end())
        };
        cx.sink.push(Severity::Error, span.clone(), &key, message);
        // What goes may be more than the value reported (a whole array for one bad item).
        let removed = span.and_then(|s| keys::remove_at(doc.get_mut(), s.start, ""));
        match removed {
            Some(path) if refused.len() < TYPE_ERRORS_MAX => refused.push(path),
            _ => break None,
        }
    };
    let Some(raw) = raw else {
        return finish(cx.sink, origin, None);
    };
    let before = cx.sink.diags.len();
    let config = build(&mut cx, raw);
    // A value taken out above may now read as missing: it was reported once already.
    let mut i = 0;
    cx.sink.diags.retain(|d| {
        i += 1;
        let follows = |k: &String| under(&d.key, k) || mentions(&d.message, k);
        i <= before || !refused.iter().any(follows)
    });
    let failed = !refused.is_empty();
    finish(cx.sink, origin, (!failed).then_some(config))
}

/// Does `message` name the key `path` (or something inside it), as a whole path: quoted in
/// backticks, in a `[table]` header, or followed by `.`/`[`?
fn mentions(message: &str, path: &str) -> bool {
    message.match_indices(path).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + path.len()..].chars().next();
        matches!(before, None | Some('`' | '[' | ' ' | '('))
            && matches!(
                after,
                None | Some('`' | ']' | '.' | '[' | ' ' | ')' | ':' | ',')
            )
    })
}

/// Is `path` the key `root` or inside it?
fn under(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Serde's `invalid type: string "…", expected …` with the string left out, and its names for
/// Berry's raw structs (`expected struct RawUser`) said as TOML says them.
fn without_quoted_string(message: &str) -> String {
    let message = match (message.find("string \""), message.rfind('"')) {
        (Some(start), Some(end)) if end > start + 7 => {
            format!("{}a string{}", &message[..start], &message[end + 1..])
        }
        _ => message.to_string(),
    };
    match message.find("expected struct Raw") {
        Some(at) => format!("{}expected a table", &message[..at]),
        None => message,
    }
}

/// Over-approximates which paths hold secrets; redacting too much only costs a detail.
fn holds_secret(path: &str) -> bool {
    path.split(['.', '['])
        .any(|seg| matches!(seg, "api_key" | "token" | "admin_token" | "headers"))
}

fn finish(sink: Sink<'_>, origin: &str, config: Option<Config>) -> Result<Config, ConfigError> {
    let failed = sink.has_errors();
    let mut diags = sink.diags;
    // Errors first, then by position; file-level findings (no line) lead each group.
    diags.sort_by_key(|d| {
        (
            d.severity == Severity::Warning,
            d.line.unwrap_or(0),
            d.column.unwrap_or(0),
        )
    });
    match config {
        Some(mut config) if !failed => {
            config.warnings = diags;
            Ok(config)
        }
        _ => Err(ConfigError {
            origin: origin.to_string(),
            diagnostics: diags,
        }),
    }
}
