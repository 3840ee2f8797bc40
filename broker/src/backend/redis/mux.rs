//! kiq's own multiplexed connection: the shared command connections of a broker on one server
//! (or the primary the Sentinels name), over kiq's RESP2 connection
//! ([`RespConnection`](super::resp::RespConnection)) split in two.
//!
//! Every request of every caller goes on one socket, in the order the callers packed them:
//! a caller packs its commands into the connection's output buffer and queues its reply slot,
//! both under one lock, so that bytes and slots keep the same order. A writer task writes what
//! has gathered in one `write`, however many callers packed it; a reader task parses the
//! replies as they come ([`ReplyParser`]) and hands each caller its own.
//!
//! Why by hand (issue #18, item 1): with redis-rs's multiplexed connection, 64 tasks each
//! awaiting `.kiq()` reached 59–75 % of the same commands sent raw (`kiq-bench
//! --dispatch-only`). A profile of that phase
//! showed a dispatch's client time going to redis-rs's request path: boxing, its channel to
//! the connection's driver task, a timer per request, `combine`'s reply parser, and composing
//! the replies (see docs/performance.md, "Dispatch on kiq's own multiplexed connection").
//! Here a request is packed straight into the shared buffer (no copy of its own), and replies
//! are parsed by kiq's parser.
//!
//! Failure: an I/O error, a reply that does not parse, a reply nobody asked for, or the end of
//! the connection's tasks (their runtime shut down) fails the connection: every request waiting
//! on it fails with an I/O error, so do later ones, and [`MuxConnection::has_failed`] says so
//! (the pool then makes another). An error reply from Redis is a reply like any other. A
//! request with no reply within the command timeout fails alone, as on redis-rs's connections
//! (the pool then replaces the connection, which ends once its other requests are answered),
//! and so does a caller that stops waiting: their replies are read and dropped. Callers wait
//! before packing while 16 MiB are waiting to be written (Redis not keeping up), instead of
//! growing the buffer without end (with the batch being written, that holds at most about
//! twice as much, plus one request larger than the limit).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisError, RedisFuture, Value};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::resp::{pipeline_replies, protocol, ReadHalf, ReplyParser, RespConnection, WriteHalf};

/// An output buffer that grew past this for a large request is given back once written.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Callers wait for the writer before packing more once this much is waiting to be written
/// (a request larger than this still goes, alone).
const OUT_LIMIT: usize = 16 * 1024 * 1024;

/// kiq's own multiplexed connection (see the module's documentation). Clones share it.
#[derive(Clone)]
pub(crate) struct MuxConnection {
    shared: Arc<Shared>,
    /// Stops the reader and writer tasks once the last clone is dropped.
    _stop: Arc<DropGuard>,
    db: i64,
    timeout: Duration,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer when a request is packed while it is idle.
    wake_writer: Notify,
    /// Wakes callers waiting for room in the output buffer.
    room: Notify,
    /// Set once the connection failed (read without the lock).
    failed: AtomicBool,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Requests packed and not yet taken by the writer.
    out: Vec<u8>,
    /// The callers waiting for replies, in the order their requests were packed.
    waiting: VecDeque<Waiter>,
    /// The writer was woken, or is writing: a caller need not wake it.
    writing: bool,
    /// Why the connection failed, once it has.
    failure: Option<Failure>,
}

struct Waiter {
    replies: usize,
    reply: oneshot::Sender<Result<Vec<Value>, RedisError>>,
}

