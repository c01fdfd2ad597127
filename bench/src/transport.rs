//! `weir-bench transport`: the `nats` and `kafka` sinks and sources against the client's own
//! limit, measured in the same run on the same payloads.
//!
//! The payloads are what `demo` (json, seed 1) generates: the bench runs weir once to write
//! them to a file (not timed), then every case sends exactly those lines. Each weir case is
//! paired with a minimal loop of the same client library doing the same work in this process
//! (the baseline), both pinned to core 0 while the broker runs on core 1:
//!
//! | weir case | baseline |
//! | --- | --- |
//! | demo -> nats sink (core) | async-nats `publish` loop, then `flush` |
//! | demo -> nats sink (JetStream) | async-nats JetStream `publish`, up to 1000 PubAcks awaited at once |
//! | nats source (JetStream, acknowledgements) -> blackhole | async-nats pull consumer, every message acked |
//! | demo -> kafka sink | rdkafka `FutureProducer` loop, every delivery report awaited |
//! | kafka source (acknowledgements) -> blackhole | rdkafka `StreamConsumer`, offsets auto-stored and committed |

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use weir_connect::kafka::rdkafka;
use weir_connect::nats::async_nats;
use weir_connect::nats::async_nats::jetstream;

use crate::report::thousands;
use crate::runner::{self, Runner, ScratchDir};

pub const USAGE: &str = "\
weir-bench transport: nats and kafka sinks and sources vs a minimal client loop

USAGE:
    weir-bench transport [OPTIONS]

OPTIONS:
    --events N         Events per case (default 300000)
    --runs N           Runs of each measurement; the median is reported (default 3)
    --only LIST        nats, kafka or both (default: nats,kafka)
    --weir PATH        The weir binary (default: <workspace>/target/release/weir)
    --data-dir DIR     Scratch space (default: <workspace>/target/bench-data)
    --no-taskset       Do not pin weir and the baselines to core 0 (and the brokers to core 1)

Needs nats-server (Debian's package) for nats and tansu (PATH or /var/tmp/tansu/bin) for kafka.
";

/// The goal from the issue: weir at least this share of the client's limit.
const GOAL: f64 = 0.70;

struct Args {
    events: u64,
    runs: usize,
    nats: bool,
    kafka: bool,
    weir: PathBuf,
    data_dir: PathBuf,
    taskset: bool,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        events: 300_000,
        runs: 3,
        nats: true,
        kafka: true,
        weir: root.join("target/release/weir"),
        data_dir: root.join("target/bench-data"),
        taskset: true,
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
            "--events" => a.events = number(value()?)?,
            "--runs" => a.runs = number(value()?)? as usize,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--no-taskset" => a.taskset = false,
            "--only" => {
                let v = value()?;
                a.nats = v.split(',').any(|s| s.trim() == "nats");
                a.kafka = v.split(',').any(|s| s.trim() == "kafka");
                ensure!(a.nats || a.kafka, "--only: nats, kafka or nats,kafka");
            }
            other => bail!("unknown argument {other:?}; see `weir-bench transport --help`"),
        }
    }
    Ok(Some(a))
}

/// One timed run: wall seconds and CPU seconds of the side measured.
#[derive(Clone, Copy)]
struct Timed {
    secs: f64,
    cpu: Option<f64>,
}

fn median(mut v: Vec<Timed>) -> Timed {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v[v.len() / 2]
}

