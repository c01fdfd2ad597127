//! `format = "process_events"`: synthetic process events of the shop's node, one per event,
//! with exactly the fields and types of the `ebpf_process` source's events
//! (`docs/components/ebpf_process.md`), so the console's Processes table shows a node's
//! activity without root or eBPF.
//!
//! A few programs start over and over, each as a `fork` of its parent, an `exec` (except
//! `postgres`' backends, forked without one) and an `exit`, interleaved as on a real node:
//! the kubelet's gRPC health probes (whose command name the kernel cuts to 15 bytes:
//! `grpc_health_pro`), `postgres` backends, `frontend`'s image conversions, `recommendation`'s
//! scoring jobs (now and then killed by the OOM killer, signal 9), `checkout`'s invoice
//! renderer (rarely a segmentation fault with a core dump) and `cron`'s backup script.

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::Rng;
use weir_pipeline::event::{ObjectMap, Value};

/// How a program ends, per thousand runs.
#[derive(Clone, Copy)]
struct Failures {
    /// `exit(1)`.
    exit_1: u32,
    /// Killed by a signal.
    killed: u32,
    signal: i64,
    core_dumped: bool,
}

const CLEAN: Failures = Failures {
    exit_1: 0,
    killed: 0,
    signal: 0,
    core_dumped: false,
};

/// A program that starts over and over.
struct Program {
    parent: &'static str,
    parent_pid: i64,
    uid: i64,
    /// Its exec; `None`: forked without one.
    exec: Option<Exec>,
    weight: u32,
    /// The share of its life it spends on a CPU.
    busy: f64,
    failures: Failures,
}

const PROGRAMS: &[Program] = &[
    Program {
        parent: "containerd-shim",
        parent_pid: 2210,
        uid: 0,
        exec: Some((
            "grpc_health_pro",
            "/bin/grpc_health_probe",
            &[
                "/bin/grpc_health_probe",
                "-addr=:8080",
                "-connect-timeout=1s",
            ],
        )),
        weight: 40,
        busy: 0.3,
        failures: Failures {
            exit_1: 20,
            ..CLEAN
        },
    },
    Program {
        parent: "postgres",
        parent_pid: 3100,
        uid: 999,
        exec: None,
        weight: 25,
        busy: 0.2,
        failures: CLEAN,
    },
    Program {
        parent: "frontend",
        parent_pid: 4101,
        uid: 1000,
        exec: Some((
            "convert",
            "/usr/bin/convert",
            &[
                "convert",
                "/tmp/upload.png",
                "-resize",
                "640x480",
                "/var/cache/img/product.webp",
            ],
        )),
        weight: 15,
        busy: 0.9,
        failures: Failures {
            exit_1: 30,
            ..CLEAN
        },
    },
    Program {
        parent: "recommendation",
        parent_pid: 4107,
        uid: 1000,
        exec: Some((
            "python3",
            "/usr/bin/python3",
            &["python3", "/app/score.py", "--batch", "64"],
        )),
        weight: 10,
        busy: 0.95,
        failures: Failures {
            killed: 50,
            signal: 9,
            ..CLEAN
        },
    },
    Program {
        parent: "checkout",
        parent_pid: 4104,
        uid: 1000,
        exec: Some((
            "wkhtmltopdf",
            "/usr/local/bin/wkhtmltopdf",
            &[
                "wkhtmltopdf",
                "--quiet",
                "/tmp/invoice.html",
                "/tmp/invoice.pdf",
            ],
        )),
        weight: 6,
        busy: 0.7,
        failures: Failures {
            killed: 10,
            signal: 11,
            core_dumped: true,
            ..CLEAN
        },
    },
    Program {
        parent: "cron",
        parent_pid: 880,
        uid: 0,
        exec: Some((
            "sh",
            "/bin/sh",
            &["/bin/sh", "-c", "/usr/local/bin/backup-orders.sh"],
        )),
        weight: 4,
        busy: 0.1,
        failures: CLEAN,
    },
];

