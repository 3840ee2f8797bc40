//! Real Redis topologies for tests, started from `redis-server`: a Redis Cluster (masters, and
//! replicas where a test needs failover), and a primary + replica watched by three Sentinels.
//! [`TestRedis`] is whichever of single, cluster or Sentinel the `KIQ_TEST_TOPOLOGY`
//! environment variable names (default single), so one suite runs on all three.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, RedisOptions, RedisServer, StartError};

/// Which kind of deployment a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `redis-server`.
    Single,
    /// A 3-master Redis Cluster.
    Cluster,
    /// A primary and a replica under three Sentinels.
    Sentinel,
}

impl Topology {
    /// The topology `KIQ_TEST_TOPOLOGY` names (`single`, `cluster`, `sentinel`; default single).
    pub fn from_env() -> Self {
        match std::env::var("KIQ_TEST_TOPOLOGY").as_deref() {
            Ok("cluster") => Topology::Cluster,
            Ok("sentinel") => Topology::Sentinel,
            _ => Topology::Single,
        }
    }
}

/// Sends one command (inline syntax) to a port and returns the raw reply.
pub fn command_at(port: u16, line: &str) -> Result<String, StartError> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| StartError(format!("connect {port}: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(format!("{line}\r\n").as_bytes())
        .map_err(|e| StartError(format!("write: {e}")))?;
    // Read until the reply is complete: one read may return only part of a large one (an
    // HGETALL of 3,000 fields once came back cut, and the test counted the rest as lost).
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = s
            .read(&mut chunk)
            .map_err(|e| StartError(format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if resp_end(&buf, 0).is_some() {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Where the RESP2 value starting at `at` ends, if `buf` holds all of it.
fn resp_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after = line_end + 2;
    let header = std::str::from_utf8(buf.get(at + 1..line_end)?).ok()?;
    match buf.get(at)? {
        b'+' | b'-' | b':' => Some(after),
        b'$' => {
            let len: i64 = header.parse().ok()?;
            if len < 0 {
                return Some(after);
            }
            let end = after + len as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' => {
            let count: i64 = header.parse().ok()?;
            let mut pos = after;
            for _ in 0..count.max(0) {
                pos = resp_end(buf, pos)?;
            }
            Some(pos)
        }
        // Not RESP2: take what came.
        _ => Some(buf.len()),
    }
}

/// A Redis Cluster of private `redis-server` processes on free loopback ports.
#[derive(Debug)]
pub struct RedisCluster {
    /// Masters first, then replicas (as created; failovers change roles).
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each, joins them with
    /// `redis-cli --cluster create`, and waits until every node says the cluster is ok.
    pub fn start(masters: usize, replicas: usize) -> Result<Self, StartError> {
        Self::start_with(masters, replicas, RedisOptions::default())
    }

    /// Like [`RedisCluster::start`], with `options` for every node.
    pub fn start_with(
        masters: usize,
        replicas: usize,
        options: RedisOptions,
    ) -> Result<Self, StartError> {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let mut o = options.clone();
            o.extra_args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1500",
                ]
                .map(String::from),
            );
            nodes.push(RedisServer::start_with(o)?);
        }
        if masters < 3 {
            // redis-cli refuses clusters of fewer than three masters; join them by hand.
            if replicas > 0 {
                return Err(StartError(
                    "replicas need at least three masters here".into(),
                ));
            }
            for (i, n) in nodes.iter().enumerate() {
                let (from, to) = (i * 16384 / masters, (i + 1) * 16384 / masters - 1);
                n.command(&format!("CLUSTER ADDSLOTSRANGE {from} {to}"))?;
            }
            for n in &nodes[1..] {
                n.command(&format!("CLUSTER MEET 127.0.0.1 {}", nodes[0].port()))?;
            }
            let cluster = Self { nodes };
            cluster.wait_ok(Duration::from_secs(30))?;
            return Ok(cluster);
        }
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port()));
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StartError(format!("cannot run redis-cli ({e}); install redis-tools")))?;
        if !out.status.success() {
            return Err(StartError(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        let cluster = Self { nodes };
        cluster.wait_ok(Duration::from_secs(30))?;
        cluster.wait_replicas_synced(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok` and knows every node.
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                n.command("CLUSTER INFO")
                    .map(|i| i.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError("the cluster did not become ok".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running replica's link to its primary is up (synced).
    pub fn wait_replicas_synced(&self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            let synced = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                n.command("INFO replication")
                    .map(|i| i.contains("role:master") || i.contains("master_link_status:up"))
                    .unwrap_or(false)
            });
            if synced {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError("the cluster's replicas did not sync".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...` (every node as a seed).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes, masters first (as created).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, to kill or restart.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The port of the node that serves `key` now (found by following `MOVED`).
    pub fn port_for(&self, key: &str) -> Result<u16, StartError> {
        Ok(self.routed(&format!("EXISTS {key}"))?.0)
    }

    /// Runs `line` where its key lives (following `MOVED`, each hop runs it once: a node
    /// that redirects has not run it) and returns that node's port and reply.
    fn routed(&self, line: &str) -> Result<(u16, String), StartError> {
        let mut port = self.any_port()?;
        for _ in 0..5 {
            let reply = command_at(port, line)?;
            match moved_to(&reply) {
                Some(p) => port = p,
                None => return Ok((port, reply)),
            }
        }
        Err(StartError(format!("too many redirections for {line:?}")))
    }

    fn any_port(&self) -> Result<u16, StartError> {
        self.nodes
            .iter()
            .find(|n| n.pid().is_some())
            .map(|n| n.port())
            .ok_or_else(|| StartError("no cluster node is running".into()))
    }

    /// Sends one command (inline syntax) to the node that owns its key, following `MOVED`.
    pub fn command(&self, line: &str) -> Result<String, StartError> {
        Ok(self.routed(line)?.1)
    }

    /// The index (in [`RedisCluster::nodes`]) of the node serving `key` now.
    pub fn index_for(&self, key: &str) -> Result<usize, StartError> {
        let port = self.port_for(key)?;
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .ok_or_else(|| StartError(format!("no node on port {port}")))
    }

    /// Node `i`'s cluster id.
    pub fn node_id(&self, i: usize) -> Result<String, StartError> {
        let r = self.nodes[i].command("CLUSTER MYID")?;
        r.lines()
            .nth(1)
            .map(|l| l.trim().to_string())
            .ok_or_else(|| StartError(format!("CLUSTER MYID said {r:?}")))
    }

    /// `key`'s hash slot.
    pub fn keyslot(&self, key: &str) -> Result<u16, StartError> {
        let r = self.command(&format!("CLUSTER KEYSLOT {key}"))?;
        r.trim()
            .trim_start_matches(':')
            .parse()
            .map_err(|_| StartError(format!("CLUSTER KEYSLOT said {r:?}")))
    }

    /// Moves the slot of `key` to master `to` while clients keep using it: the slot is marked
    /// migrating/importing (clients are sent `ASK` for keys already moved), its keys are
    /// moved with `MIGRATE` in batches, then every master is told the new owner.
    pub fn migrate_slot_of(&self, key: &str, to: usize) -> Result<(), StartError> {
        let slot = self.keyslot(key)?;
        let from = self.index_for(key)?;
        if from == to {
            return Ok(());
        }
        let (from_id, to_id) = (self.node_id(from)?, self.node_id(to)?);
        let expect_ok = |r: String, what: &str| {
            if r.starts_with("+OK") || r.starts_with("+NOKEY") {
                Ok(())
            } else {
                Err(StartError(format!("{what}: {r:?}")))
            }
        };
        expect_ok(
            self.nodes[to].command(&format!("CLUSTER SETSLOT {slot} IMPORTING {from_id}"))?,
            "importing",
        )?;
        expect_ok(
            self.nodes[from].command(&format!("CLUSTER SETSLOT {slot} MIGRATING {to_id}"))?,
            "migrating",
        )?;
        loop {
            let keys = resp_strings(
                &self.nodes[from].command(&format!("CLUSTER GETKEYSINSLOT {slot} 50"))?,
            );
            if keys.is_empty() {
                break;
            }
            expect_ok(
                self.nodes[from].command(&format!(
                    "MIGRATE 127.0.0.1 {} \"\" 0 5000 REPLACE KEYS {}",
                    self.nodes[to].port(),
                    keys.join(" ")
                ))?,
                "migrate",
            )?;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].pid().is_some() {
                let _ = self.nodes[i].command(&format!("CLUSTER SETSLOT {slot} NODE {to_id}"));
            }
        }
        Ok(())
    }

    /// Sends one command to every running master, e.g. `INFO commandstats`.
    pub fn on_masters(&self, line: &str) -> Vec<(u16, String)> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .filter(|n| {
                n.command("ROLE")
                    .map(|r| r.contains("master"))
                    .unwrap_or(false)
            })
            .filter_map(|n| n.command(line).ok().map(|r| (n.port(), r)))
            .collect()
    }

    /// Kills every node (SIGKILL).
    pub fn kill(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Starts every node again; they find each other from their saved cluster config.
    pub fn restart(&mut self) -> Result<(), StartError> {
        for n in &mut self.nodes {
            n.restart()?;
        }
        self.wait_ok(Duration::from_secs(30))
    }
}

/// The bulk strings of a flat RESP array reply (keys hold no line breaks).
fn resp_strings(reply: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = reply.split("\r\n");
    while let Some(l) = lines.next() {
        if l.starts_with('$') && l != "$-1" {
            if let Some(v) = lines.next() {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// The port of a `-MOVED <slot> <host>:<port>` or `-ASK` reply.
fn moved_to(reply: &str) -> Option<u16> {
    let rest = reply
        .strip_prefix("-MOVED ")
        .or_else(|| reply.strip_prefix("-ASK "))?;
    rest.split_whitespace()
        .nth(1)?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// A Sentinel process.
#[derive(Debug)]
struct SentinelProcess {
    child: Option<Child>,
    port: u16,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A primary and a replica under three Sentinels (quorum 2, 1 s down-after), master name
/// `kiq`.
#[derive(Debug)]
pub struct RedisSentinels {
    /// The primary first, then the replica (as created; a failover swaps them).
    servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
    dir: std::path::PathBuf,
}

/// The master name the Sentinels of [`RedisSentinels`] monitor.
pub const SENTINEL_MASTER: &str = "kiq";

impl RedisSentinels {
    /// Starts the set and waits until the Sentinels see the replica.
    pub fn start() -> Result<Self, StartError> {
        Self::start_with(RedisOptions::default())
    }

    /// Like [`RedisSentinels::start`], with `options` for the primary and replica.
    pub fn start_with(options: RedisOptions) -> Result<Self, StartError> {
        let primary = RedisServer::start_with(options.clone())?;
        let mut o = options;
        o.extra_args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            primary.port().to_string(),
        ]);
        let replica = RedisServer::start_with(o)?;
        let dir = primary.dir().join("sentinels");
        std::fs::create_dir_all(&dir).map_err(|e| StartError(format!("sentinel dir: {e}")))?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port()?;
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {m} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {m} 1000\n\
                     sentinel failover-timeout {m} 4000\n\
                     sentinel parallel-syncs {m} 1\n",
                    dir = dir.display(),
                    m = SENTINEL_MASTER,
                    p = primary.port()
                ),
            )
            .map_err(|e| StartError(format!("sentinel conf: {e}")))?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| StartError(format!("cannot run redis-server --sentinel: {e}")))?;
            sentinels.push(SentinelProcess {
                child: Some(child),
                port,
            });
        }
        let set = Self {
            servers: vec![primary, replica],
            sentinels,
            dir,
        };
        // Ready when the replica has synced, and every Sentinel answers and knows it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !set.servers[1]
            .command("INFO replication")
            .is_ok_and(|i| i.contains("master_link_status:up"))
        {
            if Instant::now() > deadline {
                return Err(StartError("the replica did not sync".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = set.sentinels.iter().all(|s| {
                command_at(s.port, &format!("SENTINEL replicas {SENTINEL_MASTER}"))
                    .map(|r| r.contains("slave") || r.contains("replica"))
                    .unwrap_or(false)
            });
            if ready {
                return Ok(set);
            }
            if Instant::now() > deadline {
                return Err(StartError(format!(
                    "the Sentinels did not see the replica (dir {})",
                    set.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/kiq`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The port the Sentinels name as the primary now.
    pub fn primary_port(&self) -> Result<u16, StartError> {
        for s in &self.sentinels {
            let Ok(r) = command_at(
                s.port,
                &format!("SENTINEL get-master-addr-by-name {SENTINEL_MASTER}"),
            ) else {
                continue;
            };
            // *2 $9 127.0.0.1 $<n> <port>
            if let Some(port) = r.lines().nth(4).and_then(|p| p.trim().parse().ok()) {
                return Ok(port);
            }
        }
        Err(StartError("no Sentinel names a primary".into()))
    }

    /// The primary every Sentinel names, if they all name the same one.
    pub fn agreed_primary_port(&self) -> Result<u16, StartError> {
        let mut named = None;
        for s in &self.sentinels {
            let r = command_at(
                s.port,
                &format!("SENTINEL get-master-addr-by-name {SENTINEL_MASTER}"),
            )?;
            let port: u16 = r
                .lines()
                .nth(4)
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| StartError("a Sentinel names no primary".into()))?;
            match named {
                None => named = Some(port),
                Some(p) if p == port => {}
                Some(_) => return Err(StartError("the Sentinels disagree".into())),
            }
        }
        named.ok_or_else(|| StartError("no Sentinel".into()))
    }

    /// The server the Sentinels name as the primary now.
    pub fn primary_mut(&mut self) -> Result<&mut RedisServer, StartError> {
        let port = self.primary_port()?;
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .ok_or_else(|| StartError("the primary is not one of ours".into()))
    }

    /// The servers (primary and replica, as created).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Sends one command to the primary.
    pub fn command(&self, line: &str) -> Result<String, StartError> {
        command_at(self.primary_port()?, line)
    }

    /// Starts again the servers that were killed (an old primary comes back, and the
    /// Sentinels make it a replica of the new one), and waits until the replica has synced.
    pub fn restart_stopped(&mut self) -> Result<(), StartError> {
        // Not before the server the Sentinels name has been made a primary: a promoted replica
        // still replicating from the old address would resync from the old primary restarting
        // (empty, or with its old data) and drop what it holds.
        // Every Sentinel must name it: one still naming the old primary (the others' new
        // configuration reaches it with their next hello, about every 2 s) could reconfigure the
        // promoted server as a replica of the old one coming back empty (CI saw 300 of 301
        // tasks gone with only the first Sentinel checked).
        let deadline = Instant::now() + Duration::from_secs(30);
        let primary = loop {
            if let Ok(p) = self.agreed_primary_port() {
                if command_at(p, "INFO replication").is_ok_and(|i| i.contains("role:master")) {
                    break p;
                }
            }
            if Instant::now() > deadline {
                return Err(StartError("the named primary did not become one".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Back as the new primary's replica from its first moment: restarted as a primary (with
        // no persistence, empty), a Sentinel could still point the promoted server at it, and the
        // resync would drop everything (CI saw 300 of 301 tasks gone even with every Sentinel
        // agreeing first).
        for s in &mut self.servers {
            if s.pid().is_none() {
                s.restart_as_replica_of(primary)?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let primary = self.primary_port()?;
            let synced = self
                .servers
                .iter()
                .filter(|s| s.port() != primary)
                .all(|s| {
                    s.command("INFO replication").is_ok_and(|i| {
                        i.contains("master_link_status:up") && i.contains(&format!(":{primary}"))
                            || i.contains(&format!("master_port:{primary}"))
                                && i.contains("master_link_status:up")
                    })
                });
            if synced {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError(
                    "the old primary did not sync as a replica".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the primary and the replica (the Sentinels stay).
    pub fn kill(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
    }

    /// Starts the primary and the replica again.
    pub fn restart(&mut self) -> Result<(), StartError> {
        for s in &mut self.servers {
            s.restart()?;
        }
        Ok(())
    }
}

/// The Redis a parametrised test runs on: see [`Topology::from_env`].
#[derive(Debug)]
pub enum TestRedis {
    /// One server.
    Single(RedisServer),
    /// A 3-master cluster.
    Cluster(RedisCluster),
    /// A primary + replica under three Sentinels.
    Sentinel(RedisSentinels),
}

impl TestRedis {
    /// Starts the topology `KIQ_TEST_TOPOLOGY` names.
    pub fn start() -> Result<Self, StartError> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts the topology `KIQ_TEST_TOPOLOGY` names, with `options` for every data node.
    pub fn start_with(options: RedisOptions) -> Result<Self, StartError> {
        Ok(match Topology::from_env() {
            Topology::Single => TestRedis::Single(RedisServer::start_with(options)?),
            Topology::Cluster => TestRedis::Cluster(RedisCluster::start_with(3, 0, options)?),
            Topology::Sentinel => TestRedis::Sentinel(RedisSentinels::start_with(options)?),
        })
    }

    /// Which topology this is.
    pub fn topology(&self) -> Topology {
        match self {
            TestRedis::Single(_) => Topology::Single,
            TestRedis::Cluster(_) => Topology::Cluster,
            TestRedis::Sentinel(_) => Topology::Sentinel,
        }
    }

    /// The URL kiq connects with.
    pub fn url(&self) -> String {
        match self {
            TestRedis::Single(r) => r.url(),
            TestRedis::Cluster(c) => c.url(),
            TestRedis::Sentinel(s) => s.url(),
        }
    }

    /// Sends one command (inline syntax) where its key lives, for assertions in tests.
    pub fn command(&self, line: &str) -> Result<String, StartError> {
        match self {
            TestRedis::Single(r) => r.command(line),
            TestRedis::Cluster(c) => c.command(line),
            TestRedis::Sentinel(s) => s.command(line),
        }
    }

    /// Kills every data node (SIGKILL).
    pub fn kill(&mut self) {
        match self {
            TestRedis::Single(r) => r.kill(),
            TestRedis::Cluster(c) => c.kill(),
            TestRedis::Sentinel(s) => s.kill(),
        }
    }

    /// Starts every data node again.
    pub fn restart(&mut self) -> Result<(), StartError> {
        match self {
            TestRedis::Single(r) => r.restart(),
            TestRedis::Cluster(c) => c.restart(),
            TestRedis::Sentinel(s) => s.restart(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_replies_name_the_port() {
        assert_eq!(moved_to("-MOVED 3999 127.0.0.1:6381\r\n"), Some(6381));
        assert_eq!(moved_to("-ASK 3999 127.0.0.1:7002\r\n"), Some(7002));
        assert_eq!(moved_to("+OK\r\n"), None);
    }

    #[test]
    fn resp_arrays_are_read() {
        assert_eq!(resp_strings("*2\r\n$1\r\na\r\n$3\r\nb:c\r\n"), ["a", "b:c"]);
        assert!(resp_strings("*0\r\n").is_empty());
    }

    #[test]
    fn a_cluster_starts_and_routes_commands() {
        let c = RedisCluster::start(3, 0).unwrap();
        for key in ["{kiq:default}:stream", "{kiq:t:abc}", "{kiq}:queues"] {
            assert!(c
                .command(&format!("SET {key} 1"))
                .unwrap()
                .starts_with("+OK"));
        }
        assert!(c.url().starts_with("redis+cluster://127.0.0.1:"));
        // A slot moves with its keys, and commands follow it.
        let key = "{kiq:default}:stream";
        let to = (c.index_for(key).unwrap() + 1) % 3;
        c.migrate_slot_of(key, to).unwrap();
        assert_eq!(c.index_for(key).unwrap(), to);
        assert!(c.command(&format!("GET {key}")).unwrap().contains('1'));
    }

    #[test]
    fn sentinels_name_the_primary() {
        let s = RedisSentinels::start().unwrap();
        assert_eq!(s.primary_port().unwrap(), s.servers()[0].port());
        assert!(s.command("SET a 1").unwrap().starts_with("+OK"));
    }
}

#[cfg(test)]
mod resp_tests {
    use super::resp_end;

    #[test]
    fn a_reply_is_complete_only_when_all_of_it_arrived() {
        let full = b"*4\r\n$1\r\n7\r\n$1\r\n1\r\n$2\r\n12\r\n:5\r\n";
        assert_eq!(resp_end(full, 0), Some(full.len()));
        for cut in 0..full.len() {
            assert_eq!(resp_end(&full[..cut], 0), None, "cut at {cut}");
        }
        assert_eq!(resp_end(b"+OK\r\n", 0), Some(5));
        assert_eq!(resp_end(b"$-1\r\n", 0), Some(5));
        assert_eq!(resp_end(b"*0\r\n", 0), Some(4));
    }
}