/// User + system CPU seconds of a process (all its threads), from /proc (USER_HZ = 100).
fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Times `f` on this (pinned) thread with a one-thread tokio runtime; CPU is the whole bench
/// process's (the client libraries' own threads included).
fn time_baseline<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<Timed> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu0 = proc_cpu_secs("self");
    let start = Instant::now();
    rt.block_on(f)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, proc_cpu_secs("self")) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(Timed { secs, cpu })
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        ensure!(
            Instant::now() < deadline,
            "{what} does not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A broker process, pinned to core 1, killed on drop.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(taskset: bool, core: &str, program: &Path) -> Command {
    if taskset {
        let mut c = Command::new("taskset");
        c.args(["-c", core]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start_nats(work: &Path, taskset: bool) -> Result<Broker> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| runner::which("nats-server"))
        .context("nats-server is not installed (apt-get install nats-server)")?;
    let addr = free_addr()?;
    let child = pinned(taskset, "1", &bin)
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-sd",
        ])
        .arg(work.join("nats-store"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nats-server")?;
    let b = Broker { child, addr };
    wait_listening(addr, "nats-server")?;
    Ok(b)
}

fn tansu_bin() -> Result<PathBuf> {
    runner::which("tansu")
        .or_else(|| Some(PathBuf::from("/var/tmp/tansu/bin/tansu")).filter(|p| p.is_file()))
        .context("tansu is not installed (cargo install tansu --version 0.6.0 --features dynostore --root /var/tmp/tansu)")
}

fn start_tansu(work: &Path, taskset: bool) -> Result<Broker> {
    let bin = tansu_bin()?;
    let addr = free_addr()?;
    let url = format!("tcp://{addr}");
    let cwd = work.join("tansu");
    std::fs::create_dir_all(&cwd)?;
    let child = pinned(taskset, "1", &bin)
        .current_dir(&cwd)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .env_remove("STORAGE_ENGINE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start tansu")?;
    let b = Broker { child, addr };
    wait_listening(addr, "tansu")?;
    Ok(b)
}

fn create_topic(work: &Path, addr: SocketAddr, name: &str) -> Result<()> {
    let out = Command::new(tansu_bin()?)
        .current_dir(work.join("tansu"))
        .args(["topic", "create", name, "--partitions", "1", "--broker"])
        .arg(format!("tcp://{addr}"))
        .output()?;
    ensure!(
        out.status.success(),
        "tansu topic create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The demo source's lines, written once by weir (not timed).
fn payloads(runner: &Runner, events: u64) -> Result<Vec<Bytes>> {
    let out = runner.work.join("payloads.txt");
    let body = format!(
        "[sources.in]\ntype = \"demo\"\nformat = \"json\"\ncount = {events}\n\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\nencoding.codec = \"text\"\n",
        out.display()
    );
    let cfg = runner::write_config(&runner.work, "payloads", &body)?;
    runner.run("payloads", &cfg, None)?;
    let text = std::fs::read(&out)?;
    let lines: Vec<Bytes> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();
    ensure!(
        lines.len() as u64 == events,
        "demo wrote {} lines, expected {events}",
        lines.len()
    );
    Ok(lines)
}

fn demo(events: u64) -> String {
    format!("[sources.in]\ntype = \"demo\"\nformat = \"json\"\ncount = {events}\n\n")
}

/// Runs a pipeline that ends by itself (demo with a count) and checks its sink sent them all.
fn weir_to_end(runner: &Runner, name: &str, body: &str, events: u64) -> Result<Timed> {
    let cfg = runner::write_config(&runner.work, name, body)?;
    let o = runner.run(name, &cfg, None)?;
    ensure!(
        o.sent == Some(events) && o.errors.is_empty(),
        "{name}: the sink sent {:?} of {events}, errors {:?}",
        o.sent,
        o.errors
    );
    Ok(Timed {
        secs: o.secs,
        cpu: o.cpu_secs,
    })
}

fn http_metrics(api: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

fn sent_by(api: SocketAddr, component: &str) -> u64 {
    let Some(body) = http_metrics(api) else {
        return 0;
    };
    body.lines()
        .find(|l| {
            l.starts_with("weir_component_sent_events_total")
                && l.contains(&format!("component_id=\"{component}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Runs a pipeline whose source never ends: timed from spawn until its sink `out` has sent
/// `events` (polled every 10 ms on the API), then stopped with SIGTERM.
fn weir_until(runner: &Runner, name: &str, body: &str, events: u64) -> Result<Timed> {
    let api = free_addr()?;
    let data = runner.work.join(format!("data-{name}"));
    std::fs::create_dir_all(&data)?;
    let cfg = runner.work.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[api]\naddress = \"{api}\"\n\n{body}",
            data.display()
        ),
    )?;
    let mut cmd = pinned(runner.taskset, "0", &runner.weir);
    cmd.args(["run", "--threads", "1", "--config"])
        .arg(&cfg)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(
            runner.work.join(format!("{name}.stderr")),
        )?));
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot start weir")?;
    let pid = child.id().to_string();
    let result = loop {
        if let Some(st) = child.try_wait()? {
            break Err(anyhow::anyhow!("{name}: weir exited early ({st})"));
        }
        if sent_by(api, "out") >= events {
            let secs = start.elapsed().as_secs_f64();
            break Ok(Timed {
                secs,
                cpu: proc_cpu_secs(&pid),
            });
        }
        if start.elapsed() > Duration::from_secs(600) {
            break Err(anyhow::anyhow!("{name}: not done in 600 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY-free stop: `kill -TERM` through the CLI, then wait.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    result
}

/// One row of the table: the baseline and weir, medians.
struct Pair {
    case: &'static str,
    baseline: &'static str,
    base: Timed,
    weir: Timed,
}

fn measure(runs: usize, mut f: impl FnMut(usize) -> Result<Timed>, what: &str) -> Result<Timed> {
    let mut all = Vec::new();
    for i in 0..runs {
        let t = f(i)?;
        eprintln!(
            "  {what} run {}/{runs}: {:.3} s{}",
            i + 1,
            t.secs,
            t.cpu.map_or(String::new(), |c| format!(", CPU {c:.2} s"))
        );
        all.push(t);
    }
    Ok(median(all))
}

fn nats_cases(args: &Args, runner: &Runner, payloads: &[Bytes]) -> Result<Vec<Pair>> {
    let n = payloads.len() as u64;
    let broker = start_nats(&runner.work, runner.taskset)?;
    let url = format!("nats://{}", broker.addr);
    let mut rows = Vec::new();

    let core_base = measure(
        args.runs,
        |_| {
            time_baseline(async {
                let c = async_nats::connect(&url).await?;
                for p in payloads {
                    c.publish("core.x", p.clone()).await?;
                }
                c.flush().await?;
                Ok(())
            })
        },
        "nats core baseline",
    )?;
    let sink = |js: bool| {
        format!(
            "{}[sinks.out]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"{url}\"\nsubject = \"{}\"\n\
             encoding.codec = \"text\"\njetstream = {js}\n",
            demo(n),
            if js { "bench.x" } else { "core.x" }
        )
    };
    let core_weir = measure(
        args.runs,
        |_| weir_to_end(runner, "nats-core", &sink(false), n),
        "weir nats core sink",
    )?;
    rows.push(Pair {
        case: "demo -> nats sink (core)",
        baseline: "async-nats publish loop + flush",
        base: core_base,
        weir: core_weir,
    });

    // JetStream: a fresh in-memory stream per run; the weir sink's stream is then consumed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let js = rt.block_on(async { anyhow::Ok(jetstream::new(async_nats::connect(&url).await?)) })?;
    let fresh = |name: String| -> Result<()> {
        rt.block_on(async {
            let _ = js.delete_stream(&name).await;
            js.create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.>", name.to_lowercase())],
                storage: jetstream::stream::StorageType::Memory,
                ..Default::default()
            })
            .await?;
            anyhow::Ok(())
        })
    };
    let count = |name: &str| -> Result<u64> {
        rt.block_on(async {
            anyhow::Ok(js.get_stream(name).await?.get_info().await?.state.messages)
        })
    };
    let js_base = measure(
        args.runs,
        |_| {
            fresh("BASE".into())?;
            let t = time_baseline(async {
                let js = jetstream::new(async_nats::connect(&url).await?);
                let mut acks = Vec::with_capacity(1000);
                for p in payloads {
                    acks.push(js.publish("base.x", p.clone()).await?);
                    if acks.len() == 1000 {
                        for a in acks.drain(..) {
                            a.await?;
                        }
                    }
                }
                for a in acks {
                    a.await?;
                }
                Ok(())
            })?;
            ensure!(
                count("BASE")? == n,
                "the baseline stored {} of {n}",
                count("BASE")?
            );
            Ok(t)
        },
        "nats JetStream baseline",
    )?;
    let js_body = sink(true);
    let js_weir = measure(
        args.runs,
        |_| {
            fresh("BENCH".into())?;
            let t = weir_to_end(runner, "nats-js", &js_body, n)?;
            ensure!(
                count("BENCH")? == n,
                "weir stored {} of {n}",
                count("BENCH")?
            );
            Ok(t)
        },
        "weir nats JetStream sink",
    )?;
    rows.push(Pair {
        case: "demo -> nats sink (JetStream)",
        baseline: "async-nats JetStream publish, 1000 PubAcks in flight",
        base: js_base,
        weir: js_weir,
    });

    // Consuming: the BENCH stream holds n messages; each run uses a new durable consumer.
    let src_base = measure(
        args.runs,
        |i| {
            time_baseline(async {
                let js = jetstream::new(async_nats::connect(&url).await?);
                let consumer: jetstream::consumer::PullConsumer = js
                    .get_stream("BENCH")
                    .await?
                    .create_consumer(jetstream::consumer::pull::Config {
                        durable_name: Some(format!("base{i}")),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        max_ack_pending: 10_000,
                        ..Default::default()
                    })
                    .await?;
                let mut msgs = consumer
                    .stream()
                    .max_messages_per_batch(500)
                    .messages()
                    .await?;
                let mut got = 0;
                while got < n {
                    let m = msgs
                        .next()
                        .await
                        .context("stream ended")?
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    got += 1;
                }
                Ok(())
            })
        },
        "nats JetStream consume baseline",
    )?;
    let src_weir = measure(
        args.runs,
        |i| {
            let body = format!(
            "[sources.in]\ntype = \"nats\"\nurl = \"{url}\"\njetstream = true\nstream = \"BENCH\"\n\
             consumer = \"weir{i}\"\nacknowledgements = true\n\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n"
        );
            weir_until(runner, "nats-source", &body, n)
        },
        "weir nats JetStream source",
    )?;
    rows.push(Pair {
        case: "nats source (JetStream, acknowledgements) -> blackhole",
        baseline: "async-nats pull consumer, each message acked",
        base: src_base,
        weir: src_weir,
    });
    Ok(rows)
}

fn kafka_cases(args: &Args, runner: &Runner, payloads: &[Bytes]) -> Result<Vec<Pair>> {
    use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    let n = payloads.len() as u64;
    let broker = start_tansu(&runner.work, runner.taskset)?;
    let servers = broker.addr.to_string();
    // The records the topic holds, counted by reading it (tansu 0.6.0's high watermark can
    // be below the last offset: it is not used).
    let high = |topic: &str| -> Result<i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", "bench-count")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
        c.assign(&tpl)?;
        let mut count = 0;
        while let Some(m) = c.poll(Duration::from_secs(3)) {
            m?;
            count += 1;
        }
        Ok(count)
    };
    let mut rows = Vec::new();
    let base = measure(
        args.runs,
        |i| {
            let topic = format!("base-{i}");
            create_topic(&runner.work, broker.addr, &topic)?;
            let t = time_baseline(async {
                let p: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &servers)
                    .create()?;
                let mut reports = Vec::with_capacity(payloads.len());
                for v in payloads {
                    loop {
                        match p.send_result(FutureRecord::<(), [u8]>::to(&topic).payload(&v[..])) {
                            Ok(f) => {
                                reports.push(f);
                                break;
                            }
                            Err((
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::error::RDKafkaErrorCode::QueueFull,
                                ),
                                _,
                            )) => tokio::time::sleep(Duration::from_millis(5)).await,
                            Err((e, _)) => return Err(e.into()),
                        }
                    }
                }
                for r in reports {
                    r.await?.map_err(|(e, _)| e)?;
                }
                Ok(())
            })?;
            ensure!(
                high(&topic)? == n as i64,
                "the baseline stored {} of {n}",
                high(&topic)?
            );
            Ok(t)
        },
        "kafka produce baseline",
    )?;
    let weir = measure(
        args.runs,
        |i| {
            let topic = format!("weir-{i}");
            create_topic(&runner.work, broker.addr, &topic)?;
            let body = format!(
            "{}[sinks.out]\ntype = \"kafka\"\ninputs = [\"in\"]\nbootstrap_servers = \"{servers}\"\n\
             topic = \"{topic}\"\nencoding.codec = \"text\"\n",
            demo(n)
        );
            let t = weir_to_end(runner, "kafka-sink", &body, n)?;
            ensure!(
                high(&topic)? == n as i64,
                "weir stored {} of {n}",
                high(&topic)?
            );
            Ok(t)
        },
        "weir kafka sink",
    )?;
    rows.push(Pair {
        case: "demo -> kafka sink",
        baseline: "rdkafka FutureProducer loop, every report awaited",
        base,
        weir,
    });

    let src_base = measure(
        args.runs,
        |i| {
            time_baseline(async {
                let c: StreamConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &servers)
                    .set("group.id", format!("base{i}"))
                    .set("auto.offset.reset", "earliest")
                    .create()?;
                c.subscribe(&["weir-0"])?;
                let mut s = c.stream();
                let mut got = 0;
                while got < n {
                    let m = s.next().await.context("stream ended")??;
                    std::hint::black_box(rdkafka::message::Message::payload(&m));
                    got += 1;
                }
                Ok(())
            })
        },
        "kafka consume baseline",
    )?;
    let src_weir = measure(
        args.runs,
        |i| {
            let body = format!(
            "[sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"{servers}\"\ngroup_id = \"weir{i}\"\n\
             topics = [\"weir-0\"]\nauto_offset_reset = \"earliest\"\nacknowledgements = true\n\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n"
        );
            weir_until(runner, "kafka-source", &body, n)
        },
        "weir kafka source",
    )?;
    rows.push(Pair {
        case: "kafka source (acknowledgements) -> blackhole",
        baseline: "rdkafka StreamConsumer loop",
        base: src_base,
        weir: src_weir,
    });
    Ok(rows)
}

pub fn main(argv: &[String]) -> Result<bool> {
    let Some(args) = parse_args(argv)? else {
        print!("{USAGE}");
        return Ok(true);
    };
    ensure!(
        args.weir.is_file(),
        "the weir binary is not at {}: build it with `cargo build --release -p weir`",
        args.weir.display()
    );
    std::fs::create_dir_all(&args.data_dir)?;
    let scratch = ScratchDir::create(&args.data_dir)?;
    let taskset = args.taskset && runner::which("taskset").is_some();
    let runner = Runner {
        weir: args.weir.canonicalize()?,
        taskset,
        gnu_time: runner::which("/usr/bin/time").filter(|t| runner::gnu_time_works(t, &scratch.0)),
        work: scratch.0.clone(),
        timeout: Duration::from_secs(900),
    };
    let load_before = crate::load_average();
    let payloads = payloads(&runner, args.events)?;
    let bytes: usize = payloads.iter().map(Bytes::len).sum();
    eprintln!(
        "payloads: {} demo lines, {:.1} bytes on average",
        thousands(args.events),
        bytes as f64 / args.events as f64
    );
    if taskset {
        runner::set_own_affinity("0")?;
    }
    let mut rows = Vec::new();
    if args.nats {
        rows.extend(nats_cases(&args, &runner, &payloads)?);
    }
    if args.kafka {
        rows.extend(kafka_cases(&args, &runner, &payloads)?);
    }
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let n = args.events as f64;
    let mut all_met = true;
    println!("| case | events/s | MiB/s | vs the client's limit | by CPU time | goal (>= 70%) |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for r in &rows {
        let ratio = r.base.secs / r.weir.secs;
        let cpu_ratio = match (r.base.cpu, r.weir.cpu) {
            (Some(b), Some(w)) if w > 0.0 => format!("{:.0}%", 100.0 * b / w),
            _ => "-".into(),
        };
        let met = ratio >= GOAL;
        all_met &= met;
        println!(
            "| baseline: {} | {} | {:.1} | 100% | | |",
            r.baseline,
            thousands((n / r.base.secs) as u64),
            mib / r.base.secs
        );
        println!(
            "| weir: {} | {} | {:.1} | {:.0}% | {cpu_ratio} | {} |",
            r.case,
            thousands((n / r.weir.secs) as u64),
            mib / r.weir.secs,
            100.0 * ratio,
            if met { "met" } else { "NOT MET" }
        );
    }
    println!();
    println!(
        "{} events of {:.0} bytes (demo json lines), median of {} runs; weir `run --threads 1`{}; \
         load average before: {load_before}, after: {}",
        thousands(args.events),
        bytes as f64 / n,
        args.runs,
        if taskset {
            " and the baselines pinned to core 0, the broker to core 1"
        } else {
            ""
        },
        crate::load_average()
    );
    if !all_met {
        eprintln!("some goals are not met (the exit status does not change)");
    }
    Ok(true)
}
