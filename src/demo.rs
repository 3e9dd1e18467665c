//! `berry demo`: three mock upstreams on loopback (fast, slow, flaky) and Berry in front of
//! them, from an embedded config. Prints how to call it and serves until Ctrl-C.

use std::net::SocketAddr;

use crate::config::{self, DriverChoice};
use crate::mock::{self, MockArgs};
use crate::runtime::Shutdown;

/// The demo's only API key (loopback-only demo; never use it elsewhere).
pub const DEMO_TOKEN: &str = "berry-demo-token-0123456789";

fn mock_args(name: &str, latency_ms: u64, fail_rate: f64) -> MockArgs {
    MockArgs {
        bind: "127.0.0.1:0".into(),
        workers: 1,
        latency_ms,
        fail_rate,
        stream_events: 8,
        event_delay_ms: 40,
        name: name.into(),
        ..MockArgs::default()
    }
}

/// The embedded demo config, pointing at the three mocks.
pub fn demo_config(fast: SocketAddr, slow: SocketAddr, flaky: SocketAddr) -> String {
    format!(
        r#"
[settings]
max_retries = 2

[providers.fast]
name = "Fast mock"
base_url = "http://{fast}"
api_key = "sk-demo-fast-0000000000"
models = ["mock-small"]

[providers.slow]
name = "Slow mock (300 ms)"
base_url = "http://{slow}/v1"
api_key = "sk-demo-slow-0000000000"
models = ["mock-small"]

[providers.flaky]
name = "Flaky mock (30 % errors)"
base_url = "http://{flaky}"
api_key = "sk-demo-flaky-000000000"
models = ["mock-small", "mock-embed"]

[models.demo_chat]
name = "demo-chat"
strategy = "weighted_random"
[[models.demo_chat.backends]]
provider = "fast"
model = "mock-small"
weight = 3
[[models.demo_chat.backends]]
provider = "slow"
model = "mock-small"
weight = 1
[[models.demo_chat.backends]]
provider = "flaky"
model = "mock-small"
weight = 2

[models.demo_embed]
name = "demo-embed"
[[models.demo_embed.backends]]
provider = "flaky"
model = "mock-embed"

[users.demo]
name = "Demo user"
token = "{DEMO_TOKEN}"

[observability]
# One readable line per request on stdout; streams are asked for their token usage.
access_log_format = "text"
stream_usage = "inject"
"#
    )
}

pub fn run(port: u16) -> Result<(), String> {
    let any: SocketAddr = "127.0.0.1:0".parse().map_err(|_| "bad address")?;
    let fast = mock::spawn(mock_args("fast", 20, 0.0), any)?;
    let slow = mock::spawn(mock_args("slow", 300, 0.0), any)?;
    let flaky = mock::spawn(mock_args("flaky", 30, 0.3), any)?;
    let text = demo_config(fast.addr, slow.addr, flaky.addr);
    let cfg = config::load_str(&text, "demo.toml").map_err(|e| e.to_string())?;
    let addr: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(|_| "bad port")?;
    let shutdown = Shutdown::new();
    let server = crate::cli::start(cfg, addr, 2, DriverChoice::Auto, false, shutdown.clone())?;
    let url = format!("http://{}", server.local_addr);
    println!(
        "\nBerry demo is running at {url}\n\
         mock upstreams: fast {} (20 ms), slow {} (300 ms), flaky {} (30 % errors, Berry fails over)\n\
         API key: {DEMO_TOKEN}\n\n\
         curl -s {url}/v1/chat/completions -H 'Authorization: Bearer {DEMO_TOKEN}' \\\n  \
           -H 'Content-Type: application/json' -d '{{\"model\":\"demo-chat\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' -i\n\n\
         curl -sN {url}/v1/chat/completions -H 'Authorization: Bearer {DEMO_TOKEN}' \\\n  \
           -H 'Content-Type: application/json' -d '{{\"model\":\"demo-chat\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\n\
         curl -s {url}/v1/models -H 'Authorization: Bearer {DEMO_TOKEN}'\n\
         curl -s {url}/health\n\
         curl -s {url}/metrics\n\n\
         Each request is logged below (the access log).\n\
         Press Ctrl-C to stop.",
        fast.addr, slow.addr, flaky.addr
    );
    crate::cli::wait_for_signal(&shutdown);
    server.join();
    Ok(())
}
