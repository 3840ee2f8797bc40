//! Property tests of the decoders that read what comes from outside (stream entries, stored
//! records, JSON arguments from the CLI, the API and schedules): arbitrary input decodes or
//! gives a clear error, never a panic or a stack overflow. CI runs proptest's default 256
//! cases per property; a longer run is
//! `PROPTEST_CASES=100000 cargo test --release -p kiq-broker --test decoders`.

use kiq_broker::taskiq::{pickle, ResultFormat, TaskiqMessage, TaskiqResult};
use kiq_broker::{Envelope, KiqWire, ValueCodec, WireFormat};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

fn arb_json() -> impl Strategy<Value = Value> {
    kiq_testkit::arb::json()
}

proptest! {
    /// Any bytes in a stream entry or a record key: decoded, or refused.
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..4096)) {
        if let Ok(e) = KiqWire.decode_envelope(&bytes) {
            let _ = e.check();
        }
        let _ = KiqWire.task_id(&bytes);
        let _ = KiqWire.decode_record(&bytes);
        let _ = ValueCodec::MsgPack.to_json(&bytes);
    }

    /// Any bytes from the Python side (a Taskiq message, a stored result or schedule pickle):
    /// read, or refused with an error.
    #[test]
    fn arbitrary_bytes_never_panic_the_taskiq_decoders(bytes in vec(any::<u8>(), 0..4096)) {
        if let Ok(m) = TaskiqMessage::parse(&bytes) {
            let _ = m.known_labels();
            let _ = m.typed_labels();
        }
        let _ = pickle::loads(&bytes);
        let _ = TaskiqResult::decode(&bytes, ResultFormat::Pickle);
        let _ = TaskiqResult::decode(&bytes, ResultFormat::Json);
    }

    /// Any JSON data kiq writes as a pickle reads back the same.
    #[test]
    fn pickles_round_trip(json in arb_json()) {
        prop_assert_eq!(pickle::loads(&pickle::dumps(&json)).unwrap(), json);
    }

    /// Well-typed but hostile envelopes (any characters, any numbers, many labels) survive
    /// the wire unchanged, and the worker's check of them never panics.
    #[test]
    fn hostile_envelopes_round_trip_and_are_checked(
        id in ".{0,160}",
        queue in ".{0,80}",
        task in ".{0,120}",
        attempt in any::<u32>(),
        due_ms in any::<Option<u64>>(),
        timeout_ms in any::<Option<u64>>(),
        enqueued_at_ms in any::<u64>(),
        labels in btree_map(".{0,16}", ".{0,32}", 0..8),
        args in vec(any::<u8>(), 0..64),
    ) {
        let e = Envelope {
            v: 1,
            id,
            queue,
            task,
            attempt,
            due_ms,
            timeout_ms,
            enqueued_at_ms,
            labels,
            args,
            ..Envelope::default()
        };
        let bytes = KiqWire.encode_envelope(&e).unwrap();
        let back = KiqWire.decode_envelope(&bytes).unwrap();
        prop_assert_eq!(&back, &e);
        let _ = back.check();
    }

    /// JSON arguments (what `taskctl kiq --args`, `POST /api/tasks` and schedules carry)
    /// encode and read back as the same JSON.
    #[test]
    fn json_arguments_round_trip(json in arb_json()) {
        let bytes = ValueCodec::MsgPack.from_json(&json).unwrap();
        let back = ValueCodec::MsgPack.to_json(&bytes).unwrap();
        // Floats that are whole numbers may come back as integers; compare as text numbers.
        prop_assert_eq!(normalise(&back), normalise(&json));
    }

    /// Arbitrary text given as JSON arguments: parsed and encoded, or refused.
    #[test]
    fn arbitrary_text_as_arguments_never_panics(text in ".{0,400}") {
        if let Ok(json) = serde_json::from_str::<Value>(&text) {
            let _ = ValueCodec::MsgPack.from_json(&json);
        }
    }
}

/// Numbers as f64 (whole floats and integers read back alike).
fn normalise(v: &Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| Value::String(format!("{f:e}")))
            .unwrap_or_else(|| v.clone()),
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

/// A payload nested a million levels deep (`[[[[…`, one byte per level, well under the 8 MiB
/// limit) is refused, not a stack overflow that would take the worker down with every
/// redelivery.
#[test]
fn deeply_nested_payloads_are_refused() {
    for depth in [2_000usize, 1_000_000] {
        let bytes = vec![0x91u8; depth];
        assert!(KiqWire.decode_envelope(&bytes).is_err());
        assert!(KiqWire.decode_record(&bytes).is_err());
        assert!(ValueCodec::MsgPack.to_json(&bytes).is_err());
        let _ = KiqWire.task_id(&bytes);
    }
}

/// A pickle nested a million levels deep is refused, not a stack overflow.
#[test]
fn deeply_nested_pickles_are_refused() {
    let mut p = vec![0x80, 4];
    p.extend(std::iter::repeat_n(b']', 1_000_000));
    p.extend(std::iter::repeat_n(b'a', 1_000_000));
    p.push(b'.');
    assert!(pickle::loads(&p).is_err());
}
