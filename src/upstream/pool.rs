//! Per-shard keep-alive pools of upstream connections, one LIFO stack per provider.
//!
//! Owned by exactly one shard (no locks, no atomics). LIFO keeps the hottest connection in use,
//! so idle ones age out and are closed before the upstream's own keep-alive timer closes them
//! under us (uvicorn, which serves vLLM, closes idle connections after 5 s).

use std::time::{Duration, Instant};

use super::conn::UpConn;

pub struct Pool {
    providers: Vec<Vec<(UpConn, Instant)>>,
    idle_max: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(providers: usize, idle_max: usize, idle_timeout: Duration) -> Pool {
        Pool {
            providers: (0..providers).map(|_| Vec::new()).collect(),
            idle_max,
            idle_timeout,
        }
    }

    /// The most recently returned connection that is still within its idle timeout.
    pub fn take(&mut self, provider: usize, now: Instant) -> Option<UpConn> {
        let stack = self.providers.get_mut(provider)?;
        while let Some((conn, since)) = stack.pop() {
            if now.duration_since(since) < self.idle_timeout {
                return Some(conn);
            }
            // Anything below an expired entry is older still.
            stack.clear();
        }
        None
    }

    /// Returns a connection whose last response was fully read and allowed keep-alive.
    pub fn put(&mut self, provider: usize, conn: UpConn, now: Instant) {
        if let Some(stack) = self.providers.get_mut(provider) {
            if stack.len() < self.idle_max {
                stack.push((conn, now));
            }
        }
    }

    /// Idle connections kept for `provider`.
    pub fn idle(&self, provider: usize) -> usize {
        self.providers.get(provider).map_or(0, Vec::len)
    }

    /// Closes connections idle for longer than the timeout; called from a periodic shard task.
    pub fn reap(&mut self, now: Instant) -> usize {
        let mut closed = 0;
        for stack in &mut self.providers {
            let keep_from = stack
                .iter()
                .position(|(_, since)| now.duration_since(*since) < self.idle_timeout)
                .unwrap_or(stack.len());
            closed += keep_from;
            stack.drain(..keep_from);
        }
        closed
    }
}
