//! Turning read replies into deliveries.
//!
//! Why by hand: redis-rs's `StreamReadReply::from_redis_value` deep-clones the whole reply
//! (`v.clone()`, payloads included) before converting the clone into nested `HashMap`s, and
//! `Pipeline::query_async` / `Cmd::query_async` first rebuild the whole reply tree in
//! `Value::extract_error`. A worker's profile (issue #18) put that at about 9.5 % of its CPU per
//! no-op task. Here the owned reply is walked once: ids become `String`s and payloads are moved
//! out without copying a byte.
//!
//! The walk accepts what redis-rs's conversion accepted and gives the same deliveries, in reply
//! order (a differential test below checks it against `StreamReadReply`):
//! - the reply: nil (nothing came, a BLOCK timeout) is no deliveries; a RESP2 array of
//!   `[stream, entries]` pairs, or a RESP3 map of stream to entries;
//! - entries: a list of `[id, fields]`; an entry that is nil as a whole is skipped, as
//!   redis-rs's conversion dropped it; an entry whose fields are nil (deleted or trimmed) is a
//!   delivery without a payload, as is one without a `data` field (the worker dead-letters it
//!   as malformed, as before);
//! - fields: flat `[name, value, ...]` pairs or a RESP3 map; the last `data` field wins, as it
//!   did in the `HashMap` (see `data_field` in `mod.rs`);
//! - streams not read by this reader are skipped (after the same checks);
//! - a server error anywhere is that error, as `Value::extract_error` made it (first in reply
//!   order); at the top of a pipeline's replies, redis-rs's own pipeline code makes the error
//!   (see [`send_pipeline`]). A shape redis-rs could not convert either is a parse error
//!   (kiq's `BadReply`), whose message may differ from redis-rs's.

use redis::aio::ConnectionLike;
use redis::{ParsingError, RedisError, RedisFuture, RedisResult, Value};

use crate::consumer::delivery::Delivery;
use crate::keys::DATA_FIELD;

/// Sends `pipe` (no transaction, nothing ignored) and returns its `N` replies raw: without the
/// whole-tree `Value::extract_error` of `Pipeline::query_async`, but failing as it does when a
/// command of the pipeline failed. Errors nested inside a reply are left to the caller's walk.
pub(super) async fn send_pipeline<const N: usize>(
    conn: &mut impl ConnectionLike,
    pipe: &redis::Pipeline,
) -> RedisResult<[Value; N]> {
    let replies = conn.req_packed_commands(pipe, 0, N).await?;
    if replies.iter().any(|r| matches!(r, Value::ServerError(_))) {
        return Err(pipeline_error(pipe, replies).await);
    }
    <[Value; N]>::try_from(replies)
        .map_err(|r| ParsingError::from(format!("expected {N} replies, got {}", r.len())).into())
}

/// The error `Pipeline::query_async` returns for `replies`, one of which is a server error:
/// redis-rs's own code is run over the replies already read (they are handed back by
/// [`Replay`]), so the error is the very same (`Pipeline failure: [(Index i, error: ...)]`,
/// with the same code and kind).
async fn pipeline_error(pipe: &redis::Pipeline, replies: Vec<Value>) -> RedisError {
    match pipe.query_async::<Value>(&mut Replay(replies)).await {
        Err(e) => e,
        Ok(_) => ParsingError::from("a failed pipeline reply was not an error").into(),
    }
}

/// A "connection" that answers a pipeline with replies already read (see [`pipeline_error`]).
struct Replay(Vec<Value>);

