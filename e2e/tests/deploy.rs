//! The deploy kit (`deploy/`), checked against the real binary, Redis and Prometheus:
//!
//! - every `taskctl` command line in it (systemd units, compose file, Kubernetes manifests,
//!   Dockerfile, README code blocks) parses, with the environment it runs with there
//!   (`KIQ_PARSE_ONLY=1`: parse, print `ok`, exit);
//! - the grace periods (systemd, compose, Kubernetes) leave room for the workers' drain;
//! - `redis.conf` loads and sets what kiq assumes;
//! - `promtool` accepts the alert rules, their unit tests (`alerts_test.yml`) and
//!   `prometheus.yml`;
//! - a live Prometheus, configured like `deploy/prometheus.yml` with `deploy/alerts.yml`,
//!   scrapes one `taskctl worker --workers 2` (one target for both processes) and one
//!   `taskctl serve`, finds every metric the dashboard, the alerts and the KEDA query use, gets
//!   data for every dashboard query, sees every priority lane in `kiq_queue_waiting`, and fires
//!   `KiqNoWorkers` once the worker supervisor is stopped.
//!
//! Needs `promtool` and `prometheus` on PATH (Debian's `prometheus` package; scripts/setup.sh
//! installs it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiq::Priority;
use kiq_examples::math;
use kiq_testkit::http::request;
use serde_json::Value;
use support::{redis_and_broker, taskctl, taskctl_at, wait_exit, ApiServer, Workers, API_TOKEN};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kiq-deploy-{tag}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 250 ms until it returns `Ok`, for at most `timeout`; panics with the
/// last error otherwise.
fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command lines

/// A `taskctl` command line found in deploy/: where, its arguments (without the program), and
/// the environment it runs with there.
#[derive(Debug)]
struct CommandLine {
    source: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// The `KIQ_*` assignments of an env file (`VAR=value` lines; comments skipped).
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .filter(|(k, _)| k.starts_with("KIQ_"))
        .map(|(k, v)| (k.trim().to_string(), unquote(v)))
        .collect()
}

/// The `KIQ_*` values a YAML file sets: `KIQ_X: value` (compose `environment:` maps) and
/// `- name: KIQ_X` then `value: ...` (Kubernetes `env:`). A value compose interpolates from the
/// operator's environment (`${...}`) is `None`.
fn yaml_env(text: &str) -> BTreeMap<String, Option<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- name:") {
            let name = unquote(name);
            let value = lines
                .get(i + 1)
                .and_then(|l| l.trim().strip_prefix("value:"));
            if let (true, Some(v)) = (name.starts_with("KIQ_"), value) {
                out.insert(name, Some(unquote(v)));
            }
        } else if let Some((k, v)) = t.split_once(':') {
            if k.starts_with("KIQ_") && !v.trim().is_empty() {
                let v = (!v.contains("${")).then(|| unquote(v));
                out.insert(k.to_string(), v);
            }
        }
    }
    out
}

/// Splits a shell (or systemd) command line into words: single and double quotes, backslash
/// escapes, and a `#` starting a word begins a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Lines with `\`-continuations joined, each with its 1-based first line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                out.push((start, acc));
            }
        }
    }
    out.extend(pending);
    out
}

/// A one-line YAML flow sequence / Dockerfile exec form, which is JSON: `["worker", "-w", "2"]`.
fn json_list(source: &str, value: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(value.trim()).unwrap_or_else(|e| {
        panic!(
            "{source}: {value:?} is not a one-line list of strings ({e}); keep taskctl command \
             lines in deploy/ as [\"subcommand\", \"--flag\", \"value\"] so that this test reads them"
        )
    })
}

/// The compose file's services under `services:`: name, first line number, and lines.
fn compose_services(text: &str) -> Vec<(String, usize, Vec<String>)> {
    let mut services: Vec<(String, usize, Vec<String>)> = Vec::new();
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if line == "services:" {
            inside = true;
            continue;
        }
        if !inside || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            inside = false;
        } else if let Some(name) = line
            .strip_prefix("  ")
            .filter(|rest| !rest.starts_with(' '))
            .and_then(|rest| rest.strip_suffix(':'))
        {
            services.push((name.to_string(), i + 1, Vec::new()));
        } else if let Some(s) = services.last_mut() {
            s.2.push(line.to_string());
        }
    }
    services
}