/// A run of a program, between its fork and its exit.
struct Running {
    program: &'static Program,
    pid: i64,
    start: DateTime<Utc>,
    execed: bool,
}

/// The generator's state: the programs running, and the next process id.
pub struct Processes {
    running: Vec<Running>,
    next_pid: i64,
}

impl Default for Processes {
    fn default() -> Self {
        Self {
            running: Vec::new(),
            next_pid: 21_000,
        }
    }
}

/// At most this many runs at once.
const MAX_RUNNING: usize = 8;

fn secs(s: f64) -> Value {
    Value::from_f64_or_zero(s)
}

impl Processes {
    /// The next process event, made at `at`: a new run's `fork`, or the next step (`exec`,
    /// `exit`) of one running.
    pub fn generate(&mut self, rng: &mut SmallRng, at: DateTime<Utc>) -> Value {
        if self.running.is_empty()
            || (self.running.len() < MAX_RUNNING && rng.random_range(0..100) < 40)
        {
            return self.fork(rng, at);
        }
        let i = rng.random_range(0..self.running.len());
        let run = &mut self.running[i];
        if let (false, Some(program)) = (run.execed, run.program.exec) {
            run.execed = true;
            return exec(run, program, at);
        }
        let run = self.running.swap_remove(i);
        exit(&run, rng, at)
    }

    fn fork(&mut self, rng: &mut SmallRng, at: DateTime<Utc>) -> Value {
        let total: u32 = PROGRAMS.iter().map(|p| p.weight).sum();
        let mut pick = rng.random_range(0..total);
        let mut program = &PROGRAMS[0];
        for p in PROGRAMS {
            if pick < p.weight {
                program = p;
                break;
            }
            pick -= p.weight;
        }
        let pid = self.next_pid;
        // Other processes take ids meanwhile; wrap below the kernel's default pid_max.
        self.next_pid += rng.random_range(1..5);
        if self.next_pid > 4_194_000 {
            self.next_pid = 21_000;
        }
        let run = Running {
            program,
            pid,
            start: at,
            execed: false,
        };
        // A forked child has its parent's command name until it execs.
        let m = common(&run, "fork", program.parent, at);
        self.running.push(run);
        Value::Object(m)
    }
}

fn common(run: &Running, event: &str, comm: &str, at: DateTime<Utc>) -> ObjectMap {
    let p = run.program;
    let mut m = ObjectMap::new();
    m.insert("event".into(), Value::from(event));
    m.insert("timestamp".into(), Value::Timestamp(at));
    m.insert("pid".into(), Value::Integer(run.pid));
    m.insert("tid".into(), Value::Integer(run.pid));
    m.insert("ppid".into(), Value::Integer(p.parent_pid));
    m.insert("uid".into(), Value::Integer(p.uid));
    m.insert("gid".into(), Value::Integer(p.uid));
    m.insert("comm".into(), Value::from(comm));
    m.insert(
        "cgroup_id".into(),
        Value::Integer(9_000 + (p.parent_pid % 1000) * 17),
    );
    m.insert("start_time".into(), Value::Timestamp(run.start));
    m
}

/// `(comm, filename, argv)` of an exec.
type Exec = (&'static str, &'static str, &'static [&'static str]);

fn exec(run: &Running, (comm, filename, argv): Exec, at: DateTime<Utc>) -> Value {
    let mut m = common(run, "exec", comm, at);
    m.insert("filename".into(), Value::from(filename));
    m.insert(
        "argv".into(),
        Value::Array(argv.iter().map(|a| Value::from(*a)).collect()),
    );
    m.insert("argv_truncated".into(), Value::Boolean(false));
    Value::Object(m)
}

