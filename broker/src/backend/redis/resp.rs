//! kiq's own Redis connection: RESP2 over TCP or a Unix socket, one request at a time, with a
//! reply parser written for it. Stream readers read on one each
//! ([`Pool::reader_connection`](super::connection::Pool::reader_connection)), the completer
//! writes its batches on them
//! ([`Pool::write_batch`](super::connection::Pool::write_batch)), and the shared command
//! connections are these split in two ([`MuxConnection`](super::mux::MuxConnection)).
//!
//! Why by hand (issue #18): redis-rs parses every reply with `combine`. On a worker draining
//! no-op tasks that parser took 16 % of the CPU, about 1 µs per task; on its own,
//! `redis::parse_redis_value` spends 733–741 ns on each entry of an `XREADGROUP` reply (two
//! throwaway benchmarks), and 186 ns
//! on the two small replies of each task's completion. The parser here reads the same replies
//! into the same `redis::Value`s in 304 ns per entry. The maintained alternative,
//! `redis-protocol` (fred's parser), decodes into frames of its own: 289 ns per entry, 447 ns
//! with the conversion into `Value`s that the rest of kiq reads (a throwaway benchmark of the
//! three on a 512-entry reply, release build). Over TLS, on a cluster, or when told to
//! (`--resp redis-rs`, `BrokerConfig::native_resp`), redis-rs's connections serve instead; so
//! they do for batches that wait for replicas (`replica_acks`).
//!
//! What it speaks: RESP2 only (no `HELLO`), whatever protocol the URL asks for; the replies
//! kiq reads hold the same data in either. `AUTH` and `SELECT` as redis-rs sends them. Replies
//! of the RESP2 types (`+ - : $ *`) become the `Value`s redis-rs makes of them (`+OK` is
//! `Value::Okay`; an error reply is parsed by redis-rs itself, so its kind and code are
//! redis-rs's); any other first byte is a protocol error, and so is nesting deeper than
//! redis-rs accepts. An I/O or parse error, or a request cut off while it was being written,
//! leaves the connection unusable (its requests fail; it is opened afresh); an error reply
//! from Redis does not. A caller that stops waiting
//! for a reply is fine: the reply is read and dropped before the next request.

use std::io;