fn is_kiq_service(lines: &[String]) -> bool {
    lines.iter().any(|l| l.trim() == "<<: *kiq")
}

/// Every `taskctl` command line in deploy/.
fn command_lines() -> Vec<CommandLine> {
    let dir = deploy_dir();
    let host_env = env_file(&read(&dir.join("kiq.env.example")));
    let mut found = Vec::new();

    // systemd: ExecStart= (and any other Exec*=) running taskctl.
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read deploy/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .collect();
    units.sort();
    for unit in &units {
        for (n, line) in logical_lines(&read(unit)) {
            if line.trim_start().starts_with(['#', ';']) {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if !key.trim().starts_with("Exec") {
                continue;
            }
            let words = shell_words(value.trim().trim_start_matches(['-', '@', ':', '+', '!']));
            let source = format!("{}:{n}", unit.display());
            assert!(
                words.first().is_some_and(|w| w.ends_with("/taskctl")),
                "{source}: {key} does not run taskctl: {line}"
            );
            found.push(CommandLine {
                source,
                args: words[1..].to_vec(),
                env: host_env.clone(),
            });
        }
    }

    // docker-compose.yml: `command:` of each service built from the kiq image.
    let compose_path = dir.join("docker-compose.yml");
    let compose = read(&compose_path);
    let compose_env: BTreeMap<String, String> = yaml_env(&compose)
        .into_iter()
        .map(|(k, v)| {
            // Interpolated from the operator's environment: stand in the example's value.
            let v = v.or_else(|| host_env.get(&k).cloned()).unwrap_or_else(|| {
                panic!("{k} is interpolated in docker-compose.yml but has no example value in kiq.env.example")
            });
            (k, v)
        })
        .collect();
    for (name, first, lines) in compose_services(&compose) {
        if !is_kiq_service(&lines) {
            continue;
        }
        let commands: Vec<&String> = lines
            .iter()
            .filter(|l| l.trim_start().starts_with("command:"))
            .collect();
        let source = format!("{}: service {name} (line {first})", compose_path.display());
        assert_eq!(commands.len(), 1, "{source}: one `command:` expected");
        let value = commands[0].trim_start().trim_start_matches("command:");
        found.push(CommandLine {
            args: json_list(&source, value),
            source,
            env: compose_env.clone(),
        });
    }

    // Kubernetes: `args:` of every container (the image's entrypoint is the binary).
    let k8s = dir.join("k8s");
    let mut k8s_env = env_file(&read(&k8s.join("config.env")));
    k8s_env.extend(env_file(&read(&k8s.join("secret.env.example"))));
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(k8s.as_path())
        .expect("read deploy/k8s")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    manifests.sort();
    for m in &manifests {
        for (k, v) in yaml_env(&read(m)) {
            let v = v.unwrap_or_else(|| panic!("{}: {k} has no literal value", m.display()));
            k8s_env.insert(k, v);
        }
    }
    for m in &manifests {
        for (i, line) in read(m).lines().enumerate() {
            let t = line.trim_start();
            let source = format!("{}:{}", m.display(), i + 1);
            assert!(
                !t.starts_with("command:"),
                "{source}: use `args:` (the image's entrypoint is the binary), not `command:`"
            );
            if let Some(value) = t.strip_prefix("args:") {
                found.push(CommandLine {
                    args: json_list(&source, value),
                    source,
                    env: k8s_env.clone(),
                });
            }
        }
    }

    // Dockerfile: the default command after the entrypoint.
    let dockerfile_path = dir.join("Dockerfile");
    let dockerfile = read(&dockerfile_path);
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == r#"ENTRYPOINT ["/usr/local/bin/taskctl"]"#),
        "the Dockerfile's entrypoint is the binary, installed as /usr/local/bin/taskctl"
    );
    for (i, line) in dockerfile.lines().enumerate() {
        if let Some(value) = line.trim().strip_prefix("CMD ") {
            let source = format!("{}:{}", dockerfile_path.display(), i + 1);
            found.push(CommandLine {
                args: json_list(&source, value),
                source,
                env: host_env.clone(),
            });
        }
    }

    // README.md: lines of code blocks that run taskctl (after `VAR=value` assignments).
    let readme_path = dir.join("README.md");
    let mut in_block = false;
    for (n, line) in logical_lines(&read(&readme_path)) {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let mut words = shell_words(t.strip_prefix("$ ").unwrap_or(t)).into_iter();
        let mut env = host_env.clone();
        let program = loop {
            match words.next() {
                Some(w) if w.starts_with("KIQ_") && w.contains('=') => {
                    let (k, v) = w.split_once('=').unwrap_or_default();
                    env.insert(k.to_string(), v.to_string());
                }
                other => break other,
            }
        };
        if program.is_some_and(|p| p == "taskctl" || p.ends_with("/taskctl")) {
            found.push(CommandLine {
                source: format!("{}:{n}", readme_path.display()),
                args: words.collect(),
                env,
            });
        }
    }
    found
}

