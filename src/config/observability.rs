//! The `[observability]` table (new in Berry): metrics, the access log, log level and how
//! streamed token usage is obtained.

use super::raw::{RawObservability, S};
use super::validate::Ctx;
use crate::telemetry::access::{Format, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Forward streamed requests as sent: tokens are counted only when the client asked for
    /// `stream_options.include_usage` itself.
    Pass,
    /// Ask every stream for its usage, count it, and remove the extra chunk before it reaches
    /// a client that did not ask for it.
    Inject,
}

#[derive(Debug, Clone)]
pub struct Observability {
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// `/metrics` follows the admin rule (loopback, or the admin token) instead of being open.
    pub metrics_admin_only: bool,
    pub access_log: Target,
    pub access_log_format: Format,
    /// Log filter (env_logger syntax) when `RUST_LOG` is not set.
    pub log_level: String,
    pub stream_usage: StreamUsage,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            metrics: true,
            metrics_admin_only: false,
            access_log: Target::Stdout,
            access_log_format: Format::Json,
            log_level: "info".into(),
            stream_usage: StreamUsage::Pass,
        }
    }
}

pub(super) fn observability(cx: &mut Ctx<'_, '_>, raw: &RawObservability) -> Observability {
    let p = |key: &str| format!("observability.{key}");
    let d = Observability::default();
    let mut choice = |v: Option<&S<String>>, key: &str, options: &[&str]| -> Option<usize> {
        let v = v?;
        let i = options.iter().position(|o| *o == v.get_ref().as_str());
        if i.is_none() {
            let list: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
            let msg = format!("must be one of {} (got {:?})", list.join(", "), v.get_ref());
            cx.sink.error(v.span(), &p(key), msg);
        }
        i
    };
    let access_log_format = match choice(
        raw.access_log_format.as_ref(),
        "access_log_format",
        &["json", "text"],
    ) {
        Some(1) => Format::Text,
        _ => Format::Json,
    };
    let stream_usage = match choice(
        raw.stream_usage.as_ref(),
        "stream_usage",
        &["pass", "inject"],
    ) {
        Some(1) => StreamUsage::Inject,
        _ => StreamUsage::Pass,
    };
    let access_log = match raw.access_log.as_ref() {
        None => d.access_log,
        Some(v) => match v.get_ref().as_str() {
            "off" => Target::Off,
            "stdout" => Target::Stdout,
            "stderr" => Target::Stderr,
            "" => {
                let msg = "must be `stdout`, `stderr`, `off` or a file path (got an empty string)";
                cx.sink.error(v.span(), &p("access_log"), msg);
                d.access_log
            }
            path => Target::File(path.into()),
        },
    };
    let log_level = match raw.log_level.as_ref() {
        None => d.log_level,
        Some(v) => {
            let spec = v.get_ref().trim();
            let mut builder = env_filter::Builder::new();
            if spec.is_empty() || builder.try_parse(spec).is_err() {
                let msg = format!(
                    "must be a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or a \
                     RUST_LOG-style filter such as `info,berry::proxy=debug` (got {spec:?})"
                );
                cx.sink.error(v.span(), &p("log_level"), msg);
                d.log_level
            } else {
                spec.to_string()
            }
        }
    };
    Observability {
        metrics: raw.metrics.unwrap_or(d.metrics),
        metrics_admin_only: raw.metrics_admin_only.unwrap_or(d.metrics_admin_only),
        access_log,
        access_log_format,
        log_level,
        stream_usage,
    }
}
