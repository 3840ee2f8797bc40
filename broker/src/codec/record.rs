//! kiq's compact record encoding: what a task's record key holds, in as few bytes as
//! MessagePack allows while keeping every field of [`TaskRecord`].
//!
//! A million finished tasks are a million records, so each byte counts (the record is most of
//! what a finished task keeps in Redis). The layout:
//!
//! - `0xc1` (a byte MessagePack never uses, so a compact record is never mistaken for a
//!   record of the earlier named-map encoding, which is still read), the layout's version
//!   (`1`), and the state as one byte ([`state_code`]). A cancellation inside Redis tells a
//!   finished record from these three bytes alone (`lua/cancel.lua`).
//! - Then one MessagePack array, by position: task, queue, `enqueued_at_ms`, `finished_at_ms`,
//!   attempts, output, failure, worker, `started_at_ms`, history, trace, args. Times after the
//!   first are differences from `enqueued_at_ms` (wrapping, so any `u64` comes back exactly): a
//!   few bytes instead of nine. The failure is a named map (rare, and its fields may grow).
//! - The history is `nil` when it is exactly what the other fields imply (a task that ran
//!   once: pending when enqueued, running when started on its worker, then its final state
//!   when it finished; or still running its first attempt): the common case keeps no history
//!   bytes, and decoding rebuilds it. Any other history is written out, each step an array
//!   `[state, at − enqueued, attempt, note]`.
//! - A trace in W3C `traceparent` form (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase) is kept as
//!   26 bytes (`bin`); any other text as a string.
//!
//! Readers take the fields they know and skip any a newer version appended, so fields are only
//! ever added at the end; the version byte changes only for a layout older readers cannot read.
//! The three head bytes are also what a cancellation of this version looks for (`c1 01
//! <final state>`): a later layout keeps them, or older cancellations would take its finished
//! records for unfinished ones.

use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::Deserializer as _;
use serde_bytes::ByteBuf;

use super::value::{msgpack_reader, CodecError};
use crate::model::record::{StateChange, TaskFailure, TaskRecord, TaskState};
use crate::model::trace_context;

/// The first byte of a compact record: never a MessagePack marker.
pub(super) const MAGIC: u8 = 0xc1;
/// The layout's version.
pub(super) const VERSION: u8 = 1;
/// The bytes a packed trace takes: version, trace id, span id, flags.
const PACKED_TRACE: usize = trace_context::PACKED_LEN;

/// A state as one byte. Codes are never reused; an unknown one reads as [`TaskState::Unknown`].
pub(super) fn state_code(state: TaskState) -> u8 {
    match state {
        TaskState::Pending => 0,
        TaskState::Scheduled => 1,
        TaskState::Running => 2,
        TaskState::Retrying => 3,
        TaskState::Succeeded => 4,
        TaskState::Failed => 5,
        TaskState::Cancelled => 6,
        TaskState::Dead => 7,
        TaskState::Unknown => 255,
    }
}

fn state_of(code: u64) -> TaskState {
    match code {
        0 => TaskState::Pending,
        1 => TaskState::Scheduled,
        2 => TaskState::Running,
        3 => TaskState::Retrying,
        4 => TaskState::Succeeded,
        5 => TaskState::Failed,
        6 => TaskState::Cancelled,
        7 => TaskState::Dead,
        _ => TaskState::Unknown,
    }
}

/// The three bytes that begin a compact record in `state`.
pub(super) fn head(state: TaskState) -> [u8; 3] {
    [MAGIC, VERSION, state_code(state)]
}

