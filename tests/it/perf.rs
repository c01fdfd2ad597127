//! Profiles end to end with the real `weir` binary: the `perf` source, the `stack_fold`
//! transform, the `folded` encoding and `weir flamegraph`.
//!
//! - conformance: every capture of the shared test data folded with every option of the
//!   reference `stackcollapse-perf.pl` gives its reference output byte for byte;
//! - garbage in a capture is counted and skipped, the samples around it survive.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{require, shared_testdata, wait_with_timeout, weir, write_config};

/// The shared perf captures (`shared/testdata/perf`): skipped without them on a developer
/// machine, a failure under CI.
fn shared_perf() -> Option<PathBuf> {
    require("the shared perf captures", shared_testdata("perf"))
}

/// The stackcollapse-perf.pl option each reference file was made with, and the same as
/// `stack_fold` options.
const OPTIONS: &[(&str, &str)] = &[
    ("pid", "include_pid = true"),
    ("tid", "include_tid = true"),
    ("kernel", "annotate_kernel = true"),
    ("jit", "annotate_jit = true"),
    ("all", "annotate_kernel = true\nannotate_jit = true"),
    ("addrs", "include_addrs = true"),
];

fn captures(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            name.strip_suffix(".txt").map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// Runs `weir run` on `config` to its end (the sources read files and end) and returns stderr.
fn run_to_end(config: &Path) -> String {
    let child = weir()
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "weir failed:\n{stderr}");
    stderr
}

/// The output without options, derived from the `kernel` reference: `_[k]` removed from every
/// frame, the counts of stacks that became equal summed, lines sorted by bytes.
fn plain_from_kernel(results: &Path, name: &str) -> Vec<u8> {
    let kernel = std::fs::read(results.join(format!("{name}-collapsed-kernel.txt"))).unwrap();
    let mut merged = std::collections::BTreeMap::<Vec<u8>, u64>::new();
    for line in kernel.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let sp = line.iter().rposition(|b| *b == b' ').unwrap();
        let stack = String::from_utf8_lossy(&line[..sp]).replace("_[k]", "");
        let count: u64 = std::str::from_utf8(&line[sp + 1..])
            .unwrap()
            .parse()
            .unwrap();
        *merged.entry(stack.into_bytes()).or_default() += count;
    }
    let mut out = Vec::new();
    for (stack, count) in merged {
        out.extend_from_slice(&stack);
        out.extend_from_slice(format!(" {count}\n").as_bytes());
    }
    out
}