fn exit(run: &Running, rng: &mut SmallRng, at: DateTime<Utc>) -> Value {
    let p = run.program;
    let comm = p.exec.map_or(p.parent, |e| e.0);
    let mut m = common(run, "exit", comm, at);
    let f = p.failures;
    let roll = rng.random_range(0..1000);
    let (code, signal) = if roll < f.killed {
        (Value::Null, Value::Integer(f.signal))
    } else if roll < f.killed + f.exit_1 {
        (Value::Integer(1), Value::Null)
    } else {
        (Value::Integer(0), Value::Null)
    };
    let killed = signal != Value::Null;
    m.insert("exit_code".into(), code);
    m.insert("signal".into(), signal);
    m.insert(
        "core_dumped".into(),
        Value::Boolean(killed && f.core_dumped),
    );
    let lifetime = (at - run.start).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
    m.insert("lifetime_secs".into(), secs(lifetime));
    // Scheduler time in nanoseconds; user and system time in ticks (250 Hz).
    let cpu = lifetime * p.busy * rng.random_range(0.6..1.0);
    let tick = |s: f64| (s / 0.004).floor() * 0.004;
    m.insert("cpu_user_secs".into(), secs(tick(cpu * 0.8)));
    m.insert("cpu_system_secs".into(), secs(tick(cpu * 0.2)));
    m.insert("cpu_secs".into(), secs((cpu * 1e9).round() / 1e9));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::demo::shape::{check_shape, documented_fields, Kind};

    /// `ebpf_process`'s fields and their kinds, as `sources-ebpf/src/process.rs` writes them.
    const COMMON: &[(&str, Kind)] = &[
        ("event", Kind::Str),
        ("timestamp", Kind::Time),
        ("pid", Kind::Int),
        ("tid", Kind::Int),
        ("ppid", Kind::Int),
        ("uid", Kind::Int),
        ("gid", Kind::Int),
        ("comm", Kind::Str),
        ("cgroup_id", Kind::Int),
        ("start_time", Kind::Time),
    ];
    const EXEC: &[(&str, Kind)] = &[
        ("filename", Kind::Str),
        ("argv", Kind::Strs),
        ("argv_truncated", Kind::Bool),
    ];
    const EXIT: &[(&str, Kind)] = &[
        ("exit_code", Kind::IntOrNull),
        ("signal", Kind::IntOrNull),
        ("core_dumped", Kind::Bool),
        ("lifetime_secs", Kind::Float),
        ("cpu_user_secs", Kind::Float),
        ("cpu_system_secs", Kind::Float),
        ("cpu_secs", Kind::Float),
    ];

    #[test]
    fn process_events_have_the_fields_and_types_of_ebpf_process_events() {
        let documented = documented_fields("ebpf_process.md", "## Events");
        let mut expected: Vec<String> =
            COMMON.iter().chain(EXIT).map(|f| f.0.to_string()).collect();
        expected.sort();
        assert_eq!(
            documented, expected,
            "docs/components/ebpf_process.md changed"
        );

        let mut rng = SmallRng::seed_from_u64(5);
        let mut gen = Processes::default();
        let mut forked = std::collections::BTreeSet::new();
        let mut counts = std::collections::BTreeMap::new();
        let mut comms = std::collections::BTreeSet::new();
        let mut killed = 0;
        for _ in 0..5_000 {
            let v = gen.generate(&mut rng, Utc::now());
            let Value::Object(m) = &v else {
                panic!("not an object: {v}")
            };
            let event = m["event"].to_str_lossy().unwrap().into_owned();
            let pid = m["pid"].as_integer().unwrap();
            match event.as_str() {
                "fork" => {
                    check_shape(m, COMMON, &[]);
                    assert!(forked.insert(pid), "pid {pid} reused while running");
                }
                "exec" => {
                    check_shape(m, COMMON, EXEC);
                    assert!(forked.contains(&pid), "exec of {pid} before its fork");
                }
                "exit" => {
                    check_shape(m, COMMON, EXIT);
                    assert!(forked.remove(&pid), "exit of {pid} without a fork");
                    killed += usize::from(m["signal"] != Value::Null);
                }
                _ => panic!("unknown event {v}"),
            }
            comms.insert(m["comm"].to_str_lossy().unwrap().into_owned());
            *counts.entry(event).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(killed > 0);
        assert!(comms.contains("grpc_health_pro"), "{comms:?}");
        assert!(comms.iter().all(|c| c.len() <= 15), "{comms:?}");
    }
}
