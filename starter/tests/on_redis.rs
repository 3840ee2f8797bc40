//! kiq's own check of this starter (not something to copy): its binaries, built as a user would
//! build them, against a private `redis-server`. The worker binary names nothing of the library
//! but `kiq::link!(kiq_starter)`, so this also proves the macro links the tasks in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiq_testkit::{free_port, wait_until, RedisServer};

/// Kills a child process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status.expect("the process stops on SIGTERM within 20 s")
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn worker_producer_and_web_app_run_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();

    let mut worker = Reaped(
        Command::new(env!("CARGO_BIN_EXE_starter-worker"))
            .args(["worker", "--workers", "1", "--concurrency", "4"])
            .env("KIQ_REDIS_URL", &url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start starter-worker"),
    );

    let out = Command::new(env!("CARGO_BIN_EXE_starter-producer"))
        .env("KIQ_REDIS_URL", &url)
        .output()
        .expect("run starter-producer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "producer failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("add(2, 3) = 5"), "{stdout}");
    assert!(
        stdout.contains("charge(7) = receipt for order 7 (1250 cents"),
        "{stdout}"
    );
    assert!(
        stdout.contains("charge(8) failed: ") && stdout.contains("order 8 has nothing to charge"),
        "{stdout}"
    );
    assert!(stdout.contains("delayed add = 42"), "{stdout}");

    let status = terminate(&mut worker.0);
    let mut log = String::new();
    if let Some(mut e) = worker.0.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    assert!(status.success(), "worker exit {status}: {log}");
    assert!(
        !log.contains("no tasks are registered"),
        "kiq::link! did not link the tasks: {log}"
    );

    // The web app: HTTP and a worker in one process (no other worker runs now).
    let port = free_port().unwrap();
    let mut web = Reaped(
        Command::new(env!("CARGO_BIN_EXE_starter-web"))
            .env("KIQ_REDIS_URL", &url)
            .env("KIQ_API_TOKEN", "starter-test-token")
            .env("STARTER_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start starter-web"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "starter-web did not listen"
    );
    let reply = http(
        port,
        "POST /add?a=40&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"sum\":42"), "{reply}");

    // kiq's API, mounted under /kiq, sees the task the app ran.
    let stats = http(
        port,
        "GET /kiq/api/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer starter-test-token\r\nConnection: close\r\n\r\n",
    );
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    assert!(stats.contains("\"default\""), "{stats}");

    let status = terminate(&mut web.0);
    assert!(status.success(), "starter-web exit {status}");
}