/// Why a connection failed, for every request it fails: an I/O error of this kind (a reply
/// that does not parse is `InvalidData`), so that every caller sees a broken connection.
#[derive(Clone, Debug)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn io(e: &io::Error) -> Self {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    fn bad_reply(what: &str) -> Self {
        Failure {
            kind: io::ErrorKind::InvalidData,
            message: format!("bad reply from Redis: {what}"),
        }
    }

    fn error(&self) -> RedisError {
        io::Error::new(self.kind, self.message.clone()).into()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while packing leaves the buffer as it was (see `send`): a poisoned lock still
    // holds consistent state.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl MuxConnection {
    /// Takes over `conn` (connected and logged in) and starts its reader and writer tasks on
    /// the current runtime. A request with no reply within `timeout` fails with a timeout.
    pub(crate) fn start(conn: RespConnection, timeout: Duration) -> Self {
        let (read, write, parser, db) = conn.into_parts();
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake_writer: Notify::new(),
            room: Notify::new(),
            failed: AtomicBool::new(false),
            stop: stop.clone(),
        });
        // The guards are the tasks' arguments, so that a task dropped before it first ran
        // fails the connection too.
        tokio::spawn(read_replies(
            shared.clone(),
            FailOnDrop(shared.clone()),
            read,
            parser,
        ));
        tokio::spawn(write_requests(
            shared.clone(),
            FailOnDrop(shared.clone()),
            write,
        ));
        MuxConnection {
            shared,
            _stop: Arc::new(stop.drop_guard()),
            db,
            timeout,
        }
    }

    /// Whether the connection failed (every request on it fails).
    pub(crate) fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Packs a request of `replies` replies with `pack` and waits for them, within the
    /// connection's timeout. A request that times out fails alone (its reply, should it come,
    /// is dropped); the pool then replaces the connection, as it does after any timeout.
    async fn request(
        &self,
        replies: usize,
        pack: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<Value>, RedisError> {
        if replies == 0 {
            return Ok(Vec::new());
        }
        match tokio::time::timeout(self.timeout, self.send(replies, pack)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply within {} ms", self.timeout.as_millis()),
            )
            .into()),
        }
    }

    async fn send(
        &self,
        replies: usize,
        pack: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<Value>, RedisError> {
        let mut pack = Some(pack);
        let (rx, wake) = loop {
            let room = {
                let mut state = lock(&self.shared.state);
                if let Some(f) = &state.failure {
                    return Err(f.error());
                }
                if state.out.len() < OUT_LIMIT {
                    if let Some(pack) = pack.take() {
                        // Packed whole or not at all: a panic halfway must not leave part of
                        // a request in the buffer, which would put every later reply out of
                        // step.
                        let mark = state.out.len();
                        let packed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            pack(&mut state.out)
                        }));
                        if let Err(panic) = packed {
                            state.out.truncate(mark);
                            drop(state);
                            std::panic::resume_unwind(panic);
                        }
                    }
                    let (tx, rx) = oneshot::channel();
                    state.waiting.push_back(Waiter { replies, reply: tx });
                    break (rx, !std::mem::replace(&mut state.writing, true));
                }
                // Redis is not keeping up (or not reading): wait for the writer to take what
                // has gathered rather than let the buffer grow without end. (Registered before
                // the lock is let go, so that the writer's wake-up is not missed.)
                let mut room = Box::pin(self.shared.room.notified());
                room.as_mut().enable();
                room
            };
            room.await;
        };
        if wake {
            self.shared.wake_writer.notify_one();
        }
        match rx.await {
            Ok(result) => result,
            // The connection's tasks ended without answering: it failed (or is being dropped).
            Err(_) => Err(lock(&self.shared.state)
                .failure
                .as_ref()
                .map(Failure::error)
                .unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::ConnectionAborted, "the connection closed").into()
                })),
        }
    }
}

impl Shared {
    /// Fails the connection (once): every waiting request gets `failure`'s error, later ones
    /// too, and the tasks stop (closing the socket).
    fn fail(&self, failure: Failure) {
        let waiting = {
            let mut state = lock(&self.state);
            if state.failure.is_some() {
                return;
            }
            state.failure = Some(failure.clone());
            // Under the lock: a caller that saw the failure finds `has_failed` set.
            self.failed.store(true, Ordering::Relaxed);
            state.out = Vec::new();
            std::mem::take(&mut state.waiting)
        };
        self.room.notify_waiters();
        for w in waiting {
            let _ = w.reply.send(Err(failure.error()));
        }
        self.stop.cancel();
    }
}

/// Fails the connection when a task of it ends, whatever the reason (its runtime shut down,
/// say): requests must not wait on a connection nobody reads or writes. (After a failure or
/// once every clone is dropped, it changes nothing.)
struct FailOnDrop(Arc<Shared>);

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        self.0.fail(Failure {
            kind: io::ErrorKind::ConnectionAborted,
            message: "the connection's tasks stopped".to_string(),
        });
    }
}

