//! Running the commands the `perf` source reads from: a pipeline of child processes (one stage
//! for `perf stat` or a user command, two for `perf record | perf script`), their stderr
//! captured, and failures explained with the fix.
//!
//! A [`Pipeline`] is one run: spawned, read through its last stage's stdout, then either
//! [`Pipeline::finish`]ed (waited for, giving each stage's [`Exit`]) or dropped (every child is
//! killed: `kill_on_drop`). The source runs one pipeline at a time.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// The fix for perf's "not allowed" errors.
pub const PERMISSION_FIX: &str = "run Weir as root, or give its binary CAP_PERFMON \
(CAP_SYS_ADMIN before Linux 5.8; plus CAP_SYS_PTRACE to resolve other users' symbols), or allow \
every user with `sysctl -w kernel.perf_event_paranoid=-1` (system-wide `-a` profiling needs -1 \
or the capability)";

/// The fix for a missing perf.
pub const INSTALL_FIX: &str = "install perf (Debian: `apt-get install linux-perf`; Ubuntu: \
`apt-get install linux-tools-$(uname -r)`; Fedora/RHEL: `dnf install perf`) or set `perf_path`";

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("`{program}` was not found{hint}")]
    NotFound { program: String, hint: String },
    #[error("cannot start `{program}`: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// Where `program` resolves: itself when it has a `/`, else the first match on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
}

/// The error for a program that cannot be found, with the install hint when it is perf.
pub fn not_found(program: &str, is_perf: bool) -> SpawnError {
    let hint = if is_perf {
        format!(": {INSTALL_FIX}")
    } else {
        " (check the path, or that it is on PATH)".to_string()
    };
    SpawnError::NotFound {
        program: program.to_string(),
        hint,
    }
}

/// How one stage ended.
#[derive(Debug)]
pub struct Exit {
    /// The command line, for messages.
    pub command: String,
    pub status: std::io::Result<ExitStatus>,
    /// The end of what it wrote to stderr.
    pub stderr: String,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.status.as_ref().is_ok_and(|s| s.success())
    }

    /// Whether its stderr says perf was not allowed to open the events.
    pub fn permission_denied(&self) -> bool {
        let e = &self.stderr;
        e.contains("perf_event_paranoid")
            || e.contains("Permission denied")
            || e.contains("Access to performance monitoring")
            || e.contains("No permission")
            || e.contains("Operation not permitted")
    }

    /// A one-paragraph explanation: what ran, how it ended, its stderr, and the fix when known.
    pub fn describe(&self) -> String {
        let status = match &self.status {
            Ok(s) => match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => format!("was killed ({s})"),
            },
            Err(e) => format!("could not be waited for ({e})"),
        };
        let mut msg = format!("`{}` {status}", self.command);
        let tail = self.stderr.trim();
        if !tail.is_empty() {
            msg.push_str(": ");
            msg.push_str(&tail.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        if self.permission_denied() {
            msg.push_str(". Fix: ");
            msg.push_str(PERMISSION_FIX);
        } else if self.stderr.contains("event syntax error")
            || self.stderr.contains("not supported")
        {
            msg.push_str(". Fix: check the event names with `perf list`");
        }
        msg
    }
}

struct Stage {
    command: String,
    child: Child,
    stderr: JoinHandle<String>,
}

/// Running children, the stdout of the last one piped to the source.
pub struct Pipeline {
    stages: Vec<Stage>,
    stdout: Option<ChildStdout>,
}

fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

/// Collects the last [`STDERR_TAIL_BYTES`] of a stream.
async fn tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_TAIL_BYTES {
                    let cut = kept.len() - STDERR_TAIL_BYTES;
                    kept.drain(..cut);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

impl Pipeline {
    /// Starts `stages` (each an argv), each one's stdout feeding the next one's stdin.
    /// `perf_program` names the program whose absence deserves the install hint.
    pub fn spawn(stages: &[Vec<String>], perf_program: &str) -> Result<Self, SpawnError> {
        let mut running: Vec<Stage> = Vec::with_capacity(stages.len());
        let mut prev: Option<ChildStdout> = None;
        for argv in stages {
            let Some(program) = argv.first() else {
                return Err(SpawnError::Io {
                    program: String::new(),
                    source: std::io::Error::other("empty command"),
                });
            };
            let mut cmd = Command::new(program);
            cmd.args(&argv[1..])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            match prev.take() {
                Some(out) => {
                    let stdin: Stdio = out.try_into().map_err(|e| SpawnError::Io {
                        program: program.clone(),
                        source: e,
                    })?;
                    cmd.stdin(stdin);
                }
                None => {
                    cmd.stdin(Stdio::null());
                }
            }
            let mut child = cmd.spawn().map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    not_found(program, program == perf_program)
                } else {
                    SpawnError::Io {
                        program: program.clone(),
                        source: e,
                    }
                }
            })?;
            let stderr = match child.stderr.take() {
                Some(s) => tokio::spawn(tail(s)),
                None => tokio::spawn(async { String::new() }),
            };
            prev = child.stdout.take();
            running.push(Stage {
                command: command_line(argv),
                child,
                stderr,
            });
        }
        Ok(Self {
            stages: running,
            stdout: prev,
        })
    }

    /// The stdout of the last stage (taken once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Waits for every stage to end (after its output was read to the end).
    pub async fn finish(mut self) -> Vec<Exit> {
        self.stdout = None;
        let mut exits = Vec::with_capacity(self.stages.len());
        for mut s in self.stages.drain(..) {
            let status = s.child.wait().await;
            let stderr = s.stderr.await.unwrap_or_default();
            exits.push(Exit {
                command: s.command,
                status,
                stderr,
            });
        }
        exits
    }

    /// Stops every stage now (shutdown).
    pub async fn kill(mut self) {
        for s in &mut self.stages {
            let _ = s.child.start_kill();
        }
        for s in &mut self.stages {
            let _ = s.child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn pipes_stages_and_reports_their_stderr() {
        let mut p = Pipeline::spawn(
            &[
                argv(&["sh", "-c", "printf 'a\\nb\\n'; echo oops >&2"]),
                argv(&[
                    "sh",
                    "-c",
                    "tr a-z A-Z; echo 'perf_event_paranoid setting is 2' >&2; exit 3",
                ]),
            ],
            "perf",
        )
        .unwrap();
        let mut out = String::new();
        p.take_stdout()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, "A\nB\n");
        let exits = p.finish().await;
        assert!(exits[0].success());
        assert_eq!(exits[0].stderr.trim(), "oops");
        assert!(!exits[1].success());
        assert!(exits[1].permission_denied());
        let d = exits[1].describe();
        assert!(d.contains("exited with status 3"), "{d}");
        assert!(d.contains("perf_event_paranoid=-1"), "{d}");
    }

    #[tokio::test]
    async fn a_missing_perf_says_how_to_install_it() {
        let Err(e) = Pipeline::spawn(
            &[argv(&["/nonexistent/perf", "record"])],
            "/nonexistent/perf",
        ) else {
            panic!("spawned a missing program")
        };
        let msg = e.to_string();
        assert!(msg.contains("was not found"), "{msg}");
        assert!(msg.contains("linux-perf"), "{msg}");
        assert!(find_program("sh").is_some());
        assert!(find_program("/nonexistent/perf").is_none());
        assert!(find_program("definitely-not-a-program-weir").is_none());
    }
}
