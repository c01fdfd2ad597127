//! `weir-bench flows`: the service map's throughput.
//!
//! 1. End to end: generated `hubble observe -o jsonpb` lines on stdin -> `flow_to_topology`
//!    (one window) -> blackhole, in the release `weir` binary pinned to one core; next to the
//!    naive baseline (b), `serde_json::Value` per line, on the same file in the same run.
//! 2. The transform alone: the same flows decoded into events a batch of 1000 at a time (timed
//!    apart), fed to `FlowToTopology`, by the `flows_alone` binary (`src/bin/flows_alone.rs`),
//!    which runs under the `weir` binary's allocator.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::baseline;
use crate::runner::{self, Runner, ScratchDir};

pub const USAGE: &str = "\
weir-bench flows: flow_to_topology throughput, end to end and alone

USAGE:
    weir-bench flows [OPTIONS]

OPTIONS:
    --flows N          Flows in the generated input (default 500000)
    --alone N          Flows fed to the transform alone (default 200000)
    --runs N           Runs of each measurement; the median is reported (default 3)
    --weir PATH        The weir binary (default: <workspace>/target/release/weir)
    --codec NAME       stdin's decoding codec: hubble_jsonpb (default: flows in typed form)
                       or json (a tree of fields per flow)
    --data-dir DIR     Where the input is kept (default: <workspace>/target/bench-data)
    --no-taskset       Do not pin weir and the baseline to core 0
    --alone-only       Measure only the transform alone (no baseline, no weir binary needed)
";

struct Args {
    flows: u64,
    alone: usize,
    runs: usize,
    weir: PathBuf,
    data_dir: PathBuf,
    taskset: bool,
    alone_only: bool,
    /// The `stdin` source's codec (and the decoder `flows_alone` uses).
    codec: String,
}

/// Services of the generated mesh: (name, node).
const SERVICES: [(&str, &str); 12] = [
    ("frontend", "node-1"),
    ("cart", "node-2"),
    ("checkout", "node-3"),
    ("payment", "node-1"),
    ("shipping", "node-2"),
    ("email", "node-3"),
    ("currency", "node-1"),
    ("catalog", "node-2"),
    ("recommend", "node-3"),
    ("ads", "node-1"),
    ("redis", "node-2"),
    ("loadgen", "node-3"),
];

fn endpoint(out: &mut String, i: usize, pod: u64) {
    let (name, _) = SERVICES[i];
    let _ = write!(
        out,
        r#"{{"ID":{id},"identity":{ident},"namespace":"shop","labels":["k8s:app={name}","k8s:io.kubernetes.pod.namespace=shop","k8s:io.cilium.k8s.policy.cluster=default"],"pod_name":"{name}-6d9f7c-{pod:05x}","workloads":[{{"name":"{name}","kind":"Deployment"}}]}}"#,
        id = 100 + i,
        ident = 10_000 + i,
    );
}