/// Encodes `record` in the compact layout.
pub(super) fn encode(record: &TaskRecord) -> Result<Vec<u8>, CodecError> {
    use rmp::encode as w;
    let mut buf = Vec::with_capacity(
        64 + record.task.len()
            + record.queue.len()
            + record.output.as_ref().map_or(0, Vec::len)
            + record.args.as_ref().map_or(0, Vec::len),
    );
    buf.extend_from_slice(&head(record.state));
    let base = record.enqueued_at_ms;
    w::write_array_len(&mut buf, 12).map_err(enc)?;
    w::write_str(&mut buf, &record.task).map_err(enc)?;
    w::write_str(&mut buf, &record.queue).map_err(enc)?;
    w::write_uint(&mut buf, base).map_err(enc)?;
    write_time(&mut buf, base, record.finished_at_ms)?;
    w::write_uint(&mut buf, u64::from(record.attempts)).map_err(enc)?;
    write_bytes(&mut buf, record.output.as_deref())?;
    match &record.failure {
        None => w::write_nil(&mut buf).map_err(enc)?,
        Some(f) => rmp_serde::encode::write_named(&mut buf, f).map_err(enc)?,
    }
    write_text(&mut buf, record.worker.as_deref())?;
    write_time(&mut buf, base, record.started_at_ms)?;
    if history_is_implied(record) {
        w::write_nil(&mut buf).map_err(enc)?;
    } else {
        let len = u32::try_from(record.history.len())
            .map_err(|_| CodecError::Encode("a history of over 2^32 steps".into()))?;
        w::write_array_len(&mut buf, len).map_err(enc)?;
        for step in &record.history {
            w::write_array_len(&mut buf, 4).map_err(enc)?;
            w::write_uint(&mut buf, u64::from(state_code(step.state))).map_err(enc)?;
            write_time(&mut buf, base, Some(step.at_ms))?;
            w::write_uint(&mut buf, u64::from(step.attempt)).map_err(enc)?;
            write_text(&mut buf, step.note.as_deref())?;
        }
    }
    match record.trace.as_deref().map(|t| (t, pack_traceparent(t))) {
        None => w::write_nil(&mut buf).map_err(enc)?,
        Some((_, Some(packed))) => w::write_bin(&mut buf, &packed).map_err(enc)?,
        Some((t, None)) => w::write_str(&mut buf, t).map_err(enc)?,
    }
    write_bytes(&mut buf, record.args.as_deref())?;
    Ok(buf)
}

/// Writing to a `Vec` does not fail; should it, it is an encoding error, not a panic.
fn enc<E: std::fmt::Debug>(e: E) -> CodecError {
    CodecError::Encode(format!("{e:?}"))
}

/// A time as its (wrapping) difference from the record's `enqueued_at_ms`, or nil.
fn write_time(buf: &mut Vec<u8>, base: u64, at: Option<u64>) -> Result<(), CodecError> {
    match at {
        None => rmp::encode::write_nil(buf).map_err(enc),
        Some(t) => rmp::encode::write_sint(buf, t.wrapping_sub(base) as i64)
            .map(|_| ())
            .map_err(enc),
    }
}

fn write_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) -> Result<(), CodecError> {
    match b {
        None => rmp::encode::write_nil(buf).map_err(enc),
        Some(b) => rmp::encode::write_bin(buf, b).map_err(enc),
    }
}

fn write_text(buf: &mut Vec<u8>, s: Option<&str>) -> Result<(), CodecError> {
    match s {
        None => rmp::encode::write_nil(buf).map_err(enc),
        Some(s) => rmp::encode::write_str(buf, s).map_err(enc),
    }
}

/// Decodes a compact record (`bytes` begins with [`MAGIC`]).
pub(super) fn decode(bytes: &[u8]) -> Result<TaskRecord, CodecError> {
    let (state, body) = match bytes {
        [MAGIC, VERSION, code, body @ ..] => (state_of(u64::from(*code)), body),
        [MAGIC, v, ..] if *v != VERSION => {
            return Err(CodecError::Decode(format!(
                "a record in layout version {v}, newer than this kiq reads ({VERSION})"
            )))
        }
        _ => return Err(CodecError::Decode("a record cut short".into())),
    };
    let mut de = msgpack_reader(body);
    let (mut record, implied) = de
        .deserialize_seq(BodyVisitor { state })
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if implied {
        record.history = implied_history(&record).unwrap_or_default();
    }
    Ok(record)
}

/// A step of an implied history: state, when, note (the attempt is 0).
type ImpliedStep<'a> = (TaskState, u64, Option<&'a str>);

/// The history the other fields of `record` imply, if its state and attempts have one: a
/// task that finished on its first attempt, or is running it.
fn implied_steps(record: &TaskRecord) -> Option<[Option<ImpliedStep<'_>>; 3]> {
    let worker = record.worker.as_deref()?;
    let started = record.started_at_ms?;
    let pending = Some((TaskState::Pending, record.enqueued_at_ms, None));
    let running = Some((TaskState::Running, started, Some(worker)));
    match (record.state, record.attempts) {
        (TaskState::Running, 0) => Some([pending, running, None]),
        (s, 1) if s.is_final() => Some([pending, running, Some((s, record.finished_at_ms?, None))]),
        _ => None,
    }
}