/// One pipeline per (capture, option) in a single config, all run by one `weir run`: the
/// `perf` source reads the capture, `stack_fold` folds the whole input with its defaults (a
/// sample weighs its period, as the reference sums periods; `perf-dd-stacks-01` prints them)
/// and a `file` sink writes it `folded`.
#[test]
fn folds_every_shared_capture_like_the_reference() {
    let Some(dir) = shared_perf() else { return };
    let results = dir.join("results");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "data_dir = \"{}\"\n[api]\nenabled = false\n",
        tmp.path().display()
    );
    let mut cases = Vec::new();
    for (i, name) in captures(&dir).iter().enumerate() {
        cfg.push_str(&format!(
            "[sources.s{i}]\ntype = \"perf\"\nmode = \"script\"\npath = \"{}\"\n",
            dir.join(format!("{name}.txt")).display()
        ));
        for (opt, fold) in OPTIONS.iter().copied().chain([("plain", "")]) {
            let out = tmp.path().join(format!("{name}-collapsed-{opt}.txt"));
            cfg.push_str(&format!(
                "[transforms.f{i}_{opt}]\ntype = \"stack_fold\"\ninputs = [\"s{i}\"]\n{fold}\n\
                 [sinks.o{i}_{opt}]\ntype = \"file\"\ninputs = [\"f{i}_{opt}\"]\npath = \"{}\"\nencoding.codec = \"folded\"\n",
                out.display()
            ));
            cases.push((name.clone(), opt, out));
        }
    }
    assert!(cases.len() >= 7, "no captures in {}", dir.display());
    let config = write_config(tmp.path(), "conformance.toml", &cfg);
    run_to_end(&config);
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, opt, out) in &cases {
        let got = std::fs::read(out).unwrap_or_default();
        let reference = results.join(format!("{name}-collapsed-{opt}.txt"));
        let want = match std::fs::read(&reference) {
            Ok(w) => w,
            // There is no reference without options: it is the `kernel` one without its
            // `_[k]` annotations, stacks made equal by that merged, sorted again.
            Err(_) if *opt == "plain" => plain_from_kernel(&results, name),
            Err(e) => panic!("missing reference {}: {e}", reference.display()),
        };
        if got != want {
            let g = String::from_utf8_lossy(&got);
            let w = String::from_utf8_lossy(&want);
            let first = g
                .lines()
                .zip(w.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(g.lines().count().min(w.lines().count()));
            failures.push(format!(
                "{name} {opt}: {} lines vs {} in the reference; first difference at line {}:\n  got:  {}\n  want: {}",
                g.lines().count(),
                w.lines().count(),
                first + 1,
                g.lines().nth(first).unwrap_or("<end>"),
                w.lines().nth(first).unwrap_or("<end>"),
            ));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{checked} folded outputs identical to the reference");
}

/// Frames with an address and no symbol in mappings that are not plain files (a memfd, with
/// and without perf's ` (deleted)` suffix, `//anon`, `[anon:v8]`, a JIT map, `[vdso]`, an
/// anonymous inode, a `[JIT] tid` region, `[unknown]`), in samples whose periods differ.
const UNNAMED_FRAMES: &str = "node 100/100 [000] 1.000000:     250 cycles:
\t    7f3c8e2d0123 [unknown] (/memfd:doublemapper (deleted))
\t    7f3c8e2d0456 [unknown] (/memfd:doublemapper)
\t    7f3c8e2d0789 [unknown] (//anon)
\t    7f3c8e2d0abc [unknown] ([anon:v8])
\t    7f3c8e2d0def [unknown] (/tmp/perf-100.map)
\t    55aa00001111 [unknown] ([unknown])
\t    55aa00002222 [unknown] (/usr/bin/node (deleted))
\t    55aa00004444 [unknown] ([vdso])
\t    55aa00005555 [unknown] (anon_inode:[perf_event])
\t    55aa00006666 [unknown] ([JIT] tid 100)
\t    55aa00007777 __libc_start_main+0x80 (/usr/lib/libc.so.6)

node 100/101 [000] 1.000001:     100 cycles:
\t    7f3c8e2d0123 [unknown] (/memfd:doublemapper (deleted))
\t    55aa00007777 __libc_start_main+0x80 (/usr/lib/libc.so.6)

";

/// [`UNNAMED_FRAMES`] folded by `stackcollapse-perf.pl` (FlameGraph as of October 2024) with
/// no option, `--pid`, `--addrs` and `--all`; the `stack_fold` options of each.
const UNNAMED_FRAMES_REFERENCE: &[(&str, &str)] = &[
    ("", "node;__libc_start_main;[[JIT] tid 100];[anon_inode:[perf_event]];[[vdso]];[unknown] ;[unknown];[perf-100.map];[[anon:v8]];[anon];[memfd:doublemapper];[unknown]  250\nnode;__libc_start_main;[unknown]  100\n"),
    ("include_pid = true", "node-100;__libc_start_main;[[JIT] tid 100];[anon_inode:[perf_event]];[[vdso]];[unknown] ;[unknown];[perf-100.map];[[anon:v8]];[anon];[memfd:doublemapper];[unknown]  250\nnode-100;__libc_start_main;[unknown]  100\n"),
    ("include_addrs = true", "node;__libc_start_main;[[JIT] tid 100 <55aa00006666>];[anon_inode:[perf_event] <55aa00005555>];[[vdso] <55aa00004444>];[unknown] ;[unknown <55aa00001111>];[perf-100.map <7f3c8e2d0def>];[[anon:v8] <7f3c8e2d0abc>];[anon <7f3c8e2d0789>];[memfd:doublemapper <7f3c8e2d0456>];[unknown]  250\nnode;__libc_start_main;[unknown]  100\n"),
    ("annotate_kernel = true\nannotate_jit = true", "node;__libc_start_main;[[JIT] tid 100]_[k];[anon_inode:[perf_event]];[[vdso]]_[k];[unknown] ;[unknown];[perf-100.map]_[j];[[anon:v8]]_[k];[anon];[memfd:doublemapper];[unknown]  250\nnode;__libc_start_main;[unknown]  100\n"),
];

/// Unnamed frames in memfd, anonymous and JIT mappings are named as the reference names them,
/// with every option, and stacks weigh their periods without `weight` being set.
#[test]
fn unnamed_frames_in_mappings_that_are_not_files_fold_like_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("unnamed.txt");
    std::fs::write(&capture, UNNAMED_FRAMES).unwrap();
    let mut cfg = format!(
        "data_dir = \"{}\"\n[api]\nenabled = false\n[sources.perf]\ntype = \"perf\"\npath = \"{}\"\n",
        tmp.path().display(),
        capture.display()
    );
    for (i, (options, _)) in UNNAMED_FRAMES_REFERENCE.iter().enumerate() {
        cfg.push_str(&format!(
            "[transforms.f{i}]\ntype = \"stack_fold\"\ninputs = [\"perf\"]\n{options}\n\
             [sinks.o{i}]\ntype = \"file\"\ninputs = [\"f{i}\"]\npath = \"{}\"\nencoding.codec = \"folded\"\n",
            tmp.path().join(format!("out{i}.folded")).display()
        ));
    }
    let config = write_config(tmp.path(), "unnamed.toml", &cfg);
    run_to_end(&config);
    for (i, (options, want)) in UNNAMED_FRAMES_REFERENCE.iter().enumerate() {
        let got = std::fs::read_to_string(tmp.path().join(format!("out{i}.folded"))).unwrap();
        assert_eq!(got, *want, "options: {options:?}");
    }
}

/// A sample of `comm` 1/1 with the frames (leaf first) in `/bin/ok`.
fn sample(comm: &str, frames: &[&str]) -> Vec<u8> {
    let mut s = format!("{comm} 1/1 [000] 1.0: 1 cpu-clock:\n");
    for (i, f) in frames.iter().enumerate() {
        s.push_str(&format!("\t{:x} {f}+0x1 (/bin/ok)\n", 0x1000 + i));
    }
    s.push('\n');
    s.into_bytes()
}

/// Binary bytes, a sample cut in the middle of a frame line, a 1 MB frame line and a sample
/// the input ends in are each counted and skipped; every sample around them is folded.
#[test]
fn garbage_in_perf_script_text_is_counted_and_neighbours_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    input.extend(sample("ok", &["alpha", "main"]));
    // Binary bytes (every byte value, four times over), then the blank line perf would print.
    for _ in 0..4 {
        input.extend(0u8..=255);
    }
    input.extend_from_slice(b"\n\n");
    input.extend(sample("ok", &["beta", "main"]));
    // A sample cut in the middle of a frame line.
    input.extend_from_slice(b"ok 1/1 [000] 1.0: 1 cpu-clock:\n\t1000 del\n\n");
    input.extend(sample("ok", &["alpha", "main"]));
    // A sample with a 1 MB frame line.
    input.extend_from_slice(b"ok 1/1 [000] 1.0: 1 cpu-clock:\n\t1000 ");
    input.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    input.extend_from_slice(b" (/bin/ok)\n\t1001 main (/bin/ok)\n\n");
    input.extend(sample("ok", &["gamma", "main"]));
    // The input ends inside a sample.
    input.extend_from_slice(b"ok 1/1 [000] 1.0: 1 cpu-clock:\n\t1000 delta (/bin/ok)\n");
    let capture = tmp.path().join("garbage.txt");
    std::fs::write(&capture, &input).unwrap();
    let out = tmp.path().join("folded.txt");
    let config = write_config(
        tmp.path(),
        "garbage.toml",
        &format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.perf]
type = "perf"
path = "{capture}"
[transforms.fold]
type = "stack_fold"
inputs = ["perf"]
[sinks.out]
type = "file"
inputs = ["fold"]
path = "{out}"
encoding.codec = "folded"
"#,
            data = tmp.path().display(),
            capture = capture.display(),
            out = out.display(),
        ),
    );
    let stderr = run_to_end(&config);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "ok;main;alpha 2\nok;main;beta 1\nok;main;gamma 1\n"
    );
    let summary = stderr
        .lines()
        .find(|l| l.contains("summary") && l.contains("component=perf"))
        .unwrap_or_else(|| panic!("no summary for the source:\n{stderr}"));
    // One parse error for the binary block (skipped to its blank line), one for the cut
    // frame line, one oversized line, one truncated sample.
    assert!(
        summary.contains("sent=4 ") && summary.contains("errors=oversized:1,parse:2,truncated:1"),
        "{summary}"
    );
    // Each kind says what and where (later errors of a kind are rate-limited).
    assert!(
        stderr.contains("not a `perf script` sample header"),
        "{stderr}"
    );
    assert!(stderr.contains("max_line_bytes"), "{stderr}");
    assert!(
        stderr.contains("the input ended inside a sample"),
        "{stderr}"
    );
}

