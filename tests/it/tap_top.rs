//! `weir tap` and `weir top` against a running quickstart (`weir run` without a config):
//! the route's `errors` output tapped; a tap that never reads does not hold the pipeline and
//! is told what it missed; `weir top` in a pseudo-terminal shows every component moving and
//! restores the terminal on `q`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{free_addr, http_get, stop_clean, wait_until, wait_with_timeout, weir};

/// The quickstart's components.
const COMPONENTS: [&str; 18] = [
    "demo",
    "demo_flows",
    "demo_stacks",
    "demo_connections",
    "demo_processes",
    "weir_metrics",
    "parse",
    "router",
    "sampled",
    "service_map",
    "profile",
    "console",
    "errors_file",
    "metrics_file",
    "archive",
    "service_map_windows",
    "profile_windows",
    "node_events",
];

/// `weir run` with the embedded quickstart, its demo at `rate` events/s, logging to
/// `<dir>/quickstart.log`; returns once its API answers.
fn quickstart(dir: &std::path::Path, rate: u32) -> (Child, SocketAddr) {
    let api = free_addr();
    let log = std::fs::File::create(dir.join("quickstart.log")).unwrap();
    let child = weir()
        .arg("run")
        .env("WEIR_DATA_DIR", dir.join("data"))
        .env("WEIR_API_ADDRESS", api.to_string())
        .env("WEIR_DEMO_RATE", rate.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || http_get(api, "/health")
            .is_ok_and(|(s, _)| s == 200)),
        "the quickstart's API did not come up:\n{}",
        std::fs::read_to_string(dir.join("quickstart.log")).unwrap_or_default()
    );
    (child, api)
}

fn counter(api: SocketAddr, component: &str, field: &str) -> u64 {
    let (_, body) = http_get(api, "/api/graph").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == component)
        .and_then(|c| c[field].as_u64())
        .unwrap_or_else(|| panic!("no {field} for {component} in {body}"))
}