/// The writer task: writes whatever requests have gathered, one `write` for all of them.
async fn write_requests(shared: Arc<Shared>, _failed: FailOnDrop, mut socket: WriteHalf) {
    let mut buf = Vec::new();
    loop {
        {
            let mut state = lock(&shared.state);
            if state.failure.is_some() {
                return;
            }
            if state.out.is_empty() {
                state.writing = false;
            } else {
                std::mem::swap(&mut state.out, &mut buf);
            }
        }
        if buf.len() >= OUT_LIMIT {
            shared.room.notify_waiters();
        }
        if buf.is_empty() {
            tokio::select! {
                _ = shared.wake_writer.notified() => {}
                _ = shared.stop.cancelled() => return,
            }
            // Let the tasks that are ready to run pack their requests first: they then go
            // out in one write, and Redis reads them in one read. (Woken by the first
            // request, the writer would otherwise run right after its caller, and write
            // requests one by one.)
            tokio::task::yield_now().await;
            continue;
        }
        let written = tokio::select! {
            r = socket.write_all(&buf) => r,
            _ = shared.stop.cancelled() => return,
        };
        if let Err(e) = written {
            shared.fail(Failure::io(&e));
            return;
        }
        buf.clear();
        if buf.capacity() > KEEP_CAPACITY {
            buf = Vec::new();
        }
    }
}