/// One jsonpb line per flow: TCP handshakes seen at both ends, HTTP request/response pairs
/// with latencies, DNS lookups; deterministic for a given count.
pub fn generate(path: &Path, flows: u64) -> Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut line = String::with_capacity(2048);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut bytes = 0u64;
    for n in 0..flows {
        let r = next();
        let client = (r % 12) as usize;
        let server = ((r >> 8) % 11) as usize;
        let server = if server >= client { server + 1 } else { server };
        let kind = (r >> 16) % 8;
        let reply = (r >> 20) % 2 == 1;
        let (src, dst) = if reply {
            (server, client)
        } else {
            (client, server)
        };
        let sport = 30_000 + (r >> 24) % 30_000;
        let dport = 8000 + server as u64;
        let (ps, pd) = if reply {
            (dport, sport)
        } else {
            (sport, dport)
        };
        let t = format!(
            "2026-11-20T10:{:02}:{:02}.{:09}Z",
            (n / 1_000_000) % 60,
            (n / 20_000) % 60,
            (n % 20_000) * 50_000 + 17
        );
        let node = SERVICES[if (r >> 40) % 2 == 0 { src } else { dst }].1;
        line.clear();
        let _ = write!(
            line,
            r#"{{"flow":{{"time":"{t}","uuid":"{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}","verdict":"FORWARDED","IP":{{"source":"10.244.{}.{}","destination":"10.244.{}.{}","ipVersion":"IPv4"}},"#,
            r >> 32,
            (r >> 16) & 0xffff,
            r & 0xfff,
            (r >> 12) & 0xfff,
            n,
            src,
            (r >> 44) % 250,
            dst,
            (r >> 52) % 250
        );
        let proto_dns = kind == 7;
        if proto_dns {
            let _ = write!(
                line,
                r#""l4":{{"UDP":{{"source_port":{ps},"destination_port":53}}}},"#
            );
        } else {
            let flags = match (kind, reply) {
                (0, false) => r#"{"SYN":true}"#,
                (0, true) => r#"{"SYN":true,"ACK":true}"#,
                (1, _) => r#"{"FIN":true,"ACK":true}"#,
                _ => r#"{"ACK":true}"#,
            };
            let _ = write!(
                line,
                r#""l4":{{"TCP":{{"source_port":{ps},"destination_port":{pd},"flags":{flags}}}}},"#
            );
        }
        line.push_str(r#""source":"#);
        endpoint(&mut line, src, r & 0xfffff);
        line.push_str(r#","destination":"#);
        endpoint(&mut line, dst, (r >> 20) & 0xfffff);
        let l7 = (2..=3).contains(&kind) || proto_dns;
        let _ = write!(
            line,
            r#","Type":"{}","node_name":"{node}","event_type":{{"type":{}}},"traffic_direction":"{}","is_reply":{reply}"#,
            if l7 { "L7" } else { "L3_L4" },
            if l7 { 129 } else { 4 },
            if (r >> 41) % 2 == 0 {
                "EGRESS"
            } else {
                "INGRESS"
            },
        );
        if proto_dns {
            let _ = write!(
                line,
                r#","l7":{{"type":"{}","dns":{{"query":"{}.shop.svc.cluster.local.","qtypes":["A"]}}}}"#,
                if reply { "RESPONSE" } else { "REQUEST" },
                SERVICES[server].0
            );
        } else if l7 {
            let code = [200, 200, 200, 200, 201, 404, 500, 503][((r >> 56) % 8) as usize];
            if reply {
                let _ = write!(
                    line,
                    r#","l7":{{"type":"RESPONSE","latency_ns":"{}","http":{{"code":{code},"method":"GET","url":"http://{}:{dport}/api","protocol":"HTTP/1.1"}}}}"#,
                    1_000_000 + (r >> 8) % 400_000_000,
                    SERVICES[server].0
                );
            } else {
                let _ = write!(
                    line,
                    r#","l7":{{"type":"REQUEST","http":{{"method":"GET","url":"http://{}:{dport}/api","protocol":"HTTP/1.1"}}}}"#,
                    SERVICES[server].0
                );
            }
        }
        let _ = writeln!(line, r#"}},"node_name":"{node}","time":"{t}"}}"#);
        w.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    w.flush()?;
    Ok(bytes)
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        flows: 500_000,
        alone: 200_000,
        runs: 3,
        weir: root.join("target/release/weir"),
        data_dir: root.join("target/bench-data"),
        taskset: true,
        alone_only: false,
        codec: "hubble_jsonpb".into(),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        let number = |v: String| -> Result<u64> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag}: expected a positive integer, got {v:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--flows" => a.flows = number(value()?)?,
            "--alone" => a.alone = number(value()?)? as usize,
            "--runs" => a.runs = number(value()?)? as usize,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--no-taskset" => a.taskset = false,
            "--alone-only" => a.alone_only = true,
            "--codec" => {
                a.codec = value()?;
                if !["hubble_jsonpb", "json"].contains(&a.codec.as_str()) {
                    bail!("--codec: expected hubble_jsonpb or json, got {:?}", a.codec);
                }
            }
            other => bail!("unknown argument {other:?}; see `weir-bench flows --help`"),
        }
    }
    Ok(Some(a))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn thousands(n: f64) -> String {
    crate::report::thousands(n as u64)
}

/// The transform alone, measured by the `flows_alone` binary next to this one (it uses the
/// `weir` binary's allocator, mimalloc; this process keeps the system allocator so the
/// baselines stay what a plain program gets): the median flows per second of the transform
/// and of the JSON decoding that feeds it, and the flows measured.
struct Alone {
    transform: f64,
    decode: f64,
    flows: usize,
}

fn transform_alone(path: &Path, count: usize, runs: usize, codec: &str) -> Result<Alone> {
    let exe = std::env::current_exe()?.with_file_name("flows_alone");
    if !exe.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p weir-bench`",
            exe.display()
        );
    }
    let out = std::process::Command::new(&exe)
        .arg(path)
        .arg(count.to_string())
        .arg(runs.to_string())
        .arg(codec)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", exe.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let field = |name: &str| -> Result<f64> {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("flows_alone printed no {name}: {text:?}"))
    };
    Ok(Alone {
        transform: field("transform_flows_per_sec")?,
        decode: field("decode_flows_per_sec")?,
        flows: field("flows")? as usize,
    })
}

pub fn main(argv: &[String]) -> Result<bool> {
    let Some(args) = parse_args(argv)? else {
        print!("{USAGE}");
        return Ok(true);
    };
    if !args.alone_only && !args.weir.is_file() {
        bail!(
            "the weir binary is not at {}: build it with `cargo build --release -p weir`",
            args.weir.display()
        );
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let path = args.data_dir.join(format!("flows-v1-{}.jsonl", args.flows));
    let started = Instant::now();
    let bytes = generate(&path, args.flows)?;
    eprintln!(
        "input: {} ({} flows, {:.1} MiB, generated in {:.1} s)",
        path.display(),
        thousands(args.flows as f64),
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    if args.alone_only {
        let alone = transform_alone(&path, args.alone, args.runs, &args.codec)?;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("| measurement | flows/s |");
        println!("| --- | ---: |");
        println!(
            "| flow_to_topology alone ({} flows decoded beforehand, batches of 1000, mimalloc) | {} |",
            thousands(alone.flows as f64),
            thousands(alone.transform)
        );
        println!(
            "| their decoding alone (weir's {} codec, same batches) | {} |",
            args.codec,
            thousands(alone.decode)
        );
        println!(
            "median of {} runs; load average: {}",
            args.runs,
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(true);
    }
    let scratch = ScratchDir::create(&args.data_dir)?;
    let taskset = args.taskset && runner::which("taskset").is_some();
    let runner = Runner {
        weir: args.weir.canonicalize()?,
        taskset,
        gnu_time: runner::which("/usr/bin/time").filter(|t| runner::gnu_time_works(t, &scratch.0)),
        work: scratch.0.clone(),
        timeout: std::time::Duration::from_secs(1800),
    };
    if taskset {
        runner::set_own_affinity("0")?;
    }
    baseline::memchr_count(&path)?;
    let mut base = Vec::new();
    for i in 1..=args.runs {
        let m = baseline::serde_parse(&path)?;
        if m.lines != args.flows {
            bail!(
                "baseline counted {} lines, expected {}",
                m.lines,
                args.flows
            );
        }
        eprintln!(
            "  (b) serde_json::Value run {i}/{}: {:.3} s, {} flows/s",
            args.runs,
            m.secs,
            thousands(m.lines as f64 / m.secs)
        );
        base.push(m.lines as f64 / m.secs);
    }
    let base = median(base);

    let body = format!(
        "[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"{}\"\n\n\
        [transforms.map]\ntype = \"flow_to_topology\"\ninputs = [\"in\"]\nwindow_secs = 0\n\n\
        [sinks.out]\ntype = \"blackhole\"\ninputs = [\"map\"]\n",
        args.codec
    );
    let config = runner::write_config(&runner.work, "flows", &body)?;
    let mut e2e = Vec::new();
    let mut cpu = Vec::new();
    for i in 1..=args.runs {
        let o = runner.run("flows", &config, Some(&path))?;
        if o.sent.is_some_and(|n| n != 1) || !o.errors.is_empty() {
            bail!(
                "weir: the sink got {:?} maps (expected 1), errors: {:?}",
                o.sent,
                o.errors
            );
        }
        eprintln!(
            "  weir run {i}/{}: {:.3} s, {} flows/s{}",
            args.runs,
            o.secs,
            thousands(args.flows as f64 / o.secs),
            o.cpu_secs
                .map_or(String::new(), |c| format!(", CPU {c:.2} s"))
        );
        e2e.push(args.flows as f64 / o.secs);
        if let Some(c) = o.cpu_secs {
            cpu.push(args.flows as f64 / c);
        }
    }
    let e2e = median(e2e);
    let alone = transform_alone(&path, args.alone, args.runs, &args.codec)?;

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("| measurement | flows/s | vs (b) |");
    println!("| --- | ---: | ---: |");
    println!(
        "| (b) baseline: serde_json::Value per line, 1 thread | {} | 1.00x |",
        thousands(base)
    );
    println!(
        "| weir: stdin {} -> flow_to_topology -> blackhole, `--threads 1`{} | {} | {:.2}x |",
        args.codec,
        if taskset { ", pinned to core 0" } else { "" },
        thousands(e2e),
        e2e / base
    );
    if !cpu.is_empty() {
        let c = median(cpu);
        println!(
            "| same, per CPU-second of weir | {} | {:.2}x |",
            thousands(c),
            c / base
        );
    }
    println!(
        "| flow_to_topology alone ({} flows decoded beforehand, batches of 1000, mimalloc) | {} | {:.2}x |",
        thousands(alone.flows as f64),
        thousands(alone.transform),
        alone.transform / base
    );
    println!(
        "| their decoding alone (weir's {} codec, same batches) | {} | {:.2}x |",
        args.codec,
        thousands(alone.decode),
        alone.decode / base
    );
    println!();
    println!(
        "{} flows ({:.0} bytes per line), median of {} runs; load average before/after: {}",
        thousands(args.flows as f64),
        bytes as f64 / args.flows as f64,
        args.runs,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(true)
}