impl ConnectionLike for Replay {
    fn req_packed_command<'a>(&'a mut self, _cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        Box::pin(std::future::ready(Err(ParsingError::from(
            "no command can be sent on a replay",
        )
        .into())))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _pipeline: &'a redis::Pipeline,
        _offset: usize,
        _count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(std::future::ready(Ok(std::mem::take(&mut self.0))))
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Sends `cmd` and returns its reply raw (no whole-tree `Value::extract_error`); a reply that
/// is a server error is that error, as `Cmd::query_async` makes it. Errors nested inside the
/// reply are left to the caller's walk.
pub(super) async fn send_command(
    conn: &mut impl ConnectionLike,
    cmd: &redis::Cmd,
) -> RedisResult<Value> {
    match conn.req_packed_command(cmd).await? {
        Value::ServerError(e) => Err(e.into()),
        reply => Ok(reply),
    }
}

/// The reply of `lua/read_by_priority.lua`, `{entries per lane read, cancel flag, each lane's
/// length}`: the deliveries (walked as an XREADGROUP reply, see [`deliveries_of`]), the flag
/// and the lengths, as the former `(StreamReadReply, i64, Vec<i64>)` conversion read them.
pub(super) fn by_priority_reply(
    reply: Value,
    streams: &[String],
    lanes: &[String],
) -> RedisResult<(Vec<Delivery>, i64, Vec<i64>)> {
    let reply = match reply {
        Value::Array(items) => items,
        other => return Err(malformed("the priority read's reply", other)),
    };
    let Ok([read, active, lens]) = <[Value; 3]>::try_from(reply) else {
        return Err(ParsingError::from("the priority read's reply is not 3 items").into());
    };
    let deliveries = deliveries_of(read, streams, lanes)?;
    Ok((deliveries, checked(active)?, checked(lens)?))
}

/// The deliveries of an XREADGROUP `reply` over `streams` (the keys of `lanes`, in the same
/// order), in reply order, each a first delivery. The reply is consumed: ids and payloads are
/// moved out of it. What is accepted, and how nil entries, missing `data` fields and server
/// errors come out, is described above.
pub(super) fn deliveries_of(
    reply: Value,
    streams: &[String],
    lanes: &[String],
) -> RedisResult<Vec<Delivery>> {
    let mut out = Vec::new();
    let mut stream = |key: Value, entries: Value| -> RedisResult<()> {
        let key = into_string(key)?;
        let lane = streams.iter().position(|s| *s == key).map(|i| &lanes[i]);
        if let Value::Array(list) = &entries {
            if lane.is_some() {
                out.reserve(list.len());
            }
        }
        for_each_entry(entries, &mut |id, fields| {
            let stream_id = into_string(id)?;
            let payload = data_of(fields)?;
            if let Some(lane) = lane {
                out.push(Delivery {
                    lane: lane.clone(),
                    stream_id,
                    payload,
                    deliveries: 1,
                });
            }
            Ok(())
        })
    };
    match reply {
        Value::Nil => {}
        // RESP2: `[[stream, entries], ...]`.
        Value::Array(rows) | Value::Set(rows) => {
            for row in rows {
                for_each_pair(row, "a stream's reply", &mut stream)?;
            }
        }
        // RESP3: `{stream: entries, ...}`.
        Value::Map(pairs) => {
            for (key, entries) in pairs {
                stream(key, entries)?;
            }
        }
        other => return Err(malformed("an XREADGROUP reply", other)),
    }
    Ok(out)
}

/// Calls `f` with the `(id, fields)` of each entry of a stream's `entries`: a list of
/// `[id, fields]` (a nil entry has none), or a RESP3 map of id to fields; nil is no entries.
fn for_each_entry(
    entries: Value,
    f: &mut dyn FnMut(Value, Value) -> RedisResult<()>,
) -> RedisResult<()> {
    match entries {
        Value::Nil => Ok(()),
        Value::Array(list) | Value::Set(list) => list
            .into_iter()
            .try_for_each(|entry| for_each_pair(entry, "a stream entry", f)),
        Value::Map(pairs) => pairs.into_iter().try_for_each(|(id, fields)| f(id, fields)),
        other => Err(malformed("a stream's entries", other)),
    }
}

/// The payload of an entry's `fields`: its (last) `data` field's bytes, moved out; `None` when
/// it has none, or the fields are nil (a deleted entry). What `data_field` (in `mod.rs`) made
/// of the field map.
fn data_of(fields: Value) -> RedisResult<Option<Vec<u8>>> {
    let mut data = None;
    for_each_pair(fields, "an entry's fields", &mut |name, value| {
        let name = into_string(name)?;
        check_errors(&value)?;
        if name == DATA_FIELD {
            data = Some(value);
        }
        Ok(())
    })?;
    Ok(match data {
        Some(Value::BulkString(b)) => Some(b),
        Some(Value::SimpleString(s)) => Some(s.into_bytes()),
        _ => None,
    })
}

/// Calls `f` with each (key, value) pair of `v`, read as redis-rs reads a `HashMap`: a RESP3
/// map, or an array of even length taken two by two; nil has none; an attribute is read as
/// its data.
fn for_each_pair(
    v: Value,
    what: &str,
    f: &mut dyn FnMut(Value, Value) -> RedisResult<()>,
) -> RedisResult<()> {
    match v {
        Value::Nil => Ok(()),
        Value::Attribute { data, attributes } => {
            for_each_pair(*data, what, f)?;
            attributes.iter().try_for_each(|(k, v)| {
                check_errors(k)?;
                check_errors(v)
            })
        }
        v => match v.into_map_iter() {
            Ok(pairs) => pairs.into_iter().try_for_each(|(k, v)| f(k, v)),
            Err(v) => Err(malformed(what, v)),
        },
    }
}

/// `v` as a `String`, converted as redis-rs converts it, without copying a bulk string's
/// bytes (`String::from_utf8` takes the `Vec`).
fn into_string(v: Value) -> RedisResult<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|e| ParsingError::from(e).into()),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        Value::Okay => Ok("OK".to_string()),
        Value::Int(n) => Ok(n.to_string()),
        Value::Double(d) => Ok(d.to_string()),
        Value::Attribute { data, attributes } => {
            let s = into_string(*data)?;
            attributes.iter().try_for_each(|(k, v)| {
                check_errors(k)?;
                check_errors(v)
            })?;
            Ok(s)
        }
        other => Err(malformed("a string", other)),
    }
}

