//! Signed messages (`KIQ_SIGNING_KEYS`): a worker with keys runs what a key holder sent, also
//! signed with an older key still listed (rotation), and moves unsigned or forged messages to
//! dead letters `bad_signature` without running them or touching their task's record.

mod support;

use std::time::Duration;

use kiq::broker::codec::SigningKeys;
use kiq::{Broker, BrokerConfig, TaskState, WaitError};
use kiq_examples::math;
use kiq_testkit::wait_until;
use support::Workers;

const WAIT: Duration = Duration::from_secs(20);
const OLD: &str = "k1:0123456789abcdef0123456789abcdef";
const NEW: &str = "k2:fedcba9876543210fedcba9876543210";
const FORGED: &str = "k1:ffffffffffffffffffffffffffffffff";

async fn producer(url: &str, keys: Option<&str>) -> Broker {
    let mut config = BrokerConfig::new(url);
    if let Some(k) = keys {
        config = config.signing_keys(SigningKeys::parse(k).unwrap());
    }
    Broker::from_config(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_only_what_a_key_holder_signed() {
    let redis = support::RedisServer::start().unwrap();
    let url = redis.url();
    // The worker verifies with the new key and the old one (mid-rotation).
    let keys = format!("{NEW},{OLD}");
    let _workers = Workers::start(&url, 1, &["--signing-keys", &keys, "--queues", "default"]);

    for signer in [NEW, OLD] {
        let broker = producer(&url, Some(signer)).await;
        let h = math::add::kiq(&broker, 40, 2).await.unwrap();
        assert_eq!(
            h.wait_result(WAIT).await.unwrap(),
            42,
            "signed with {signer}"
        );
    }

    // Unsigned, and signed with a key of the right id but the wrong secret.
    let mut refused = Vec::new();
    for signer in [None, Some(FORGED)] {
        let broker = producer(&url, signer).await;
        let h = math::add::kiq(&broker, 1, 1).await.unwrap();
        refused.push((broker, h));
    }
    let inspector = producer(&url, Some(OLD)).await.inspector();
    assert!(
        wait_until(WAIT, || {
            let n = redis.command("XLEN {kiq:default}:dead").unwrap_or_default();
            n.trim() == ":2"
        }),
        "two dead letters"
    );
    let dead = inspector.dead_letters("default", "-", 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d.reason, "bad_signature", "{d:?}");
        assert!(
            d.task_id.is_none(),
            "an unverified message names no task: {d:?}"
        );
    }
    let errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    assert!(
        errors.iter().any(|e| e.contains("not signed")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("does not match")),
        "{errors:?}"
    );
    // Neither ran: their records still say pending (a forged message cannot write a record).
    for (_, h) in &refused {
        let r = h.record().await.unwrap().unwrap();
        assert_eq!(r.state, TaskState::Pending);
        assert!(matches!(
            h.wait_result(Duration::from_millis(100)).await,
            Err(WaitError::Timeout { .. })
        ));
    }
}

#[test]
fn bad_keys_are_a_clear_error_at_start() {
    let out = std::process::Command::new(support::taskctl())
        .args(["status", "--signing-keys", "k1:short"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at least 32 are needed"), "{err}");
    assert!(!err.contains("short\""), "{err}");
}