use redis::aio::ConnectionLike;
use redis::{ConnectionAddr, ConnectionInfo, ParsingError, RedisError, RedisFuture, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much the read buffer grows by at least.
const READ_CHUNK: usize = 64 * 1024;
/// A buffer that grew past this for one large reply is given back once it is empty.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Longest line (a simple string, an error, a length) accepted before its `\r\n`.
const MAX_LINE: usize = 64 * 1024;
/// Most items allocated up front for an array; a longer one grows as its items come.
const MAX_ARRAY_RESERVE: usize = 4096;
/// Deepest nesting of arrays accepted (redis-rs's limit too): values are dropped and printed
/// recursively.
const MAX_DEPTH: usize = 100;

enum Socket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// kiq's own RESP2 connection (see the module's documentation).
pub(crate) struct RespConnection {
    socket: Socket,
    replies: ReplyParser,
    /// Replies still to come for the request sent last (its caller may have stopped waiting).
    owed: usize,
    /// Set when the connection is out of step with the server: a write was cut off, or a
    /// read or a parse failed. Every request then fails.
    broken: bool,
    /// The request being written.
    out: Vec<u8>,
    db: i64,
}

impl RespConnection {
    /// Connects to the server `info` names and logs in as redis-rs does (`AUTH`, again
    /// without the user name if the server predates ACLs, then `SELECT`), or `None` when it is
    /// reached over TLS (which stays with redis-rs). The caller bounds the time it takes.
    pub(crate) async fn connect(
        info: &ConnectionInfo,
    ) -> Result<Option<RespConnection>, RedisError> {
        let socket = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Socket::Tcp(stream)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                Socket::Unix(tokio::net::UnixStream::connect(path).await?)
            }
            _ => return Ok(None),
        };
        let settings = info.redis_settings();
        let mut conn = RespConnection {
            socket,
            replies: ReplyParser::default(),
            owed: 0,
            broken: false,
            out: Vec::new(),
            db: settings.db(),
        };
        if let Some(password) = settings.password() {
            let mut reply = Value::Nil;
            if let Some(user) = settings.username() {
                reply = conn.one(redis::cmd("AUTH").arg(user).arg(password)).await?;
            }
            let old_server = matches!(&reply, Value::ServerError(e)
                if e.details().is_some_and(|d| d.contains("wrong number of arguments for 'auth' command")));
            if settings.username().is_none() || old_server {
                reply = conn.one(redis::cmd("AUTH").arg(password)).await?;
            }
            match reply {
                Value::Okay => {}
                // As redis-rs reports it (kiq reads it as an authentication failure).
                Value::ServerError(_) => {
                    return Err((
                        redis::ErrorKind::AuthenticationFailed,
                        "Password authentication failed",
                    )
                        .into())
                }
                other => return Err(protocol(&format!("unexpected reply to AUTH: {other:?}"))),
            }
        }
        if settings.db() != 0 {
            match conn.one(redis::cmd("SELECT").arg(settings.db())).await? {
                Value::Okay => {}
                Value::ServerError(e) => return Err(e.into()),
                other => return Err(protocol(&format!("unexpected reply to SELECT: {other:?}"))),
            }
        }
        Ok(Some(conn))
    }

    /// The connection's socket split in two, its parser (with any bytes read past the login's
    /// replies) and its database, for [`MuxConnection`](super::mux::MuxConnection).
    pub(super) fn into_parts(self) -> (ReadHalf, WriteHalf, ReplyParser, i64) {
        let (read, write) = match self.socket {
            Socket::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            #[cfg(unix)]
            Socket::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        };
        (read, write, self.replies, self.db)
    }

    /// Whether the connection can take another request: it is in step with the server, and
    /// no reply is still to come.
    pub(crate) fn is_usable(&self) -> bool {
        !self.broken && self.owed == 0
    }

    /// Sends `cmd` and reads its reply (packed into the connection's own buffer, kept for
    /// the next command).
    async fn one(&mut self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        cmd.write_packed_command(&mut out);
        let replies = self.request(&out, 1).await;
        self.out = out;
        replies?.pop().ok_or_else(|| protocol("no reply"))
    }

    /// Writes `request` (`replies` commands, packed) and reads their replies.
    async fn request(&mut self, request: &[u8], replies: usize) -> Result<Vec<Value>, RedisError> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection fell out of step with Redis and must be opened again",
            )
            .into());
        }
        // The replies of a request whose caller stopped waiting.
        while self.owed > 0 {
            self.reply().await?;
            self.owed -= 1;
        }
        self.broken = true;
        self.socket.write_all(request).await?;
        self.broken = false;
        self.owed = replies;
        let mut out = Vec::with_capacity(replies);
        while self.owed > 0 {
            out.push(self.reply().await?);
            self.owed -= 1;
        }
        Ok(out)
    }

    /// The next whole reply, reading as much as it takes.
    async fn reply(&mut self) -> Result<Value, RedisError> {
        loop {
            match self.replies.parse() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
            if let Err(e) = self.fill().await {
                self.broken = true;
                return Err(e.into());
            }
        }
    }

    /// Reads more bytes into the parser's buffer.
    async fn fill(&mut self) -> io::Result<()> {
        let n = self.socket.read_buf(self.replies.room()).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Redis closed the connection",
            ));
        }
        Ok(())
    }
}

/// Replies parsed as their bytes come.
#[derive(Default)]
pub(super) struct ReplyParser {
    /// Bytes read: `buf[start..]` is not parsed yet.
    buf: Vec<u8>,
    start: usize,
    /// The arrays of the reply being parsed, outermost first, each with how many items it
    /// still lacks.
    open: Vec<(Vec<Value>, usize)>,
}

