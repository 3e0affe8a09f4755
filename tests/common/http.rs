//! HTTP on loopback for the suites and the benches: a client bound to one base URL, child
//! processes that never outlive the test, and `tierhost serve` started as a process (the real
//! binary) and waited for.
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::wait_for;

/// The HTTP client the tests and benches use.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new client (connection pool) for loopback HTTP/1.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client bound to a server's base URL (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: HttpClient,
    /// Sent as `Authorization: Bearer <token>` when set (the admin endpoints).
    pub bearer: Option<String>,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: client(),
            bearer: None,
        }
    }

    /// The same client sending `token` as a bearer token.
    pub fn with_bearer(&self, token: &str) -> Self {
        Self {
            bearer: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn local(port: u16) -> Self {
        Self::new(format!("http://127.0.0.1:{port}"))
    }

    /// Status and body, or the connection error.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(u16, String), String> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(token) = &self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Status and body; the request must reach the server.
    pub async fn send(&self, method: &str, path: &str, body: impl Into<Bytes>) -> (u16, String) {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("request did not reach the server: {e}"))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        self.send("GET", path, Bytes::new()).await
    }

    /// `GET path` parsed as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `POST /v1/predict` with `body`; the answer as JSON (a non-JSON body as a string).
    pub async fn predict_with(&self, body: String) -> (u16, Value) {
        let (status, text) = self.send("POST", "/v1/predict", body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /v1/predict` with the standard request ([`super::request_json`]).
    pub async fn predict(&self, id: &str) -> (u16, Value) {
        self.predict_with(super::request_json(id)).await
    }

    /// Waits until `GET /healthz` answers 200.
    pub async fn wait_ready(&self) {
        wait_for(
            &format!("{}/healthz to answer 200", self.base),
            async || {
                matches!(self.try_send("GET", "/healthz", "").await, Ok((200, _))).then_some(())
            },
        )
        .await
    }

    /// Value of the Prometheus sample `name` (with its labels, e.g.
    /// `tierhost_reloads_total{outcome="applied"}`) in `GET /metrics`, 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// How long a process gets to exit after SIGTERM before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// A child process that never outlives its owner: on drop it gets SIGTERM, then SIGKILL if it
/// has not exited within [`EXIT_GRACE`].
pub struct Proc {
    child: Option<Child>,
    pid: u32,
}

impl Proc {
    pub fn new(child: Child) -> Self {
        Self {
            pid: child.id(),
            child: Some(child),
        }
    }

    pub fn spawn(command: &mut Command) -> Self {
        Self::new(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}")),
        )
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` (`HUP`, `TERM`, `KILL`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// Waits (blocking) until the process exits, at most `within`; a process still running
    /// then is killed and `None` returned.
    pub fn wait_exit(mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.take()?;
        wait_bounded(child, within)
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL, and reaped.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            send_signal(self.pid, "TERM");
            wait_bounded(child, EXIT_GRACE);
        }
    }
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits for `child` on a thread, at most `within`; SIGKILL (and reaped) after that.
fn wait_bounded(mut child: Child, within: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rx.recv();
            None
        }
    }
}

/// `tierhost serve --config <config> --listen 127.0.0.1:<port>`, logging errors only, output
/// discarded.
pub fn serve_command(config: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierhost"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A `tierhost serve` process and a client for it.
pub struct Served {
    pub proc: Proc,
    pub http: Http,
}

impl Served {
    /// Starts `tierhost serve` with `config` on a free port and waits until it is healthy.
    pub async fn start(config: &Path) -> Self {
        let port = free_port();
        let mut proc = Proc::spawn(&mut serve_command(config, port));
        let http = Http::local(port);
        wait_for("tierhost serve to answer /healthz", async || {
            if let Some(status) = proc.exited() {
                panic!("tierhost serve exited ({status}) before it was healthy");
            }
            matches!(http.try_send("GET", "/healthz", "").await, Ok((200, _))).then_some(())
        })
        .await;
        Self { proc, http }
    }
}
