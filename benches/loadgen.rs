//! The load generator of the HTTP benches (`load`, `escalation`), the servers they measure,
//! and how their tables show a figure.
//!
//! - [`open_loop`]: requests sent on a fixed schedule (request `i` at `start + i / rate`), each
//!   one's latency measured from its scheduled send time, so time spent queueing anywhere (in
//!   the generator, the kernel, the server) counts; a request that cannot be sent on time (every
//!   connection busy) is still measured from its scheduled time. No answer within the timeout,
//!   or a broken connection, is a lost request, infinitely slow in the percentiles.
//! - [`closed_loop`]: a fixed number of connections, each sending its next request as soon as
//!   the previous one is answered: the maximum throughput. It speaks HTTP/1.1 itself (a
//!   prepared request, the answer read by its length), so that one core of load generation
//!   can keep even the HTTP floor's server busy.
//! - [`Server`]: a server process in its own process group, optionally pinned to a core with
//!   `taskset`; its CPU time (the whole group's) is read from `/proc`, and stopping it stops
//!   the whole group.
//! - [`median_range`], [`ms`], [`count`], [`percent`], [`quantile_ms`]: a figure over
//!   repetitions as `median (min..max)`, and its units.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client for loopback HTTP/1 with TCP_NODELAY, keeping up to `idle` idle connections.
pub fn client(idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(connector)
}

/// Request `i` of a run: id `{prefix}-{i}` (the id decides whether the primary faults, by the
/// same FNV-1a rule on every system), varied but realistic features.
pub fn body(prefix: &str, i: u64) -> Bytes {
    let amount = [42.5, 120.0, 2000.0, 7000.0, 9000.0][(i % 5) as usize];
    let age = [900, 300, 40, 3][(i % 4) as usize];
    let category = ["grocery", "crypto", "electronics", "wire_transfer"][(i % 4) as usize];
    Bytes::from(format!(
        r#"{{"id":"{prefix}-{i}","features":{{"amount":{amount},"account_age_days":{age},"merchant_category":"{category}","is_international":{},"has_international_history":false}}}}"#,
        i.is_multiple_of(3)
    ))
}

/// How one request ended.
enum Outcome {
    /// 200 with an answer; whether the primary served it.
    Ok { latency: Duration, primary: bool },
    /// An answer that is not a 200 with an answer in it.
    Error { latency: Duration },
    /// No answer: a broken connection or the timeout.
    Lost,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Requests scheduled (open loop) or sent (closed loop).
    pub sent: u64,
    /// Answered 200 with an answer.
    pub ok: u64,
    /// Answered with anything else.
    pub errors: u64,
    /// Never answered (broken connection, or no answer within the timeout).
    pub lost: u64,
    /// Length of the run (the schedule, or the closed loop's wall time).
    pub seconds: f64,
    /// Latencies of the answered requests (ok and errors), sorted.
    pub latencies: Vec<Duration>,
    /// Answers served by the primary tier.
    pub primary: u64,
    /// Open loop: 99th percentile of how late a request's task started after its scheduled
    /// time (the generator's own lag; zero for the closed loop).
    pub lag_p99: Duration,
    /// CPU seconds the server (its whole process group) used during the run.
    pub server_cpu: f64,
    /// Wall time over which `server_cpu` was measured (the run and its drain).
    pub wall: f64,
    /// CPU seconds this process (the load generator) used during the run.
    pub generator_cpu: f64,
}

impl RunStats {
    fn from_outcomes(outcomes: Vec<Outcome>, seconds: f64, mut lags: Vec<Duration>) -> Self {
        let mut stats = RunStats {
            sent: outcomes.len() as u64,
            seconds,
            ..Default::default()
        };
        for outcome in outcomes {
            match outcome {
                Outcome::Ok { latency, primary } => {
                    stats.ok += 1;
                    stats.primary += u64::from(primary);
                    stats.latencies.push(latency);
                }
                Outcome::Error { latency } => {
                    stats.errors += 1;
                    stats.latencies.push(latency);
                }
                Outcome::Lost => stats.lost += 1,
            }
        }
        stats.latencies.sort();
        lags.sort();
        stats.lag_p99 = lags
            .get(((lags.len().max(1) - 1) as f64 * 0.99) as usize)
            .copied()
            .unwrap_or_default();
        stats
    }

    /// The `q` quantile of the latency over every request sent, lost ones counting as
    /// infinitely slow: `None` when it falls on a lost request.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.latencies.len() + self.lost as usize;
        if n == 0 {
            return None;
        }
        self.latencies
            .get(((n - 1) as f64 * q).round() as usize)
            .copied()
    }

    /// Good answers per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// Share of the answers served by the primary.
    pub fn primary_share(&self) -> f64 {
        self.primary as f64 / self.ok.max(1) as f64
    }

    /// Server CPU used, in cores (CPU seconds per second of the measurement).
    pub fn cpu_share(&self) -> f64 {
        self.server_cpu / self.wall.max(1e-9)
    }

    /// Load generator CPU used, in cores.
    pub fn generator_share(&self) -> f64 {
        self.generator_cpu / self.wall.max(1e-9)
    }

    /// Server CPU per good answer, in microseconds.
    pub fn cpu_per_answer_us(&self) -> f64 {
        self.server_cpu / self.ok.max(1) as f64 * 1e6
    }
}

