//! Durations and counts that are checked once, when the configuration is read.
//!
//! Every duration option of every component is a number of seconds named `*_secs` (Vector's
//! convention), given as an integer or a float. [`Secs`] must be positive, [`SecsOrZero`] may
//! be zero; both must be finite and at most [`MAX_SECS`] (one year), so that no value can make
//! a timer or `Instant + Duration` overflow later. Sizes and counts that must be at least one
//! (`batch.max_events`, `batch.max_bytes`) are [`Count`]; the number of requests in flight is
//! [`Concurrency`] (1 to [`MAX_CONCURRENCY`]).
//!
//! The checks run inside deserialization, so the loader reports a bad value at its
//! file:line:col, with the same message for every component:
//!
//! ```text
//! f.toml:7:22: sinks.es.batch.timeout_secs: invalid value: `1e20`, expected a positive number of seconds, at most 31536000 (one year)
//! ```

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration any option accepts: one year, in seconds.
pub const MAX_SECS: u64 = 365 * 24 * 3600;

/// The most requests (or messages) a sink may have in flight at once.
pub const MAX_CONCURRENCY: usize = 65_536;

macro_rules! seconds_type {
    ($(#[$doc:meta])* $name:ident, zero_ok = $zero:expr, expecting = $expecting:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);

        impl $name {
            /// What the option expects, as the error message says it.
            pub const EXPECTING: &'static str = $expecting;

            /// A value checked like one read from a file.
            pub fn new(secs: f64) -> Result<Self, String> {
                if secs.is_finite()
                    && (secs > 0.0 || ($zero && secs == 0.0))
                    && secs <= MAX_SECS as f64
                {
                    Ok(Self(secs))
                } else {
                    Err(format!("invalid value: `{secs:?}`, expected {}", Self::EXPECTING))
                }
            }

            /// For defaults written in code: a whole number of seconds, clamped into range.
            pub const fn from_secs(secs: u64) -> Self {
                let s = if secs > MAX_SECS { MAX_SECS } else { secs };
                Self(s as f64)
            }

            /// For defaults written in code: milliseconds, clamped into range.
            pub const fn from_millis(ms: u64) -> Self {
                let s = if ms > MAX_SECS * 1000 { MAX_SECS * 1000 } else { ms };
                Self(s as f64 / 1000.0)
            }

            /// The number of seconds.
            pub fn as_f64(self) -> f64 {
                self.0
            }

            /// The duration (never panics: the value is finite and in range).
            pub fn duration(self) -> Duration {
                Duration::try_from_secs_f64(self.0).unwrap_or(Duration::from_secs(MAX_SECS))
            }
        }

        impl From<$name> for Duration {
            fn from(s: $name) -> Duration {
                s.duration()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                if $zero {
                    schemars::json_schema!({ "type": "number", "minimum": 0, "maximum": MAX_SECS })
                } else {
                    schemars::json_schema!({
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": MAX_SECS
                    })
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.0.fract() == 0.0 {
                    s.serialize_u64(self.0 as u64)
                } else {
                    s.serialize_f64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($name::EXPECTING)
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$name, E> {
                        $name::new(v).map_err(|_| invalid(format_args!("{v:?}"), $name::EXPECTING))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        $name::new(v as f64).map_err(|_| invalid(v, $name::EXPECTING))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        $name::new(v as f64).map_err(|_| invalid(v, $name::EXPECTING))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

seconds_type!(
    /// A duration option in seconds that must be positive: finite, above zero and at most
    /// [`MAX_SECS`]. An integer or a float in the file (`timeout_secs = 1` or `= 0.25`).
    Secs,
    zero_ok = false,
    expecting = "a positive number of seconds, at most 31536000 (one year)"
);

seconds_type!(
    /// A duration option in seconds that may be zero: finite, not negative and at most
    /// [`MAX_SECS`].
    SecsOrZero,
    zero_ok = true,
    expecting = "a number of seconds from 0 to 31536000 (one year)"
);

/// A size or count option that must be at least one (`batch.max_events`, `batch.max_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Count(NonZeroUsize);

impl Count {
    /// What the option expects, as the error message says it.
    pub const EXPECTING: &'static str = "a positive integer (at least 1)";

    /// For defaults written in code; zero becomes one.
    pub const fn of(n: usize) -> Self {
        match NonZeroUsize::new(n) {
            Some(n) => Self(n),
            None => Self(NonZeroUsize::MIN),
        }
    }

    /// The count.
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl schemars::JsonSchema for Count {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Count".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 1 })
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.get() as u64)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = d.deserialize_any(IntVisitor {
            expecting: Count::EXPECTING,
            max: usize::MAX,
        })?;
        Ok(Count::of(n))
    }
}

/// How many requests (or messages) a sink may have in flight at once: 1 to
/// [`MAX_CONCURRENCY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Concurrency(NonZeroUsize);

impl Concurrency {
    /// What the option expects, as the error message says it.
    pub const EXPECTING: &'static str = "an integer from 1 to 65536";

    /// For defaults written in code; clamped into range.
    pub const fn of(n: usize) -> Self {
        let n = if n > MAX_CONCURRENCY {
            MAX_CONCURRENCY
        } else {
            n
        };
        match NonZeroUsize::new(n) {
            Some(n) => Self(n),
            None => Self(NonZeroUsize::MIN),
        }
    }

    /// The number of requests.
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl schemars::JsonSchema for Concurrency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Concurrency".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY })
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Concurrency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.get() as u64)
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = d.deserialize_any(IntVisitor {
            expecting: Concurrency::EXPECTING,
            max: MAX_CONCURRENCY,
        })?;
        Ok(Concurrency::of(n))
    }
}

/// An integer from 1 to `max`.
struct IntVisitor {
    expecting: &'static str,
    max: usize,
}

impl Visitor<'_> for IntVisitor {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
        match usize::try_from(v) {
            Ok(n) if n >= 1 && n <= self.max => Ok(n),
            _ => Err(invalid(v, self.expecting)),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        match usize::try_from(v) {
            Ok(n) if n >= 1 && n <= self.max => Ok(n),
            _ => Err(invalid(v, self.expecting)),
        }
    }
}

/// The one message of a value out of range, e.g. "invalid value: `1e20`, expected a positive
/// number of seconds, at most 31536000 (one year)" (floats as Rust writes them short:
/// `1e20`, `NaN`, `inf`, `-1.0`).
fn invalid<E: de::Error>(value: impl fmt::Display, expecting: &str) -> E {
    E::custom(format_args!(
        "invalid value: `{value}`, expected {expecting}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        s: Option<Secs>,
        z: Option<SecsOrZero>,
        c: Option<Count>,
        n: Option<Concurrency>,
    }

    fn parse(text: &str) -> Result<T, String> {
        toml::from_str::<T>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn seconds_are_checked_when_read() {
        assert_eq!(parse("s = 1").unwrap().s, Some(Secs::from_secs(1)));
        assert_eq!(
            parse("s = 0.25").unwrap().s.unwrap().duration(),
            Duration::from_millis(250)
        );
        assert_eq!(parse("z = 0").unwrap().z, Some(SecsOrZero::from_secs(0)));
        let expect = "expected a positive number of seconds, at most 31536000 (one year)";
        for bad in ["1e20", "-1", "0", "0.0", "nan", "inf", "-inf", "31536001"] {
            let e = parse(&format!("s = {bad}")).unwrap_err();
            assert!(e.contains(expect), "{bad}: {e}");
        }
        assert_eq!(
            parse("s = 1e20").unwrap_err(),
            format!("invalid value: `1e20`, {expect}")
        );
        assert_eq!(
            parse("s = nan").unwrap_err(),
            format!("invalid value: `NaN`, {expect}")
        );
        assert_eq!(
            parse("s = -1").unwrap_err(),
            format!("invalid value: `-1`, {expect}")
        );
        assert!(parse("z = -0.5")
            .unwrap_err()
            .contains("from 0 to 31536000"));
        assert!(parse("s = \"5s\"").unwrap_err().contains("invalid type"));
        assert_eq!(Secs::from_secs(u64::MAX).as_f64(), MAX_SECS as f64);
    }

    #[test]
    fn counts_are_at_least_one() {
        assert_eq!(parse("c = 3").unwrap().c.map(Count::get), Some(3));
        assert_eq!(
            parse("c = 0").unwrap_err(),
            "invalid value: `0`, expected a positive integer (at least 1)"
        );
        assert!(parse("c = -1").unwrap_err().contains("at least 1"));
        assert!(parse("c = 1.5").unwrap_err().contains("invalid type"));
        assert_eq!(
            parse("n = 65536").unwrap().n.map(Concurrency::get),
            Some(65536)
        );
        assert_eq!(
            parse("n = 0").unwrap_err(),
            "invalid value: `0`, expected an integer from 1 to 65536"
        );
        assert!(parse("n = 65537").unwrap_err().contains("from 1 to 65536"));
    }
}
