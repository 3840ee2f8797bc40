//! Codecs: the value codec (task arguments, outputs, progress) and the wire format (the
//! schema of envelopes and records). A broker holds one of each as a value.

mod record;
mod signed;
mod value;
mod wire;

pub use signed::{Signed, SigningKeys, MIN_SECRET_BYTES};
pub use value::{decode, encode, CodecError, ValueCodec};
pub use wire::{KiqWire, WireFormat};