/// Sends one request; `at` is when it was due.
async fn one(
    client: HttpClient,
    url: Arc<str>,
    body: Bytes,
    at: Instant,
    timeout: Duration,
    permits: Option<Arc<Semaphore>>,
) -> Outcome {
    let attempt = async {
        let _permit = match &permits {
            Some(p) => Some(p.clone().acquire_owned().await.map_err(|_| ())?),
            None => None,
        };
        let request = hyper::Request::post(&*url)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|_| ())?;
        let response = client.request(request).await.map_err(|_| ())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|_| ())?
            .to_bytes();
        Ok::<_, ()>((status, bytes))
    };
    let result = tokio::time::timeout_at((at + timeout).into(), attempt).await;
    let latency = at.elapsed();
    match result {
        Ok(Ok((status, bytes))) if status.is_success() && contains(&bytes, br#""served_by":"#) => {
            Outcome::Ok {
                latency,
                primary: contains(&bytes, br#""served_by":{"tier":"primary""#),
            }
        }
        Ok(Ok(_)) => Outcome::Error { latency },
        Ok(Err(())) | Err(_) => Outcome::Lost,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The open loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    /// How long requests are scheduled for.
    pub duration: Duration,
    /// At most this many requests in flight (connections); a request due while all are busy
    /// waits, and its wait counts.
    pub max_in_flight: usize,
    /// A request not answered this long after its scheduled time is lost.
    pub timeout: Duration,
}

/// Runs an open loop against `url` from the calling thread (which must not be a runtime
/// thread): it sleeps until each request is due and hands it to the runtime, then waits for
/// the last answers (at most `timeout` after the last scheduled time).
pub fn open_loop(
    handle: &Handle,
    client: &HttpClient,
    url: &str,
    prefix: &str,
    settings: OpenLoop,
) -> RunStats {
    let url: Arc<str> = url.into();
    let permits = Arc::new(Semaphore::new(settings.max_in_flight));
    let n = (settings.rate * settings.duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / settings.rate);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let request = one(
            client.clone(),
            url.clone(),
            body(prefix, i),
            at,
            settings.timeout,
            Some(permits.clone()),
        );
        tasks.push(handle.spawn(async move {
            let lag = at.elapsed();
            (request.await, lag)
        }));
    }
    let (outcomes, lags) = handle.block_on(async {
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut lags = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (outcome, lag) = task.await.expect("request task");
            outcomes.push(outcome);
            lags.push(lag);
        }
        (outcomes, lags)
    });
    RunStats::from_outcomes(outcomes, settings.duration.as_secs_f64(), lags)
}

