//! Connecting: ACL users, TLS, and clear errors for bad credentials or a dead server.

mod support;

use std::time::Duration;

use kiq::Broker;
use kiq_examples::math;
use kiq_testkit::{RedisOptions, RedisServer};
use support::Workers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    let redis = RedisServer::start_with(RedisOptions {
        extra_args: [
            "--user", "default", "off", "--user", "kiq", "on", ">s3cret", "~*", "&*", "+@all",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .unwrap();
    let url = format!("redis://kiq:s3cret@127.0.0.1:{}", redis.port());
    let broker = Broker::connect(&url).await.expect("ACL login");
    let _workers = Workers::start(&url, 1, &[]);
    let h = math::add::kiq(&broker, 1, 2).await.unwrap();
    assert_eq!(h.wait_result(Duration::from_secs(20)).await.unwrap(), 3);

    let wrong = format!("redis://kiq:wrong@127.0.0.1:{}", redis.port());
    let err = Broker::connect(&wrong).await.unwrap_err();
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
    assert!(err.is_auth_failure(), "{err}");
    // A worker told a wrong password says so and exits 2, rather than restarting forever.
    let started = std::time::Instant::now();
    let out = std::process::Command::new(support::taskctl())
        .args(["worker", "--workers", "1", "--redis-url", &wrong])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.to_lowercase().contains("auth"), "{log}");
    assert!(!log.contains(":wrong@"), "password leaked: {log}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_clear_error() {
    let port = kiq_testkit::free_port().unwrap();
    let err = Broker::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(
        err.redis_failure().map(|f| f.kind),
        Some(kiq::RedisErrorKind::Unreachable)
    );
    // The error names the Redis it could not reach.
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot reach Redis at redis://127.0.0.1:{port}")),
        "{text}"
    );

    // The CLI also says where the URL came from, without its password.
    let url = format!("redis://app:s3cret@127.0.0.1:{port}");
    let out = std::process::Command::new(support::taskctl())
        .args(["status", "--redis-url", &url])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "cannot reach Redis at redis://app:***@127.0.0.1:{port} (from --redis-url)"
        )),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
    let out = std::process::Command::new(support::taskctl())
        .args(["status"])
        .env("KIQ_REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("(from KIQ_REDIS_URL)"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_verified_certificate() {
    let dir = std::env::temp_dir().join(format!("kiq-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    make_ca_and_server_cert(&dir);
    let tls_port = kiq_testkit::free_port().unwrap();
    let redis = RedisServer::start_with(RedisOptions {
        extra_args: vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let url = format!("rediss://localhost:{tls_port}");
    // rustls-native-certs reads SSL_CERT_FILE: trust exactly our test CA, in the worker too.
    let cert_path = ca.display().to_string();
    // SAFETY: set before this test starts any thread that reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", &cert_path) };
    let broker = Broker::connect(&url).await.expect("TLS connect");
    let _workers = Workers::start_env(&url, 1, &[], &[("SSL_CERT_FILE", &cert_path)]);
    let h = math::add::kiq(&broker, 20, 22).await.unwrap();
    assert_eq!(h.wait_result(Duration::from_secs(20)).await.unwrap(), 42);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A throwaway CA and a `localhost` server certificate signed by it, made with openssl.
fn make_ca_and_server_cert(dir: &std::path::Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kiq test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Redis at its `maxmemory` (no eviction) is reported as out of memory, not as unreachable or
/// an internal error: `.kiq()` says OOM, the API answers 503 `redis_out_of_memory` (it was
/// 500 `internal`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_reported_as_such() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let broker = Broker::connect(&url).await.unwrap();
    let api = support::ApiServer::start(&url);
    // 2 MB of data, then a limit of 1 MB: every write that needs memory is refused.
    let mut conn = kiq::broker::connect_redis(&url).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("filler")
        .arg(vec![7u8; 2 << 20])
        .query_async(&mut conn)
        .await
        .unwrap();
    redis
        .command("CONFIG SET maxmemory-policy noeviction")
        .unwrap();
    redis.command("CONFIG SET maxmemory 1mb").unwrap();
    match math::add::kiq(&broker, 1, 2).await {
        Err(kiq::DispatchError::Broker { error, .. }) => {
            assert!(error.is_out_of_memory(), "{error}");
            assert!(!error.is_unavailable(), "{error}");
        }
        other => panic!("expected an out-of-memory error, got {other:?}"),
    }
    let (code, err) = api.call(
        "POST",
        "/api/tasks",
        Some(serde_json::json!({"task": math::add::SPEC.name, "args": [1, 2]})),
    );
    assert_eq!(code, 503, "{err}");
    assert_eq!(err["error"]["code"], "redis_out_of_memory", "{err}");
}

/// `rediss://` to a Redis without TLS once failed with only "timed out". It now says the
/// server answers in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_text_redis_says_so() {
    let redis = RedisServer::start().unwrap();
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let err = Broker::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, kiq::BrokerError::Topology(_)), "{err:?}");
    assert!(
        text.contains("answers in plain text") && text.contains("use redis://"),
        "{text}"
    );
}

/// At the edge of `maxmemory`, a dispatch lands whole or not at all. Its pending record and
/// its stream entry used to be two writes: Redis took the small record and refused the large
/// entry, leaving a task "pending" for the pending TTL that would never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_at_the_memory_limit_leaves_no_phantom_pending_record() {
    let redis = RedisServer::start().unwrap();
    let broker = Broker::connect(&redis.url()).await.unwrap();
    const SPEC: kiq::TaskSpec = kiq::TaskSpec {
        name: "edge.big",
        queue: "edge",
        retry: kiq::RetryPolicy::NONE,
    };
    let big = "x".repeat(50_000);
    // Once, with room: the queue's group and stream exist before the limit is set.
    kiq::Kicker::<(String,), i32>::new(SPEC)
        .kiq(&broker, (String::new(),))
        .await
        .unwrap();
    let used: u64 = redis
        .command("INFO memory")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    redis
        .command("CONFIG SET maxmemory-policy noeviction")
        .unwrap();
    // Redis counts a command's arguments before it runs it: with the 50 KB message in the
    // query buffer, the small record still fits under this limit and the 50 KB entry does
    // not (25 KB of margin either way).
    redis
        .command(&format!("CONFIG SET maxmemory {}", used + 75_000))
        .unwrap();
    let xlen = || {
        redis
            .command("XLEN {kiq:edge}:stream")
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(xlen(), ":1");
    let result = kiq::Kicker::<(String,), i32>::new(SPEC)
        .task_id("at-the-edge")
        .kiq(&broker, (big,))
        .await;
    redis.command("CONFIG SET maxmemory 0").unwrap();
    let record = broker.record("at-the-edge").await.unwrap();
    match result {
        Err(e) => {
            assert!(
                matches!(&e, kiq::DispatchError::Broker { error, .. } if error.is_out_of_memory()),
                "{e}"
            );
            assert!(
                record.is_none(),
                "refused ({e}) but left a record: {record:?}"
            );
            assert_eq!(xlen(), ":1");
        }
        Ok(_) => {
            assert!(record.is_some());
            assert_eq!(xlen(), ":2");
        }
    }
}

/// A dispatch that waits for replicas (`replica_acks`) ends in `WAIT`, which blocks its
/// connection until they acknowledge. It used to go over the shared command connection, where
/// every other command of the process then waited behind it; it now has a connection of its
/// own, so a read made while the `WAIT` blocks is answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_replicas_does_not_stall_other_commands() {
    let redis = RedisServer::start().unwrap();
    // No replica: every WAIT runs to its timeout, then the dispatch fails as not replicated.
    let mut config = kiq::BrokerConfig::new(redis.url().as_str()).pool_size(1);
    config.replica_acks = 1;
    config.replica_ack_timeout = Duration::from_secs(5);
    let broker = Broker::from_config(config).await.unwrap();
    broker.record("warm-up").await.unwrap();
    let b = broker.clone();
    let dispatch = tokio::spawn(async move { math::add::kiq(&b, 1, 2).await });
    // Once Redis holds the WAIT (a blocked client)...
    assert!(
        kiq_testkit::wait_until(Duration::from_secs(10), || redis
            .command("INFO clients")
            .is_ok_and(|i| i.contains("blocked_clients:1"))),
        "the WAIT never blocked"
    );
    // ...a read of the same broker is answered while the dispatch still waits.
    assert!(broker.record("no-such-task").await.unwrap().is_none());
    assert!(
        redis
            .command("INFO clients")
            .is_ok_and(|i| i.contains("blocked_clients:1")),
        "the read was answered only once the WAIT had ended"
    );
    let err = dispatch.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");
}

/// A Redis (here a Sentinel) that accepts connections and never answers: getting a connection
/// gives up after `connect_timeout` with an "unreachable" error that names the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_unreachable_within_the_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("redis+sentinel://127.0.0.1:{port}/mymaster");
    let mut config = kiq::BrokerConfig::new(url.as_str());
    config.connect_timeout = Duration::from_millis(300);
    let err = match Broker::from_config(config).await {
        Ok(b) => b.record("x").await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(
        err.redis_failure().map(|f| f.kind),
        Some(kiq::RedisErrorKind::Unreachable),
        "{err}"
    );
    assert!(err.to_string().contains(&url), "{err}");
    drop(silent);
}