/// The reader task: parses replies as they come and hands each waiting caller its own.
async fn read_replies(
    shared: Arc<Shared>,
    _failed: FailOnDrop,
    mut socket: ReadHalf,
    mut parser: ReplyParser,
) {
    // The caller whose replies are being gathered, with those read so far.
    let mut current: Option<(Waiter, Vec<Value>)> = None;
    let failure = loop {
        match parser.parse() {
            Ok(Some(value)) => {
                let (waiter, mut got) = match current.take() {
                    Some(c) => c,
                    None => match lock(&shared.state).waiting.pop_front() {
                        Some(w) => {
                            let got = Vec::with_capacity(w.replies);
                            (w, got)
                        }
                        None => break Failure::bad_reply("a reply nobody asked for"),
                    },
                };
                got.push(value);
                if got.len() == waiter.replies {
                    // The caller may have stopped waiting: its reply is dropped.
                    let _ = waiter.reply.send(Ok(got));
                } else {
                    current = Some((waiter, got));
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                break Failure {
                    kind: io::ErrorKind::InvalidData,
                    message: e.to_string(),
                }
            }
        }
        let read = tokio::select! {
            r = socket.read_buf(parser.room()) => r,
            _ = shared.stop.cancelled() => return,
        };
        match read {
            Ok(0) => {
                break Failure {
                    kind: io::ErrorKind::UnexpectedEof,
                    message: "Redis closed the connection".to_string(),
                }
            }
            Ok(_) => {}
            Err(e) => break Failure::io(&e),
        }
    };
    if let Some((waiter, _)) = current {
        let _ = waiter.reply.send(Err(failure.error()));
    }
    shared.fail(failure);
}

/// `MULTI` and `EXEC`, packed.
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

impl ConnectionLike for MuxConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut replies = self.request(1, |out| cmd.write_packed_command(out)).await?;
            replies.pop().ok_or_else(|| protocol("no reply"))
        })
    }

    /// As redis-rs's connections do: the pipeline's replies from `offset` on, `count` of
    /// them (a transaction's are `MULTI`'s, one per command, then `EXEC`'s).
    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let atomic = pipe.is_transaction();
            let total = pipe.len() + if atomic { 2 } else { 0 };
            let replies = self
                .request(total, |out| {
                    if atomic {
                        out.extend_from_slice(MULTI);
                    }
                    for cmd in pipe.cmd_iter() {
                        cmd.write_packed_command(out);
                    }
                    if atomic {
                        out.extend_from_slice(EXEC);
                    }
                })
                .await?;
            // A transaction Redis refused (`EXECABORT`: a command of it was refused when
            // queued) fails as an error, as it does on redis-rs's connections.
            if atomic {
                if let Some(Value::ServerError(e)) = replies.last() {
                    return Err(e.clone().into());
                }
            }
            pipeline_replies(replies, offset, count)
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::super::resp::tests::signal;
    use super::*;

    async fn start(url: &str, timeout: Duration) -> MuxConnection {
        let client = redis::Client::open(url).unwrap();
        let conn = RespConnection::connect(client.get_connection_info())
            .await
            .unwrap()
            .expect("not TLS");
        MuxConnection::start(conn, timeout)
    }

    fn cmd(line: &str) -> redis::Cmd {
        let mut cmd = redis::Cmd::new();
        for word in line.split(' ') {
            cmd.arg(word);
        }
        cmd
    }

    async fn query(conn: &MuxConnection, line: &str) -> Result<Value, RedisError> {
        conn.clone().req_packed_command(&cmd(line)).await
    }

    /// How many clients the server has.
    fn clients(redis: &kiq_testkit::RedisServer) -> usize {
        redis.command("CLIENT LIST").unwrap().lines().count()
    }

    /// 64 tasks send single commands, pipelines and transactions at once over clones of one
    /// connection: each gets its own replies, all over one socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_socket_and_each_gets_its_replies() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let before = clients(&redis);
        let conn = start(&redis.url(), Duration::from_secs(10)).await;
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let mut conn = conn.clone();
                tokio::spawn(async move {
                    for round in 0..50 {
                        let n: i64 = cmd(&format!("INCR n{t}"))
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        assert_eq!(n, round + 1);
                        let (ok, got): (String, String) = redis::pipe()
                            .cmd("SET")
                            .arg(format!("k{t}"))
                            .arg(format!("{t}-{round}"))
                            .cmd("GET")
                            .arg(format!("k{t}"))
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        assert_eq!((ok.as_str(), got), ("OK", format!("{t}-{round}")));
                        let (m, echo): (i64, String) = redis::pipe()
                            .atomic()
                            .cmd("INCR")
                            .arg(format!("m{t}"))
                            .cmd("ECHO")
                            .arg(format!("{t}/{round}"))
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        assert_eq!((m, echo), (round + 1, format!("{t}/{round}")));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(clients(&redis), before + 1, "one socket for all of them");
        assert!(!conn.has_failed());
    }

    /// An error reply is a reply: the caller gets it, and the connection goes on. A
    /// transaction Redis refused is an error.
    #[tokio::test]
    async fn error_replies_leave_the_connection_in_step() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let conn = start(&redis.url(), Duration::from_secs(10)).await;
        let e = query(&conn, "NOSUCHCOMMAND").await.unwrap();
        assert!(matches!(e, Value::ServerError(_)), "{e:?}");
        let mut c = conn.clone();
        let e = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("a")
            .arg("1")
            .cmd("INCR") // wrong arity: the transaction is aborted
            .query_async::<()>(&mut c)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("EXECABORT"), "{e}");
        assert_eq!(query(&conn, "EXISTS a").await.unwrap(), Value::Int(0));
        assert_eq!(
            query(&conn, "PING").await.unwrap(),
            Value::SimpleString("PONG".into())
        );
        assert_eq!(conn.get_db(), 0);
    }

    /// A caller that stops waiting leaves its reply to be dropped; the next caller gets its
    /// own.
    #[tokio::test]
    async fn a_caller_that_stops_waiting_leaves_the_others_in_step() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let conn = start(&redis.url(), Duration::from_secs(10)).await;
        let cut =
            tokio::time::timeout(Duration::from_millis(50), query(&conn, "BLPOP nothing 0.3"));
        assert!(cut.await.is_err(), "BLPOP answered before its timeout");
        assert_eq!(
            query(&conn, "ECHO after").await.unwrap(),
            Value::BulkString(b"after".to_vec())
        );
        assert!(!conn.has_failed());
    }

    /// A request with no reply within the timeout fails alone: the connection stays in step,
    /// and later requests get their own replies.
    #[tokio::test]
    async fn a_request_with_no_reply_in_time_fails_alone() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let conn = start(&redis.url(), Duration::from_millis(300)).await;
        let e = query(&conn, "BLPOP nothing 0.45").await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert_eq!(
            query(&conn, "ECHO after").await.unwrap(),
            Value::BulkString(b"after".to_vec())
        );
        // A stopped server: every request times out; once it goes on, the late replies are
        // dropped and the next request gets its own.
        signal(&redis, "-STOP");
        let (a, b) = tokio::join!(query(&conn, "PING"), query(&conn, "ECHO x"));
        signal(&redis, "-CONT");
        for e in [a.unwrap_err(), b.unwrap_err()] {
            assert!(e.is_timeout(), "{e}");
        }
        assert!(!conn.has_failed());
        assert_eq!(
            query(&conn, "ECHO again").await.unwrap(),
            Value::BulkString(b"again".to_vec())
        );
    }

    /// While Redis does not read, callers stop packing once 16 MiB wait to be written, and go
    /// on when it reads again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_wait_for_room_while_redis_does_not_read() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let conn = start(&redis.url(), Duration::from_secs(30)).await;
        signal(&redis, "-STOP");
        const BIG: usize = 8 << 20;
        let senders: Vec<_> = (0..10)
            .map(|i| {
                let mut conn = conn.clone();
                tokio::spawn(async move {
                    redis::cmd("SET")
                        .arg(format!("big{i}"))
                        .arg(vec![b'x'; BIG])
                        .query_async::<()>(&mut conn)
                        .await
                })
            })
            .collect();
        // Bounded: until some callers wait for room (fewer than 10 requests packed).
        let mut most = 0;
        let mut waited = false;
        for _ in 0..300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let state = lock(&conn.shared.state);
            most = most.max(state.out.len());
            if state.out.len() >= OUT_LIMIT && state.waiting.len() < 10 {
                waited = true;
                break;
            }
        }
        signal(&redis, "-CONT");
        assert!(waited, "no caller waited for room");
        assert!(most < OUT_LIMIT + BIG + 1024, "{most} bytes gathered");
        for s in senders {
            s.await.unwrap().unwrap();
        }
        assert_eq!(
            query(&conn, "STRLEN big9").await.unwrap(),
            Value::Int(BIG as i64)
        );
    }

    /// A panic while a request is packed leaves nothing of it in the buffer.
    #[tokio::test]
    async fn a_panic_while_packing_leaves_the_connection_in_step() {
        use futures_util::FutureExt;
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let conn = start(&redis.url(), Duration::from_secs(10)).await;
        let packed = std::panic::AssertUnwindSafe(conn.request(1, |out| {
            out.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n");
            panic!("halfway");
        }))
        .catch_unwind()
        .await;
        assert!(packed.is_err());
        assert_eq!(
            query(&conn, "ECHO whole").await.unwrap(),
            Value::BulkString(b"whole".to_vec())
        );
    }

    /// A server that goes away fails the connection at once: requests waiting, and later ones.
    #[tokio::test]
    async fn a_dead_server_fails_the_connection() {
        let mut redis = kiq_testkit::RedisServer::start().unwrap();
        let conn = start(&redis.url(), Duration::from_secs(10)).await;
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { query(&conn, "BLPOP nothing 5").await }
        });
        // Bounded wait for the BLPOP to be in: the server lists it as blocked.
        for _ in 0..200 {
            if redis
                .command("INFO clients")
                .unwrap()
                .contains("blocked_clients:1")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        redis.kill();
        let e = waiting.await.unwrap().unwrap_err();
        assert!(e.is_io_error(), "{e}");
        assert!(conn.has_failed());
        let e = query(&conn, "PING").await.unwrap_err();
        assert!(e.is_io_error(), "{e}");
    }

    /// A connection whose runtime shut down fails its requests at once, those waiting on
    /// another runtime and later ones, instead of leaving them to time out.
    #[test]
    fn a_connection_whose_runtime_ended_fails_at_once() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let first = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let conn = first.block_on(start(&redis.url(), Duration::from_secs(10)));
        let waiting = std::thread::spawn({
            let conn = conn.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let t = std::time::Instant::now();
                let r = rt.block_on(query(&conn, "BLPOP nothing 5"));
                (r, t.elapsed())
            }
        });
        // Bounded wait for the BLPOP to be in: the server lists it as blocked.
        for _ in 0..500 {
            if redis
                .command("INFO clients")
                .unwrap()
                .contains("blocked_clients:1")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(first);
        let (r, took) = waiting.join().unwrap();
        let e = r.unwrap_err();
        assert!(e.is_io_error(), "{e}");
        assert!(took < Duration::from_secs(4), "failed at once: {took:?}");
        assert!(conn.has_failed());
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = second.block_on(query(&conn, "PING")).unwrap_err();
        assert!(e.is_io_error(), "{e}");
    }
}
