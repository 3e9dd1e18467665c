//! Request-body peek / rewrite throughput on representative OpenAI bodies, with a full
//! `serde_json::Value` parse of the same bytes as the yardstick (serde_json is a normal dependency
//! of the main crate, so this bench needs nothing extra there) and `str::from_utf8` of the whole
//! body as the floor an up-front UTF-8 check would add.
//!
//! Run: `cargo bench --bench peek -- --warm-up-time 1 --measurement-time 2` (name the bench: the
//! lib's libtest harness rejects criterion's flags).

use berry::api::peek::{peek, rewrite};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

/// Deterministic prose: English words with the occasional escape and non-ASCII word, like real
/// prompts (mostly ASCII, some `\n` and `\"`, a little UTF-8).
fn prose(seed: &mut u64, bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "request",
        "gateway",
        "answer",
        "concise",
        "user",
        "assistant",
        "context",
        "token",
        "please",
        "summarize",
        "following",
        "document",
        "carefully",
        "and",
        "of",
        "to",
        "in",
        "café",
        "naïve",
        "日本語",
        "\\n",
        "\\\"quoted\\\"",
        "JSON",
        "rust",
        "latency",
        "throughput",
        "upstream",
        "provider",
    ];
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(WORDS[(*seed >> 33) as usize % WORDS.len()]);
        s.push(' ');
    }
    s
}

fn chat(seed: &mut u64, system: usize, turns: usize, turn_len: usize) -> Vec<u8> {
    let mut b = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"{}"}}"#,
        prose(seed, system)
    );
    for i in 0..turns {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        b += &format!(
            r#",{{"role":"{role}","content":"{}"}}"#,
            prose(seed, turn_len)
        );
    }
    b += r#"],"temperature":0.7,"max_tokens":1024,"stream":true,"stream_options":{"include_usage":true},"backend":"openai-eu"}"#;
    b.into_bytes()
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut seed = 42;
    let small = chat(&mut seed, 30, 1, 50);
    let medium = chat(&mut seed, 2800, 4, 250);
    let large = chat(&mut seed, 4000, 200, 1290);
    let items: Vec<String> = (0..1000)
        .map(|_| format!("\"{}\"", prose(&mut seed, 40)))
        .collect();
    let embeddings = format!(
        r#"{{"model":"text-embedding-3-small","input":[{}],"encoding_format":"float"}}"#,
        items.join(",")
    )
    .into_bytes();
    vec![
        ("small_chat", small),
        ("medium_chat", medium),
        ("large_chat", large),
        ("embeddings_1000", embeddings),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, body) in inputs() {
        assert!(peek(&body, 128).is_ok(), "{name} must be valid");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("peek", |b| b.iter(|| peek(black_box(&body), 128)));
        let mut out = Vec::with_capacity(body.len() + 64);
        g.bench_function("peek+rewrite", |b| {
            b.iter(|| {
                let p = peek(black_box(&body), 128).unwrap_or_default();
                out.clear();
                rewrite(&body, &p, "gpt-4o-mini-2024-07-18", true, None, &mut out);
                black_box(out.len())
            })
        });
        g.bench_function("serde_json_value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).is_ok())
        });
        g.bench_function("std_from_utf8", |b| {
            b.iter(|| std::str::from_utf8(black_box(&body)).is_ok())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
