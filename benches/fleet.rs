//! Fleet capacity on paper: what the shared Redis prediction cache costs per request.
//!
//! One cascade (the fraud example's, `examples/fraud/cascade.toml`, in this process) with the
//! prediction cache off, embedded (moka, in process) and on a real `redis-server` on loopback
//! (the backend replicas share). Per mode: `--requests` distinct requests (every one a miss:
//! the lookup, the cascade, the store) and then the same requests again (hits, none for the
//! mode without a cache), one at a time, so a request's wall time is its latency. CPU per
//! request is read from /proc for this process (the replica) and for redis-server, over each
//! pass. The capacity lines divide a core by those CPU figures: what one replica core serves,
//! and what one redis-server core can serve the fleet before Redis is the limit.
//!
//! Run: `cargo bench --bench fleet` (~1 min; needs redis-server, which scripts/test.sh
//! installs). Options: `--requests N` (default 20000), `--smoke` (2000 requests; checks the
//! program works). Exits 1 when redis-server is missing or a pass did not behave (a miss pass
//! that hit, a hit pass that missed).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tierhost::{CacheStatus, Cascade, Config, Request};

#[path = "timing.rs"]
mod timing;
use timing::{stats, us};

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time (user + system) of process `pid` (or `self`) so far, from /proc/<pid>/stat.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')':
    // utime and stime are the 14th and 15th fields, the 12th and 13th after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks())
}

struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Result<RedisServer, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server ({e}); scripts/test.sh installs it"))?;
    let server = RedisServer {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        use std::io::{Read, Write};
        let pong = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(buf == *b"+PONG\r\n")
        });
        if pong.unwrap_or(false) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err("redis-server did not answer PING within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request whose features differ from every other `i`'s (so each is its own cache key).
fn request(i: usize) -> Request {
    Request::from_json(&format!(
        r#"{{"id":"r{i}","features":{{"amount":{},"account_age_days":{},"merchant_category":"grocery","is_international":false,"has_international_history":false,"channel":"web"}}}}"#,
        20 + i % 4000,
        1 + i / 4000
    ))
    .expect("a valid request")
}

struct Pass {
    latency: timing::Stats,
    cpu: Duration,
    redis_cpu: Duration,
    hits: usize,
    bypasses: usize,
}

async fn pass(cascade: &Cascade, requests: &[Request], redis_pid: Option<&str>) -> Pass {
    let redis_before = redis_pid.map(cpu_time).unwrap_or_default();
    let cpu_before = cpu_time("self");
    let mut samples = Vec::with_capacity(requests.len());
    let (mut hits, mut bypasses) = (0, 0);
    for request in requests {
        let started = Instant::now();
        let answer = cascade.predict(request).await;
        samples.push(started.elapsed());
        hits += usize::from(answer.cache == Some(CacheStatus::Hit));
        bypasses += usize::from(answer.cache == Some(CacheStatus::Bypass));
    }
    let n = requests.len() as u32;
    Pass {
        latency: stats(samples),
        cpu: (cpu_time("self") - cpu_before) / n,
        redis_cpu: (redis_pid.map(cpu_time).unwrap_or_default() - redis_before) / n,
        hits,
        bypasses,
    }
}

/// How many of `requests` get an answer the cache admits (not degraded).
fn all_cacheable(
    cascade: &Cascade,
    requests: &[Request],
    runtime: &tokio::runtime::Runtime,
) -> usize {
    requests
        .iter()
        .filter(|r| !runtime.block_on(cascade.predict(r)).degraded)
        .count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let requests: usize = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if smoke { 2000 } else { 20_000 });
    let redis = match start_redis() {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("fleet bench: {e}");
            std::process::exit(1);
        }
    };
    let redis_pid = redis.child.id().to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fraud");
    let base = std::fs::read_to_string(root.join("cascade.toml")).expect("the fraud cascade");
    let modes = [
        ("no cache", String::new()),
        (
            "embedded cache",
            "\n[cache]\nbackend = \"embedded\"\n".to_string(),
        ),
        (
            "redis cache (loopback)",
            format!(
                // 100 ms, not the default 5: a burst of background SETs queued on the one
                // connection can hold a GET past 5 ms, and one failure bypasses Redis for 1 s
                // (the cache's back-off), which would measure the bypass, not Redis.
                "\n[cache]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\ntimeout_ms = 100\n",
                redis.port
            ),
        ),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let all: Vec<Request> = (0..requests).map(request).collect();
    println!(
        "fleet bench: {requests} distinct requests, then the same again, one at a time, per mode \
         (fraud cascade in process; redis-server on loopback)\n"
    );
    println!(
        "| mode | pass | p50 µs | p99 µs | mean µs | replica CPU µs/req | redis CPU µs/req | hits |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    // (A hit is possible only for answers that are not degraded: the primary's.)
    let mut failed = false;
    let mut cpu_by_mode = Vec::new();
    for (name, section) in &modes {
        let config = Config::parse(
            &format!("{base}{section}"),
            &root.join("cascade.toml"),
            &root,
        )
        .expect("the fraud cascade with a cache section");
        let cascade = runtime
            .block_on(Cascade::load_strict(&config))
            .expect("the fraud cascade loads");
        // Warm: instances, the Redis connection, allocator.
        let warm: Vec<Request> = (0..200).map(|i| request(requests + 10_000 + i)).collect();
        runtime.block_on(pass(&cascade, &warm, None));
        let redis = section.contains("redis").then_some(redis_pid.as_str());
        let misses = runtime.block_on(pass(&cascade, &all, redis));
        let hits = runtime.block_on(pass(&cascade, &all, redis));
        for (label, p) in [
            ("miss (lookup + cascade + store)", &misses),
            ("repeat (hits where cacheable)", &hits),
        ] {
            println!(
                "| {name} | {label} | {} | {} | {} | {} | {} | {} |",
                us(p.latency.p50),
                us(p.latency.p99),
                us(p.latency.mean),
                us(p.cpu),
                if redis.is_some() {
                    us(p.redis_cpu)
                } else {
                    "-".into()
                },
                p.hits
            );
        }
        // Only answers that are not degraded are cached (the primary's): the second pass hits
        // exactly those, unless Redis was bypassed.
        let cacheable = all_cacheable(&cascade, &all, &runtime);
        if misses.hits != 0
            || misses.bypasses + hits.bypasses != 0
            || (!section.is_empty() && hits.hits != cacheable)
        {
            eprintln!(
                "{name}: {} hits on the first pass, {} of {cacheable} cacheable on the second, {} bypasses",
                misses.hits,
                hits.hits,
                misses.bypasses + hits.bypasses
            );
            failed = true;
        }
        cpu_by_mode.push((name, misses, hits));
    }
    println!();
    let per_core = |cpu: Duration| 1e6 / (cpu.as_nanos() as f64 / 1e3).max(f64::EPSILON);
    let (_, plain, _) = &cpu_by_mode[0];
    let (_, redis_miss, redis_hit) = &cpu_by_mode[2];
    println!(
        "replica CPU per request: {} µs without a cache, {} µs with Redis when every request misses ({:.2}x), {} µs on the repeat pass ({:.2}x; {} of {requests} hit)",
        us(plain.cpu),
        us(redis_miss.cpu),
        redis_miss.cpu.as_secs_f64() / plain.cpu.as_secs_f64(),
        us(redis_hit.cpu),
        redis_hit.cpu.as_secs_f64() / plain.cpu.as_secs_f64(),
        redis_hit.hits,
    );
    println!(
        "one replica core: ~{:.0} req/s without a cache, ~{:.0} req/s all misses through Redis, ~{:.0} req/s on the repeat pass (in process, no HTTP)",
        per_core(plain.cpu),
        per_core(redis_miss.cpu),
        per_core(redis_hit.cpu)
    );
    println!(
        "one redis-server core: ~{:.0} requests/s all misses (GET + SET each), ~{:.0} requests/s like the repeat pass, for the whole fleet before Redis is the limit",
        per_core(redis_miss.redis_cpu),
        per_core(redis_hit.redis_cpu)
    );
    if failed {
        std::process::exit(1);
    }
}
