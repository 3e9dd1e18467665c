//! Backend health: the circuit breaker today; health checks and the shared snapshot next.

pub mod breaker;