#[test]
fn tap_shows_the_routes_errors_output_and_exits_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (child, api) = quickstart(dir.path(), 2000);

    let out = wait_with_timeout(
        weir()
            .args([
                "tap",
                "--api",
                &api.to_string(),
                "--outputs-of",
                "router.errors",
                "--limit",
                "5",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for l in &lines {
        assert_eq!(l["component"], "router", "{l}");
        assert_eq!(l["output"], "errors", "{l}");
        // What the route sends to `errors`, after `parse` made the fields.
        assert_eq!(l["event"]["status_class"], "5xx", "{l}");
        assert!(l["event"]["status"].as_u64().unwrap() >= 500, "{l}");
    }

    // A glob over the component: both outputs of the route, as logfmt, sampled.
    let out = wait_with_timeout(
        weir()
            .args(["tap", "--api", &api.to_string(), "--outputs-of", "router*"])
            .args(["--format", "logfmt", "--sample-rate", "3", "--limit", "40"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 40, "{stdout}");
    for l in &lines {
        assert!(
            l.starts_with("component=router output=errors ")
                || l.starts_with("component=router output=_unmatched "),
            "{l}"
        );
        assert!(l.contains(" status_class="), "{l}");
    }

    // The inputs of the console sink: what `sampled` sends it.
    let out = wait_with_timeout(
        weir()
            .args([
                "tap",
                "--api",
                &api.to_string(),
                "--inputs-of",
                "console",
                "--limit",
                "2",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0));
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["component"], "sampled", "{l}");
    }

    // Nothing matches: said, and non-zero.
    let out = weir()
        .args(["tap", "--api", &api.to_string(), "--outputs-of", "nothing*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no output matches outputs of nothing*"),
        "{err}"
    );

    // Taps are copies without acknowledgement holds: the pipeline still stops cleanly.
    stop_clean(dir.path(), "quickstart", child);
}

#[test]
fn a_tap_that_never_reads_does_not_hold_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (child, api) = quickstart(dir.path(), 20_000);

    // Every event `parse` sends, to a client that reads nothing for now.
    let mut stalled = TcpStream::connect(api).unwrap();
    write!(
        stalled,
        "GET /api/tap?outputs_of=parse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let parse_before = counter(api, "parse", "sent_events");
    let sink_before = counter(api, "errors_file", "sent_events");
    // Far more than the tap's queue (10,000), the sockets' buffers and the pipeline's
    // buffers could hold if the tap held the pipeline back.
    let moved = wait_until(Duration::from_secs(180), || {
        counter(api, "parse", "sent_events") >= parse_before + 150_000
    });
    let parse_after = counter(api, "parse", "sent_events");
    let sink_after = counter(api, "errors_file", "sent_events");
    assert!(
        moved,
        "parse sent {} events while the tap was stalled",
        parse_after - parse_before
    );
    // 5 % of the demo's events are errors, delivered by the sink meanwhile.
    assert!(
        sink_after >= sink_before + 3_000,
        "errors_file delivered {} events while the tap was stalled",
        sink_after - sink_before
    );
    assert_eq!(http_get(api, "/health").unwrap().0, 200);

    // Now read: what the tap could not take is reported.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stalled);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut dropped = None;
    let mut events = 0u64;
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // Headers and chunk sizes are not JSON objects.
        if !line.starts_with('{') {
            continue;
        }
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        if let Some(n) = v.get("dropped") {
            dropped = n.as_u64();
            break;
        }
        assert_eq!(v["component"], "parse");
        events += 1;
    }
    let dropped = dropped.unwrap_or_else(|| panic!("no dropped line after {events} events"));
    assert!(dropped > 0);
    assert!(
        events + dropped >= 100_000,
        "{events} events read, {dropped} dropped"
    );
    drop(reader);

    stop_clean(dir.path(), "quickstart", child);
}

/// Runs `argv` in a pseudo-terminal of 50x200 for `secs`, then types `q`; returns the exit
/// status and what it wrote, as the chunks it was read in.
pub(crate) const PTY_DRIVER: &str = r#"
import os, pty, sys, time, select, struct, fcntl, termios
out, secs, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', 50, 200, 0, 0))
    os.execv(argv[0], argv)
chunks = []
def pump(until):
    while time.time() < until:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return False
            if not data:
                return False
            chunks.append(data)
    return True
pump(time.time() + secs)
os.write(fd, b'q')
pump(time.time() + 10)
_, status = os.waitpid(pid, 0)
with open(out, 'wb') as f:
    for c in chunks:
        f.write(struct.pack('>I', len(c)))
        f.write(c)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// Just enough of a VT100 to read what ratatui draws: cursor moves, erases, text.
pub(crate) struct Screen {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    /// An escape sequence the last chunk ended in the middle of.
    pending: String,
}

impl Screen {
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows: vec![vec![' '; cols]; rows],
            row: 0,
            col: 0,
            pending: String::new(),
        }
    }

    pub(crate) fn feed(&mut self, text: &str) {
        let text = std::mem::take(&mut self.pending) + text;
        let mut it = text.char_indices().peekable();
        while let Some((at, c)) = it.next() {
            match c {
                '\x1b' => {
                    match it.peek() {
                        // Cut between chunks: finished by the next one.
                        None => {
                            self.pending = text[at..].to_string();
                            return;
                        }
                        Some((_, '[')) => {}
                        Some(_) => {
                            it.next();
                            continue;
                        }
                    }
                    it.next();
                    let mut params = String::new();
                    let mut fin = ' ';
                    for (_, c) in it.by_ref() {
                        if ('@'..='~').contains(&c) {
                            fin = c;
                            break;
                        }
                        params.push(c);
                    }
                    if fin == ' ' {
                        self.pending = text[at..].to_string();
                        return;
                    }
                    let n: Vec<usize> = params
                        .trim_start_matches('?')
                        .split(';')
                        .map(|p| p.parse().unwrap_or(0))
                        .collect();
                    match fin {
                        'H' | 'f' => {
                            self.row = n.first().copied().unwrap_or(1).max(1) - 1;
                            self.col = n.get(1).copied().unwrap_or(1).max(1) - 1;
                        }
                        'J' => {
                            for r in &mut self.rows {
                                r.fill(' ');
                            }
                        }
                        'K' => {
                            if let Some(r) = self.rows.get_mut(self.row) {
                                for c in r.iter_mut().skip(self.col) {
                                    *c = ' ';
                                }
                            }
                        }
                        _ => {}
                    }
                }
                '\r' => self.col = 0,
                '\n' => self.row += 1,
                c if c.is_control() => {}
                c => {
                    if let Some(cell) = self
                        .rows
                        .get_mut(self.row)
                        .and_then(|r| r.get_mut(self.col))
                    {
                        *cell = c;
                    }
                    self.col += 1;
                }
            }
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.iter().collect()).collect()
    }
}

