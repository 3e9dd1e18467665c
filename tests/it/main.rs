//! One integration binary. Each module boots the real gateway on 127.0.0.1:0 in front of
//! scripted mock upstreams and checks what crosses the wire, under both I/O drivers.

mod support;

/// The access log: lines from the real binary, no secrets, rotation.
mod access_log;

/// CORS: preflights, the CORS lines on every answer to an allowed origin, none without one.
mod cors;
/// Stopping: what requests still waiting on an upstream get when the drain time is up.
mod drain;
/// The real binary: io_uring refused under seccomp, epoll fallback; SIGTERM, SIGHUP.
mod driver;
/// Local endpoints: models, health; the CLI's config validation.
mod endpoints;
/// Every bad input gets the right status and an OpenAI error envelope.
mod errors;
/// Failover and what never fails over.
mod failover;
/// Health snapshot, circuit breaking over time, admin views.
mod health;
/// Per-user rate limits: counted across shards, refusals free, 429 with Retry-After.
mod limits;
/// `berry loadtest` honesty: agrees with wrk, sees stalls open-loop, bounded, loopback only.
mod loadgen;
/// Metrics, usage accounting, access log, server-timing; no secret in any output.
mod observability;
/// Forwarding: rewrite, headers, request ids, keep-alive pooling.
mod proxy;
/// Strategies and circuit breaking, end to end, counting what each upstream received.
mod routing;
/// SSE relay, broken streams, client disconnects.
mod streaming;
/// HTTPS upstreams: a private CA via `ca_file`, streaming and pooling over TLS.
mod tls;
