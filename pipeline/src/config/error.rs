use std::fmt;
use std::sync::Arc;

/// Where something was written: file, line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name, as given.
    pub file: Arc<str>,
    /// The line, from 1.
    pub line: usize,
    /// The column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub fn at(file: &Arc<str>, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        Self {
            file: Arc::clone(file),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the configuration, when known.
    pub location: Option<Location>,
    /// `sources.in`, `sinks.out`, ... when the error belongs to a component.
    pub component: Option<String>,
    /// The offending field, when known.
    pub field: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl ConfigError {
    /// An error saying `message`, located nowhere yet.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            location: None,
            component: None,
            field: None,
            message: message.into(),
        }
    }

    /// Located at `location`.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    /// Belonging to the component `c` (`sources.in`).
    pub fn component(mut self, c: impl Into<String>) -> Self {
        self.component = Some(c.into());
        self
    }

    /// About the field `f`.
    pub fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        match (&self.component, &self.field) {
            (Some(c), Some(fl)) => write!(f, "{c}.{fl}: ")?,
            (Some(c), None) => write!(f, "{c}: ")?,
            (None, Some(fl)) => write!(f, "{fl}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// Every error found in a configuration.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
