//! Which files to read: plain paths, directories (every `*.parquet` below) and globs, sorted by
//! path; and what Hive-style partition directories (`dt=2024-03-09/hour=13/`) say about the
//! time their files cover.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use globset::GlobBuilder;

/// A half-open time range `[start, end)` in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    pub fn contains(&self, ns: i64) -> bool {
        ns >= self.start && ns < self.end
    }

    /// Whether `[lo, hi]` (inclusive, as row-group statistics are) overlaps the range.
    pub fn overlaps_inclusive(&self, lo: i64, hi: i64) -> bool {
        hi >= self.start && lo < self.end
    }
}

/// Parses `2024-03-09T13:00:00Z` (RFC 3339) or `2024-03-09` (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(Utc.from_utc_datetime(&dt));
        }
    }
    Err(format!(
        "`{s}` is not a time: use RFC 3339 (`2024-03-09T13:00:00Z`) or a date (`2024-03-09`)"
    ))
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Hidden and underscore files (`.part-*.parquet.tmp` being written, `_SUCCESS`) are not data.
fn is_data_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && !n.starts_with('_'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("cannot list {}: {e}", dir.display()));
            return;
        }
    };
    for e in entries.flatten() {
        let p = e.path();
        if !is_data_name(&p) {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out, errors),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
}

/// The files named by `patterns`, sorted by path, without duplicates. Problems (an unreadable
/// directory, a named file that does not exist) are returned as messages; a glob that matches
/// nothing is not a problem.
pub fn discover(patterns: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for pat in patterns {
        if is_glob(pat) {
            let glob = match GlobBuilder::new(pat).literal_separator(true).build() {
                Ok(g) => g.compile_matcher(),
                Err(e) => {
                    errors.push(format!("bad glob `{pat}`: {e}"));
                    continue;
                }
            };
            // Walk from the longest directory prefix without glob characters.
            let mut base = PathBuf::new();
            for c in Path::new(pat).components() {
                if is_glob(&c.as_os_str().to_string_lossy()) {
                    break;
                }
                base.push(c);
            }
            if base.as_os_str().is_empty() {
                base.push(".");
            }
            let mut found = Vec::new();
            if base.is_dir() {
                walk(&base, &mut found, &mut errors);
            }
            let strip_dot = !pat.starts_with("./") && base == Path::new(".");
            files.extend(found.into_iter().filter(|p| {
                let shown = if strip_dot {
                    p.strip_prefix(".").unwrap_or(p)
                } else {
                    p.as_path()
                };
                glob.is_match(shown)
            }));
        } else {
            let p = PathBuf::from(pat);
            if p.is_dir() {
                let mut found = Vec::new();
                walk(&p, &mut found, &mut errors);
                files.extend(
                    found
                        .into_iter()
                        .filter(|f| f.extension().is_some_and(|x| x == "parquet")),
                );
            } else if p.exists() {
                files.push(p);
            } else {
                errors.push(format!("{pat}: no such file or directory"));
            }
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

/// The `key=value` directory parts of `path` (Hive partitions), outermost first.
pub fn partition_values(path: &Path) -> Vec<(String, String)> {
    let parent = path.parent().unwrap_or(Path::new(""));
    parent
        .components()
        .filter_map(|c| {
            let s = c.as_os_str().to_str()?;
            let (k, v) = s.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The time a file's partition directories cover, from `dt`/`date` (`YYYY-MM-DD`) or
/// `year`/`month`/`day`, refined by `hour`. `None` when the path says nothing about time.
pub fn partition_range(path: &Path) -> Option<TimeRange> {
    let (mut y, mut mo, mut d, mut h) = (None, None, None, None);
    for (k, v) in partition_values(path) {
        match k.to_ascii_lowercase().as_str() {
            "dt" | "date" => {
                if let Ok(date) = NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
                    y = Some(date.year());
                    mo = Some(date.month());
                    d = Some(date.day());
                }
            }
            "year" => y = v.parse().ok(),
            "month" => mo = v.parse().ok(),
            "day" => d = v.parse().ok(),
            "hour" => h = v.parse().ok(),
            _ => {}
        }
    }
    let y = y?;
    let (start, end) = match (mo, d, h) {
        (Some(mo), Some(d), Some(h)) => {
            let s = Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).single()?;
            (s, s + chrono::Duration::hours(1))
        }
        (Some(mo), Some(d), None) => {
            let s = Utc.with_ymd_and_hms(y, mo, d, 0, 0, 0).single()?;
            (s, s + chrono::Duration::days(1))
        }
        (Some(mo), None, _) => {
            let s = Utc.with_ymd_and_hms(y, mo, 1, 0, 0, 0).single()?;
            let e = if mo == 12 {
                Utc.with_ymd_and_hms(y + 1, 1, 1, 0, 0, 0).single()?
            } else {
                Utc.with_ymd_and_hms(y, mo + 1, 1, 0, 0, 0).single()?
            };
            (s, e)
        }
        (None, _, _) => (
            Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).single()?,
            Utc.with_ymd_and_hms(y + 1, 1, 1, 0, 0, 0).single()?,
        ),
    };
    Some(TimeRange {
        start: start.timestamp_nanos_opt()?,
        end: end.timestamp_nanos_opt()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_give_time_ranges() {
        let r = partition_range(Path::new("/a/dt=2024-03-09/hour=13/part-1.parquet")).unwrap();
        let t = |s: &str| parse_time(s).unwrap().timestamp_nanos_opt().unwrap();
        assert_eq!(r.start, t("2024-03-09T13:00:00Z"));
        assert_eq!(r.end, t("2024-03-09T14:00:00Z"));
        let r = partition_range(Path::new("year=2024/month=12/x.parquet")).unwrap();
        assert_eq!(r.end, t("2025-01-01"));
        assert!(partition_range(Path::new("/data/service=cart/x.parquet")).is_none());
        assert_eq!(
            partition_values(Path::new("/d/dt=2024-01-01/service=a/x.parquet")),
            vec![
                ("dt".to_string(), "2024-01-01".to_string()),
                ("service".to_string(), "a".to_string())
            ]
        );
    }

    #[test]
    fn globs_and_directories_find_data_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "dt=2024-01-02/part-b.parquet",
            "dt=2024-01-01/part-a.parquet",
            "dt=2024-01-01/.part-c.parquet.tmp",
            "dt=2024-01-01/_SUCCESS",
            "other/notes.txt",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        let (found, errors) = discover(&[format!("{}/**/*.parquet", root.display())]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            names(found),
            [
                "dt=2024-01-01/part-a.parquet",
                "dt=2024-01-02/part-b.parquet"
            ]
        );
        let (found, _) = discover(&[root.display().to_string()]);
        assert_eq!(found.len(), 2);
        let (found, errors) = discover(&[format!("{}/nothing/*.parquet", root.display())]);
        assert!(found.is_empty() && errors.is_empty());
        let (_, errors) = discover(&[format!("{}/missing.parquet", root.display())]);
        assert_eq!(errors.len(), 1);
    }
}
