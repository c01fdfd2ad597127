//! The results as a plain-text table (while reading the terminal) and as markdown (for
//! bench/RESULTS.md).

use std::fmt::Write;

/// One line of the results table.
#[derive(Default)]
pub struct Row {
    pub case: String,
    pub events_s: Option<f64>,
    pub mib_s: Option<f64>,
    /// Against the baseline, already formatted ("23.1% of (a)", "1.62x (b)").
    pub vs: Option<String>,
    /// MiB per CPU-second: throughput by CPU time, which a busy machine disturbs less than
    /// wall time.
    pub cpu_mib_s: Option<f64>,
    /// Against the baseline by CPU time.
    pub cpu_vs: Option<String>,
    pub rss_mib: Option<f64>,
    /// CPU time over wall time, in percent.
    pub cpu_pct: Option<f64>,
    pub note: String,
}

pub struct Goal {
    pub name: String,
    pub measured: String,
    /// None: not measured (a case failed or was skipped).
    pub met: Option<bool>,
}

const HEADERS: [&str; 9] = [
    "case",
    "events/s",
    "MiB/s",
    "vs baseline",
    "MiB/CPU-s",
    "vs baseline by CPU",
    "peak RSS MiB",
    "CPU",
    "notes",
];

fn cells(r: &Row) -> [String; 9] {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    [
        r.case.clone(),
        opt(r.events_s.map(|v| thousands(v.round() as u64))),
        opt(r.mib_s.map(|v| format!("{v:.1}"))),
        opt(r.vs.clone()),
        opt(r.cpu_mib_s.map(|v| format!("{v:.1}"))),
        opt(r.cpu_vs.clone()),
        opt(r.rss_mib.map(|v| format!("{v:.1}"))),
        opt(r.cpu_pct.map(|v| format!("{v:.0}%"))),
        r.note.clone(),
    ]
}

pub fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "MET",
        Some(false) => "NOT MET",
        None => "not measured",
    }
}

/// Columns 1 to 7 are numbers: right-aligned.
fn right_aligned(col: usize) -> bool {
    (1..=7).contains(&col)
}

pub fn text_table(rows: &[Row]) -> String {
    let body: Vec<[String; 9]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(str::len);
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            if right_aligned(i) {
                let _ = write!(l, "{c:>w$}", w = widths[i]);
            } else {
                let _ = write!(l, "{c:<w$}", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(String::from));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for r in &body {
        line(&mut out, r);
    }
    out
}

pub fn text_goals(goals: &[Goal]) -> String {
    let mut out = String::new();
    for g in goals {
        let _ = writeln!(out, "  [{}] {}: {}", verdict(g.met), g.name, g.measured);
    }
    out
}

pub fn markdown(rows: &[Row], goals: &[Goal], preamble: &[String]) -> String {
    let mut out = String::new();
    for p in preamble {
        let _ = writeln!(out, "- {p}");
    }
    out.push('\n');
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let seps: Vec<&str> = (0..HEADERS.len())
        .map(|i| if right_aligned(i) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "|{}|", seps.join("|"));
    for r in rows {
        let c = cells(r).map(|c| c.replace('|', "\\|"));
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    out.push('\n');
    let _ = writeln!(out, "| goal | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|");
    for g in goals {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            g.name.replace('|', "\\|"),
            g.measured.replace('|', "\\|"),
            verdict(g.met)
        );
    }
    out
}

/// 1234567 -> "1,234,567".
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn tables_render() {
        let rows = vec![
            Row {
                case: "bytes".into(),
                events_s: Some(1_500_000.4),
                mib_s: Some(366.2),
                vs: Some("12.0% of (a)".into()),
                cpu_mib_s: Some(400.0),
                cpu_vs: Some("13.0% of (a)".into()),
                rss_mib: Some(20.5),
                cpu_pct: Some(99.6),
                note: "median of 3".into(),
            },
            Row {
                case: "idle".into(),
                note: "a|b".into(),
                ..Row::default()
            },
        ];
        let goals = vec![Goal {
            name: "idle RSS < 20 MiB".into(),
            measured: "9.1 MiB".into(),
            met: Some(true),
        }];
        let t = text_table(&rows);
        assert!(t.contains("1,500,000"), "{t}");
        assert_eq!(t.lines().count(), 4);
        let md = markdown(&rows, &goals, &["size: 1 MiB".into()]);
        assert!(
            md.contains(
                "| bytes | 1,500,000 | 366.2 | 12.0% of (a) | 400.0 | 13.0% of (a) | 20.5 | 100% | median of 3 |"
            ),
            "{md}"
        );
        assert!(md.contains("a\\|b"), "{md}");
        assert!(md.contains("| idle RSS < 20 MiB | 9.1 MiB | MET |"), "{md}");
    }
}