/// Whether `record`'s history is the one its other fields imply (then it is not written).
fn history_is_implied(record: &TaskRecord) -> bool {
    let Some(steps) = implied_steps(record) else {
        return false;
    };
    let mut implied = steps.iter().flatten();
    let mut kept = record.history.iter();
    loop {
        match (implied.next(), kept.next()) {
            (None, None) => return true,
            (Some(&(state, at, note)), Some(step)) => {
                if step.state != state
                    || step.at_ms != at
                    || step.attempt != 0
                    || step.note.as_deref() != note
                {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

fn implied_history(record: &TaskRecord) -> Option<Vec<StateChange>> {
    let steps = implied_steps(record)?;
    Some(
        steps
            .iter()
            .flatten()
            .map(|&(state, at, note)| StateChange::new(state, at, 0, note.map(str::to_string)))
            .collect(),
    )
}

struct BodyVisitor {
    state: TaskState,
}

impl<'de> Visitor<'de> for BodyVisitor {
    /// The record, and whether its history is the implied one (nil).
    type Value = (TaskRecord, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a compact task record (an array)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let task: Option<String> = seq.next_element()?.flatten();
        let queue: Option<String> = seq.next_element()?.flatten();
        let base: u64 = seq.next_element::<Option<u64>>()?.flatten().unwrap_or(0);
        let finished: Option<i64> = seq.next_element()?.flatten();
        let attempts: u32 = seq.next_element::<Option<u32>>()?.flatten().unwrap_or(0);
        let output: Option<ByteBuf> = seq.next_element()?.flatten();
        let failure: Option<TaskFailure> = seq.next_element()?.flatten();
        let worker: Option<String> = seq.next_element()?.flatten();
        let started: Option<i64> = seq.next_element()?.flatten();
        let history: Option<Vec<Step>> = seq.next_element()?.flatten();
        let trace: Option<String> = seq.next_element_seed(TraceSeed)?.flatten();
        let args: Option<ByteBuf> = seq.next_element()?.flatten();
        // Fields a newer kiq appended.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        let at = |d: i64| base.wrapping_add(d as u64);
        let implied = history.is_none();
        let record = TaskRecord {
            state: self.state,
            task: task.unwrap_or_default(),
            queue: queue.unwrap_or_default(),
            enqueued_at_ms: base,
            finished_at_ms: finished.map(at),
            attempts,
            output: output.map(ByteBuf::into_vec),
            failure,
            worker,
            started_at_ms: started.map(at),
            history: history
                .unwrap_or_default()
                .into_iter()
                .map(|s| StateChange::new(state_of(s.state), at(s.at), s.attempt, s.note))
                .collect(),
            trace,
            args: args.map(ByteBuf::into_vec),
        };
        Ok((record, implied))
    }
}

/// One step of a written-out history.
struct Step {
    state: u64,
    at: i64,
    attempt: u32,
    note: Option<String>,
}

impl<'de> de::Deserialize<'de> for Step {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Step;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a history step (an array)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Step, A::Error> {
                let step = Step {
                    state: seq
                        .next_element::<Option<u64>>()?
                        .flatten()
                        .unwrap_or(u64::MAX),
                    at: seq.next_element::<Option<i64>>()?.flatten().unwrap_or(0),
                    attempt: seq.next_element::<Option<u32>>()?.flatten().unwrap_or(0),
                    note: seq.next_element()?.flatten(),
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(step)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A trace: nil, a packed `traceparent` (bin) or any other text (str).
struct TraceSeed;

impl<'de> DeserializeSeed<'de> for TraceSeed {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TraceSeed {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a trace (nil, 26 bytes or a string)")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Option<String>, E> {
        unpack_traceparent(v)
            .map(Some)
            .ok_or_else(|| E::invalid_length(v.len(), &"a packed trace of 26 bytes"))
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` in lowercase as 26 bytes, or `None` for any other text
/// (which is then kept as it is: packing must give back exactly what it took).
fn pack_traceparent(t: &str) -> Option<[u8; PACKED_TRACE]> {
    // Uppercase is not packed: it would come back lowercase.
    trace_context::decode_header(t.as_bytes(), false)
}

fn unpack_traceparent(p: &[u8]) -> Option<String> {
    let fields: &[u8; PACKED_TRACE] = p.try_into().ok()?;
    Some(trace_context::hex::as_str(&trace_context::encode_header(fields)).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::FailureKind;

    fn finished_once() -> TaskRecord {
        let mut r = TaskRecord {
            state: TaskState::Succeeded,
            task: "kiq_examples::bench::noop".into(),
            queue: "bench".into(),
            enqueued_at_ms: 1_764_000_000_000,
            finished_at_ms: Some(1_764_000_000_032),
            attempts: 1,
            output: Some(vec![0xc0]),
            worker: Some("vm-30068-9fe51e".into()),
            started_at_ms: Some(1_764_000_000_030),
            trace: Some("00-181c238a8c8a4e50a34658d3b3550c22-b8bf43399925941b-01".into()),
            args: Some(vec![0x90]),
            ..Default::default()
        };
        r.history = implied_history(&r).unwrap();
        r
    }

    #[test]
    fn a_task_that_ran_once_keeps_no_history_bytes_and_comes_back_whole() {
        let r = finished_once();
        let bytes = encode(&r).unwrap();
        assert_eq!(&bytes[..3], &[MAGIC, VERSION, 4]);
        assert!(bytes.len() < 110, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), r);
        // The named encoding of the same record, for scale.
        let named = rmp_serde::to_vec_named(&r).unwrap();
        assert!(named.len() > 3 * bytes.len(), "{} named", named.len());
    }

    #[test]
    fn every_other_history_is_written_out_and_read_back() {
        let base = finished_once();
        let mut retried = base.clone();
        retried.attempts = 2;
        retried.history.insert(
            2,
            StateChange::new(TaskState::Retrying, 1, 0, Some("boom".into())),
        );
        let mut other_note = base.clone();
        other_note.history[1].note = Some("another-worker".into());
        let mut shorter = base.clone();
        shorter.history.pop();
        let mut none = base.clone();
        none.history.clear();
        let mut later_attempt = base.clone();
        later_attempt.history[2].attempt = 1;
        let mut running = base.clone();
        running.state = TaskState::Running;
        running.attempts = 0;
        running.finished_at_ms = None;
        running.history.pop();
        for r in [retried, other_note, shorter, none, later_attempt, running] {
            let bytes = encode(&r).unwrap();
            assert_eq!(decode(&bytes).unwrap(), r, "{:?}", r.history);
        }
    }

    #[test]
    fn extreme_values_and_odd_traces_come_back_exactly() {
        let traces = [
            None,
            Some(String::new()),
            Some("00-181C238A8C8A4E50A34658D3B3550C22-b8bf43399925941b-01".into()),
            Some("not a traceparent".into()),
            Some("00-181c238a8c8a4e50a34658d3b3550c2g-b8bf43399925941b-01".into()),
            Some("00-181c238a8c8a4e50a34658d3b3550c22-b8bf43399925941b-0\u{7f}".into()),
            Some("ff-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff".into()),
        ];
        for (i, trace) in traces.into_iter().enumerate() {
            let r = TaskRecord {
                state: TaskState::Dead,
                task: "é".repeat(100),
                queue: String::new(),
                enqueued_at_ms: if i % 2 == 0 { u64::MAX } else { 0 },
                finished_at_ms: Some(if i % 2 == 0 { 0 } else { u64::MAX }),
                attempts: u32::MAX,
                output: Some(vec![7; 70_000]),
                failure: Some(TaskFailure::new(FailureKind::Timeout, "slow")),
                worker: None,
                started_at_ms: Some(u64::MAX / 2),
                history: vec![StateChange::new(TaskState::Unknown, 3, u32::MAX, None)],
                trace,
                args: None,
            };
            let back = decode(&encode(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn fields_appended_by_a_newer_kiq_are_skipped_and_missing_ones_defaulted() {
        let r = finished_once();
        let bytes = encode(&r).unwrap();
        // Thirteen elements: the twelve, then something new.
        let mut newer = bytes.clone();
        newer[3] = 0x9d;
        rmp::encode::write_map_len(&mut newer, 1).unwrap();
        rmp::encode::write_str(&mut newer, "k").unwrap();
        rmp::encode::write_uint(&mut newer, 7).unwrap();
        assert_eq!(decode(&newer).unwrap(), r);
        // Only the task and queue.
        let mut older = head(TaskState::Pending).to_vec();
        rmp::encode::write_array_len(&mut older, 2).unwrap();
        rmp::encode::write_str(&mut older, "t").unwrap();
        rmp::encode::write_str(&mut older, "q").unwrap();
        let back = decode(&older).unwrap();
        assert_eq!((back.task.as_str(), back.queue.as_str()), ("t", "q"));
        assert_eq!(back.state, TaskState::Pending);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let good = encode(&finished_once()).unwrap();
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&[MAGIC]).is_err());
        let cut = decode(&[MAGIC, VERSION]).unwrap_err().to_string();
        assert!(cut.contains("cut short"), "{cut}");
        assert!(decode(&[MAGIC, 9, 4, 0x90]).is_err());
        let mut bad_trace = head(TaskState::Running).to_vec();
        rmp::encode::write_array_len(&mut bad_trace, 11).unwrap();
        for _ in 0..10 {
            rmp::encode::write_nil(&mut bad_trace).unwrap();
        }
        rmp::encode::write_bin(&mut bad_trace, &[1, 2, 3]).unwrap();
        assert!(decode(&bad_trace).is_err());
        // An unknown state code reads as unknown.
        let mut unknown = good.clone();
        unknown[2] = 200;
        assert_eq!(decode(&unknown).unwrap().state, TaskState::Unknown);
    }
}