impl ReplyParser {
    /// The buffer, with the bytes already parsed dropped and room for more at its end.
    pub(super) fn room(&mut self) -> &mut Vec<u8> {
        if self.start == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf.shrink_to(READ_CHUNK);
            }
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Parses on from `start`: `Some` whole reply, or `None` when more bytes are needed (the
    /// arrays begun so far are kept in `open`).
    pub(super) fn parse(&mut self) -> Result<Option<Value>, RedisError> {
        loop {
            let Some((item, next)) = item(&self.buf, self.start)? else {
                return Ok(None);
            };
            self.start = next;
            let mut value = match item {
                Item::Array(len) => {
                    if self.open.len() >= MAX_DEPTH {
                        return Err(protocol("arrays nested too deep"));
                    }
                    self.open
                        .push((Vec::with_capacity(len.min(MAX_ARRAY_RESERVE)), len));
                    continue;
                }
                Item::Value(v) => v,
            };
            // Place the value in the innermost open array, closing every array it completes.
            loop {
                let Some((mut items, lacking)) = self.open.pop() else {
                    return Ok(Some(value));
                };
                items.push(value);
                if lacking > 1 {
                    self.open.push((items, lacking - 1));
                    break;
                }
                value = Value::Array(items);
            }
        }
    }
}

/// One parsed item: a whole value, or the start of an array of `len > 0` items.
enum Item {
    Value(Value),
    Array(usize),
}

/// The item at `buf[pos..]` and where the next one starts, or `None` when it is not all there.
fn item(buf: &[u8], pos: usize) -> Result<Option<(Item, usize)>, RedisError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(protocol(&format!(
            "unexpected reply type byte {:?}",
            char::from(kind)
        )));
    }
    let Some(eol) = line_end(buf, pos + 1)? else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    let value = match kind {
        b'+' if line == b"OK" => Value::Okay,
        b'+' => match std::str::from_utf8(line) {
            Ok(s) => Value::SimpleString(s.to_string()),
            Err(_) => return Err(protocol("a simple string is not UTF-8")),
        },
        // Rare: redis-rs reads it, so that its kind and code are what redis-rs would make.
        b'-' => redis::parse_redis_value(&buf[pos..next])?,
        b':' => Value::Int(number(line)?),
        b'$' => match number(line)? {
            -1 => Value::Nil,
            len if len >= 0 => {
                let len = usize::try_from(len).map_err(|_| protocol("huge length"))?;
                let end = next
                    .checked_add(len)
                    .ok_or_else(|| protocol("huge length"))?;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(protocol("a bulk string does not end where its length says"));
                }
                return Ok(Some((
                    Item::Value(Value::BulkString(buf[next..end].to_vec())),
                    end + 2,
                )));
            }
            _ => return Err(protocol("negative bulk string length")),
        },
        b'*' => match number(line)? {
            -1 => Value::Nil,
            0 => Value::Array(Vec::new()),
            len if len > 0 => {
                let len = usize::try_from(len).map_err(|_| protocol("huge length"))?;
                return Ok(Some((Item::Array(len), next)));
            }
            _ => return Err(protocol("negative array length")),
        },
        _ => unreachable!("the type byte was checked above"),
    };
    Ok(Some((Item::Value(value), next)))
}

/// Where the line starting at `from` ends (the index of its `\r`), or `None` when its
/// `\r\n` has not come yet.
fn line_end(buf: &[u8], from: usize) -> Result<Option<usize>, RedisError> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|b| *b == b'\n') {
        Some(0) => Err(protocol("a line without \\r")),
        Some(i) if rest[i - 1] == b'\r' => Ok(Some(from + i - 1)),
        Some(_) => Err(protocol("a line without \\r")),
        None if rest.len() > MAX_LINE => Err(protocol("a line longer than 64 KiB")),
        None => Ok(None),
    }
}

/// A decimal `i64`, as RESP writes lengths and integers.
fn number(line: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol("not a number where one was expected"))
}

