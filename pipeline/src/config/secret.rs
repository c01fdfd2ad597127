//! [`Secret`]: a credential in a component's configuration (a password, a token, a key's
//! passphrase). It is read from the configuration like any string (environment references
//! included: `password = "${ES_PASSWORD}"`), and it never shows: its `Debug` and `Serialize`
//! give `**REDACTED**`, so a config printed by a log line, an error, `weir
//! validate` or the API cannot leak it. The one way to the value is [`Secret::expose`], named
//! so that every use is easy to find and review. It has no `Display`: `format!("Bearer
//! {token}")` does not compile, where a redacting `Display` would send `**REDACTED**`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret shows instead of its value.
pub const REDACTED: &str = "**REDACTED**";

/// A credential: debugged and serialized as `**REDACTED**`, its value only through
/// [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it (a header, a client's option).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret: never shown in logs, errors or the API (`**REDACTED**`)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_its_value() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Config {
            user: String,
            password: Secret,
        }
        let c: Config = toml::from_str("user = \"u\"\npassword = \"hunter2\"").unwrap();
        assert_eq!(c.password.expose(), "hunter2");
        let shown = [
            format!("{c:?}"),
            format!("{:#?}", c),
            serde_json::to_string(&c).unwrap(),
        ];
        for s in shown {
            assert!(!s.contains("hunter2"), "{s}");
        }
        assert_eq!(format!("{:?}", c.password), REDACTED);
    }
}