/// `v` converted by redis-rs (small replies: counts, flags), after the server-error check
/// `Value::extract_error` made.
pub(super) fn checked<T: redis::FromRedisValue>(v: Value) -> RedisResult<T> {
    check_errors(&v)?;
    Ok(redis::from_redis_value(v)?)
}

/// The first server error inside `v` (in the order `Value::extract_error` looks), if any.
fn check_errors(v: &Value) -> RedisResult<()> {
    match v {
        Value::ServerError(e) => Err(e.clone().into()),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            items.iter().try_for_each(check_errors)
        }
        Value::Map(pairs) => pairs.iter().try_for_each(|(k, v)| {
            check_errors(k)?;
            check_errors(v)
        }),
        Value::Attribute { data, attributes } => {
            check_errors(data)?;
            attributes.iter().try_for_each(|(k, v)| {
                check_errors(k)?;
                check_errors(v)
            })
        }
        _ => Ok(()),
    }
}

/// The error for `v` where `what` was expected: a server error inside it, which
/// `Value::extract_error` would have returned first, or else a parse error (kiq's `BadReply`).
fn malformed(what: &str, v: Value) -> RedisError {
    if let Err(e) = check_errors(&v) {
        return e;
    }
    let kind = match v {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "a string",
        Value::Okay => "OK",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Set(_) => "a set",
        Value::Double(_) => "a double",
        Value::Boolean(_) => "a boolean",
        _ => "another type",
    };
    ParsingError::from(format!(
        "unexpected reply: {kind} where {what} was expected"
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::delivery::ReadBatch;
    use redis::streams::StreamReadReply;
    use redis::ErrorKind;
    use std::time::Duration;

    const S0: &str = "{kiq:q}:stream";
    const S1: &str = "{kiq:q}:1:stream";

    /// The streams and lanes of a reader of lanes `q` (most urgent) and `q:1`.
    fn reader() -> (Vec<String>, Vec<String>) {
        (
            vec![S0.to_string(), S1.to_string()],
            vec!["q".to_string(), "q:1".to_string()],
        )
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// `[id, [name, value, ...]]`, as XREADGROUP sends an entry.
    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(n, v)| [bulk(n), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(flat)])
    }

    /// A RESP2 `[stream, entries]` row.
    fn row(stream: &str, entries: Vec<Value>) -> Value {
        Value::Array(vec![bulk(stream), Value::Array(entries)])
    }

    /// A server error reply, parsed from RESP (redis-rs has no public constructor).
    fn server_error(line: &str) -> Value {
        let v = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        assert!(matches!(v, Value::ServerError(_)), "{v:?}");
        v
    }

    /// (lane, id, payload, deliveries) of each delivery, in order.
    type Flat = Vec<(String, String, Option<Vec<u8>>, u64)>;

    fn flat(ds: Vec<Delivery>) -> Flat {
        ds.into_iter()
            .map(|d| (d.lane, d.stream_id, d.payload, d.deliveries))
            .collect()
    }

    fn walk(reply: Value) -> RedisResult<Flat> {
        let (streams, lanes) = reader();
        deliveries_of(reply, &streams, &lanes).map(flat)
    }

    fn d(lane: &str, id: &str, payload: Option<&str>) -> (String, String, Option<Vec<u8>>, u64) {
        (
            lane.to_string(),
            id.to_string(),
            payload.map(|p| p.as_bytes().to_vec()),
            1,
        )
    }

    /// What the code before the hand walk made of `reply`: redis-rs's `StreamReadReply`, the
    /// streams matched to lanes, `data_field` on each entry's map.
    fn with_redis_rs(reply: Value) -> RedisResult<Flat> {
        let (streams, lanes) = reader();
        let reply: Option<StreamReadReply> = redis::from_redis_value(reply.extract_error()?)?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(idx) = streams.iter().position(|s| *s == key.key) else {
                continue;
            };
            for mut entry in key.ids {
                let payload = super::super::data_field(&mut entry.map);
                out.push((lanes[idx].clone(), entry.id, payload, 1));
            }
        }
        Ok(out)
    }

    #[test]
    fn resp2_array_form() {
        let reply = Value::Array(vec![
            row(
                S0,
                vec![
                    entry("1-0", &[("data", "first")]),
                    entry("1-1", &[("other", "x"), ("data", "second"), ("z", "y")]),
                ],
            ),
            row(S1, vec![entry("2-5", &[("data", "low")])]),
        ]);
        assert_eq!(
            walk(reply.clone()).unwrap(),
            vec![
                d("q", "1-0", Some("first")),
                d("q", "1-1", Some("second")),
                d("q:1", "2-5", Some("low")),
            ]
        );
        assert_eq!(walk(reply.clone()).unwrap(), with_redis_rs(reply).unwrap());
    }

    #[test]
    fn resp3_map_form() {
        let entries = |e: Vec<Value>| Value::Array(e);
        let reply = Value::Map(vec![
            (bulk(S1), entries(vec![entry("7-0", &[("data", "a")])])),
            (
                bulk(S0),
                entries(vec![
                    entry("8-0", &[("data", "b")]),
                    // Fields as a RESP3 map too.
                    Value::Array(vec![
                        bulk("8-1"),
                        Value::Map(vec![(bulk("data"), bulk("c"))]),
                    ]),
                ]),
            ),
        ]);
        // Reply order, not lane order: the plain read keeps what the server sent.
        assert_eq!(
            walk(reply.clone()).unwrap(),
            vec![
                d("q:1", "7-0", Some("a")),
                d("q", "8-0", Some("b")),
                d("q", "8-1", Some("c")),
            ]
        );
        assert_eq!(walk(reply.clone()).unwrap(), with_redis_rs(reply).unwrap());
    }

    #[test]
    fn nil_entries() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk(S0),
                Value::Array(vec![
                    // A deleted (trimmed) entry: its fields are nil. A delivery without a
                    // payload, which the worker dead-letters as malformed.
                    Value::Array(vec![bulk("3-0"), Value::Nil]),
                    // Nil as a whole: redis-rs's conversion dropped it; so does the walk.
                    Value::Nil,
                    entry("3-1", &[("data", "kept")]),
                ]),
            ]),
            // A stream whose entries are nil: nothing.
            Value::Array(vec![bulk(S1), Value::Nil]),
        ]);
        assert_eq!(
            walk(reply.clone()).unwrap(),
            vec![d("q", "3-0", None), d("q", "3-1", Some("kept"))]
        );
        assert_eq!(walk(reply.clone()).unwrap(), with_redis_rs(reply).unwrap());
    }

    #[test]
    fn missing_or_odd_data_field() {
        let reply = Value::Array(vec![row(
            S0,
            vec![
                entry("4-0", &[("payload", "no data field")]),
                entry("4-1", &[]),
                // Not bytes: no payload, as `data_field` said.
                Value::Array(vec![
                    bulk("4-2"),
                    Value::Array(vec![bulk("data"), Value::Int(5)]),
                ]),
                // A simple string is taken as bytes.
                Value::Array(vec![
                    bulk("4-3"),
                    Value::Array(vec![bulk("data"), Value::SimpleString("s".into())]),
                ]),
                // The field twice: the last one, as the `HashMap` kept it.
                entry("4-4", &[("data", "old"), ("data", "new")]),
            ],
        )]);
        assert_eq!(
            walk(reply.clone()).unwrap(),
            vec![
                d("q", "4-0", None),
                d("q", "4-1", None),
                d("q", "4-2", None),
                d("q", "4-3", Some("s")),
                d("q", "4-4", Some("new")),
            ]
        );
        assert_eq!(walk(reply.clone()).unwrap(), with_redis_rs(reply).unwrap());
    }

    #[test]
    fn empty_and_nil_replies() {
        // Nil: a BLOCK timeout, or nothing new.
        assert_eq!(walk(Value::Nil).unwrap(), vec![]);
        assert_eq!(walk(Value::Array(vec![])).unwrap(), vec![]);
        assert_eq!(walk(Value::Map(vec![])).unwrap(), vec![]);
        assert_eq!(walk(Value::Array(vec![row(S0, vec![])])).unwrap(), vec![]);
        assert_eq!(with_redis_rs(Value::Nil).unwrap(), vec![]);
    }

    #[test]
    fn streams_not_read_are_skipped() {
        let reply = Value::Array(vec![
            row("{kiq:other}:stream", vec![entry("5-0", &[("data", "x")])]),
            row(S1, vec![entry("5-1", &[("data", "y")])]),
        ]);
        assert_eq!(
            walk(reply.clone()).unwrap(),
            vec![d("q:1", "5-1", Some("y"))]
        );
        assert_eq!(walk(reply.clone()).unwrap(), with_redis_rs(reply).unwrap());
    }

    #[test]
    fn server_errors_anywhere_are_errors() {
        let code = |r: RedisResult<Flat>| r.unwrap_err().code().map(str::to_string);
        // At the top.
        let top = server_error("NOGROUP No such key or consumer group");
        assert_eq!(code(walk(top.clone())).as_deref(), Some("NOGROUP"));
        assert_eq!(code(with_redis_rs(top)).as_deref(), Some("NOGROUP"));
        // As a field value, an entry, a stream's entries, a stream key; in a stream not read.
        let cases = [
            Value::Array(vec![row(
                S0,
                vec![Value::Array(vec![
                    bulk("6-0"),
                    Value::Array(vec![bulk("data"), server_error("ERR in a field")]),
                ])],
            )]),
            Value::Array(vec![row(S0, vec![server_error("ERR an entry")])]),
            Value::Array(vec![Value::Array(vec![
                bulk(S0),
                server_error("ERR the entries"),
            ])]),
            Value::Map(vec![(server_error("ERR a key"), Value::Nil)]),
            Value::Array(vec![row(
                "{kiq:other}:stream",
                vec![Value::Array(vec![
                    bulk("6-1"),
                    Value::Array(vec![bulk("x"), server_error("ERR elsewhere")]),
                ])],
            )]),
        ];
        for reply in cases {
            let ours = walk(reply.clone()).unwrap_err();
            let theirs = with_redis_rs(reply.clone()).unwrap_err();
            assert_eq!(ours.code(), Some("ERR"), "{reply:?}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{reply:?}");
            assert_eq!(ours.kind(), theirs.kind());
        }
    }

    #[test]
    fn shapes_redis_rs_refused_are_refused() {
        let cases = [
            // Not UTF-8: an id, a field name.
            Value::Array(vec![row(
                S0,
                vec![Value::Array(vec![
                    Value::BulkString(vec![0xff, 0xfe]),
                    Value::Array(vec![]),
                ])],
            )]),
            Value::Array(vec![row(
                S0,
                vec![Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![Value::BulkString(vec![0xff]), bulk("x")]),
                ])],
            )]),
            // Fields of odd length; an entry of odd length; a number for a reply.
            Value::Array(vec![row(
                S0,
                vec![Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("data")]),
                ])],
            )]),
            Value::Array(vec![row(S0, vec![Value::Array(vec![bulk("1-0")])])]),
            Value::Int(3),
        ];
        for reply in cases {
            let ours = walk(reply.clone()).unwrap_err();
            assert!(with_redis_rs(reply.clone()).is_err(), "{reply:?}");
            assert_eq!(ours.kind(), ErrorKind::Parse, "{reply:?}");
            // kiq reads it as a bad reply, as before.
            let failure = crate::error::RedisFailure::from_redis(&ours);
            assert_eq!(failure.kind, crate::error::RedisErrorKind::BadReply);
        }
    }

    #[test]
    fn priority_script_reply() {
        let (streams, lanes) = reader();
        // `{out, flag, lens}`: the lanes read, in priority order, each as XREADGROUP gave it.
        let reply = Value::Array(vec![
            Value::Array(vec![
                row(S0, vec![entry("9-0", &[("data", "hi")])]),
                row(S1, vec![entry("9-1", &[("data", "lo")]), entry("9-2", &[])]),
            ]),
            Value::Int(1),
            Value::Array(vec![Value::Int(1), Value::Int(4)]),
        ]);
        let (ds, active, lens) = by_priority_reply(reply.clone(), &streams, &lanes).unwrap();
        assert_eq!(
            flat(ds),
            vec![
                d("q", "9-0", Some("hi")),
                d("q:1", "9-1", Some("lo")),
                d("q:1", "9-2", None),
            ]
        );
        assert_eq!((active, lens), (1, vec![1, 4]));
        // As the former `(StreamReadReply, i64, Vec<i64>)` conversion read it.
        let (old, flag, old_lens): (StreamReadReply, i64, Vec<i64>) =
            redis::from_redis_value(reply).unwrap();
        assert_eq!(old.keys.len(), 2);
        assert_eq!((flag, old_lens), (1, vec![1, 4]));

        // Nothing read: an empty table.
        let empty = Value::Array(vec![
            Value::Array(vec![]),
            Value::Int(0),
            Value::Array(vec![Value::Int(0), Value::Int(0)]),
        ]);
        let (ds, active, lens) = by_priority_reply(empty, &streams, &lanes).unwrap();
        assert!(ds.is_empty());
        assert_eq!((active, lens), (0, vec![0, 0]));

        // A server error among the lengths; a reply of the wrong size.
        let nested = Value::Array(vec![
            Value::Array(vec![]),
            Value::Int(0),
            Value::Array(vec![server_error("ERR xlen")]),
        ]);
        let e = by_priority_reply(nested, &streams, &lanes).unwrap_err();
        assert_eq!(e.code(), Some("ERR"));
        let short = Value::Array(vec![Value::Array(vec![]), Value::Int(0)]);
        let e = by_priority_reply(short, &streams, &lanes).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Parse);
    }

    #[test]
    fn counts_and_flags() {
        assert_eq!(checked::<u64>(Value::Int(2)).unwrap(), 2);
        assert_eq!(
            checked::<Vec<i64>>(Value::Array(vec![Value::Int(3), Value::Int(0)])).unwrap(),
            vec![3, 0]
        );
        let e = checked::<Vec<i64>>(Value::Array(vec![server_error("OOM full")])).unwrap_err();
        assert_eq!(e.code(), Some("OOM"));
    }

    /// Every read path over the wire, on a private redis-server, on kiq's own reader
    /// connection and on redis-rs's in RESP2 and RESP3: the priority script (loaded on
    /// `NOSCRIPT` first), the plain read with the lane lengths, the blocking read, and a
    /// pipeline whose XREADGROUP fails.
    #[tokio::test]
    async fn reads_over_the_wire() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let ways = [
            (true, ""),
            (true, "?protocol=resp3"),
            (false, ""),
            (false, "?protocol=resp3"),
        ];
        for (i, (native, query)) in ways.into_iter().enumerate() {
            let url = format!("{}{query}", redis.url());
            let config = crate::BrokerConfig::new(&url).native_resp(native);
            let broker = crate::Broker::from_config(config).await.unwrap();
            let queue = format!("wire{i}");
            let lanes = vec![format!("{queue}:high"), queue.clone()];
            let keys = crate::keys::Keys::new("kiq".to_string());
            let (hi, lo) = (keys.stream(&lanes[0]), keys.stream(&lanes[1]));
            let mut reader = broker.consumer("c").reader(&lanes).await.unwrap();
            if i == 3 {
                let clients = redis.command("CLIENT LIST").unwrap();
                assert!(clients.contains("resp=3"), "{clients}");
            }
            redis.command(&format!("XADD {lo} 1-1 data low1")).unwrap();
            redis.command(&format!("XADD {lo} 1-2 other x")).unwrap();
            redis.command(&format!("XADD {hi} 1-1 data high1")).unwrap();
            redis.command(&format!("XADD {hi} 1-2 data high2")).unwrap();
            let ms = Duration::from_millis(20);
            let flat_read = |b: ReadBatch| flat(b.deliveries);

            // A backlog in two lanes: the script (not loaded yet: EVALSHA fails with NOSCRIPT,
            // the script is loaded and sent again), strictly by priority, up to the count.
            redis.command("SCRIPT FLUSH").unwrap();
            assert!(!reader.will_block());
            let got = flat_read(reader.read_batch(3, ms).await.unwrap());
            let lane = |n: usize| lanes[n].as_str();
            assert_eq!(
                got,
                vec![
                    d(lane(0), "1-1", Some("high1")),
                    d(lane(0), "1-2", Some("high2")),
                    d(lane(1), "1-1", Some("low1")),
                ]
            );
            // Acknowledged entries are deleted: once the urgent lane is empty, the script
            // sees only one lane with work.
            redis.command(&format!("XDEL {hi} 1-1 1-2")).unwrap();
            let got = flat_read(reader.read_batch(3, ms).await.unwrap());
            // The entry without a `data` field comes without a payload.
            assert_eq!(got, vec![d(lane(1), "1-2", None)]);
            assert_eq!(reader.busy_lanes, Some(1));
            // So the next read is the plain one, with the lane lengths alongside.
            redis.command(&format!("XADD {lo} 1-3 data low3")).unwrap();
            let got = flat_read(reader.read_batch(3, ms).await.unwrap());
            assert_eq!(got, vec![d(lane(1), "1-3", Some("low3"))]);
            assert_eq!(reader.busy_lanes, Some(1));
            // Nothing left: empty, then the blocking read times out empty (a nil reply).
            assert!(reader
                .read_batch(3, ms)
                .await
                .unwrap()
                .deliveries
                .is_empty());
            assert!(reader.will_block());
            let batch = reader.read_batch(3, ms).await.unwrap();
            assert!(batch.deliveries.is_empty() && !batch.cancels_active);
            // The blocking read takes what comes, and says a cancel flag exists.
            redis.command(&format!("XADD {lo} 2-1 data again")).unwrap();
            redis
                .command(&format!("SET {} 1", keys.cancel_flag(&queue)))
                .unwrap();
            let batch = reader.read_batch(3, ms).await.unwrap();
            assert!(batch.cancels_active);
            assert_eq!(
                flat(batch.deliveries),
                vec![d(lane(1), "2-1", Some("again"))]
            );

            // The group gone: the script's read fails with the server's error, as the
            // script invocation did.
            redis.command(&format!("DEL {lo} {hi}")).unwrap();
            let e = reader.read_batch(3, ms).await.unwrap_err();
            let failure = e.redis_failure().expect("a Redis failure");
            assert_eq!(failure.code.as_deref(), Some("NOGROUP"), "{e}");
            assert!(failure.message.contains("@user_script"), "{e}");
            // A one-lane reader always reads blocking: the pipeline's error, as redis-rs
            // made it.
            let mut single = broker.consumer("c").reader(&lanes[1..]).await.unwrap();
            redis.command(&format!("DEL {lo}")).unwrap();
            let e = single.read_batch(3, ms).await.unwrap_err();
            let failure = e.redis_failure().expect("a Redis failure");
            assert_eq!(failure.code.as_deref(), Some("NOGROUP"), "{e}");
            assert!(failure.message.starts_with("Pipeline failure"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_failed_pipeline_command_fails_as_redis_rs_says() {
        let mut pipe = redis::pipe();
        pipe.cmd("XREADGROUP").arg("x").cmd("EXISTS").arg("y");
        let replies = vec![server_error("NOGROUP No such key"), Value::Int(0)];
        let ours = pipeline_error(&pipe, replies.clone()).await;
        // A pipeline error has no `code()` of its own: kiq reads it from the server errors.
        assert_eq!(ours.clone().into_server_errors().unwrap()[0].0, 0);
        assert!(ours.to_string().starts_with("Pipeline failure"), "{ours}");
        // kiq's reading of it, as for the error `Pipeline::query_async` returned.
        let failure = crate::error::RedisFailure::from_redis(&ours);
        assert_eq!(failure.code.as_deref(), Some("NOGROUP"));
        assert_eq!(failure.kind, crate::error::RedisErrorKind::Refused);
        // And the replay sends nothing: a command is refused.
        let mut replay = Replay(Vec::new());
        assert!(replay
            .req_packed_command(&redis::cmd("PING"))
            .await
            .is_err());
    }
}