/// A pipeline's replies from `offset` on, `count` of them, as `ConnectionLike` answers
/// `req_packed_commands`.
pub(super) fn pipeline_replies(
    mut replies: Vec<Value>,
    offset: usize,
    count: usize,
) -> Result<Vec<Value>, RedisError> {
    if offset + count > replies.len() {
        return Err(protocol("fewer replies than asked for"));
    }
    replies.truncate(offset + count);
    Ok(replies.split_off(offset))
}

pub(super) fn protocol(what: &str) -> RedisError {
    ParsingError::from(format!("bad reply from Redis: {what}")).into()
}

impl Socket {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.write_all(bytes).await,
            #[cfg(unix)]
            Socket::Unix(s) => s.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read_buf(buf).await,
            #[cfg(unix)]
            Socket::Unix(s) => s.read_buf(buf).await,
        }
    }
}

/// The reading half of a connection's socket.
pub(super) enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedReadHalf),
}

/// The writing half of a connection's socket.
pub(super) enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl ReadHalf {
    pub(super) async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(s) => s.read_buf(buf).await,
            #[cfg(unix)]
            ReadHalf::Unix(s) => s.read_buf(buf).await,
        }
    }
}

impl WriteHalf {
    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(s) => s.write_all(bytes).await,
            #[cfg(unix)]
            WriteHalf::Unix(s) => s.write_all(bytes).await,
        }
    }
}

