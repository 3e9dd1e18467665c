//! The candidate filter: Berry API's tag rule plus the rules it lacked.

use super::*;

const CONFIG: &str = r#"
[providers.a]
name = "A"
base_url = "https://a.example"
api_key = "sk-a-0123456789"
models = ["up"]

[providers.b]
name = "B"
base_url = "https://b.example"
api_key = "sk-b-0123456789"
models = ["up"]

[providers.off]
name = "Off"
base_url = "https://off.example"
api_key = "sk-off-0123456789"
models = ["up"]
enabled = false

[models.m]
name = "m"
[[models.m.backends]]       # 0: untagged
provider = "a"
model = "up"
[[models.m.backends]]       # 1: premium only
provider = "b"
model = "up"
tags = ["premium"]
[[models.m.backends]]       # 2: disabled
provider = "a"
model = "up"
enabled = false
[[models.m.backends]]       # 3: provider disabled
provider = "off"
model = "up"
[[models.m.backends]]       # 4: basic or premium
provider = "b"
model = "up"
tags = ["basic", "premium"]

[users.u]
name = "U"
token = "tok-u-0123456789abcdef"
"#;

fn candidates(
    config: &Config,
    tags: &[&str],
    tried: &[usize],
    provider: Option<&str>,
) -> Vec<usize> {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let filter = Filter {
        user_tags: &tags,
        tried,
        provider: provider.map(|p| config.provider_index(p).unwrap()),
    };
    let mut out = Vec::new();
    collect(config, &config.models[0], &filter, &mut out);
    assert_eq!(
        has_candidate(config, &config.models[0], &filter),
        !out.is_empty()
    );
    out
}

#[test]
fn filter_applies_every_rule() {
    let config = load_str_with_env(CONFIG, "t.toml", &|_| None).unwrap();
    // No tags: everything enabled with an enabled provider.
    assert_eq!(candidates(&config, &[], &[], None), [0, 1, 4]);
    // Tagged caller: untagged backends plus those sharing a tag.
    assert_eq!(candidates(&config, &["basic"], &[], None), [0, 4]);
    assert_eq!(candidates(&config, &["premium"], &[], None), [0, 1, 4]);
    assert_eq!(candidates(&config, &["other"], &[], None), [0]);
    // Already tried.
    assert_eq!(candidates(&config, &[], &[0, 4], None), [1]);
    // Forced provider.
    assert_eq!(candidates(&config, &[], &[], Some("b")), [1, 4]);
    assert_eq!(
        candidates(&config, &[], &[1, 4], Some("b")),
        Vec::<usize>::new()
    );
    assert_eq!(
        candidates(&config, &[], &[], Some("off")),
        Vec::<usize>::new()
    );
}

#[test]
fn collect_reuses_the_buffer() {
    let config = load_str_with_env(CONFIG, "t.toml", &|_| None).unwrap();
    let filter = Filter {
        user_tags: &[],
        tried: &[],
        provider: None,
    };
    let mut out = Vec::with_capacity(8);
    let before = out.as_ptr();
    for _ in 0..3 {
        collect(&config, &config.models[0], &filter, &mut out);
    }
    assert_eq!(out, [0, 1, 4]);
    assert_eq!(out.as_ptr(), before);
}
