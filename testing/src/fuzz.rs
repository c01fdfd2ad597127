//! The fuzz driver: mutation fuzzing on stable Rust, run by `cargo test`.
//!
//! Every parser that input reaches has a test named `fuzz_<what>` (in the crate that owns the
//! parser, so it can reach private functions) built like this:
//!
//! ```text
//! Fuzz::new("logfmt")
//!     .seeds(real_lines)             // real captures: shared/testdata, the repository's data
//!     .dict(&["=", "\"", "\\"])      // tokens the format gives meaning to
//!     .run(|input| { let _ = parse(input); });
//! ```
//!
//! `run` first feeds every seed as it is, then mutates seeds (and mutants kept from earlier
//! rounds) until the time budget is spent: bit flips, interesting bytes, inserted, deleted,
//! duplicated or repeated ranges (long lines, deep nesting), the format's tokens, broken UTF-8,
//! extreme numbers, truncation, splices of two seeds, swapped lines. A panic fails the test
//! with the input shrunk to what still panics, its path under the system's temporary
//! directory (`weir-fuzz/`), and the driver's seed, so that it can be replayed and turned into
//! a regression test next to the target.
//!
//! - `WEIR_FUZZ_SECONDS`: the budget of each target (default 2 seconds: what CI runs).
//!   Longer runs: `WEIR_FUZZ_SECONDS=600 cargo test --workspace fuzz_` (README).
//! - `WEIR_FUZZ_SEED`: replay a run exactly (each run prints its seed). While replaying, the
//!   input under test is kept in `weir-fuzz/<name>-current.bin`: what a stack overflow or an
//!   abort (which end the process before any report) was running on.
//! - Under CI (`CI` or `WEIR_REQUIRE_ALL` set) the seed is fixed per target (a hash of its
//!   name), so what lands does not depend on luck: a random seed there once failed a change
//!   that had nothing to do with the parser it found a bug in. Everywhere else (a developer's
//!   `cargo test`, the long run) each run draws a new seed and explores new inputs.
//!
//! Why hand-written: coverage-guided fuzzers (`cargo fuzz`, AFL) need nightly Rust or a
//! separate instrumented build of the workspace, and the stable property-testing crates
//! (`proptest`, `bolero`'s test mode) generate inputs from types or random bytes but do not
//! mutate a corpus of real captures, which is what gets a random input past a parser's
//! first checks. This driver is the mutator and the budget only: about 300 lines.

use std::cell::RefCell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Bytes a parser is likely to treat specially.
const INTERESTING: &[u8] = b"\0\x01\x7f\x80\xff\"\\\n\r\t{}[]:=, -09.eE";

/// Broken and unusual UTF-8: a lone lead byte, a truncated sequence, a surrogate, an overlong
/// encoding, a four-byte character, a BOM, U+FFFF.
const UTF8: &[&[u8]] = &[
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    "\u{1F600}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{ffff}".as_bytes(),
    "é".as_bytes(),
];

/// Numbers at the edges of what a parser may convert to.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"-0",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775809",
    b"4294967296",
    b"1e999",
    b"1e-999",
    b"NaN",
    b"0x",
    b".",
    b"99999999999999999999999999999999999999",
];

