//! The wire codec: how envelopes, arguments, outputs and records become bytes.
//!
//! Everything kiq writes to Redis goes through [`Codec`], so another format (JSON for Taskiq
//! interoperability) is one more implementation, not a rewrite. Structs are encoded as maps
//! with named fields: a reader ignores fields it does not know and defaults the ones it lacks,
//! so an older worker reads a newer message.

use serde::{de::DeserializeOwned, Serialize};

/// A failure to encode or decode a value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(String),
}

/// Turns serde values into bytes and back.
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs and docs, e.g. `msgpack`.
    fn name(&self) -> &'static str;
    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError>;
    /// Decodes a `T` from `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// MessagePack via rmp-serde, structs as maps with field names: kiq's default wire format.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl Codec for MsgPack {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
    }
}

/// The codec kiq uses on the wire today.
pub type WireCodec = MsgPack;

/// Encodes with the wire codec.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    MsgPack.encode(value)
}

/// Decodes with the wire codec.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    MsgPack.decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        a: u32,
        b: String,
        added_later: Vec<u8>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct V1 {
        a: u32,
        b: String,
        #[serde(default)]
        missing: Option<u32>,
    }

    #[test]
    fn older_reader_ignores_newer_fields() {
        let bytes = encode(&V2 {
            a: 7,
            b: "x".into(),
            added_later: vec![1, 2],
        })
        .unwrap();
        let old: V1 = decode(&bytes).unwrap();
        assert_eq!(
            old,
            V1 {
                a: 7,
                b: "x".into(),
                missing: None
            }
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = decode::<V1>(b"\xc1\xff not msgpack").unwrap_err();
        assert!(matches!(err, CodecError::Decode(_)), "{err}");
    }
}
