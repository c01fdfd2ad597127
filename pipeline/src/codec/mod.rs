//! Codecs shared by all components: newline framing, decoders (bytes, json, logfmt, syslog)
//! and encoders (json, text, logfmt).

mod decoding;
mod encoding;
mod framing;
mod json;
mod logfmt;

pub use decoding::{DecodeError, Decoder, DecodingConfig};
pub use encoding::{EncodeError, Encoder, EncodingConfig};
pub use framing::{Frame, LineFramer, DEFAULT_MAX_LINE_BYTES};
pub use json::parse_json_value;