/// The seed when `WEIR_FUZZ_SEED` is not set: fixed per target under CI, random elsewhere.
fn default_seed(name: &str) -> u64 {
    let ci = ["CI", "WEIR_REQUIRE_ALL"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"));
    if !ci {
        return rand::rng().random::<u64>();
    }
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fuzz target under construction: its seeds, the tokens its format gives meaning to, and
/// the largest input to try.
pub struct Fuzz {
    name: String,
    seeds: Vec<Vec<u8>>,
    dict: Vec<Vec<u8>>,
    max_len: usize,
    budget: Option<Duration>,
}

impl Fuzz {
    /// A target named `name` (in messages and in the saved input's file name).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            seeds: Vec::new(),
            dict: Vec::new(),
            max_len: 64 * 1024,
            budget: None,
        }
    }

    /// Adds one seed input.
    pub fn seed(mut self, input: impl AsRef<[u8]>) -> Self {
        self.seeds.push(input.as_ref().to_vec());
        self
    }

    /// Adds seed inputs.
    pub fn seeds<I>(mut self, inputs: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.seeds
            .extend(inputs.into_iter().map(|s| s.as_ref().to_vec()));
        self
    }

    /// Adds a capture cut into seeds of `lines` lines each (at most 200 seeds, spread over the
    /// whole capture).
    pub fn seed_lines(mut self, capture: &[u8], lines: usize) -> Self {
        let all: Vec<&[u8]> = capture.split_inclusive(|&b| b == b'\n').collect();
        let chunks: Vec<Vec<u8>> = all.chunks(lines.max(1)).map(|c| c.concat()).collect();
        let step = chunks.len().div_ceil(200).max(1);
        self.seeds.extend(chunks.into_iter().step_by(step));
        self
    }

    /// Adds tokens the format gives meaning to (keywords, delimiters, field names).
    pub fn dict<I>(mut self, tokens: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.dict
            .extend(tokens.into_iter().map(|t| t.as_ref().to_vec()));
        self
    }

    /// The largest input to try (default 64 KiB). Seeds are not cut.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// This target's time budget, instead of `WEIR_FUZZ_SECONDS` (for the driver's own tests).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Runs `target` on every seed, then on mutants until the budget is spent. Panics (fails
    /// the test) if `target` panicked on any input, saying which.
    pub fn run(self, target: impl Fn(&[u8])) {
        install_hook();
        let budget = self.budget.unwrap_or_else(budget);
        let seed = std::env::var("WEIR_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| default_seed(&self.name));
        let mut rng = SmallRng::seed_from_u64(seed);
        // A stack overflow or an abort ends the process before a panic can be reported: say
        // the seed first (written past the test harness's capture, so it survives), and when
        // replaying, keep the input under test in a file.
        let _ = writeln!(
            std::io::stderr(),
            "fuzz {}: starting (WEIR_FUZZ_SEED={seed})",
            self.name
        );
        let current = std::env::var_os("WEIR_FUZZ_SEED").map(|_| {
            std::env::temp_dir()
                .join("weir-fuzz")
                .join(format!("{}-current.bin", self.name))
        });
        if let Some(p) = &current {
            let _ = std::fs::create_dir_all(p.parent().unwrap_or(p));
        }
        let check = |target: &dyn Fn(&[u8]), input: &[u8]| {
            if let Some(p) = &current {
                let _ = std::fs::write(p, input);
            }
            check(target, input)
        };
        let started = Instant::now();
        for s in &self.seeds {
            if let Err(why) = check(&target, s) {
                self.fail(&target, s.clone(), why, seed, 0);
            }
        }
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut tries: u64 = 0;
        while started.elapsed() < budget {
            let base = if !pool.is_empty() && (self.seeds.is_empty() || rng.random_bool(0.3)) {
                &pool[rng.random_range(0..pool.len())]
            } else if self.seeds.is_empty() {
                &Vec::new()
            } else {
                &self.seeds[rng.random_range(0..self.seeds.len())]
            };
            let mut input = base.clone();
            for _ in 0..rng.random_range(1..=6) {
                self.mutate(&mut input, &mut rng);
            }
            tries += 1;
            if let Err(why) = check(&target, &input) {
                self.fail(&target, input, why, seed, tries);
            }
            // Keep some mutants to mutate further: stacked mutations reach deeper.
            if rng.random_ratio(1, 8) {
                if pool.len() < 256 {
                    pool.push(input);
                } else {
                    let i = rng.random_range(0..pool.len());
                    pool[i] = input;
                }
            }
        }
        let _ = writeln!(
            std::io::stderr(),
            "fuzz {}: {} seeds and {tries} mutants in {:.1}s, no panic (WEIR_FUZZ_SEED={seed})",
            self.name,
            self.seeds.len(),
            started.elapsed().as_secs_f64()
        );
    }

    /// One mutation of `input`, keeping it within `max_len` (unless it was longer already).
    fn mutate(&self, input: &mut Vec<u8>, rng: &mut SmallRng) {
        let len = input.len();
        let pos = rng.random_range(0..=len);
        match rng.random_range(0..13) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
            }
            2 => {
                let n = rng.random_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                splice(input, pos, 0, &bytes);
            }
            3 if len > 0 => {
                let n = rng.random_range(1..=(len - pos.min(len - 1)).min(64));
                let at = pos.min(len - n);
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let (a, b) = range(rng, len, 256);
                let copy = input[a..b].to_vec();
                let at = rng.random_range(0..=len);
                splice(input, at, 0, &copy);
            }
            5 | 6 if !self.dict.is_empty() => {
                let token = self.dict[rng.random_range(0..self.dict.len())].clone();
                let replace = if rng.random_bool(0.5) {
                    0
                } else {
                    token.len().min(len - pos)
                };
                splice(input, pos, replace, &token);
            }
            7 if len > 0 => input.truncate(rng.random_range(0..len)),
            8 if !self.seeds.is_empty() => {
                let other = &self.seeds[rng.random_range(0..self.seeds.len())];
                let from = rng.random_range(0..=other.len());
                input.truncate(pos);
                input.extend_from_slice(&other[from..]);
            }
            9 if len > 0 => {
                // A range repeated up to the size limit: long lines, deep nesting, long
                // numbers, many fields.
                let (a, b) = range(rng, len, 16);
                let unit = input[a..b].to_vec();
                let times = rng.random_range(2..=(self.max_len / unit.len().max(1)).max(2));
                let repeated = unit.repeat(times.min(self.max_len / unit.len().max(1) + 1));
                splice(input, b, 0, &repeated);
            }
            10 => {
                let s = UTF8[rng.random_range(0..UTF8.len())];
                splice(input, pos, 0, s);
            }
            11 => {
                let n = NUMBERS[rng.random_range(0..NUMBERS.len())];
                // Over the digits at `pos`, if there are any.
                let end = input[pos..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(len, |e| pos + e);
                splice(input, pos, end - pos, n);
            }
            _ => {
                // Two lines swapped (or, with fewer than two lines, a line break inserted).
                let breaks: Vec<usize> = memchr_all(input);
                if breaks.len() >= 2 {
                    let i = rng.random_range(0..breaks.len() - 1);
                    let (a, b, c) = (
                        if i == 0 { 0 } else { breaks[i - 1] + 1 },
                        breaks[i] + 1,
                        breaks[i + 1] + 1,
                    );
                    input[a..c].rotate_left(b - a);
                } else {
                    splice(input, pos, 0, b"\n");
                }
            }
        }
        if input.len() > self.max_len.max(len) {
            input.truncate(self.max_len.max(len));
        }
    }

    /// Fails the test with `input` shrunk to what still panics, saved to a file.
    fn fail(
        &self,
        target: &impl Fn(&[u8]),
        input: Vec<u8>,
        why: String,
        seed: u64,
        tries: u64,
    ) -> ! {
        let (input, why) = shrink(target, input, why);
        let path = save(&self.name, &input);
        let shown: String = input.escape_ascii().to_string();
        let shown = if shown.len() > 2000 {
            format!("{}... ({} bytes)", &shown[..2000], input.len())
        } else {
            shown
        };
        panic!(
            "fuzz target `{}` panicked on input {tries} (WEIR_FUZZ_SEED={seed}): {why}\n\
             the input, shrunk ({} bytes; saved to {}):\n  b\"{shown}\"\n\
             add it as a regression test next to the target",
            self.name,
            input.len(),
            path.display()
        );
    }
}

