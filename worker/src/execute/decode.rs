//! The first step of an execution: a delivered message's envelope, or a dead letter when it
//! does not decode.

use kiq_broker::{Completion, Consumer, DeadLetter, Delivery, End, Envelope};

/// A delivered message whose envelope decoded.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The lane it was read from.
    pub lane: String,
    /// Its stream entry id.
    pub stream_id: String,
    /// The message as it came.
    pub payload: Vec<u8>,
    /// Its envelope.
    pub envelope: Envelope,
}

impl Decoded {
    /// The queue the task was dispatched to (the lane it was read from belongs to it).
    pub fn queue(&self) -> String {
        queue_of(&self.envelope, &self.lane)
    }
}

/// The queue `envelope` was dispatched to, read from `lane`: the partition it was read from
/// when its queue is partitioned (`mail#2`), so that its unique key, index entries and
/// record name the slot they live in.
pub(crate) fn queue_of(envelope: &Envelope, lane: &str) -> String {
    let read_from = kiq_broker::priority::split_lane(lane).0;
    if envelope.queue.is_empty() || kiq_broker::partition::logical(read_from) == envelope.queue {
        read_from.to_string()
    } else {
        envelope.queue.clone()
    }
}

/// Decodes `delivery`'s envelope with `consumer`'s wire format.
pub(crate) fn decode(consumer: &Consumer, delivery: Delivery) -> Result<Decoded, Box<Completion>> {
    let Delivery {
        lane,
        stream_id,
        payload,
        ..
    } = delivery;
    let payload = payload.unwrap_or_default();
    // The dispatch limit holds on read too: a message larger than it (written to Redis by
    // someone else) is not decoded at all.
    let limit = consumer.broker().config().max_payload_bytes;
    if payload.len() > limit {
        tracing::error!(%lane, %stream_id, size = payload.len(), limit, "oversized message: moving it to dead letters");
        return Err(Box::new(dead_only(
            lane,
            stream_id,
            "too_large",
            format!(
                "the message is {} bytes, over the {limit}-byte limit (max_payload_bytes)",
                payload.len()
            ),
            payload,
        )));
    }
    let decoded = match consumer.decode(&payload) {
        Ok(envelope) => envelope.check().map(|()| envelope),
        Err(e @ kiq_broker::CodecError::BadSignature(_)) => {
            // Not run, not even decoded: whoever wrote it does not hold the signing key.
            tracing::error!(%lane, %stream_id, error = %e, "message with a bad signature: moving it to dead letters");
            return Err(Box::new(dead_only(
                lane,
                stream_id,
                "bad_signature",
                e.to_string(),
                payload,
            )));
        }
        Err(e) => Err(e.to_string()),
    };
    match decoded {
        Ok(envelope) => Ok(Decoded {
            lane,
            stream_id,
            payload,
            envelope,
        }),
        Err(e) => {
            tracing::error!(%lane, %stream_id, error = %e, "undecodable message: moving it to dead letters");
            Err(Box::new(dead_only(
                lane,
                stream_id,
                "malformed",
                e,
                payload,
            )))
        }
    }
}

/// The completion of a message that never decoded: a dead letter, and no task record.
pub(crate) fn dead_only(
    lane: String,
    stream_id: String,
    reason: &str,
    error: String,
    payload: Vec<u8>,
) -> Completion {
    Completion {
        lane,
        stream_id,
        task: None,
        end: End::Dead(DeadLetter {
            reason: reason.into(),
            error,
            payload,
            ..DeadLetter::default()
        }),
        effects: Vec::new(),
    }
}
