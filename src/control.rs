//! The control thread: the only place that talks to every shard.
//!
//! Shards never share mutable state; what must agree across them travels as a closed set of
//! messages. Today it refreshes upstream DNS off the shards; health checks, the shared
//! snapshot and reload will live here too. Shards poll their inbox on a timer (monoio's
//! cross-thread wakers need its `sync` feature, which costs every task a little).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::routes::{resolve_all, AddressTable, Routes};
use crate::runtime::Shutdown;

/// How often upstream host names are resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(30);
/// How often the control thread checks for shutdown.
const TICK: Duration = Duration::from_millis(50);

/// Everything a shard can be told.
pub enum ShardMsg {
    /// Fresh upstream addresses, indexed like `Config.providers`.
    Addresses(Arc<AddressTable>),
}

pub fn spawn(
    routes: Arc<Routes>,
    shards: Vec<Sender<ShardMsg>>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("berry-control".into())
        .spawn(move || {
            let mut last_dns = Instant::now();
            let mut last_table: Option<AddressTable> = None;
            while !shutdown.is_triggered() {
                std::thread::sleep(TICK);
                if last_dns.elapsed() >= DNS_REFRESH {
                    last_dns = Instant::now();
                    let table = resolve_all(&routes.config);
                    if last_table.as_ref() != Some(&table) {
                        let shared = Arc::new(table.clone());
                        for s in &shards {
                            // A full inbox means the shard is stuck; it gets the next refresh.
                            let _ = s.try_send(ShardMsg::Addresses(shared.clone()));
                        }
                        last_table = Some(table);
                    }
                }
            }
        })
}
