//! Where things are in the file: byte span → line/column, dotted key paths, the diagnostic
//! sink, and the walk of the parsed document against the known schema that reports *every*
//! unknown key (serde would stop at the first) and warns about Berry API-era keys that never did
//! anything. It reads keys only, so it never sees, let alone prints, a secret value.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{Diagnostic, Severity};

/// 1-based line and column (in characters) of byte `offset`; clamps to the end of `bytes`.
pub(super) fn line_col_bytes(bytes: &[u8], offset: usize) -> (usize, usize) {
    let offset = offset.min(bytes.len());
    let before = &bytes[..offset];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // Count UTF-8 lead bytes, so a column is a character count even mid-character.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count();
    (line, column)
}

/// Collects diagnostics; positions are computed from byte spans of the source text.
pub(super) struct Sink<'a> {
    text: &'a str,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub fn new(text: &'a str) -> Sink<'a> {
        Sink {
            text,
            diags: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        span: Option<Range<usize>>,
        key: &str,
        message: String,
    ) {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_col_bytes(self.text.as_bytes(), span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        self.diags.push(Diagnostic {
            severity,
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    pub fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.push(Severity::Error, Some(span), key, message.into());
    }

    pub fn warn(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.push(Severity::Warning, Some(span), key, message.into());
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Appends `key` to a dotted path, quoting it when it is not a TOML bare key, so the path can
/// be pasted back into a file.
pub(super) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let mut out = String::with_capacity(parent.len() + key.len() + 3);
    out.push_str(parent);
    if !parent.is_empty() {
        out.push('.');
    }
    if bare {
        out.push_str(key);
    } else {
        out.push('"');
        for c in key.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

pub(super) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The shape of the file, used only to find keys we do not know.
pub(super) enum Node {
    /// A value; its type is serde's business.
    Leaf,
    Table(&'static [Entry]),
    /// A table whose keys the user picks (provider ids, model keys, user ids, header names).
    MapOf(&'static Node),
    ArrayOf(&'static Node),
}

pub(super) struct Entry {
    name: &'static str,
    kind: Kind,
}

enum Kind {
    Known(Node),
    /// Accepted with a warning: Berry API parsed it and ignored it. The text says why.
    Ignored(&'static str),
    /// Rejected with a specific hint, because silently ignoring it would be dangerous.
    Mistake(&'static str),
}

const fn leaf(name: &'static str) -> Entry {
    Entry {
        name,
        kind: Kind::Known(Node::Leaf),
    }
}

const fn ignored(name: &'static str, why: &'static str) -> Entry {
    Entry {
        name,
        kind: Kind::Ignored(why),
    }
}

static SERVER: [Entry; 16] = [
    leaf("bind_address"),
    leaf("workers"),
    leaf("driver"),
    leaf("allow_anonymous"),
    leaf("pin_cores"),
    leaf("admin_token"),
    leaf("header_bytes_max"),
    leaf("headers_count_max"),
    leaf("body_bytes_max"),
    leaf("connections_per_shard_max"),
    leaf("client_header_timeout_ms"),
    leaf("client_body_timeout_ms"),
    leaf("client_idle_timeout_ms"),
    leaf("client_send_timeout_ms"),
    leaf("drain_timeout_ms"),
    leaf("cors_allow_origins"),
];

const CLI_LEFTOVER: &str = "written by `berry-cli generate-config` but never read; ignored";

static ADJUSTMENTS: [Entry; 7] = [
    leaf("success_boost"),
    leaf("network_error_penalty"),
    leaf("auth_error_penalty"),
    leaf("rate_limit_penalty"),
    leaf("server_error_penalty"),
    leaf("model_error_penalty"),
    leaf("timeout_penalty"),
];

static SMART_AI: [Entry; 11] = [
    leaf("initial_confidence"),
    leaf("min_confidence"),
    leaf("enable_time_decay"),
    leaf("lightweight_check_interval_seconds"),
    leaf("exploration_ratio"),
    leaf("non_premium_stability_bonus"),
    Entry {
        name: "confidence_adjustments",
        kind: Kind::Known(Node::Table(&ADJUSTMENTS)),
    },
    ignored("enabled", CLI_LEFTOVER),
    ignored("small_traffic_threshold", CLI_LEFTOVER),
    ignored("cost_control_factor", CLI_LEFTOVER),
    ignored("health_check_weight", CLI_LEFTOVER),
];

static SETTINGS: [Entry; 21] = [
    leaf("max_retries"),
    leaf("report_interval_ms"),
    leaf("snapshot_interval_ms"),
    leaf("connect_timeout_ms"),
    leaf("first_byte_timeout_ms"),
    leaf("request_timeout_seconds"),
    leaf("stream_idle_timeout_ms"),
    leaf("total_timeout_ms"),
    leaf("pool_idle_per_backend_max"),
    leaf("pool_idle_timeout_ms"),
    leaf("response_buffer_bytes_max"),
    leaf("health_check_interval_seconds"),
    leaf("recovery_check_interval_seconds"),
    leaf("circuit_breaker_failure_threshold"),
    leaf("circuit_breaker_timeout_seconds"),
    leaf("circuit_breaker_error_rate"),
    leaf("circuit_breaker_min_requests"),
    leaf("max_internal_retries"),
    leaf("health_check_timeout_seconds"),
    Entry {
        name: "smart_ai",
        kind: Kind::Known(Node::Table(&SMART_AI)),
    },
    ignored(
        "batch_metrics",
        "Berry API documented this table but never read it; ignored",
    ),
];

static PROVIDER: Node = Node::Table(&[
    leaf("name"),
    leaf("base_url"),
    leaf("api_key"),
    leaf("models"),
    Entry {
        name: "headers",
        kind: Kind::Known(Node::MapOf(&Node::Leaf)),
    },
    leaf("enabled"),
    leaf("timeout_seconds"),
    leaf("backend_type"),
    leaf("ca_file"),
    ignored(
        "max_retries",
        "Berry API never used a per-provider retry count; ignored (use `settings.max_retries`)",
    ),
    ignored(
        "tags",
        "Berry API never read provider tags; ignored (put `tags` on the model's backends)",
    ),
]);

static BACKEND: Node = Node::Table(&[
    leaf("provider"),
    leaf("model"),
    leaf("weight"),
    leaf("priority"),
    leaf("enabled"),
    leaf("tags"),
    leaf("billing_mode"),
    leaf("health_check"),
]);

static MODEL: Node = Node::Table(&[
    leaf("name"),
    leaf("strategy"),
    leaf("enabled"),
    Entry {
        name: "backends",
        kind: Kind::Known(Node::ArrayOf(&BACKEND)),
    },
]);

static RATE_LIMIT: [Entry; 3] = [
    leaf("requests_per_minute"),
    leaf("requests_per_hour"),
    leaf("requests_per_day"),
];

static USER: Node = Node::Table(&[
    leaf("name"),
    leaf("token"),
    leaf("allowed_models"),
    leaf("enabled"),
    leaf("tags"),
    Entry {
        name: "rate_limit",
        kind: Kind::Known(Node::Table(&RATE_LIMIT)),
    },
    leaf("allow_backend_override"),
    Entry {
        name: "models",
        kind: Kind::Mistake(
            "unknown key; did you mean `allowed_models`? (Berry API ignored `models` here, which \
             silently granted every model)",
        ),
    },
]);

static OBSERVABILITY: [Entry; 6] = [
    leaf("metrics"),
    leaf("metrics_admin_only"),
    leaf("access_log"),
    leaf("access_log_format"),
    leaf("log_level"),
    leaf("stream_usage"),
];

pub(super) static ROOT: [Entry; 6] = [
    Entry {
        name: "server",
        kind: Kind::Known(Node::Table(&SERVER)),
    },
    Entry {
        name: "settings",
        kind: Kind::Known(Node::Table(&SETTINGS)),
    },
    Entry {
        name: "providers",
        kind: Kind::Known(Node::MapOf(&PROVIDER)),
    },
    Entry {
        name: "models",
        kind: Kind::Known(Node::MapOf(&MODEL)),
    },
    Entry {
        name: "users",
        kind: Kind::Known(Node::MapOf(&USER)),
    },
    Entry {
        name: "observability",
        kind: Kind::Known(Node::Table(&OBSERVABILITY)),
    },
];

/// Every known key that holds a value, as (dotted table path, key), with `*` for a key the
/// user picks (`("models.*.backends", "health_check")`); an array of tables is its table. For
/// checking that the reference example documents every key.
#[cfg(test)]
pub(super) fn known_leaves() -> Vec<(String, &'static str)> {
    fn entries(list: &[Entry], path: &str, out: &mut Vec<(String, &'static str)>) {
        for e in list {
            if let Kind::Known(node) = &e.kind {
                node_leaves(node, path, e.name, out);
            }
        }
    }
    fn node_leaves(
        node: &Node,
        path: &str,
        name: &'static str,
        out: &mut Vec<(String, &'static str)>,
    ) {
        let inner_path = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        match node {
            Node::Leaf | Node::MapOf(Node::Leaf) => out.push((path.to_string(), name)),
            Node::Table(list) => entries(list, &inner_path, out),
            Node::MapOf(inner) => node_leaves(inner, &inner_path, "*", out),
            Node::ArrayOf(inner) => node_leaves(inner, path, name, out),
        }
    }
    let mut out = Vec::new();
    entries(&ROOT, "", &mut out);
    out
}

/// Reports every key of `table` (recursively) that the schema does not know.
pub(super) fn walk_table(table: &DeTable<'_>, entries: &[Entry], path: &str, sink: &mut Sink<'_>) {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let key_path = join(path, name);
        match entries.iter().find(|e| e.name == name) {
            Some(Entry {
                kind: Kind::Known(node),
                ..
            }) => walk_value(value, node, &key_path, sink),
            Some(Entry {
                kind: Kind::Ignored(why),
                ..
            }) => sink.warn(key.span(), &key_path, *why),
            Some(Entry {
                kind: Kind::Mistake(hint),
                ..
            }) => sink.error(key.span(), &key_path, *hint),
            None => {
                let message = match closest(name, entries) {
                    Some(known) => format!("unknown key; did you mean `{known}`?"),
                    None => "unknown key".to_string(),
                };
                sink.error(key.span(), &key_path, message);
            }
        }
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, node: &Node, path: &str, sink: &mut Sink<'_>) {
    // A value of the wrong type is skipped here; serde reports it with its own span.
    match (node, value.get_ref()) {
        (Node::Leaf, _) => {}
        (Node::Table(entries), DeValue::Table(table)) => walk_table(table, entries, path, sink),
        (Node::MapOf(inner), DeValue::Table(table)) => {
            for (key, value) in table.iter() {
                walk_value(value, inner, &join(path, key.get_ref()), sink);
            }
        }
        (Node::ArrayOf(inner), DeValue::Array(array)) => {
            for (i, value) in array.iter().enumerate() {
                walk_value(value, inner, &index(path, i), sink);
            }
        }
        _ => {}
    }
}

/// The known key nearest to a typo, if any is close enough to be a plausible suggestion.
fn closest(name: &str, entries: &[Entry]) -> Option<&'static str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Known(_)))
        .map(|e| (edit_distance(name, e.name), e.name))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Deepest nodes worth searching when mapping a serde error's span back to a key path; the
/// schema is never deeper than this, and the cap keeps hostile nesting cheap.
const LOCATE_DEPTH_MAX: usize = 16;

/// The dotted path of the deepest key or value whose span contains `offset`. Serde errors
/// carry a span but no path; this recovers it. Searches every branch because a table opened
/// by a `[header]` has a span covering only the header, not its body.
pub(super) fn locate(root: &DeTable<'_>, offset: usize) -> String {
    let mut best = (0usize, String::new());
    let mut stack: Vec<(&DeValue<'_>, String, usize)> = Vec::new();
    let visit = |value: &Spanned<DeValue<'_>>,
                 key_span: Option<Range<usize>>,
                 path: String,
                 depth: usize,
                 best: &mut (usize, String)| {
        let hit = value.span().contains(&offset) || key_span.is_some_and(|s| s.contains(&offset));
        if hit && depth >= best.0 {
            *best = (depth, path.clone());
        }
        (depth < LOCATE_DEPTH_MAX).then_some(path)
    };
    for (key, value) in root.iter() {
        let path = join("", key.get_ref());
        if let Some(path) = visit(value, Some(key.span()), path, 1, &mut best) {
            stack.push((value.get_ref(), path, 1));
        }
    }
    while let Some((value, path, depth)) = stack.pop() {
        match value {
            DeValue::Table(table) => {
                for (key, child) in table.iter() {
                    let child_path = join(&path, key.get_ref());
                    let next = visit(child, Some(key.span()), child_path, depth + 1, &mut best);
                    if let Some(p) = next {
                        stack.push((child.get_ref(), p, depth + 1));
                    }
                }
            }
            DeValue::Array(array) => {
                for (i, child) in array.iter().enumerate() {
                    let next = visit(child, None, index(&path, i), depth + 1, &mut best);
                    if let Some(p) = next {
                        stack.push((child.get_ref(), p, depth + 1));
                    }
                }
            }
            _ => {}
        }
    }
    best.1
}

/// Removes from the document the deepest key whose value holds byte `offset` (a value serde
/// refused), so deserialization can go on and report the next wrong value too, and returns the
/// removed key's path (below `parent`). Tables and the tables of an array of tables are
/// searched first (a table made of `[a.b]` headers has no span around its keys); any other
/// array goes whole. `None` when nothing holds `offset`.
pub(super) fn remove_at(table: &mut DeTable<'_>, offset: usize, parent: &str) -> Option<String> {
    let mut whole = None;
    for (key, value) in table.iter_mut() {
        let holds = value.span().contains(&offset);
        let path = join(parent, key.get_ref());
        let deeper = match value.get_mut() {
            DeValue::Table(t) => remove_at(t, offset, &path),
            DeValue::Array(items) => items.iter_mut().enumerate().find_map(|(i, item)| match item
                .get_mut()
            {
                DeValue::Table(t) => remove_at(t, offset, &index(&path, i)),
                _ => None,
            }),
            _ => None,
        };
        if deeper.is_some() {
            return deeper;
        }
        if holds && whole.is_none() {
            whole = Some((key.clone(), path));
        }
    }
    let (key, path) = whole?;
    table.remove(&key).map(|_| path)
}
