//! Test support every crate of the workspace shares (a dev-dependency only; nothing here is
//! in the `weir` binary):
//!
//! - [`fuzz`]: the fuzz driver. Every parser that input reaches has a `fuzz_*` test that
//!   mutates real captures for a time budget and fails, with the input that broke it, on a
//!   panic.
//! - [`all_required`], [`require`] and [`shared_testdata`]: what a test may skip on a
//!   developer's machine (shared test data, a server, a tool) and must not skip under CI.

pub mod fuzz;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether every test must run, none may skip: under CI (`CI` set, and not to `0` or `false`:
/// CI sets `CI=true`) or with `WEIR_REQUIRE_ALL` set (`.ci/run` sets it).
pub fn all_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    ci || std::env::var_os("WEIR_REQUIRE_ALL").is_some()
}

/// The one way a test says it needs something this machine may lack (shared test data, a
/// server, a tool, a privilege): `found` is what was looked up, `Err` saying why it is missing.
/// Missing, the test is skipped (`SKIPPED <test>: ...` on stderr, `None`: the test returns) on
/// a developer machine, and fails under CI ([`all_required`]).
pub fn require<T>(what: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(x) => Some(x),
        Err(why) => {
            let current = std::thread::current();
            let test = current.name().unwrap_or("this test");
            assert!(
                !all_required(),
                "{test} needs {what}, and every test must run under CI (CI or WEIR_REQUIRE_ALL set), but {why}"
            );
            // Straight to stderr, not eprintln!: the test harness would hide it (it shows a passing
            // test's output only with --nocapture), and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {what}, but {why}");
            None
        }
    }
}

/// `shared/testdata/<sub>`, the project's shared test data: under `$WEIR_SHARED` (or the older
/// `$WEIR_SHARED_DIR`) when set, else in a `shared/` next to the repository or one of its
/// parents (where CI puts it); or why not.
pub fn shared_testdata(sub: &str) -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = ["WEIR_SHARED", "WEIR_SHARED_DIR"]
        .iter()
        .find_map(|v| std::env::var_os(v).map(|d| (*v, PathBuf::from(d))));
    if let Some((var, d)) = set {
        // `$WEIR_SHARED` is the shared directory, or its `testdata/` itself.
        return [d.join("testdata").join(sub), d.join(sub)]
            .into_iter()
            .find(|p| p.is_dir())
            .ok_or_else(|| {
                format!("neither ${var}/testdata/{sub} nor ${var}/{sub} is a directory")
            });
    }
    manifest
        .ancestors()
        .map(|d| d.join("shared/testdata").join(sub))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            format!(
                "no shared/testdata/{sub} next to {} or its parents (set WEIR_SHARED to the shared directory)",
                manifest.display()
            )
        })
}

/// The repository's root directory (for test data kept in the repository).
pub fn repo_root() -> &'static Path {
    // This crate is `testing/` in the repository.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The non-empty lines of `shared/testdata/<sub>/<file>` (gunzipped when it ends in `.gz`),
/// or none when the shared data is absent on a developer's machine ([`require`]).
pub fn shared_lines(sub: &str, file: &str) -> Vec<Vec<u8>> {
    let Some(dir) = require(&format!("shared/testdata/{sub}"), shared_testdata(sub)) else {
        return Vec::new();
    };
    let path = dir.join(file);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = if file.ends_with(".gz") {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text
    } else {
        raw
    };
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}
