//! Codecs shared by all components: newline framing (a line at a time, [`LineFramer`], or
//! every complete line of a read at once, [`chunk`]), decoders (bytes, json, logfmt, syslog)
//! and encoders (json, text, logfmt).

pub mod chunk;
mod decoding;
mod encoding;
mod framing;
mod json;
mod logfmt;

pub use decoding::{register_decoder, DecodeError, Decoder, DecodingConfig, FrameDecoder};
pub use encoding::{EncodeError, Encoder, EncodingConfig};
pub use framing::{Frame, LineFramer, DEFAULT_MAX_LINE_BYTES};
pub use json::{
    check_json, parse_json_text, parse_json_value, parse_json_with, JsonDefaults, JsonLaziness,
    JsonLog, JsonShape, PROBE_EVERY,
};
