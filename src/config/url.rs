//! `base_url` → `UpstreamUrl`: the one place that decides what a provider URL means, so both
//! Berry API's `https://host` and the common `https://host/v1` reach `/v1/chat/completions`.
//! Never echoes a URL that carries user info (it may hold a password).

use std::net::Ipv6Addr;

use super::{BackendType, Scheme, UpstreamUrl};

const CHAT_COMPLETIONS: &str = "/chat/completions";

/// Parses and normalises a provider base URL. The error is a message for a diagnostic.
pub(super) fn parse_base_url(input: &str, backend: BackendType) -> Result<UpstreamUrl, String> {
    let (scheme, rest) = split_scheme(input).ok_or_else(|| {
        format!(
            "must start with `http://` or `https://` (got {})",
            quoted(input)
        )
    })?;
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain whitespace (got {})",
            quoted(input)
        ));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path_and_more) = rest.split_at(authority_end);
    if authority.contains('@') {
        // Not echoed: the user-info part may hold a password.
        return Err(
            "must not contain user info (`user:pass@`); put credentials in `api_key` \
                    or `headers`"
                .to_string(),
        );
    }
    if path_and_more.contains('?') {
        return Err(format!(
            "must not contain a query (`?…`) (got {})",
            quoted(input)
        ));
    }
    if path_and_more.contains('#') {
        return Err(format!(
            "must not contain a fragment (`#…`) (got {})",
            quoted(input)
        ));
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let (host, port) = split_host_port(authority, default_port)
        .map_err(|why| format!("{why} (got {})", quoted(input)))?;
    Ok(UpstreamUrl {
        scheme,
        host,
        port,
        base_path: normalise_path(path_and_more, backend),
    })
}

fn split_scheme(input: &str) -> Option<(Scheme, &str)> {
    let (scheme, rest) = input.split_once("://")?;
    if scheme.eq_ignore_ascii_case("http") {
        Some((Scheme::Http, rest))
    } else if scheme.eq_ignore_ascii_case("https") {
        Some((Scheme::Https, rest))
    } else {
        None
    }
}

pub(super) fn split_host_port(
    authority: &str,
    default_port: u16,
) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or("unclosed `[` in IPv6 host")?;
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err("invalid IPv6 address");
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("unexpected text after IPv6 host")?,
            ),
        };
        (addr, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host");
    }
    let is_ipv6 = authority.starts_with('[');
    if !is_ipv6
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err("host may contain only letters, digits, `-`, `.` and `_`");
    }
    let port = match port {
        None => default_port,
        // `all digits` first: `u16::from_str` would also take a leading `+`.
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("port must be a number from 1 to 65535"),
        },
    };
    Ok((host.to_string(), port))
}

/// Berry API's rules plus ours: a full `…/chat/completions` endpoint keeps its prefix; a path that
/// already ends in a version segment (`/v1`, `/v4`, `/v1beta`) is kept; otherwise OpenAI and
/// Claude get `/v1` (Berry API always added it), while Gemini's URL is used as written because
/// Berry API appended `/models/…` to it directly.
fn normalise_path(path: &str, backend: BackendType) -> String {
    let path = path.trim_end_matches('/');
    if let Some(prefix) = path.strip_suffix(CHAT_COMPLETIONS) {
        return prefix.trim_end_matches('/').to_string();
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if is_version_segment(last) || backend == BackendType::Gemini {
        path.to_string()
    } else {
        format!("{path}/v1")
    }
}

/// `v` + digits, optionally followed by a lowercase channel name (`v1beta`, `v2alpha`).
fn is_version_segment(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0
        && rest[digits..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_openai_urls() {
        // (input, scheme, host, port, base_path, host header)
        let cases = [
            ("https://h", Scheme::Https, "h", 443, "/v1", "h"),
            ("https://h/", Scheme::Https, "h", 443, "/v1", "h"),
            ("https://h/v1", Scheme::Https, "h", 443, "/v1", "h"),
            ("https://h/v1/", Scheme::Https, "h", 443, "/v1", "h"),
            (
                "http://h:8080/openai/v1",
                Scheme::Http,
                "h",
                8080,
                "/openai/v1",
                "h:8080",
            ),
            (
                "https://h/v1/chat/completions",
                Scheme::Https,
                "h",
                443,
                "/v1",
                "h",
            ),
            (
                "https://h/chat/completions/",
                Scheme::Https,
                "h",
                443,
                "",
                "h",
            ),
            ("https://h/api", Scheme::Https, "h", 443, "/api/v1", "h"),
            ("https://h/api/v4", Scheme::Https, "h", 443, "/api/v4", "h"),
            (
                "http://[::1]:9000",
                Scheme::Http,
                "::1",
                9000,
                "/v1",
                "[::1]:9000",
            ),
            ("http://[::1]", Scheme::Http, "::1", 80, "/v1", "[::1]"),
            (
                "HTTPS://api.x.com:443",
                Scheme::Https,
                "api.x.com",
                443,
                "/v1",
                "api.x.com",
            ),
            (
                "http://127.0.0.1:80/v1",
                Scheme::Http,
                "127.0.0.1",
                80,
                "/v1",
                "127.0.0.1",
            ),
        ];
        for (input, scheme, host, port, base, host_header) in cases {
            let url = parse_base_url(input, BackendType::OpenAi)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(url.scheme, scheme, "{input}");
            assert_eq!(url.host, host, "{input}");
            assert_eq!(url.port, port, "{input}");
            assert_eq!(url.base_path, base, "{input}");
            assert_eq!(url.host_header(), host_header, "{input}");
        }
        let url = parse_base_url("https://h", BackendType::OpenAi).expect("valid");
        assert_eq!(url.path_for("/chat/completions"), "/v1/chat/completions");
    }

    #[test]
    fn gemini_keeps_its_path() {
        let url = parse_base_url(
            "https://generativelanguage.googleapis.com/v1beta/",
            BackendType::Gemini,
        )
        .expect("valid");
        assert_eq!(url.base_path, "/v1beta");
        let url = parse_base_url("https://g.example/api", BackendType::Gemini).expect("valid");
        assert_eq!(url.base_path, "/api");
    }

    #[test]
    fn rejects_bad_urls() {
        let cases = [
            ("ftp://h", "must start with"),
            ("h/v1", "must start with"),
            ("https://", "missing host"),
            ("https://user:hunter2@h", "user info"),
            ("https://h/v1?x=1", "query"),
            ("https://h/v1#frag", "fragment"),
            ("https://h:0", "port"),
            ("https://h:70000", "port"),
            ("https://h:", "port"),
            ("https://[::1", "unclosed"),
            ("https://[zz::1]", "IPv6"),
            ("https://[::1]x", "after IPv6"),
            ("https://h h", "whitespace"),
            ("https://h%41", "host may contain"),
        ];
        for (input, want) in cases {
            let err = parse_base_url(input, BackendType::OpenAi)
                .err()
                .unwrap_or_else(|| panic!("{input} should fail"));
            assert!(err.contains(want), "{input}: {err}");
            assert!(!err.contains("hunter2"), "{input}: leaked password: {err}");
        }
    }
}