impl ConnectionLike for RespConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.one(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if pipe.is_transaction() {
                return Err(
                    ParsingError::from("kiq's own connection does not run transactions").into(),
                );
            }
            let replies = self
                .request(&pipe.get_packed_pipeline(), pipe.len())
                .await?;
            pipeline_replies(replies, offset, count)
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    /// Every reply parsed whole, and fed one byte at a time: both as redis-rs parses it.
    #[test]
    fn replies_parse_as_redis_rs_parses_them() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"+PONG\r\n",
            b":0\r\n",
            b":-9223372036854775808\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"$6\r\na\r\nb\x00\xff\r\n",
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
            b"-NOGROUP No such key 'q' or consumer group 'kiq'\r\n",
            b"-ERR\r\n",
            b"*2\r\n:1\r\n*0\r\n",
            b"*3\r\n*1\r\n*1\r\n$1\r\nx\r\n:2\r\n-ERR inside\r\n",
            // An XREADGROUP reply: one stream, two entries, the second deleted (nil fields).
            b"*1\r\n*2\r\n$14\r\n{kiq:q}:stream\r\n*2\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$4\r\ndata\r\n\
              $5\r\nhello\r\n*2\r\n$3\r\n1-2\r\n*-1\r\n",
        ];
        for bytes in replies {
            let expected = redis::parse_redis_value(bytes).unwrap();
            let mut whole = ReplyParser::default();
            whole.room().extend_from_slice(bytes);
            assert_eq!(whole.parse().unwrap(), Some(expected.clone()), "{bytes:?}");
            assert_eq!(whole.start, bytes.len());

            let mut bytewise = ReplyParser::default();
            for (i, b) in bytes.iter().enumerate() {
                bytewise.room().push(*b);
                let got = bytewise.parse().unwrap();
                if i + 1 < bytes.len() {
                    assert_eq!(got, None, "{bytes:?} complete after {} bytes", i + 1);
                } else {
                    assert_eq!(got, Some(expected.clone()), "{bytes:?}");
                }
            }
        }
        // Replies back to back come out one at a time, in order.
        let mut p = ReplyParser::default();
        p.room().extend_from_slice(b"*1\r\n:1\r\n+OK\r\n$1\r\n");
        assert_eq!(p.parse().unwrap(), Some(Value::Array(vec![Value::Int(1)])));
        assert_eq!(p.parse().unwrap(), Some(Value::Okay));
        assert_eq!(p.parse().unwrap(), None);
        p.room().extend_from_slice(b"z\r\n");
        assert_eq!(p.parse().unwrap(), Some(Value::BulkString(b"z".to_vec())));
    }

    #[test]
    fn bad_replies_are_errors() {
        let bad: &[&[u8]] = &[
            b"%1\r\n",
            b"?\r\n",
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"*-2\r\n",
            b"+OK\n",
            b"\n",
            b"+caf\xe9\r\n",
        ];
        for bytes in bad {
            let mut p = ReplyParser::default();
            p.room().extend_from_slice(bytes);
            let e = p.parse().unwrap_err();
            assert_eq!(e.kind(), redis::ErrorKind::Parse, "{bytes:?}: {e}");
        }
        // A line that never ends is refused once it is longer than any Redis sends.
        let mut p = ReplyParser::default();
        p.room().push(b'+');
        p.room().extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        assert!(p.parse().is_err());
        // A huge length is waited for, not allocated.
        let mut p = ReplyParser::default();
        p.room().extend_from_slice(b"$9223372036854775000\r\n");
        assert_eq!(p.parse().unwrap(), None);
        let mut p = ReplyParser::default();
        p.room()
            .extend_from_slice(b"*9223372036854775807\r\n:1\r\n");
        assert_eq!(p.parse().unwrap(), None);
        assert!(p.open[0].0.capacity() <= MAX_ARRAY_RESERVE);
    }

    async fn connect(url: &str) -> RespConnection {
        let client = redis::Client::open(url).unwrap();
        RespConnection::connect(client.get_connection_info())
            .await
            .unwrap()
            .expect("not TLS")
    }

    async fn query(conn: &mut RespConnection, line: &str) -> Result<Value, RedisError> {
        let mut cmd = redis::Cmd::new();
        for word in line.split(' ') {
            cmd.arg(word);
        }
        conn.req_packed_command(&cmd).await
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to `redis`.
    pub(in crate::backend::redis) fn signal(redis: &kiq_testkit::RedisServer, sig: &str) {
        let pid = redis.pid().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        assert!(ok.unwrap().success());
    }

    /// What `CLIENT INFO` says of `conn`.
    async fn client_info(conn: &mut RespConnection) -> String {
        match query(conn, "CLIENT INFO").await.unwrap() {
            Value::BulkString(info) => String::from_utf8(info).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Logging in and choosing a database, on a private redis-server with an ACL user.
    #[tokio::test]
    async fn logs_in_and_selects_the_database() {
        let redis = kiq_testkit::RedisServer::start_with(kiq_testkit::RedisOptions {
            extra_args: [
                "--user",
                "kiq",
                "on",
                ">s3cret",
                "~*",
                "&*",
                "+@all",
                "--requirepass",
                "pw",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        })
        .unwrap();
        let port = redis.port();
        let mut conn = connect(&format!("redis://kiq:s3cret@127.0.0.1:{port}/3")).await;
        assert_eq!(conn.get_db(), 3);
        assert_eq!(query(&mut conn, "SET k v").await.unwrap(), Value::Okay);
        let who = query(&mut conn, "ACL WHOAMI").await.unwrap();
        assert_eq!(who, Value::BulkString(b"kiq".to_vec()));
        let info = client_info(&mut conn).await;
        assert!(
            info.contains(" db=3 ") && info.contains(" resp=2"),
            "{info}"
        );

        let client = redis::Client::open(format!("redis://kiq:wrong@127.0.0.1:{port}")).unwrap();
        let e = RespConnection::connect(client.get_connection_info())
            .await
            .err()
            .expect("a wrong password fails");
        assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");
        // A password alone logs in as the default user.
        let mut conn = connect(&format!("redis://:pw@127.0.0.1:{port}")).await;
        let who = query(&mut conn, "ACL WHOAMI").await.unwrap();
        assert_eq!(who, Value::BulkString(b"default".to_vec()));
        // The other forms are left to redis-rs.
        let tls = redis::Client::open(format!("rediss://127.0.0.1:{port}")).unwrap();
        let none = RespConnection::connect(tls.get_connection_info());
        assert!(none.await.unwrap().is_none());
    }

    /// Over a Unix socket too, whole and split in two (kiq's multiplexed connection).
    #[cfg(unix)]
    #[tokio::test]
    async fn connects_over_a_unix_socket() {
        let sock = std::env::temp_dir().join(format!("kiq-resp-{}.sock", std::process::id()));
        let redis = kiq_testkit::RedisServer::start_with(kiq_testkit::RedisOptions {
            extra_args: vec!["--unixsocket".into(), sock.display().to_string()],
            ..Default::default()
        })
        .unwrap();
        let mut conn = connect(&format!("redis+unix://{}?db=2", sock.display())).await;
        assert_eq!(query(&mut conn, "SET k v").await.unwrap(), Value::Okay);
        let info = client_info(&mut conn).await;
        assert!(
            info.contains(" db=2 ") && info.contains("flags=U"),
            "{info}"
        );
        // Split in two, as the shared connections use it: the same socket and database.
        let url = format!("redis+unix://{}?db=2", sock.display());
        let mut mux =
            super::super::mux::MuxConnection::start(connect(&url).await, Duration::from_secs(10));
        assert_eq!(mux.get_db(), 2);
        let got = mux.req_packed_command(redis::cmd("GET").arg("k")).await;
        assert_eq!(got.unwrap(), Value::BulkString(b"v".to_vec()));
        drop(redis);
        let _ = std::fs::remove_file(&sock);
    }

    /// A caller that stops waiting leaves its reply to be skipped; one that stops while its
    /// request is being written, or a server that goes away, fails every later request.
    #[tokio::test]
    async fn a_dropped_request_and_a_dead_server() {
        let mut redis = kiq_testkit::RedisServer::start().unwrap();
        let mut conn = connect(&redis.url()).await;
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            query(&mut conn, "BLPOP nothing 0.3"),
        );
        assert!(cut.await.is_err(), "BLPOP answered before its timeout");
        let mut pipe = redis::pipe();
        pipe.cmd("PING").cmd("ECHO").arg("x");
        let replies = conn.req_packed_commands(&pipe, 0, 2).await.unwrap();
        assert_eq!(
            replies,
            vec![
                Value::SimpleString("PONG".into()),
                Value::BulkString(b"x".to_vec())
            ]
        );
        let e = query(&mut conn, "NOSUCHCOMMAND").await.unwrap();
        assert!(matches!(e, Value::ServerError(_)), "{e:?}");
        assert_eq!(
            query(&mut conn, "PING").await.unwrap(),
            Value::SimpleString("PONG".into())
        );

        // A request cut off while it is being written (the server stopped, so a large one
        // fills the socket's buffers): the connection is out of step, and says so.
        signal(&redis, "-STOP");
        let mut big = redis::cmd("SET");
        big.arg("big").arg(vec![b'x'; 64 << 20]);
        let cut = tokio::time::timeout(Duration::from_millis(300), conn.req_packed_command(&big));
        assert!(
            cut.await.is_err(),
            "a 64 MiB write to a stopped server finished"
        );
        signal(&redis, "-CONT");
        assert!(!conn.is_usable());
        let e = query(&mut conn, "PING").await.unwrap_err();
        assert_eq!(e.kind(), redis::ErrorKind::Io, "{e}");
        let mut conn = connect(&redis.url()).await;
        assert_eq!(
            query(&mut conn, "PING").await.unwrap(),
            Value::SimpleString("PONG".into())
        );

        redis.kill();
        let e = query(&mut conn, "PING").await.unwrap_err();
        assert!(e.is_io_error(), "{e}");
        redis.restart().unwrap();
        let e = query(&mut conn, "PING").await.unwrap_err();
        assert!(e.is_io_error(), "{e}");
        let mut conn = connect(&redis.url()).await;
        assert_eq!(
            query(&mut conn, "PING").await.unwrap(),
            Value::SimpleString("PONG".into())
        );
    }
}
