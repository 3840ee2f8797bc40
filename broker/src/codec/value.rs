//! The value codec: how task arguments, outputs and progress reports become bytes.
//!
//! A broker holds its codec as a value ([`ValueCodec`]); MessagePack is kiq's own. Structs are
//! encoded as maps with named fields: a reader ignores fields it does not know and defaults the
//! ones it lacks, so an older worker reads a newer message. Every byte-level rule of the format
//! (joining encoded values into a tuple, recognising "no arguments") lives here, nowhere else.

use serde::{de::DeserializeOwned, Serialize};

/// A failure to encode or decode a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// A message's signature is missing or does not verify (see [`super::SigningKeys`]).
    #[error("bad signature: {0}")]
    BadSignature(String),
}

/// The codec of a broker: turns task arguments, outputs and progress reports into bytes and
/// back. Chosen once, with the broker's wire format (see [`super::WireFormat`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueCodec {
    /// MessagePack via rmp-serde, structs as maps with field names (kiq's own format).
    #[default]
    MsgPack,
}

impl ValueCodec {
    /// A short name for logs and docs, e.g. `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            ValueCodec::MsgPack => "msgpack",
        }
    }

    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            ValueCodec::MsgPack => {
                rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
            }
        }
    }

    /// Decodes a `T` from `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            ValueCodec::MsgPack => T::deserialize(&mut msgpack_reader(bytes))
                .map_err(|e| CodecError::Decode(describe(e))),
        }
    }

    /// Encodes a JSON value without knowing the target type (how `taskctl kiq`, schedules and
    /// the HTTP API send arguments given as JSON).
    pub fn from_json(self, json: &serde_json::Value) -> Result<Vec<u8>, CodecError> {
        match self {
            ValueCodec::MsgPack => {
                let mut out = Vec::new();
                let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
                serde_transcode::transcode(json, &mut ser)
                    .map_err(|e| CodecError::Encode(e.to_string()))?;
                Ok(out)
            }
        }
    }

    /// Decodes bytes into JSON without knowing their type (for showing results).
    pub fn to_json(self, bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
        match self {
            ValueCodec::MsgPack => {
                let mut de = msgpack_reader(bytes);
                let mut out = Vec::new();
                {
                    let mut ser = serde_json::Serializer::new(&mut out);
                    serde_transcode::transcode(&mut de, &mut ser)
                        .map_err(|e| CodecError::Decode(e.to_string()))?;
                }
                serde_json::from_slice(&out).map_err(|e| CodecError::Decode(e.to_string()))
            }
        }
    }

    /// Joins already-encoded values into one encoded array (a tuple), without decoding them:
    /// how a workflow turns a task's output into the next task's argument tuple (`[output]`),
    /// or a group's outputs into a callback's (`[[out1, out2, ...]]`).
    pub fn array_of<I: IntoIterator<Item = B>, B: AsRef<[u8]>>(self, items: I) -> Vec<u8> {
        match self {
            ValueCodec::MsgPack => msgpack_array_of(items),
        }
    }

    /// Whether `bytes` are the arguments of a call that passes none: nil (what `()` encodes
    /// to), an empty array (what JSON `[]` from a shell, a schedule or another language
    /// becomes), or nothing at all.
    pub fn is_no_args(self, bytes: &[u8]) -> bool {
        match self {
            ValueCodec::MsgPack => matches!(bytes, [] | [0xc0] | [0x90]),
        }
    }
}

/// A decoding error in JSON's terms (what callers send from a shell, an API or Python), not
/// MessagePack's markers.
fn describe(e: rmp_serde::decode::Error) -> String {
    use rmp_serde::decode::Error as E;
    match e {
        E::TypeMismatch(m) => format!("found {} where another type was expected", json_kind(m)),
        // rmp-serde reports the number expected, when more were given.
        E::LengthMismatch(n) => format!("more values than the {n} expected"),
        E::OutOfRange => "a number is out of range for its type".into(),
        other => other.to_string(),
    }
}

/// What a MessagePack marker is in JSON's terms.
fn json_kind(m: rmp::Marker) -> &'static str {
    use rmp::Marker as M;
    match m {
        M::FixPos(_) | M::FixNeg(_) | M::U8 | M::U16 | M::U32 | M::U64 => "an integer",
        M::I8 | M::I16 | M::I32 | M::I64 => "an integer",
        M::F32 | M::F64 => "a number with a fraction",
        M::FixStr(_) | M::Str8 | M::Str16 | M::Str32 => "a string",
        M::Null => "null",
        M::True | M::False => "a boolean",
        M::FixArray(_) | M::Array16 | M::Array32 => "an array",
        M::FixMap(_) | M::Map16 | M::Map32 => "an object",
        M::Bin8 | M::Bin16 | M::Bin32 => "bytes",
        _ => "an extension value",
    }
}

/// The deepest nesting a decoded value may have (serde_json's own limit). rmp-serde allows
/// 1,024 levels, and a payload of 1,024 one-byte arrays (`[[[[…`) overflowed the stack of a
/// debug build's thread while being shown as JSON: deeper input is now refused with an error.
pub const MAX_DEPTH: usize = 128;

/// A MessagePack reader of `bytes` that refuses nesting deeper than [`MAX_DEPTH`].
pub(super) fn msgpack_reader(
    bytes: &[u8],
) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    de
}

/// Encodes with kiq's codec (MessagePack). Code holding a broker uses its codec instead.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    ValueCodec::MsgPack.encode(value)
}

/// Decodes with kiq's codec (MessagePack). Code holding a broker uses its codec instead.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    ValueCodec::MsgPack.decode(bytes)
}

fn msgpack_array_of<I: IntoIterator<Item = B>, B: AsRef<[u8]>>(items: I) -> Vec<u8> {
    let items: Vec<B> = items.into_iter().collect();
    let n = items.len();
    let mut out = Vec::with_capacity(5 + items.iter().map(|i| i.as_ref().len()).sum::<usize>());
    // MessagePack array headers: fixarray, array 16, array 32.
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for i in &items {
        out.extend_from_slice(i.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_of_encoded_values_decode_as_arrays() {
        for n in [0usize, 1, 15, 16, 70_000] {
            let items: Vec<Vec<u8>> = (0..n as u64).map(|i| encode(&i).unwrap()).collect();
            let back: Vec<u64> = decode(&ValueCodec::MsgPack.array_of(&items)).unwrap();
            assert_eq!(back, (0..n as u64).collect::<Vec<_>>());
        }
        let one: (String,) = decode(&ValueCodec::MsgPack.array_of([encode("x").unwrap()])).unwrap();
        assert_eq!(one.0, "x");
    }
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
    fn no_args_is_nil_or_an_empty_array() {
        let c = ValueCodec::MsgPack;
        assert!(c.is_no_args(&encode(&()).unwrap()));
        assert!(c.is_no_args(&encode(&Vec::<u8>::new()).unwrap()));
        assert!(!c.is_no_args(&encode(&(1,)).unwrap()));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = decode::<V1>(b"\xc1\xff not msgpack").unwrap_err();
        assert!(matches!(err, CodecError::Decode(_)), "{err}");
    }
}