/// The `<title>` texts of the frames of a flame graph, after checking it is well-formed XML
/// with an `svg` root.
fn svg_frame_titles(svg: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(svg).unwrap();
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, opts)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", svg.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(String::from))
        .collect()
}

fn flamegraph(input: &Path, output: &Path, extra: &[&str]) -> String {
    let out = weir()
        .args(["flamegraph", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "weir flamegraph failed:\n{stderr}");
    stderr
}

/// `weir flamegraph` draws the same well-formed SVG from `perf script` text, from the folded
/// file of a `stack_fold` pipeline and from the Parquet files of one; the hot frames are in it
/// with their counts.
#[test]
fn flamegraph_from_perf_script_folded_and_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let mut script = Vec::new();
    for _ in 0..30 {
        script.extend(sample("app", &["hot_loop", "work", "main"]));
    }
    for _ in 0..5 {
        script.extend(sample("app", &["cold_path", "main"]));
    }
    for _ in 0..2 {
        script.extend(sample("app", &["escape<&>\"quote\"", "main"]));
    }
    let capture = tmp.path().join("app.perf.txt");
    std::fs::write(&capture, &script).unwrap();

    // The same profile folded into a file and into Parquet by a pipeline.
    let folded = tmp.path().join("app.folded");
    let parquet = tmp.path().join("parquet");
    let config = write_config(
        tmp.path(),
        "fold.toml",
        &format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.perf]
type = "perf"
path = "{capture}"
[transforms.fold]
type = "stack_fold"
inputs = ["perf"]
[sinks.folded]
type = "file"
inputs = ["fold"]
path = "{folded}"
encoding.codec = "folded"
[sinks.parquet]
type = "parquet"
inputs = ["fold"]
path = "{parquet}"
"#,
            data = tmp.path().display(),
            capture = capture.display(),
            folded = folded.display(),
            parquet = parquet.display(),
        ),
    );
    run_to_end(&config);
    assert_eq!(
        std::fs::read_to_string(&folded).unwrap(),
        "app;main;cold_path 5\napp;main;escape<&>quote 2\napp;main;work;hot_loop 30\n"
    );

    let mut all = Vec::new();
    for (name, input, extra) in [
        ("script", &capture, vec!["--title", "Busy <app> & co"]),
        ("folded", &folded, vec![]),
        ("parquet", &parquet, vec![]),
    ] {
        let svg = tmp.path().join(format!("{name}.svg"));
        let stderr = flamegraph(input, &svg, &extra);
        assert!(stderr.contains("3 stacks, 37 samples"), "{name}: {stderr}");
        let titles = svg_frame_titles(&svg);
        let has = |prefix: &str| titles.iter().any(|t| t.starts_with(prefix));
        assert!(has("hot_loop (30 samples, 81.08%)"), "{name}: {titles:?}");
        assert!(has("work (30 samples"), "{name}: {titles:?}");
        assert!(has("main (37 samples, 100.00%)"), "{name}: {titles:?}");
        assert!(has("cold_path (5 samples"), "{name}: {titles:?}");
        assert!(has("escape<&>quote (2 samples"), "{name}: {titles:?}");
        let text = std::fs::read_to_string(&svg).unwrap();
        if name == "script" {
            assert!(text.contains("Busy &lt;app&gt; &amp; co"), "title missing");
        }
        let mut frames: Vec<String> = titles
            .into_iter()
            .filter(|t| t.contains(" samples"))
            .collect();
        frames.sort();
        all.push(frames);
    }
    assert_eq!(all[0], all[1]);
    assert_eq!(all[1], all[2]);

    // Garbage is not a profile: a clear error, no SVG.
    let junk = tmp.path().join("junk.txt");
    std::fs::write(&junk, b"\x00\x01 not a profile\n").unwrap();
    let out = weir()
        .args(["flamegraph", "--input"])
        .arg(&junk)
        .arg("--output")
        .arg(tmp.path().join("junk.svg"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no stacks in"), "{stderr}");
}

/// A program that burns `argv[1]` seconds of CPU in `weir_busy_spin` after a short
/// `weir_idle_bit`, built with frame pointers so `perf record -g` walks its stacks.
const BUSY_C: &str = r#"
#include <stdlib.h>
#include <time.h>
volatile unsigned long sink;
__attribute__((noinline)) void weir_idle_bit(void) {
    for (unsigned long i = 0; i < 2000000UL; i++) sink -= i;
}
__attribute__((noinline)) void weir_busy_spin(double secs) {
    clock_t end = clock() + (clock_t)(secs * CLOCKS_PER_SEC);
    while (clock() < end)
        for (unsigned long i = 0; i < 2000000UL; i++) sink += i * 7;
}
int main(int argc, char **argv) {
    weir_idle_bit();
    weir_busy_spin(argc > 1 ? atof(argv[1]) : 0.5);
    return 0;
}
"#;

/// Compiles [`BUSY_C`] into `dir/<name>` (the process name perf shows; each test uses its own,
/// since tests run in parallel and `record` samples the whole machine).
fn build_busy(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join("weirbusy.c");
    std::fs::write(&src, BUSY_C).unwrap();
    let bin = dir.join(name);
    let st = std::process::Command::new("cc")
        .args(["-O0", "-fno-omit-frame-pointer", "-g", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed: scripts/install-test-deps.sh installs gcc");
    assert!(st.success());
    bin
}

/// `perf` (Debian's `linux-perf`), if it runs here: skipped without it on a developer
/// machine, a failure under CI.
fn perf() -> Option<std::process::Command> {
    let probe = std::process::Command::new("perf").arg("--version").output();
    let runs = match probe {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`perf --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "`perf` does not run ({e}; scripts/install-test-deps.sh installs linux-perf)"
        )),
    };
    require("perf", runs).map(|()| std::process::Command::new("perf"))
}

/// Sums the counts of `folded` lines whose stack starts with `root;` into (all, with `frame`).
fn share_of(folded: &str, root: &str, frame: &str) -> (u64, u64) {
    let (mut all, mut with) = (0, 0);
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        let count: u64 = count.parse().unwrap();
        if stack.split(';').next() != Some(root) {
            continue;
        }
        all += count;
        if stack.split(';').any(|f| f == frame) {
            with += count;
        }
    }
    (all, with)
}

/// A busy program recorded with the machine's perf (software `cpu-clock` event), read by the
/// `perf` source running `perf script` itself: the busy function dominates the folded output.
#[test]
fn own_capture_from_perf_script_command_shows_the_busy_function() {
    let Some(mut perf) = perf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let busy = build_busy(tmp.path(), "weirbusy");
    let data = tmp.path().join("busy.data");
    let rec = perf
        .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o"])
        .arg(&data)
        .arg("--")
        .arg(&busy)
        .arg("0.4")
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "perf record failed (perf_event_paranoid is {:?}):\n{}",
        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid"),
        String::from_utf8_lossy(&rec.stderr)
    );
    let out = tmp.path().join("busy.folded");
    let config = write_config(
        tmp.path(),
        "script.toml",
        &format!(
            r#"
data_dir = "{dir}"
[api]
enabled = false
[sources.perf]
type = "perf"
mode = "script"
command = ["perf", "script", "-i", "{data}"]
restart = "never"
[transforms.fold]
type = "stack_fold"
inputs = ["perf"]
[sinks.out]
type = "file"
inputs = ["fold"]
path = "{out}"
encoding.codec = "folded"
"#,
            dir = tmp.path().display(),
            data = data.display(),
            out = out.display(),
        ),
    );
    let stderr = run_to_end(&config);
    assert!(!stderr.contains("errors=parse"), "{stderr}");
    let folded = std::fs::read_to_string(&out).unwrap();
    let (all, busy_samples) = share_of(&folded, "weirbusy", "weir_busy_spin");
    assert!(all >= 50, "only {all} samples of weirbusy:\n{folded}");
    assert!(
        busy_samples * 10 >= all * 8,
        "weir_busy_spin in {busy_samples} of {all} samples:\n{folded}"
    );
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("weirbusy;") && l.contains(";main;weir_busy_spin")),
        "{folded}"
    );
}

/// `perf stat -I 100 -x,` output recorded by the test, read by `mode = "stat"`: one counter per
/// event and interval, with perf's values, units and interval times; unsupported events are
/// left out.
#[test]
fn stat_mode_turns_recorded_perf_stat_output_into_metrics() {
    let Some(mut perf) = perf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let busy = build_busy(tmp.path(), "weirbusystat");
    let stat = tmp.path().join("stat.csv");
    let rec = perf
        .args(["stat", "-I", "100", "-x,", "-e"])
        .arg("cpu-clock,task-clock,context-switches,page-faults")
        .arg("-o")
        .arg(&stat)
        .arg("--")
        .arg(&busy)
        .arg("0.35")
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let text = std::fs::read_to_string(&stat).unwrap();
    // What perf wrote, read here on its own: (time, event) -> (value, unit).
    let mut want = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let value: f64 = f[1].parse().unwrap();
        want.push((
            f[0].parse::<f64>().unwrap(),
            f[3].to_string(),
            value,
            f[2].to_string(),
        ));
    }
    assert!(want.len() >= 8, "too few intervals:\n{text}");
    // A counter perf cannot read here is reported, not made up.
    let mut with_unsupported = text.clone();
    with_unsupported.push_str("     9.999000000,<not supported>,,cycles,0,100.00,,\n");
    std::fs::write(&stat, &with_unsupported).unwrap();

    let out = tmp.path().join("metrics.json");
    let config = write_config(
        tmp.path(),
        "stat.toml",
        &format!(
            r#"
data_dir = "{dir}"
[api]
enabled = false
[sources.stat]
type = "perf"
mode = "stat"
path = "{stat}"
[sinks.out]
type = "file"
inputs = ["stat"]
path = "{out}"
"#,
            dir = tmp.path().display(),
            stat = stat.display(),
            out = out.display(),
        ),
    );
    let stderr = run_to_end(&config);
    assert!(
        stderr.contains("perf cannot count `cycles` here (not supported)"),
        "{stderr}"
    );
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let ts = |m: &serde_json::Value| {
        let t = chrono::DateTime::parse_from_rfc3339(m["timestamp"].as_str().unwrap()).unwrap();
        i128::from(t.timestamp_nanos_opt().unwrap())
    };
    let base = ts(&got[0]) - (want[0].0 * 1e9) as i128;
    for (m, (time, event, value, unit)) in got.iter().zip(&want) {
        let name = format!("perf_{}", event.replace('-', "_"));
        assert_eq!(m["name"], name.as_str(), "{m}");
        assert_eq!(m["kind"], "incremental", "{m}");
        assert_eq!(m["counter"]["value"].as_f64(), Some(*value), "{m}");
        assert_eq!(m["tags"]["event"], event.as_str(), "{m}");
        if unit.is_empty() {
            assert!(m["tags"].get("unit").is_none(), "{m}");
        } else {
            assert_eq!(m["tags"]["unit"], unit.as_str(), "{m}");
        }
        // Interval times are kept (to the microsecond: RFC 3339 rounding).
        let off = ts(m) - base;
        assert!((off - (time * 1e9) as i128).abs() < 2_000, "{m} at {time}");
    }
    // The busy program burnt its 0.35 s of CPU: perf's cpu-clock intervals sum to it.
    let cpu_ms: f64 = want
        .iter()
        .filter(|w| w.1 == "cpu-clock")
        .map(|w| w.2)
        .sum();
    assert!(cpu_ms >= 300.0, "cpu-clock total {cpu_ms} ms");
}

/// `mode = "record"` (Weir runs `perf record -a -g | perf script` in a loop) and `mode =
/// "stat"` running `perf stat -a` itself, while a busy program runs: its folded stacks are
/// dominated by its busy function, and system-wide counters arrive as metrics.
#[test]
fn record_and_stat_modes_run_perf_themselves() {
    let Some(_) = perf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let busy = build_busy(tmp.path(), "weirbusyrec");
    let folded = tmp.path().join("record.folded");
    let metrics = tmp.path().join("stat.json");
    let config = write_config(
        tmp.path(),
        "record.toml",
        &format!(
            r#"
data_dir = "{dir}"
[api]
enabled = false
[sources.record]
type = "perf"
mode = "record"
frequency_hz = 199
interval_secs = 1
[transforms.fold]
type = "stack_fold"
inputs = ["record"]
window_secs = 1
weight = "samples"
[sinks.folded]
type = "file"
inputs = ["fold"]
path = "{folded}"
encoding.codec = "folded"
[sources.stat]
type = "perf"
mode = "stat"
events = ["cpu-clock", "context-switches"]
interval_ms = 200
[sinks.metrics]
type = "file"
inputs = ["stat"]
path = "{metrics}"
"#,
            dir = tmp.path().display(),
            folded = folded.display(),
            metrics = metrics.display(),
        ),
    );
    let child = weir()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The program runs until its samples have come through (each perf record run lasts 1 s,
    // then perf script resolves symbols: on a loaded machine a cycle takes a few seconds).
    let mut prog = std::process::Command::new(&busy)
        .arg("120")
        .spawn()
        .unwrap();
    let seen = crate::harness::wait_until(Duration::from_secs(90), || {
        let text = std::fs::read_to_string(&folded).unwrap_or_default();
        share_of(&text, "weirbusyrec", "weir_busy_spin").0 >= 20
    });
    let _ = prog.kill();
    let _ = prog.wait();
    crate::harness::sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let text = std::fs::read_to_string(&folded).unwrap_or_default();
    let (all, busy_samples) = share_of(&text, "weirbusyrec", "weir_busy_spin");
    assert!(seen, "only {all} samples of weirbusyrec in 90 s:\n{stderr}");
    let others: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("weirbusyrec;") && !l.contains(";weir_busy_spin"))
        .collect();
    assert!(
        busy_samples * 10 >= all * 8,
        "weir_busy_spin in {busy_samples} of {all} samples; the others:\n{}",
        others.join("\n")
    );

    let got: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cpu: Vec<&serde_json::Value> = got
        .iter()
        .filter(|m| m["name"] == "perf_cpu_clock")
        .collect();
    assert!(cpu.len() >= 5, "{got:?}\n{stderr}");
    assert!(cpu.iter().all(|m| m["tags"]["unit"] == "msec"), "{cpu:?}");
    // The busy program kept a CPU busy: some 200 ms interval counted over 100 ms.
    assert!(
        cpu.iter()
            .any(|m| m["counter"]["value"].as_f64().unwrap() > 100.0),
        "{cpu:?}"
    );
    assert!(got.iter().any(|m| m["name"] == "perf_context_switches"));
}

/// `weir flamegraph` on every shared capture (`perf script` text as recorded on other
/// machines): a well-formed SVG whose heaviest process frame carries the reference's count.
#[test]
fn flamegraph_of_every_shared_capture() {
    let Some(dir) = shared_perf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for name in captures(&dir) {
        // The reference's per-process totals (the root frame of each folded line).
        let plain = plain_from_kernel(&dir.join("results"), &name);
        let mut roots = std::collections::BTreeMap::<String, u64>::new();
        for line in String::from_utf8_lossy(&plain).lines() {
            let (stack, count) = line.rsplit_once(' ').unwrap();
            let root = stack.split(';').next().unwrap().to_string();
            *roots.entry(root).or_default() += count.parse::<u64>().unwrap();
        }
        let (top, total) = roots.iter().max_by_key(|(_, n)| **n).unwrap();
        let svg = tmp.path().join(format!("{name}.svg"));
        flamegraph(&dir.join(format!("{name}.txt")), &svg, &[]);
        let titles: Vec<String> = svg_frame_titles(&svg)
            .into_iter()
            .map(|t| t.replace(',', ""))
            .collect();
        let want = format!("{top} ({total} samples");
        assert!(
            titles.iter().any(|t| t.starts_with(&want)),
            "{name}: no `{want}` in {titles:?}"
        );
    }
}
