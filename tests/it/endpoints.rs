use std::process::Command;

use crate::both_drivers;
use crate::support::*;

const CAROL: &str = r#"
[users.carol]
name = "Carol"
token = "tok-carol-0123456789abcdef"
allowed_models = ["zeta-model"]

[models.zeta]
name = "zeta-model"
[[models.zeta.backends]]
provider = "alpha"
model = "up-model-a"

[models.aardvark]
name = "aardvark"
[[models.aardvark.backends]]
provider = "alpha"
model = "up-model-a"
"#;

both_drivers! {
    fn models_list_is_stable_and_filtered(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_two(a.addr, a.addr, CAROL), driver);
        let get = |tok: &str| send_raw(gw.addr, format!("GET /v1/models HTTP/1.1\r\nauthorization: Bearer {tok}\r\n\r\n").as_bytes());
        let all = get(TOKEN);
        assert_eq!(all.status, 200);
        let v = all.json();
        assert_eq!(v["object"], "list");
        let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["aardvark", "gpt-test", "zeta-model"]);
        assert_eq!(v["data"][0]["object"], "model");
        let carol = get("tok-carol-0123456789abcdef").json();
        assert_eq!(carol["data"].as_array().unwrap().len(), 1);
        assert_eq!(carol["data"][0]["id"], "zeta-model");
        send_raw(gw.addr, b"GET /models HTTP/1.1\r\n\r\n").assert_error(401);
    }

    fn health_views_have_berry_shapes_and_no_secrets(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let gw = gateway(&config_two(a.addr, a.addr, ""), driver);
        let r = send_raw(gw.addr, b"GET /health HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(!text.contains("127.0.0.1") && !text.contains("sk-") && !text.contains(TOKEN), "{text}");
        let v = r.json();
        assert_eq!(v["status"], "healthy");
        assert_eq!(v["summary"]["model_health"]["total"], 1);
        assert!(v["providers"]["alpha"]["models"]["up-model-a"]["healthy"].as_bool().unwrap());
        let short = send_raw(gw.addr, b"GET /v1/health HTTP/1.1\r\n\r\n").json();
        assert_eq!(short["status"], "healthy");
        assert_eq!(short["summary"]["backends"]["total"], 2);
        assert!(short["uptime_seconds"].as_u64().unwrap() < 3600, "uptime, not the Unix time");
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        std::io::Write::write_all(&mut s, b"HEAD /v1/health HTTP/1.1\r\nconnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        std::io::Read::read_to_string(&mut s, &mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("content-length: ") && raw.ends_with("\r\n\r\n"), "HEAD has a length but no body: {raw}");
    }

    fn health_is_503_when_most_models_have_no_backend(driver) {
        let a = upstream(|_| json_reply(200, "{}"));
        let toml = config_two(a.addr, a.addr, "").replace("[providers.beta]", "[providers.beta]\nenabled = false")
            .replace("name = \"Alpha\"", "name = \"Alpha\"\nenabled = false");
        let gw = gateway(&toml, driver);
        let r = send_raw(gw.addr, b"GET /v1/health HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["status"], "unhealthy");
        let v = send_raw(gw.addr, &post("/v1/chat/completions", r#"{"model":"gpt-test"}"#)).assert_error(503);
        assert_eq!(v["error"]["code"], "no_available_backend");
    }
}

#[test]
fn validate_reports_every_error_with_its_line() {
    let dir = std::env::temp_dir().join(format!("berry-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[providers.p]\nname = \"P\"\nbase_url = \"ftp://x\"\napi_key = \"sk-0123456789\"\nmodels = [\"m\"]\ntypo_key = 1\n\n\
         [models.m]\nname = \"m\"\n[[models.m.backends]]\nprovider = \"nobody\"\nmodel = \"m\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berry"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3:"), "base_url error on line 3: {err}");
    assert!(
        err.contains(":6:") && err.contains("typo_key"),
        "unknown key on line 6: {err}"
    );
    assert!(
        err.contains(":11:") && err.contains("nobody"),
        "unknown provider on line 11: {err}"
    );
    assert!(
        !err.contains("sk-0123456789"),
        "no secrets in errors: {err}"
    );
}

#[test]
fn serve_refuses_open_gateway_on_public_address() {
    let toml = config_two(dead_addr(), dead_addr(), "");
    let no_users = toml[..toml.find("[users.alice]").unwrap()].to_string();
    let cfg = berry::config::load_str(&no_users, "t.toml").unwrap();
    let err = berry::cli::protected_mode(&cfg, "0.0.0.0:3000".parse().unwrap()).unwrap_err();
    assert!(err.contains("allow_anonymous"), "{err}");
    assert!(berry::cli::protected_mode(&cfg, "127.0.0.1:3000".parse().unwrap()).is_ok());
    let open = berry::config::load_str(
        &format!("[server]\nallow_anonymous = true\n{no_users}"),
        "t.toml",
    )
    .unwrap();
    assert!(berry::cli::protected_mode(&open, "0.0.0.0:3000".parse().unwrap()).is_ok());
}
