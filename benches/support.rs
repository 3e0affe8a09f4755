//! Shared by the HTTP bench programs (load, soak): a server process killed on drop, a free
//! loopback port, waiting for health, and plugin variants with a new digest.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// The value after `--name` on the command line, parsed.
pub fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// Whether `--name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// The HTTP client the benches use.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A server process: SIGTERM (graceful shutdown), then SIGKILL if it is still there, on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `url` answers 2xx (60 s at most).
pub async fn wait_ready(client: &HttpClient, url: &str) {
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url.parse().expect("url")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{url} did not become healthy within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same component with a custom section appended: same behaviour, new sha256.
pub fn variant(wasm: &[u8], tag: u64) -> Vec<u8> {
    let name = b"bench-variant";
    let payload_len = 1 + name.len() + 8;
    let mut out = wasm.to_vec();
    out.extend_from_slice(&[0, payload_len as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(&tag.to_le_bytes());
    out
}
