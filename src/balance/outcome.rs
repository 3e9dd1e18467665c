//! What one attempt's result means for the backend that served it: an [`OutcomeClass`] derived
//! from the HTTP status or the transport error, never from the text of an error message.
//! It owns that mapping and nothing else; it never looks at bodies beyond an optional,
//! already-parsed OpenAI error `code` (see [`refine_with_error_code`]).

/// How an attempt ended, from the backend's point of view. SmartAI, the recovery ramp and the
/// latency estimates all key off this one value, so every consumer agrees on what a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    /// 2xx: the backend answered.
    Success,
    /// Connect, first-byte or idle timeout, or an upstream 408 / 504.
    Timeout,
    /// The connection failed or broke (refused, reset, TLS, DNS).
    Connect,
    /// 429: the backend (or its key) is over its limits.
    RateLimited,
    /// 5xx other than 504, a redirect (a gateway never follows one), or an unparseable answer.
    ServerError,
    /// 401 / 403 / 402 from the upstream: the provider key is bad, revoked or out of credit.
    /// The gateway wrote that key, so it is the backend's fault, not the client's.
    AuthError,
    /// The backend does not serve the model the gateway asked for (see
    /// [`refine_with_error_code`]); the gateway chose that model name, so it is the backend's
    /// fault.
    ModelError,
    /// Any other 4xx (400, 404, 413, 422, …): the client's request was wrong. It says nothing
    /// about the backend, so it never moves confidence, health or latency.
    ClientError,
}

/// Transport-level failures, as the upstream client reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportError {
    /// TCP connect refused / unreachable, DNS failure, TLS handshake failure.
    Connect,
    /// Connect, first-byte, idle or total timeout expired.
    Timeout,
    /// The connection broke after it was established (reset, unexpected EOF).
    Io,
    /// The upstream answered something that is not HTTP (or not the HTTP we accept).
    Protocol,
}

impl OutcomeClass {
    /// Is this a failure the backend is to blame for? (`ClientError` and `Success` are not.)
    pub fn is_backend_failure(self) -> bool {
        !matches!(self, OutcomeClass::Success | OutcomeClass::ClientError)
    }

    /// Does the elapsed time of this attempt say something about the backend's latency?
    /// Successes do; so do timeouts (the elapsed time is a lower bound that should push the
    /// estimate up). Fast failures do not: recording a 2 ms "connection refused" would make a
    /// dead backend look like the fastest one.
    pub fn measures_latency(self) -> bool {
        matches!(self, OutcomeClass::Success | OutcomeClass::Timeout)
    }
}

/// Maps one attempt's result to its class. `transport` wins when both are given (a transport
/// error means no complete status was received). With neither, nothing was observed at all; that
/// is treated as `Connect`, Berry API's catch-all "network" bucket.
pub fn classify(status: Option<u16>, transport: Option<TransportError>) -> OutcomeClass {
    if let Some(t) = transport {
        return match t {
            TransportError::Connect | TransportError::Io => OutcomeClass::Connect,
            TransportError::Timeout => OutcomeClass::Timeout,
            TransportError::Protocol => OutcomeClass::ServerError,
        };
    }
    let Some(status) = status else {
        return OutcomeClass::Connect;
    };
    match status {
        200..=299 => OutcomeClass::Success,
        401..=403 => OutcomeClass::AuthError,
        408 | 504 => OutcomeClass::Timeout,
        429 => OutcomeClass::RateLimited,
        400..=499 => OutcomeClass::ClientError,
        // 1xx never reaches us as a final status; 3xx and 5xx mean the upstream misbehaved, as do
        // nonsense codes outside 100..=599.
        _ => OutcomeClass::ServerError,
    }
}

/// OpenAI-style error `code` values that mean "this backend does not serve that model". Exact
/// matches on the structured field, never substrings of a message.
pub const MODEL_ERROR_CODES: &[&str] = &["model_not_found"];

/// Refines a `ClientError` whose parsed error body carries a model-error code into
/// `ModelError`. Only a 4xx can be refined: the gateway rewrote the request's `model` to the
/// backend's upstream model, so "no such model" is a configuration fault of the backend.
pub fn refine_with_error_code(class: OutcomeClass, code: Option<&str>) -> OutcomeClass {
    match (class, code) {
        (OutcomeClass::ClientError, Some(code)) if MODEL_ERROR_CODES.contains(&code) => {
            OutcomeClass::ModelError
        }
        _ => class,
    }
}
