//! The progress bar of long replays (only on a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `rows` rows in `files` files, drawn on stderr.
pub fn bar(rows: u64, files: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "parquet {wide_bar} {msg} rows {human_pos}/{human_len} {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("files 0/{files}"));
    bar
}