#[test]
fn top_in_a_pseudo_terminal_shows_every_component_moving_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let (child, api) = quickstart(dir.path(), 2000);
    let raw = dir.path().join("top.raw");
    // 13 s: the quickstart's internal_metrics source scrapes every 10 s, so every component
    // moves at least once.
    let out = wait_with_timeout(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(PTY_DRIVER)
            .arg(&raw)
            .arg("13")
            .args([env!("CARGO_BIN_EXE_weir"), "top", "--api", &api.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let bytes = std::fs::read(&raw).unwrap_or_default();
    let mut chunks = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let n = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        chunks.push(String::from_utf8_lossy(&bytes[at + 4..at + 4 + n]).into_owned());
        at += 4 + n;
    }
    let all: String = chunks.concat();
    assert_eq!(
        out.status.code(),
        Some(0),
        "weir top: {}\n{all:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.starts_with("\x1b[?1049h") || all.contains("\x1b[?1049h"),
        "{all:?}"
    );
    assert!(
        all.ends_with("\x1b[?1049l"),
        "the terminal is not restored last: {:?}",
        &all[all.len().saturating_sub(200)..]
    );

    // Every component, in some frame, with a non-zero events/s in or out.
    let mut screen = Screen::new(50, 200);
    let mut moving = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut last = Vec::new();
    for c in &chunks {
        screen.feed(c);
        let lines = screen.lines();
        for l in &lines {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 5 || !COMPONENTS.contains(&t[0]) {
                continue;
            }
            seen.insert(t[0].to_string());
            if t[3] != "0" || t[4] != "0" {
                moving.insert(t[0].to_string());
            }
        }
        if lines.iter().any(|l| l.contains("weir top")) {
            last = lines;
        }
    }
    let screen_text = last.join("\n");
    assert_eq!(seen.len(), COMPONENTS.len(), "{screen_text}");
    assert_eq!(
        moving.len(),
        COMPONENTS.len(),
        "moving: {moving:?}\n{screen_text}"
    );
    for h in [
        "EVENTS IN/s",
        "BYTES OUT/s",
        "ERRORS",
        "DISCARDED",
        "BUFFER",
        "LATENCY",
    ] {
        assert!(screen_text.contains(h), "{h}: {screen_text}");
    }

    // Not a terminal: refused, not drawn.
    let out = weir()
        .args(["top", "--api", &api.to_string()])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    stop_clean(dir.path(), "quickstart", child);
}

/// An API with `api.auth`: `weir tap` without `$WEIR_API_TOKEN` is refused (exit 1, the 401
/// said), with it, it prints the events.
#[test]
fn tap_sends_the_api_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let child = crate::harness::start_weir(
        dir.path(),
        "auth",
        &format!(
            r#"
data_dir = "{data}"
[api]
address = "{api}"
auth.strategy = "bearer"
auth.token = "tap-token-0123456789"
[sources.demo]
type = "demo"
format = "json"
rate = 200
[sinks.none]
type = "blackhole"
inputs = ["demo"]
"#,
            data = dir.path().join("data").display(),
        ),
        false,
    );
    assert!(wait_until(Duration::from_secs(60), || http_get(
        api, "/health"
    )
    .is_ok_and(|(s, _)| s == 200)));
    let tap = |token: Option<&str>| {
        let mut cmd = weir();
        cmd.args([
            "tap",
            "--api",
            &api.to_string(),
            "--outputs-of",
            "demo",
            "--limit",
            "2",
        ])
        .env_remove("WEIR_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("WEIR_API_TOKEN", t);
        }
        wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60))
    };
    let refused = tap(None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    let out = tap(Some("tap-token-0123456789"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    crate::harness::sigterm(&child);
    let _ = wait_with_timeout(child, Duration::from_secs(30));
}