/// Runs the binary with `KIQ_PARSE_ONLY=1` and only `env`: it must print `ok` and exit 0.
fn parse_only(args: &[String], env: &BTreeMap<String, String>) -> Result<(), String> {
    let mut child = Command::new(taskctl())
        .args(args)
        .env_clear()
        .envs(env)
        .env("KIQ_PARSE_ONLY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", taskctl()))?;
    if wait_exit(&mut child, Duration::from_secs(20)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(
            "still running after 20 s: KIQ_PARSE_ONLY=1 must make kiq::cli parse its \
             arguments, print ok and exit 0 before doing anything"
                .into(),
        );
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim() == "ok" {
        Ok(())
    } else {
        Err(format!(
            "{}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_taskctl_command_line_in_deploy_parses() {
    // First, that parse-only mode works at all, with a Redis URL nothing listens on: the
    // command lines below carry real URLs (127.0.0.1:6379 among them), which a binary that
    // ignored KIQ_PARSE_ONLY would go and use.
    let probe: Vec<String> = ["worker", "--redis-url", "redis://127.0.0.1:1"]
        .map(String::from)
        .to_vec();
    if let Err(e) = parse_only(&probe, &BTreeMap::new()) {
        panic!("taskctl's parse-only mode (KIQ_PARSE_ONLY=1) does not work: {e}");
    }
    // And that it does parse: a bad flag and a bad environment value are refused.
    let bad_flag: Vec<String> = ["worker", "--no-such-flag"].map(String::from).to_vec();
    assert!(parse_only(&bad_flag, &BTreeMap::new()).is_err());
    let bad_env = BTreeMap::from([("KIQ_SHUTDOWN_TIMEOUT".to_string(), "soon".to_string())]);
    assert!(parse_only(&["worker".to_string()], &bad_env).is_err());

    let lines = command_lines();
    let count = |part: &str| lines.iter().filter(|c| c.source.contains(part)).count();
    // The extraction itself must not rot: each kind of file still yields its commands.
    assert_eq!(count(".service:"), 3, "{lines:#?}");
    assert_eq!(count("docker-compose.yml"), 3, "{lines:#?}");
    assert_eq!(count("/k8s/"), 3, "{lines:#?}");
    assert_eq!(count("Dockerfile"), 1, "{lines:#?}");
    assert!(count("README.md") >= 5, "{lines:#?}");
    for sub in ["worker", "scheduler", "serve"] {
        assert!(
            lines
                .iter()
                .any(|c| c.args.first().is_some_and(|a| a == sub)),
            "no `taskctl {sub}` in deploy/"
        );
    }

    let failures: Vec<String> = lines
        .iter()
        .filter_map(|c| {
            parse_only(&c.args, &c.env)
                .err()
                .map(|e| format!("{}: taskctl {}\n{e}", c.source, c.args.join(" ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "command lines that do not parse:\n\n{}",
        failures.join("\n\n")
    );
    println!("{} command lines parse", lines.len());
}

// ---------------------------------------------------------------------------------------------
// Grace periods

/// Seconds in `30`, `30s` or `2m`.
fn seconds(v: &str) -> u64 {
    let v = unquote(v);
    let (n, unit) = match v.strip_suffix('s') {
        Some(n) => (n, 1),
        None => match v.strip_suffix('m') {
            Some(n) => (n, 60),
            None => (v.as_str(), 1),
        },
    };
    n.trim()
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("{v:?} is not a duration in seconds or minutes"))
        * unit
}

/// The value of the first `key` (`key=value` or `key: value`) in `text`.
fn setting(text: &str, key: &str, sep: char) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(sep)?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

#[test]
fn grace_periods_leave_room_for_the_drain() {
    // After SIGTERM, worker processes drain for KIQ_SHUTDOWN_TIMEOUT and the supervisor kills
    // what is left 5 s later: whatever sends SIGKILL must wait longer than both.
    const SUPERVISOR_MARGIN: u64 = 5;
    let dir = deploy_dir();

    let env = env_file(&read(&dir.join("kiq.env.example")));
    let drain = seconds(&env["KIQ_SHUTDOWN_TIMEOUT"]);
    let unit = read(&dir.join("kiq-worker.service"));
    let stop = seconds(&setting(&unit, "TimeoutStopSec", '=').expect("TimeoutStopSec"));
    assert!(
        stop > drain + SUPERVISOR_MARGIN,
        "kiq-worker.service: TimeoutStopSec={stop} vs KIQ_SHUTDOWN_TIMEOUT={drain}s"
    );
    assert_eq!(setting(&unit, "KillMode", '=').as_deref(), Some("mixed"));

    let compose = read(&dir.join("docker-compose.yml"));
    let (_, _, worker) = compose_services(&compose)
        .into_iter()
        .find(|(name, _, _)| name == "worker")
        .expect("a worker service");
    let drain = seconds(
        &yaml_env(&worker.join("\n"))["KIQ_SHUTDOWN_TIMEOUT"]
            .clone()
            .expect("a literal KIQ_SHUTDOWN_TIMEOUT in the worker service"),
    );
    let stop = seconds(
        &setting(&worker.join("\n"), "stop_grace_period", ':')
            .expect("the worker service's stop_grace_period"),
    );
    assert!(
        stop > drain + SUPERVISOR_MARGIN,
        "docker-compose.yml: stop_grace_period {stop}s vs KIQ_SHUTDOWN_TIMEOUT {drain}s"
    );

    let manifest = read(&dir.join("k8s/worker.yaml"));
    let drain = seconds(
        &yaml_env(&manifest)["KIQ_SHUTDOWN_TIMEOUT"]
            .clone()
            .expect("KIQ_SHUTDOWN_TIMEOUT set in k8s/worker.yaml"),
    );
    let stop = seconds(
        &setting(&manifest, "terminationGracePeriodSeconds", ':')
            .expect("terminationGracePeriodSeconds"),
    );
    assert!(
        stop > drain + SUPERVISOR_MARGIN,
        "k8s/worker.yaml: terminationGracePeriodSeconds {stop} vs KIQ_SHUTDOWN_TIMEOUT {drain}s"
    );
}

// ---------------------------------------------------------------------------------------------
// redis.conf

#[test]
fn redis_conf_loads_and_sets_what_kiq_assumes() {
    use kiq_testkit::topology::command_at;
    let dir = TempDir::new("redis");
    let conf = dir.path().join("redis.conf");
    std::fs::copy(deploy_dir().join("redis.conf"), &conf).expect("copy redis.conf");
    let port = kiq_testkit::free_port().expect("free port");
    let log = dir.path().join("redis.out");
    let out = std::fs::File::create(&log).expect("log");
    let mut redis = Proc(
        Command::new("redis-server")
            .arg(conf)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("run redis-server"),
    );
    poll(
        "redis-server with deploy/redis.conf answers",
        Duration::from_secs(10),
        || {
            if let Ok(Some(status)) = redis.0.try_wait() {
                panic!(
                    "redis-server refused deploy/redis.conf ({status}):\n{}",
                    read(&log)
                );
            }
            match command_at(port, "PING") {
                Ok(r) if r.starts_with("+PONG") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    for (key, value) in [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
    ] {
        let reply = command_at(port, &format!("CONFIG GET {key}")).expect("CONFIG GET");
        assert!(
            reply.contains(&format!("\r\n{value}\r\n")),
            "{key}: {reply:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// promtool

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install prometheus"));
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn promtool_accepts_the_rules_their_tests_and_the_config() {
    let dir = deploy_dir();
    promtool(&["check", "rules", path_str(&dir.join("alerts.yml"))]);
    promtool(&["test", "rules", path_str(&dir.join("alerts_test.yml"))]);
    // As shipped: its token file exists in the compose file's Prometheus container only.
    promtool(&[
        "check",
        "config",
        "--syntax-only",
        path_str(&dir.join("prometheus.yml")),
    ]);
    // Whole (rule files loaded, files checked), with the token file pointed at one that exists.
    let tmp = TempDir::new("promtool");
    let token = tmp.path().join("api-token");
    std::fs::write(&token, format!("{API_TOKEN}\n")).expect("token file");
    std::fs::copy(dir.join("alerts.yml"), tmp.path().join("alerts.yml")).expect("copy");
    let shipped = read(&dir.join("prometheus.yml"));
    let config = shipped.replace("/run/secrets/kiq_api_token", path_str(&token));
    assert_ne!(
        config, shipped,
        "prometheus.yml no longer reads /run/secrets/kiq_api_token"
    );
    let config_path = tmp.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write config");
    promtool(&["check", "config", path_str(&config_path)]);
}

// ---------------------------------------------------------------------------------------------
// A live Prometheus

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `prometheus` server on a free loopback port, killed when dropped.
struct Prometheus {
    child: Proc,
    base: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path) -> Self {
        let port = kiq_testkit::free_port().expect("free port");
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                path_str(&dir.join("prometheus.yml"))
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                path_str(&dir.join("data"))
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus ({e}): apt-get install prometheus"));
        let mut p = Self {
            child: Proc(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        poll("prometheus ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = p.child.0.try_wait() {
                panic!("prometheus exited ({status}):\n{}", read(&p.log));
            }
            match request("GET", &format!("{}/-/ready", p.base), &[], None) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{}: {}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            }
        });
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`.
    fn api(&self, path: &str) -> Result<Value, String> {
        let r = request("GET", &format!("{}/api/v1/{path}", self.base), &[], None)
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{}: not JSON ({e}): {}", r.status, r.text()))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else if v["errorType"] == "bad_data" {
            panic!("prometheus refused /api/v1/{path}: {v}");
        } else {
            Err(v.to_string())
        }
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", urlencode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of an instant query.
    fn value(&self, promql: &str) -> Result<f64, String> {
        let result = self.query(promql)?;
        match result.as_slice() {
            [one] => one["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{promql}: {one}")),
            other => Err(format!("{promql}: {} results: {other:?}", other.len())),
        }
    }

    /// The alerts named `name`, with their state.
    fn alert_states(&self, name: &str) -> Result<Vec<String>, String> {
        let data = self.api("alerts")?;
        Ok(data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap_or("").to_string())
            .collect())
    }
}

/// Metric names in PromQL (or any text): words starting `kiq_` or `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let at_start = i == 0 || !word(b[i - 1]);
        if at_start && (b[i..].starts_with(b"kiq_") || b[i..].starts_with(b"process_")) {
            let start = i;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            let name = &text[start..i];
            if !name.ends_with('_') {
                out.insert(name.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every `expr` string in the dashboard (panels, rows, nested panels).
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// A Grafana query as plain PromQL: range variables as fixed windows, every template variable
/// (all of them regex matchers in kiq's dashboard) as `.*`.
fn grafana_to_promql(expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "5s")
        .replace("$__range", "5m");
    for var in ["queue", "task"] {
        e = e
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    assert!(
        !e.contains('$'),
        "a Grafana variable this test does not know: {expr}"
    );
    e
}

/// The `expr:` values of deploy/alerts.yml (each on one line).
fn alert_exprs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| {
            let e = e.trim();
            assert!(
                !e.starts_with('|') && !e.starts_with('>'),
                "keep alerts.yml's expressions on one line (this test reads them): {e}"
            );
            e.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_the_dashboard_and_alerts_use_and_fires_no_workers() {
    let dir = deploy_dir();
    let dashboard: Value =
        serde_json::from_str(&read(&dir.join("grafana/kiq-dashboard.json"))).expect("JSON");
    let mut panel_exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut panel_exprs);
    assert!(panel_exprs.len() >= 20, "{panel_exprs:?}");
    let alerts_text = read(&dir.join("alerts.yml"));
    let rules = alert_exprs(&alerts_text);
    let rule_count = alerts_text
        .lines()
        .filter(|l| l.trim().starts_with("- alert:"))
        .count();
    assert_eq!(rules.len(), rule_count);
    let keda_query = setting(
        &read(&dir.join("k8s/worker-scaledobject.yaml")),
        "query",
        ':',
    )
    .expect("the ScaledObject's query");
    let mut wanted = BTreeSet::new();
    for text in panel_exprs.iter().chain(&rules).chain([&keda_query]) {
        wanted.extend(metric_names(text));
    }
    wanted.extend(metric_names(&dashboard["templating"].to_string()));
    assert!(wanted.len() >= 25, "{wanted:?}");

    // Redis; a backlog on every priority lane of a queue no worker reads (1 low, 2 normal,
    // 3 high, 4 critical); the server; a scheduler with a schedule (the lease and lag gauges);
    // one worker supervisor of 2 processes reading `default`.
    let (redis, broker) = redis_and_broker().await;
    let lanes = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];
    for (i, p) in lanes.into_iter().enumerate() {
        for _ in 0..=i {
            math::add::kicker()
                .queue("lanes")
                .priority(p)
                .kiq(&broker, (1, 2))
                .await
                .expect("enqueue");
        }
    }
    let api = ApiServer::start(&redis.url());
    let out = taskctl_at(
        &redis.url(),
        &[
            "schedule",
            "add",
            "deploy-check",
            "--task",
            math::add::SPEC.name,
            "--cron",
            "@every 1h",
            "--args",
            "[1, 2]",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let _scheduler = Proc(
        Command::new(taskctl())
            .args(["scheduler", "--lease-ttl", "2s", "--redis-url"])
            .arg(redis.url())
            .env("KIQ_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn taskctl scheduler"),
    );
    let metrics_port = kiq_testkit::free_port().expect("free port");
    let workers = Workers::start(
        &redis.url(),
        2,
        &[
            "--metrics-port",
            &metrics_port.to_string(),
            "--queues",
            "default",
        ],
    );
    let h = math::add::kiq(&broker, 2, 3).await.expect("dispatch");
    assert_eq!(
        h.wait_result(Duration::from_secs(20)).await.expect("add"),
        5
    );

    // Prometheus, configured like deploy/prometheus.yml (the same job names, the token from a
    // file), scraping and evaluating every second, with deploy/alerts.yml as is.
    let tmp = TempDir::new("prometheus");
    let token = tmp.path().join("api-token");
    std::fs::write(&token, format!("{API_TOKEN}\n")).expect("token file");
    std::fs::copy(dir.join("alerts.yml"), tmp.path().join("alerts.yml")).expect("copy");
    let server_target = api.base.trim_start_matches("http://");
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: kiq-server
    authorization:
      type: Bearer
      credentials_file: {token}
    static_configs:
      - targets: ["{server_target}"]
  - job_name: kiq-worker
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
"#,
        token = path_str(&token)
    );
    let config_path = tmp.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write config");
    promtool(&["check", "config", path_str(&config_path)]);
    let prom = Prometheus::start(tmp.path());

    poll("both targets up", Duration::from_secs(60), || {
        let data = prom.api("targets")?;
        let targets = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up: BTreeSet<String> = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["job"].as_str().map(String::from))
            .collect();
        if up.contains("kiq-server") && up.contains("kiq-worker") {
            Ok(())
        } else {
            Err(format!("{targets:?}"))
        }
    });

    // Every metric the dashboard, the alerts and the KEDA query name is scraped.
    poll(
        "every metric used is scraped",
        Duration::from_secs(60),
        || {
            let have: BTreeSet<String> = prom
                .query(r#"count by (__name__) ({__name__=~"kiq_.+|process_.+"})"#)?
                .iter()
                .filter_map(|s| s["metric"]["__name__"].as_str().map(String::from))
                .collect();
            let missing: Vec<&String> = wanted.difference(&have).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}; scraped {have:?}"))
            }
        },
    );

    // One target serves both worker processes: every worker metric the dashboard and the
    // alerts use is labelled with its process (the dashboard's per-process panels group by it).
    let unlabelled: BTreeSet<String> = prom
        .query(r#"count by (__name__) ({job="kiq-worker", process=""})"#)
        .expect("query")
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(String::from))
        .filter(|name| wanted.contains(name))
        .collect();
    assert!(
        unlabelled.is_empty(),
        "worker metrics without a process label: {unlabelled:?}"
    );
    let processes: BTreeSet<String> = prom
        .query(r#"kiq_worker_concurrency{job="kiq-worker"}"#)
        .expect("query")
        .iter()
        .filter_map(|s| s["metric"]["process"].as_str().map(String::from))
        .collect();
    assert_eq!(
        processes,
        BTreeSet::from(["0".to_string(), "1".to_string()])
    );

    // kiq_queue_waiting counts every lane of a queue, so the KEDA query does too.
    poll(
        "kiq_queue_waiting sums the lanes",
        Duration::from_secs(30),
        || match prom.value(r#"kiq_queue_waiting{queue="lanes"}"#)? {
            v if (v - 10.0).abs() < 0.5 => Ok(()),
            v => Err(format!("kiq_queue_waiting{{queue=\"lanes\"}} = {v}")),
        },
    );
    let scale_on = prom.value(&keda_query).expect("the KEDA query");
    assert!(scale_on >= 10.0, "{keda_query} = {scale_on}");

    // Every dashboard query is valid PromQL and has data.
    poll(
        "every dashboard query has data",
        Duration::from_secs(60),
        || {
            let mut empty = Vec::new();
            for expr in &panel_exprs {
                if prom.query(&grafana_to_promql(expr))?.is_empty() {
                    empty.push(expr.clone());
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("no data: {empty:#?}"))
            }
        },
    );

    // Every rule loaded and evaluates without error.
    poll(
        "every alert rule evaluates",
        Duration::from_secs(30),
        || {
            let data = prom.api("rules")?;
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let healthy = rules.iter().filter(|r| r["health"] == "ok").count();
            if rules.len() == rule_count && healthy == rule_count {
                Ok(())
            } else {
                Err(format!("{rules:#?}"))
            }
        },
    );

    // With both worker processes live, KiqNoWorkers is quiet ...
    poll("kiq_workers = 2", Duration::from_secs(30), || {
        match prom.value("max(kiq_workers)")? {
            v if (v - 2.0).abs() < 0.5 => Ok(()),
            v => Err(format!("max(kiq_workers) = {v}")),
        }
    });
    assert_eq!(prom.alert_states("KiqNoWorkers"), Ok(vec![]));

    // ... and fires once the supervisor has been stopped (SIGTERM, drained, exited).
    let status = workers.stop();
    assert!(status.success(), "worker supervisor: {status}");
    let stopped = Instant::now();
    poll("KiqNoWorkers firing", Duration::from_secs(120), || {
        let states = prom.alert_states("KiqNoWorkers")?;
        if states.iter().any(|s| s == "firing") {
            Ok(())
        } else {
            let workers = prom.value("max(kiq_workers)");
            Err(format!(
                "KiqNoWorkers: {states:?}; max(kiq_workers): {workers:?}; log:\n{}",
                prom.log_text()
            ))
        }
    });
    println!(
        "KiqNoWorkers fired {:.1} s after the workers stopped",
        stopped.elapsed().as_secs_f64()
    );
}
