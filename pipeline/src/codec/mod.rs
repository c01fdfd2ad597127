//! Codecs shared by all components: newline framing (a line at a time, [`LineFramer`], or
//! every complete line of a read at once, [`chunk`]), decoders (bytes, json, logfmt, syslog)
//! and encoders (json, text, logfmt).

#![warn(missing_docs)] // every public item documented (CI: clippy -D warnings)

pub mod chunk;
mod decoding;
mod encoding;
mod framing;
mod json;
mod logfmt;

pub use decoding::{DecodeError, Decoder, DecodingConfig};
pub use encoding::{EncodeError, Encoder, EncodingConfig};
pub use framing::{Frame, LineFramer, DEFAULT_MAX_LINE_BYTES};
pub use json::{
    check_json, parse_json_value, JsonDefaults, JsonLaziness, JsonLog, JsonShape, PROBE_EVERY,
};
