//! Finding the files to read: `include` globs walked on the file system, `exclude` globs
//! matched against what they found. A walk runs at most once every `glob_minimum_cooldown_ms`,
//! and at once when [`super::watch`] reports a new file at a matching path (the walk works on
//! every file system, including network and overlay ones, where inotify may say nothing).

use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Include and exclude patterns, checked when the source is built.
#[derive(Debug, Clone)]
pub struct Discovery {
    include: Vec<String>,
    compiled: Vec<glob::Pattern>,
    exclude: GlobSet,
}

/// A pattern that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("`include` pattern `{pattern}`: {reason}")]
    Include { pattern: String, reason: String },
    #[error("`exclude` pattern `{pattern}`: {reason}")]
    Exclude { pattern: String, reason: String },
    #[error("`include` is empty: give at least one glob, e.g. \"/var/log/*.log\"")]
    NoInclude,
}

/// What one discovery walk met that it could not use (counted by the caller).
#[derive(Debug)]
pub struct WalkError {
    pub pattern: String,
    pub message: String,
}

impl Discovery {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, PatternError> {
        if include.is_empty() {
            return Err(PatternError::NoInclude);
        }
        let mut compiled = Vec::with_capacity(include.len());
        for p in include {
            compiled.push(glob::Pattern::new(p).map_err(|e| PatternError::Include {
                pattern: p.clone(),
                reason: e.to_string(),
            })?);
        }
        let mut b = GlobSetBuilder::new();
        for p in exclude {
            let g = Glob::new(p).map_err(|e| PatternError::Exclude {
                pattern: p.clone(),
                reason: e.to_string(),
            })?;
            b.add(g);
        }
        let exclude = b.build().map_err(|e| PatternError::Exclude {
            pattern: exclude.join(", "),
            reason: e.to_string(),
        })?;
        Ok(Self {
            include: include.to_vec(),
            compiled,
            exclude,
        })
    }

    /// The `include` patterns.
    pub fn include(&self) -> &[String] {
        &self.include
    }

    /// Whether `path` is one [`Discovery::scan`] would return (if it is a file).
    pub fn matches(&self, path: &std::path::Path) -> bool {
        let opts = match_options();
        self.compiled
            .iter()
            .any(|p| p.matches_path_with(path, opts))
            && !self.exclude.is_match(path)
    }

    /// The paths matching an include pattern and no exclude pattern, sorted, without
    /// duplicates. A pattern that matches nothing is not an error.
    pub fn scan(&self, errors: &mut Vec<WalkError>) -> Vec<PathBuf> {
        let opts = match_options();
        let mut out = Vec::new();
        for pattern in &self.include {
            let paths = match glob::glob_with(pattern, opts) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(WalkError {
                        pattern: pattern.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for entry in paths {
                match entry {
                    Ok(p) => {
                        if !self.exclude.is_match(&p) {
                            out.push(p);
                        }
                    }
                    Err(e) => errors.push(WalkError {
                        pattern: pattern.clone(),
                        message: e.to_string(),
                    }),
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn match_options() -> glob::MatchOptions {
    glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude_and_no_match_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for f in ["a.log", "b.log", "c.txt", "sub/d.log", "skip.log"] {
            std::fs::write(d.join(f), b"x\n").unwrap();
        }
        let inc = vec![
            format!("{}/*.log", d.display()),
            format!("{}/**/*.log", d.display()),
        ];
        let exc = vec![format!("{}/skip.*", d.display())];
        let disc = Discovery::new(&inc, &exc).unwrap();
        let mut errs = Vec::new();
        let got: Vec<_> = disc
            .scan(&mut errs)
            .into_iter()
            .map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, vec!["a.log", "b.log", "sub/d.log"]);
        assert!(disc.matches(&d.join("new.log")));
        assert!(!disc.matches(&d.join("skip.log")));
        assert!(!disc.matches(&d.join("a.log.1")));
        assert!(errs.is_empty());
        let none = Discovery::new(&[format!("{}/nothing/*.log", d.display())], &[]).unwrap();
        assert!(none.scan(&mut errs).is_empty());
        assert!(errs.is_empty());
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = Discovery::new(&["/var/log/[".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("/var/log/["), "{e}");
        assert!(Discovery::new(&[], &[]).is_err());
    }
}
