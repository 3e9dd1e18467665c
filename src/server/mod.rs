//! The client-facing side: connections, request heads and bodies, responses.

pub mod body;
pub mod conn;
pub mod respond;
