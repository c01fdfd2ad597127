//! The `file` sink under a file-descriptor limit: more files than the process may open.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::wait_with_timeout;

/// 300 files through a process allowed 48 descriptors: the sink closes its least recently
/// written file when opening fails with `EMFILE` (counted), and every line lands in its file.
#[test]
fn more_files_than_descriptors_are_written_by_closing_the_least_recent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = dir.path().join("fds.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[sinks.files]
type = "file"
inputs = ["in"]
path = "{out}/{{{{ n }}}}.log"
encoding.codec = "json"
max_open_files = 1000
"#,
            data = dir.path().join("data").display(),
            out = out.display(),
        ),
    )
    .unwrap();
    // Two rounds over the 300 files, so that files closed for want of descriptors are
    // opened again.
    let mut input = String::new();
    for round in 0..2 {
        for n in 0..300 {
            input.push_str(&format!("{{\"n\":{n},\"round\":{round}}}\n"));
        }
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_weir"))
        .arg(&cfg)
        .env("WEIR_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let done = wait_with_timeout(child, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{log}");
    assert!(
        log.contains("too_many_open_files"),
        "no descriptor ran out:\n{log}"
    );
    for n in 0..300 {
        let text = std::fs::read_to_string(out.join(format!("{n}.log"))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                format!("{{\"n\":{n},\"round\":0}}"),
                format!("{{\"n\":{n},\"round\":1}}")
            ],
            "file {n}"
        );
    }
}
