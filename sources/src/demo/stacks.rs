//! `format = "stack_samples"`: synthetic CPU profile samples in the `stack-sample` schema
//! (`docs/schemas/stack-sample.md`), one per event, so `stack_fold` draws a live flame graph:
//! a web server that spends its time parsing JSON, rendering templates and in the kernel's
//! `write`, and a background worker that compresses and waits.

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::Rng;
use weir_pipeline::event::{ObjectMap, Value};

/// (process, pid, weight, call chain from the root).
const STACKS: &[(&str, i64, u32, &[&str])] = &[
    (
        "web",
        4100,
        30,
        &[
            "main",
            "serve",
            "handle_request",
            "parse_json",
            "read_string",
        ],
    ),
    (
        "web",
        4100,
        12,
        &["main", "serve", "handle_request", "parse_json", "alloc"],
    ),
    (
        "web",
        4100,
        20,
        &[
            "main",
            "serve",
            "handle_request",
            "render",
            "template_expand",
        ],
    ),
    (
        "web",
        4100,
        8,
        &["main", "serve", "handle_request", "render", "escape_html"],
    ),
    (
        "web",
        4100,
        10,
        &[
            "main",
            "serve",
            "write_response",
            "[k] __x64_sys_write",
            "[k] tcp_sendmsg",
        ],
    ),
    (
        "web",
        4100,
        5,
        &["main", "serve", "accept", "[k] __x64_sys_accept4"],
    ),
    (
        "worker",
        4200,
        10,
        &["main", "run_jobs", "compress", "deflate_slow"],
    ),
    (
        "worker",
        4200,
        5,
        &["main", "run_jobs", "[k] __x64_sys_futex", "[k] schedule"],
    ),
];

/// One stack sample, made at `at`.
pub fn generate(rng: &mut SmallRng, at: DateTime<Utc>) -> Value {
    let total: u32 = STACKS.iter().map(|s| s.2).sum();
    let mut pick = rng.random_range(0..total);
    let mut stack = STACKS[0];
    for s in STACKS {
        if pick < s.2 {
            stack = *s;
            break;
        }
        pick -= s.2;
    }
    let (comm, pid, _, chain) = stack;
    // Leaf first, as perf prints them.
    let frames = chain
        .iter()
        .rev()
        .map(|f| {
            let (symbol, module, kind) = match f.strip_prefix("[k] ") {
                Some(k) => (k, "[kernel.kallsyms]".to_string(), "kernel"),
                None => (*f, format!("/usr/bin/{comm}"), "user"),
            };
            let mut frame = ObjectMap::new();
            frame.insert("addr".into(), Value::from("0"));
            frame.insert("symbol".into(), Value::from(symbol));
            frame.insert("offset".into(), Value::Null);
            frame.insert("module".into(), Value::from(module));
            frame.insert("kind".into(), Value::from(kind));
            frame.insert("inlined".into(), Value::Boolean(false));
            Value::Object(frame)
        })
        .collect();
    let mut sample = ObjectMap::new();
    sample.insert("comm".into(), Value::from(comm));
    sample.insert("pid".into(), Value::Integer(pid));
    sample.insert("tid".into(), Value::Integer(pid));
    sample.insert("cpu".into(), Value::Integer(rng.random_range(0..4)));
    // The schema's clock is perf's, in seconds: the wall clock's stands in for it.
    let secs = at.timestamp_micros() as f64 / 1e6;
    sample.insert("timestamp".into(), Value::from_f64_or_zero(secs));
    sample.insert("event".into(), Value::from("cpu-clock"));
    sample.insert("period".into(), Value::Integer(1_000_000));
    sample.insert("frames".into(), Value::Array(frames));
    Value::Object(sample)
}