/// Replaces `n` bytes at `pos` with `bytes`.
fn splice(input: &mut Vec<u8>, pos: usize, n: usize, bytes: &[u8]) {
    input.splice(pos..pos + n, bytes.iter().copied());
}

/// A non-empty range of at most `max` bytes within `len` (> 0).
fn range(rng: &mut SmallRng, len: usize, max: usize) -> (usize, usize) {
    let a = rng.random_range(0..len);
    let b = rng.random_range(a + 1..=(a + max).min(len));
    (a, b)
}

/// The positions of the line breaks in `input`.
fn memchr_all(input: &[u8]) -> Vec<usize> {
    input
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| (b == b'\n').then_some(i))
        .collect()
}

/// The time budget of each target: `WEIR_FUZZ_SECONDS`, default 2.
fn budget() -> Duration {
    let secs = std::env::var("WEIR_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Removes ranges from `input` for as long as it still panics (at most 2,000 tries).
fn shrink(target: &impl Fn(&[u8]), mut input: Vec<u8>, mut why: String) -> (Vec<u8>, String) {
    let mut tries = 0;
    let mut chunk = input.len() / 2;
    while chunk > 0 && tries < 2000 {
        let mut at = 0;
        let mut removed = false;
        while at + chunk <= input.len() && tries < 2000 {
            let mut smaller = input.clone();
            smaller.drain(at..at + chunk);
            tries += 1;
            match check(target, &smaller) {
                Err(w) => {
                    input = smaller;
                    why = w;
                    removed = true;
                }
                Ok(()) => at += chunk,
            }
        }
        if !removed {
            chunk /= 2;
        }
    }
    (input, why)
}

/// Writes a failing input to `<temp>/weir-fuzz/<target>-<hash>.bin`.
fn save(name: &str, input: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let dir = std::env::temp_dir().join("weir-fuzz");
    let path = dir.join(format!("{name}-{:016x}.bin", h.finish()));
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    path
}

thread_local! {
    /// `Some` while this thread runs a target: the message of the last panic, if any.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Runs `target` on `input`: `Err` with the panic's message and place if it panicked.
fn check(target: &dyn Fn(&[u8]), input: &[u8]) -> Result<(), String> {
    CAUGHT.with(|c| *c.borrow_mut() = Some(None));
    let result = catch_unwind(AssertUnwindSafe(|| target(input)));
    let message = CAUGHT.with(|c| c.borrow_mut().take().flatten());
    result.map_err(|_| message.unwrap_or_else(|| "a panic without a message".into()))
}

/// Installs (once per process) a panic hook that keeps the message of a panic on a thread
/// running a target instead of printing it; other threads' panics print as before.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let kept = CAUGHT.with(|c| match c.try_borrow_mut() {
                Ok(mut c) => match c.as_mut() {
                    Some(slot) => {
                        *slot = Some(info.to_string());
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            });
            if !kept {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_found_shrunk_and_reported() {
        // The target panics on any input containing "é" followed by a quote: the driver has to
        // build it by mutation from seeds that hold neither next to the other.
        let result = catch_unwind(|| {
            Fuzz::new("driver-self-test")
                .seed("aé")
                .dict(["\""])
                .budget(Duration::from_secs(30))
                .run(|input| {
                    if input.windows(3).any(|w| w == "é\"".as_bytes()) {
                        panic!("found it");
                    }
                })
        });
        let message = result.expect_err("the driver must find the panic");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("found it"), "{message}");
        // Shrunk to the three bytes that matter.
        assert!(message.contains("(3 bytes;"), "{message}");
    }

    #[test]
    fn mutants_stay_within_the_size_limit() {
        let fuzz = Fuzz::new("size")
            .seed(b"abc\ndef\n")
            .dict(["xyz"])
            .max_len(100);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut input = b"abc\ndef\n".to_vec();
        for _ in 0..10_000 {
            fuzz.mutate(&mut input, &mut rng);
            assert!(input.len() <= 100);
        }
    }

    #[test]
    fn a_target_that_never_panics_passes() {
        Fuzz::new("never").seed(b"x").run(|input| {
            let _ = std::str::from_utf8(input);
        });
    }
}
