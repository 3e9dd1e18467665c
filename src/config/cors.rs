//! `[server] cors_allow_origins`: which browser origins may call the OpenAI API paths. Entries
//! are checked to be origins as browsers serialize them (`scheme://host[:port]`), because
//! anything else (a path, a trailing slash, a default port) never equals a browser's `Origin`
//! and would fail silently at the first browser request instead of at startup.

use super::keys::index;
use super::raw::S;
use super::url::split_host_port;
use super::validate::Ctx;

/// The validated `cors_allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// An empty list: no CORS headers anywhere, preflights answered as any other OPTIONS.
    Off,
    /// The list holds `"*"`: every origin (the default, as OpenAI's own API does; tokens are
    /// bearer headers, not cookies, so an open list hands no page anyone else's credentials).
    Any,
    /// Exactly these origins, lowercased: browsers lowercase scheme and host when they
    /// serialize `Origin`, so a byte comparison with them is exact.
    Only(Vec<String>),
}

/// Reads the list; absent means `["*"]`.
pub(super) fn allow_origins(
    cx: &mut Ctx<'_, '_>,
    raw: Option<&S<Vec<S<String>>>>,
    path: &str,
) -> CorsOrigins {
    let Some(list) = raw else {
        return CorsOrigins::Any;
    };
    let mut any = false;
    let mut only: Vec<String> = Vec::new();
    for (i, entry) in list.get_ref().iter().enumerate() {
        let text = entry.get_ref();
        if text == "*" {
            any = true;
            continue;
        }
        match origin(text) {
            Ok(o) if only.contains(&o) => {
                cx.sink.warn(
                    entry.span(),
                    &index(path, i),
                    format!("duplicate origin {o:?}"),
                );
            }
            Ok(o) => only.push(o),
            Err(why) => cx.sink.error(entry.span(), &index(path, i), why),
        }
    }
    if any && !only.is_empty() {
        cx.sink.warn(
            list.span(),
            path,
            "lists \"*\", which allows every origin: the other entries have no effect",
        );
    }
    match (any, only.is_empty()) {
        (true, _) => CorsOrigins::Any,
        (false, true) => CorsOrigins::Off,
        (false, false) => CorsOrigins::Only(only),
    }
}

/// One entry as the origin a browser would send, or why it can never be one.
fn origin(text: &str) -> Result<String, String> {
    let what = "must be \"*\" or an origin such as \"https://app.example.com\" \
                (http or https, host, optional port; nothing after it)";
    if text == "null" {
        // Sandboxed frames and file:// pages all send `null`: allowing it allows any of them.
        return Err(format!(
            "{what}; \"null\" is refused: any sandboxed page can send it"
        ));
    }
    let lower = text.to_ascii_lowercase();
    let (default_port, authority) = if let Some(rest) = lower.strip_prefix("https://") {
        (443, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (80, rest)
    } else {
        return Err(format!("{what} (got {text:?})"));
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must not contain whitespace (got {text:?})"));
    }
    if let Some(at) = authority.find(['/', '?', '#']) {
        let hint = if authority[at..] == *"/" {
            "no trailing slash: a browser's Origin never ends with one"
        } else {
            "an origin has no path, query or fragment"
        };
        return Err(format!("{what}; {hint} (got {text:?})"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{what}; user info (`user@`) is not part of an origin"
        ));
    }
    if authority.contains('*') {
        return Err(format!(
            "{what}; wildcards are not supported, list each origin (got {text:?})"
        ));
    }
    let (host, port) = split_host_port(authority, default_port)
        .map_err(|why| format!("{what}; {why} (got {text:?})"))?;
    let brackets = if authority.starts_with('[') { 2 } else { 0 };
    if port == default_port && authority.len() > host.len() + brackets {
        return Err(format!(
            "{what}; drop the default port :{port}, browsers never send it (got {text:?})"
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_as_browsers_send_them() {
        for (input, expected) in [
            ("https://app.example.com", "https://app.example.com"),
            ("http://localhost:5173", "http://localhost:5173"),
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("https://example.com:8443", "https://example.com:8443"),
        ] {
            assert_eq!(origin(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn everything_a_browser_never_sends_is_refused() {
        for (input, needle) in [
            ("https://app.example.com/", "no trailing slash"),
            ("https://app.example.com/chat", "no path"),
            ("https://app.example.com?x", "no path"),
            ("app.example.com", "must be \"*\" or an origin"),
            ("ftp://app.example.com", "must be \"*\" or an origin"),
            ("", "must be \"*\" or an origin"),
            ("null", "sandboxed"),
            ("https://*.example.com", "wildcards"),
            ("https://u@example.com", "user info"),
            ("https://example.com:443", "default port :443"),
            ("http://example.com:80", "default port :80"),
            ("http://[::1]:80", "default port :80"),
            ("https://example.com:0", "port must be"),
            ("https://example.com:", "port must be"),
            ("https://", "missing host"),
            ("https://exa mple.com", "whitespace"),
        ] {
            let err = origin(input).expect_err(input);
            assert!(err.contains(needle), "{input}: {err}");
        }
    }
}
