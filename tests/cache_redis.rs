//! The Redis backend of the prediction cache against a real `redis-server` on loopback (Debian
//! package `redis-server`, installed by `scripts/test.sh`): two `tierhost serve` processes share
//! hits, and killing redis-server mid-run loses no request (they are answered by the cascade,
//! `cache: bypass`, counted in metrics).
//!
//! Without redis-server on the PATH these tests say so and pass, unless
//! `TIERHOST_REQUIRE_REDIS=1` (set by the test script), where its absence is a failure.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::http::{Proc, Served, free_port};
use common::wait_for;
use serde_json::Value;

fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("TIERHOST_REQUIRE_REDIS").is_none(),
            "TIERHOST_REQUIRE_REDIS is set but redis-server is not installed"
        );
        eprintln!("redis-server not found: skipping (scripts/test.sh installs it)");
    }
    found
}

async fn start_redis(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let proc = Proc::spawn(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("redis-server to answer PING", async || {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.ok()?;
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"+PONG\r\n").then_some(())
    })
    .await;
    (proc, port)
}

async fn predict(host: &Served, id: &str, amount: u32) -> (u16, Value) {
    host.http
        .predict_with(format!(
            r#"{{"id":"{id}","features":{{"amount":{amount},"account_age_days":400,"merchant_category":"grocery","is_international":false,"has_international_history":false}}}}"#
        ))
        .await
}

fn write_config(dir: &Path, redis_port: u16) -> PathBuf {
    let path = dir.join("cascade.toml");
    std::fs::write(
        &path,
        format!(
            "[cascade]\nname = \"shared-cache\"\n[server]\nwatch = false\n\
             [cache]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{redis_port}\"\nttl_s = 60\ntimeout_ms = 50\n\
             [[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n"
        ),
    )
    .unwrap();
    path
}

/// A redis-server and a config for `tierhost serve` replicas that share it (in `dir`), or
/// `None` (the test is skipped) without redis-server.
async fn shared_cache() -> Option<(tempfile::TempDir, Proc, PathBuf)> {
    if !redis_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (redis, port) = start_redis(dir.path()).await;
    let config = write_config(dir.path(), port);
    Some((dir, redis, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_hits_through_redis() {
    let Some((_dir, _redis, config)) = shared_cache().await else {
        return;
    };
    let a = Served::start(&config).await;
    let b = Served::start(&config).await;

    let (status, first) = predict(&a, "on-a", 120).await;
    assert_eq!(status, 200);
    assert_eq!(first["cache"], "miss");
    // The write to Redis happens after the answer is sent: wait until replica B sees it.
    let hit = wait_for("replica B to see A's answer", async || {
        let (status, answer) = predict(&b, "on-b", 120).await;
        assert_eq!(status, 200);
        if answer["cache"] == "hit" {
            return Some(answer);
        }
        assert_eq!(answer["cache"], "miss");
        None
    })
    .await;
    assert_eq!(hit["request_id"], "on-b");
    assert_eq!(hit["decision"], first["decision"]);
    assert_eq!(hit["served_by"], first["served_by"]);
    assert_eq!(hit["trail"], Value::Array(vec![]));
    assert_eq!(
        b.http
            .metric(r#"tierhost_cache_requests_total{outcome="hit"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_run_loses_no_request() {
    let Some((_dir, redis, config)) = shared_cache().await else {
        return;
    };
    let host = Served::start(&config).await;

    let mut redis = Some(redis);
    let mut outcomes = Vec::new();
    for i in 0..200u32 {
        if i == 100
            && let Some(redis) = redis.take()
        {
            redis.kill(); // SIGKILL, then reaped
        }
        let (status, answer) = predict(&host, &format!("r{i}"), 100 + i % 10).await;
        assert_eq!(status, 200, "request {i}: {answer}");
        assert_eq!(
            answer["decision"]["outcome"], "answer",
            "request {i}: {answer}"
        );
        outcomes.push(answer["cache"].as_str().unwrap_or("").to_string());
    }
    // Before the kill: 10 distinct requests, so misses then hits.
    assert!(outcomes[..100].iter().any(|o| o == "hit"), "{outcomes:?}");
    // After it: every request answered, through the cascade.
    assert!(
        outcomes[100..].iter().all(|o| o == "bypass" || o == "miss"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[100..].iter().any(|o| o == "bypass"),
        "{outcomes:?}"
    );
    let bypassed = host
        .http
        .metric(r#"tierhost_cache_requests_total{outcome="bypass"}"#)
        .await;
    assert!(bypassed > 0.0, "{bypassed}");
}
