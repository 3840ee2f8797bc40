//! The wire format: the schema of what kiq stores in Redis (a message's envelope, a task's
//! record), apart from the codec of the values inside them.
//!
//! A broker holds one [`WireFormat`] as a value. kiq's own, [`KiqWire`], writes envelopes as
//! MessagePack maps with kiq's field names and records in a compact positional layout
//! (`codec/record.rs`; records of the earlier named-map encoding are still read): the rest of
//! the broker and the worker only ever see [`Envelope`] and [`TaskRecord`]. (Taskiq's messages are not a wire format of
//! kiq's queues: they live in Taskiq's own streams, which a worker bridges, see
//! [`crate::taskiq`].)

use std::fmt::Debug;

use super::record;
use super::value::{CodecError, ValueCodec};
use crate::model::envelope::Envelope;
use crate::model::record::{TaskRecord, TaskState};

/// How envelopes and records become bytes, and which codec carries the values inside them.
pub trait WireFormat: Debug + Send + Sync + 'static {
    /// A short name for logs and docs, e.g. `kiq-msgpack`.
    fn name(&self) -> &'static str;
    /// The codec of task arguments, outputs and progress reports in this format.
    fn values(&self) -> ValueCodec;
    /// Encodes a message's envelope.
    fn encode_envelope(&self, envelope: &Envelope) -> Result<Vec<u8>, CodecError>;
    /// Decodes a message's envelope.
    fn decode_envelope(&self, bytes: &[u8]) -> Result<Envelope, CodecError>;
    /// The task id of an encoded envelope, without decoding the rest of it (a worker checks a
    /// batch's cancel marks before running it).
    fn task_id(&self, bytes: &[u8]) -> Option<String> {
        self.decode_envelope(bytes).ok().map(|e| e.id)
    }
    /// Encodes a task's record.
    fn encode_record(&self, record: &TaskRecord) -> Result<Vec<u8>, CodecError>;
    /// Decodes a task's record.
    fn decode_record(&self, bytes: &[u8]) -> Result<TaskRecord, CodecError>;
    /// Byte strings one of which starts within the first four bytes of an encoded record
    /// exactly when its state is final (succeeded, failed, cancelled, dead): how a
    /// cancellation, inside Redis, tells a finished task (left alone) from a waiting or running
    /// one without decoding the record.
    fn final_markers(&self) -> Vec<Vec<u8>>;
}

/// kiq's own wire format: envelopes as MessagePack maps with named fields, records in a compact
/// positional layout (records of the earlier named-map encoding are still read).
#[derive(Debug, Clone, Copy, Default)]
pub struct KiqWire;

impl WireFormat for KiqWire {
    fn name(&self) -> &'static str {
        "kiq-msgpack"
    }

    fn values(&self) -> ValueCodec {
        ValueCodec::MsgPack
    }

    fn encode_envelope(&self, envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
        // Sized for the whole envelope up front: grown from empty, the buffer was reallocated
        // half a dozen times per dispatch.
        let mut out = Vec::with_capacity(envelope.encoded_size_hint());
        rmp_serde::encode::write_named(&mut out, envelope)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(out)
    }

    fn decode_envelope(&self, bytes: &[u8]) -> Result<Envelope, CodecError> {
        ValueCodec::MsgPack.decode(bytes)
    }

    fn task_id(&self, bytes: &[u8]) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        ValueCodec::MsgPack.decode::<Id>(bytes).ok().map(|i| i.id)
    }

    /// The compact layout (see `codec/record.rs`).
    fn encode_record(&self, record: &TaskRecord) -> Result<Vec<u8>, CodecError> {
        record::encode(record)
    }

    /// The compact layout, or a named map as kiq wrote records before it.
    fn decode_record(&self, bytes: &[u8]) -> Result<TaskRecord, CodecError> {
        match bytes.first() {
            Some(&record::MAGIC) => record::decode(bytes),
            _ => ValueCodec::MsgPack.decode(bytes),
        }
    }

    /// A compact record's first three bytes (magic, version, state), then, for records of
    /// the named-map encoding still in Redis, the map key `state` (fixstr) followed by the
    /// state's name (fixstr), as `rmp_serde::to_vec_named` wrote a record's first field,
    /// right after the map's header.
    fn final_markers(&self) -> Vec<Vec<u8>> {
        let compact = TaskState::FINAL.iter().map(|s| record::head(*s).to_vec());
        let named = TaskState::FINAL.iter().map(|s| {
            let name = s.as_str().as_bytes();
            let mut m = b"\xa5state".to_vec();
            m.push(0xa0 | name.len() as u8);
            m.extend_from_slice(name);
            m
        });
        compact.chain(named).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_id_is_read_without_the_rest() {
        let e = Envelope {
            id: "abc".into(),
            task: "t".into(),
            ..Envelope::default()
        };
        let bytes = KiqWire.encode_envelope(&e).unwrap();
        assert_eq!(KiqWire.task_id(&bytes).as_deref(), Some("abc"));
        assert_eq!(KiqWire.task_id(b"\xc1 not msgpack"), None);
    }
}
