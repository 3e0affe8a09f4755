//! The Redis backend of the prediction cache against a real `redis-server` on loopback (Debian
//! package `redis-server`, installed by `scripts/test.sh`): two `tierhost serve` processes share
//! hits, and killing redis-server mid-run loses no request (they are answered by the cascade,
//! `cache: bypass`, counted in metrics).
//!
//! Without redis-server on the PATH these tests say so and pass, unless
//! `TIERHOST_REQUIRE_REDIS=1` (set by the test script), where its absence is a failure.
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long to wait for a process to come up (a condition, polled; not a sleep).
const STARTUP: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let proc = Proc(child);
    let started = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").await.is_ok()
                && s.read_exact(&mut buf).await.is_ok()
                && &buf == b"+PONG\r\n"
            {
                return (proc, port);
            }
        }
        assert!(started.elapsed() < STARTUP, "redis-server did not come up");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Host {
    _proc: Proc,
    base: String,
    client: HttpClient,
}

impl Host {
    async fn start(config: &Path) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tierhost"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tierhost serve starts");
        let host = Self {
            _proc: Proc(child),
            base: format!("http://127.0.0.1:{port}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let started = Instant::now();
        while host.send("GET", "/healthz", "").await.0 != 200 {
            assert!(
                started.elapsed() < STARTUP,
                "tierhost serve did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        host
    }

    async fn send(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        match self.client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    async fn predict(&self, id: &str, amount: u32) -> (u16, Value) {
        let body = format!(
            r#"{{"id":"{id}","features":{{"amount":{amount},"account_age_days":400,"merchant_category":"grocery","is_international":false,"has_international_history":false}}}}"#
        );
        let (status, text) = self.send("POST", "/v1/predict", &body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn write_config(dir: &Path, redis_port: u16) -> std::path::PathBuf {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_hits_through_redis() {
    if !redis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port) = start_redis(dir.path()).await;
    let config = write_config(dir.path(), port);
    let a = Host::start(&config).await;
    let b = Host::start(&config).await;

    let (status, first) = a.predict("on-a", 120).await;
    assert_eq!(status, 200);
    assert_eq!(first["cache"], "miss");
    // The write to Redis happens after the answer is sent: wait until replica B sees it.
    let started = Instant::now();
    let hit = loop {
        let (status, answer) = b.predict("on-b", 120).await;
        assert_eq!(status, 200);
        if answer["cache"] == "hit" {
            break answer;
        }
        assert_eq!(answer["cache"], "miss");
        assert!(
            started.elapsed() < STARTUP,
            "replica B never saw A's answer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(hit["request_id"], "on-b");
    assert_eq!(hit["decision"], first["decision"]);
    assert_eq!(hit["served_by"], first["served_by"]);
    assert_eq!(hit["trail"], Value::Array(vec![]));
    let (_, metrics) = b.send("GET", "/metrics", "").await;
    assert!(
        metrics.contains("tierhost_cache_requests_total{outcome=\"hit\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_run_loses_no_request() {
    if !redis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (redis, port) = start_redis(dir.path()).await;
    let config = write_config(dir.path(), port);
    let host = Host::start(&config).await;

    let mut redis = Some(redis);
    let mut outcomes = Vec::new();
    for i in 0..200u32 {
        if i == 100 {
            drop(redis.take()); // SIGKILL, then reaped
        }
        let (status, answer) = host.predict(&format!("r{i}"), 100 + i % 10).await;
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
    let (_, metrics) = host.send("GET", "/metrics", "").await;
    let bypassed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tierhost_cache_requests_total{outcome=\"bypass\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(bypassed > 0, "{metrics}");
}
