//! Observability: what a request leaves behind for Prometheus and the access log.
//!
//! The hot path only fills a [`RequestEvent`] (a fixed-size, copyable record) and pushes it on
//! the shard's [`crate::health::report::Recorder`], next to the attempt outcomes the health book
//! uses. The control thread is the single writer of the metrics recorder ([`exporter`]); the
//! access log is formatted on its own writer thread ([`access`]). So a request pays a few
//! stores and one `Vec` push for all of it, whatever the number of metrics.

pub mod access;
pub mod catalog;
pub mod exporter;
mod handles;
pub mod histo;
mod levels;
pub mod usage;
pub mod view;

pub use usage::Usage;

use crate::error::ErrorKind;

/// "No such index" in the `u32` slots of a [`RequestEvent`].
pub const NONE: u32 = u32::MAX;

/// What a request was for, as far as labels go. Proxied endpoints first: their index is the
/// routes' `UpstreamPath` index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    Health,
    Admin,
    Metrics,
    /// An unknown path, or a request refused before it was routed.
    #[default]
    Other,
}

impl From<crate::routes::UpstreamPath> for Route {
    fn from(path: crate::routes::UpstreamPath) -> Route {
        use crate::routes::UpstreamPath;
        match path {
            UpstreamPath::ChatCompletions => Route::ChatCompletions,
            UpstreamPath::Completions => Route::Completions,
            UpstreamPath::Embeddings => Route::Embeddings,
        }
    }
}

impl Route {
    pub const ALL: [Route; 8] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Embeddings,
        Route::Models,
        Route::Health,
        Route::Admin,
        Route::Metrics,
        Route::Other,
    ];

    /// Label value of the `endpoint` label on `berry_*` metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Models => "models",
            Route::Health => "health",
            Route::Admin => "admin",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }

    /// The path Berry API's metrics used as their `endpoint` label.
    pub fn legacy_path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Models => "/v1/models",
            Route::Health => "/health",
            Route::Admin => "/admin",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }

    pub fn is_proxied(self) -> bool {
        matches!(
            self,
            Route::ChatCompletions | Route::Completions | Route::Embeddings
        )
    }
}

/// One finished request, as metrics and the access log see it. Indices point into the config
/// the request ran under; [`NONE`] where the request never got that far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestEvent {
    pub route: Route,
    /// `true` for GET/HEAD, `false` for POST (the legacy `method` label; nothing else reaches
    /// a handler).
    pub get: bool,
    /// Status sent to the client; 499 when the client went away before the answer was complete.
    pub status: u16,
    /// The client went away before any byte of the answer reached it (so `status` is 499 and
    /// there was no first byte to time).
    pub client_left: bool,
    /// Status of the last upstream response head, 0 if none arrived.
    pub upstream_status: u16,
    pub model: u32,
    /// Index into the model's `backends` of the backend that answered (or failed last).
    pub backend: u32,
    pub user: u32,
    pub attempts: u8,
    pub stream: bool,
    pub error: Option<ErrorKind>,
    /// Request received (head read) to response complete, µs.
    pub duration_us: u32,
    /// Request received to first response byte handed to the client, µs.
    pub ttfb_us: u32,
    /// Time spent waiting on upstreams (connect, response head, body reads), µs.
    pub upstream_us: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Token counts from the upstream's `usage`, when it reported one.
    pub usage: Option<Usage>,
}

impl Default for RequestEvent {
    fn default() -> Self {
        RequestEvent {
            route: Route::Other,
            get: false,
            status: 0,
            client_left: false,
            upstream_status: 0,
            model: NONE,
            backend: NONE,
            user: NONE,
            attempts: 0,
            stream: false,
            error: None,
            duration_us: 0,
            ttfb_us: 0,
            upstream_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            usage: None,
        }
    }
}

impl RequestEvent {
    /// Time spent inside Berry: the whole request minus the upstream waits, µs.
    pub fn overhead_us(&self) -> u32 {
        self.duration_us.saturating_sub(self.upstream_us)
    }
}

/// One upstream connection attempt (pooled connections make these rare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub provider: u32,
    pub ok: bool,
    pub micros: u32,
}

/// The shard moved a request to another backend after `backend` failed with `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverEvent {
    pub model: u32,
    pub backend: u32,
    pub class: crate::balance::outcome::OutcomeClass,
}

/// Saturating µs of a duration, for the `u32` fields above (71 minutes at most).
pub fn micros(d: std::time::Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Appends the `server-timing` value: Berry's own time and the upstream's, in ms with µs
/// precision, e.g. `berry;dur=0.042, upstream;dur=12.500`.
pub fn write_server_timing(out: &mut Vec<u8>, berry_us: u32, upstream_us: u32) {
    out.extend_from_slice(b"berry;dur=");
    write_ms(out, berry_us);
    out.extend_from_slice(b", upstream;dur=");
    write_ms(out, upstream_us);
}

/// Appends µs as ms with three decimals (`12.500`).
pub fn write_ms(out: &mut Vec<u8>, us: u32) {
    crate::http::encode::write_decimal(out, u64::from(us / 1000));
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_is_ms_with_three_decimals() {
        let mut out = Vec::new();
        write_server_timing(&mut out, 42, 12_500);
        assert_eq!(out, b"berry;dur=0.042, upstream;dur=12.500");
        out.clear();
        write_server_timing(&mut out, 1_234_567, 0);
        assert_eq!(out, b"berry;dur=1234.567, upstream;dur=0.000");
    }

    #[test]
    fn overhead_never_underflows() {
        let e = RequestEvent {
            duration_us: 10,
            upstream_us: 12,
            ..RequestEvent::default()
        };
        assert_eq!(e.overhead_us(), 0);
    }
}
