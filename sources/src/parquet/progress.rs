//! The progress bar of long replays: files, rows and rows per second, on stderr.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `rows` rows in `files` files, drawn on stderr at most 10 times a second. The
/// caller decides whether to draw at all (`progress = "auto"` only on a terminal); the bar
/// draws whenever it exists, so `progress = "always"` also works into a log file or a pipe.
pub fn bar(rows: u64, files: usize) -> ProgressBar {
    let target =
        ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::buffered_stderr()), 10);
    let bar = ProgressBar::with_draw_target(Some(rows), target);
    let style = ProgressStyle::with_template(
        "parquet [{elapsed_precise}] {bar:30} {msg} rows {human_pos}/{human_len} {per_sec:0} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("files 0/{files}"));
    bar
}

/// The bar's last state stays on screen, on its own line (log lines that follow start on
/// the next one).
pub fn finish(bar: ProgressBar) {
    bar.finish();
    bar.println("");
}