/// A minimal HTTP/1.1 keep-alive client on one connection, for the closed loop: the request
/// is written from a prepared buffer and the answer read by its `Content-Length`. Much cheaper
/// per request than a general client, so one core of load generation can saturate a server
/// as fast as the HTTP floor.
struct RawConnection {
    addr: String,
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl RawConnection {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.into(),
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    /// POSTs `body` to `path`: the status and body, or `Err` when the connection broke (it
    /// is reopened on the next request).
    async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), ()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let result = async {
            if self.stream.is_none() {
                let stream = tokio::net::TcpStream::connect(&self.addr)
                    .await
                    .map_err(|_| ())?;
                stream.set_nodelay(true).map_err(|_| ())?;
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().ok_or(())?;
            let mut request = format!(
                "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                self.addr,
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(body);
            stream.write_all(&request).await.map_err(|_| ())?;
            self.buf.clear();
            let (head_len, status, length, close) = loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| ())?;
                    let mut lines = head.split("\r\n");
                    let status: u16 = lines
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .and_then(|c| c.parse().ok())
                        .ok_or(())?;
                    let (mut length, mut close) = (None, false);
                    for line in lines {
                        let (name, value) = line.split_once(':').ok_or(())?;
                        let value = value.trim();
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.parse::<usize>().ok();
                        } else if name.eq_ignore_ascii_case("connection") {
                            close = value.eq_ignore_ascii_case("close");
                        }
                    }
                    break (end + 4, status, length.ok_or(())?, close);
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.map_err(|_| ())?;
                if n == 0 {
                    return Err(());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            while self.buf.len() < head_len + length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.map_err(|_| ())?;
                if n == 0 {
                    return Err(());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            let body = self.buf[head_len..head_len + length].to_vec();
            if close {
                self.stream = None;
            }
            Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// Closed loop against `base` (`http://HOST:PORT`) `path`, from `connections` connections,
/// for `duration`, or until `done` is set.
pub async fn closed_loop(
    base: &str,
    path: &str,
    prefix: &str,
    connections: usize,
    duration: Duration,
    timeout: Duration,
    done: Option<Arc<AtomicBool>>,
) -> RunStats {
    let addr = base.trim_start_matches("http://").to_string();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, done) = (next.clone(), done.clone());
        let (prefix, path, mut connection) = (
            prefix.to_string(),
            path.to_string(),
            RawConnection::new(&addr),
        );
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let finished = || match &done {
                Some(done) => done.load(Ordering::Relaxed),
                None => Instant::now() >= deadline,
            };
            while !finished() {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let body = body(&prefix, i);
                let at = Instant::now();
                let result = tokio::time::timeout(timeout, connection.post(&path, &body)).await;
                let latency = at.elapsed();
                let outcome = match result {
                    Ok(Ok((200, b))) if contains(&b, br#""served_by":"#) => Outcome::Ok {
                        latency,
                        primary: contains(&b, br#""served_by":{"tier":"primary""#),
                    },
                    Ok(Ok(_)) => Outcome::Error { latency },
                    Ok(Err(())) | Err(_) => {
                        connection.stream = None;
                        // A refused or broken connection fails at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Outcome::Lost
                    }
                };
                outcomes.push(outcome);
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    RunStats::from_outcomes(all, started.elapsed().as_secs_f64(), Vec::new())
}

/// The median of `values`, shown with `show`, and their range when they differ:
/// `12.0 (11.5..13.1)`; `-` when there are none. Of an even count, the mean of the middle two
/// (the upper one when either is infinite).
pub fn median_range(mut values: Vec<f64>, show: impl Fn(f64) -> String) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        let (a, b) = (values[n / 2 - 1], values[n / 2]);
        if a.is_infinite() || b.is_infinite() {
            b
        } else {
            (a + b) / 2.0
        }
    };
    if n == 1 || values[0] == values[n - 1] {
        show(median)
    } else {
        format!(
            "{} ({}..{})",
            show(median),
            show(values[0]),
            show(values[n - 1])
        )
    }
}

/// Milliseconds for a table: 2 decimals below 100, none above, `∞` for a lost request.
pub fn ms(x: f64) -> String {
    if x.is_infinite() {
        "∞".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A count for a table.
pub fn count(x: f64) -> String {
    format!("{x:.0}")
}

/// A share as a percentage with one decimal.
pub fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The `q` latency quantile of a run in ms, infinite when it falls on a lost request.
pub fn quantile_ms(s: &RunStats, q: f64) -> f64 {
    s.quantile(q)
        .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1000.0)
}

/// Pins this whole process (every thread) to `core` with `taskset`; false when that fails.
pub fn pin_self(core: usize) -> bool {
    Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = fields[11..13]
                .iter()
                .filter_map(|f| f.parse::<u64>().ok())
                .sum();
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// A server process in its own process group.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The Python baselines' events file (worker starts, tier-process restarts).
    pub events: Option<PathBuf>,
}

impl Server {
    /// Starts `program args...` (under `taskset -c core` when `core` is set) with `envs`, in a
    /// new process group, output discarded.
    pub fn start(
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        core: Option<usize>,
        base: String,
        events: Option<PathBuf>,
    ) -> Self {
        let mut command = match core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string()]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Self {
            pid: child.id(),
            child: Some(child),
            base,
            events,
        }
    }

    /// Whether the server's first process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// CPU seconds (user + system, with reaped children) of every process in the group now.
    pub fn cpu_seconds(&self) -> f64 {
        let tick = 100.0; // USER_HZ on Linux
        let mut total = 0u64;
        for fields in group_members(self.pid) {
            // utime stime cutime cstime are fields 14..=17 of stat: 11..=14 here.
            for f in &fields[11..15] {
                total += f.parse::<i64>().unwrap_or(0).max(0) as u64;
            }
        }
        total as f64 / tick
    }

    /// Lines of the events file that start with `kind`.
    pub fn events(&self, kind: &str) -> u64 {
        self.events
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map_or(0, |t| {
                t.lines().filter(|l| l.starts_with(kind)).count() as u64
            })
    }

    /// SIGTERM, then after `grace` SIGKILL to the whole group; every process of the group is
    /// gone when this returns (or after 5 s more).
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&self.pid.to_string(), "TERM");
        let until = Instant::now() + grace;
        while Instant::now() < until && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = format!("-{}", self.pid);
        signal(&group, "KILL");
        let _ = child.kill();
        let _ = child.wait();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && group_alive(self.pid) {
            signal(&group, "KILL");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn signal(target: &str, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The `/proc/PID/stat` fields after the command name (state, ppid, pgrp, ...) of every
/// process in process group `pgid`.
fn group_members(pgid: u32) -> Vec<Vec<String>> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            (fields.len() > 15 && fields[2].parse::<u32>().ok() == Some(pgid)).then_some(fields)
        })
        .collect()
}

/// Whether a live process (not a zombie waiting to be reaped) is left in group `pgid`.
fn group_alive(pgid: u32) -> bool {
    group_members(pgid)
        .iter()
        .any(|fields| !matches!(fields[0].as_str(), "Z" | "X"))
}
