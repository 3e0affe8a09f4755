//! Shared by every integration test suite and the benches (which take it with
//! `#[path = "../tests/common/mod.rs"] mod common;`): one engine per test binary (so each guest
//! is compiled once), config builders, a standard request, the test-only guests, plugin
//! variants, waiting on a condition, and (in [`http`]) HTTP clients and `tierhost serve`
//! processes.
#![allow(dead_code)]

pub mod http;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tierhost::{Answer, Cascade, Config, EngineConfig, Request, TierEngine};

pub fn engine() -> TierEngine {
    static ENGINE: OnceLock<TierEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| TierEngine::new(&EngineConfig::default(), Path::new(".")).expect("engine"))
        .clone()
}

pub fn config(toml: &str) -> Config {
    Config::parse(toml, Path::new("test.toml"), Path::new(".")).expect("valid test config")
}

pub async fn cascade(toml: &str) -> Cascade {
    Cascade::with_engine(engine(), &config(toml))
        .await
        .expect("cascade loads")
}

/// A chaos tier entry in `mode`, with extra lines for its `[tier.limits]` table.
pub fn chaos_tier(name: &str, mode: &str, limits: &str) -> String {
    format!(
        "[[tier]]\nname = \"{name}\"\nplugin = \"builtin:chaos\"\n[tier.limits]\n{limits}\n[tier.params]\nmode = \"{mode}\"\n"
    )
}

/// The rules tier as a healthy fallback. Its deadline is generous (the request budget still
/// bounds it): the tests that use it are about containment and routing, and must not depend on
/// a loaded machine meeting a 20 ms deadline for a healthy call.
pub const RULES_TIER: &str = "[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\nmin_confidence = 0.3\n[tier.limits]\ndeadline_ms = 10000\n";

/// The rules tier read from `rules.wasm` beside the config (see [`write_config_dir`]), a file a
/// test can replace to hot swap it; as generous a deadline as [`RULES_TIER`].
pub const RULES_FILE_TIER: &str = "[[tier]]\nname = \"rules\"\nplugin = \"rules.wasm\"\nmin_confidence = 0.3\n[tier.limits]\ndeadline_ms = 10000\n";

/// Writes `cascade.toml` (`config`) and `rules.wasm` (the builtin rules tier) into `dir`;
/// returns the config's path.
pub fn write_config_dir(dir: &Path, config: &str) -> PathBuf {
    std::fs::write(
        dir.join("rules.wasm"),
        tierhost::builtin::get("rules").expect("builtin rules"),
    )
    .unwrap();
    let path = dir.join("cascade.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The standard request as JSON: a risky transaction the rules tier blocks.
pub fn request_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","features":{{"amount":9000,"account_age_days":3,"merchant_category":"crypto","is_international":true,"has_international_history":false}}}}"#
    )
}

pub fn request(id: &str) -> Request {
    Request::from_json(&request_json(id)).expect("valid request")
}

pub fn kinds(answer: &Answer) -> Vec<&'static str> {
    answer.fallback_kinds()
}

/// Runs the `tierhost` binary with `args`: exit code (-1 if killed), stdout, stderr.
pub fn tierhost(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .args(args)
        .output()
        .expect("run tierhost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The built component of a test-only guest (`plugins/<name>`, built by `host/build.rs` but
/// not embedded as a `builtin:` tier): `wrong_world`, `forged_describe`, `feature_echo`.
pub fn test_guest(name: &str) -> PathBuf {
    let path = Path::new(env!("TIERHOST_TEST_GUESTS")).join(format!("tier_{name}.wasm"));
    assert!(
        path.exists(),
        "test guest `{name}` not built at {}",
        path.display()
    );
    path
}

/// The same component with a custom section appended: identical behaviour, new sha256.
pub fn variant_of(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"tierhost-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// Replaces `path` by a rename, as deploy tools do, so no reader sees a half-written file.
pub fn replace_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// How long a test waits for a condition (a process coming up, a reload applied, a request
/// in flight) before it fails. Generous for a loaded 2-core machine: the wait ends as soon as
/// the condition holds, so a healthy run never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(10);

/// Checks `probe` until it returns `Some` and returns that, failing after [`PATIENCE`] with
/// `what` (what the test was waiting for). The way tests synchronise: never a fixed pause.
pub async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    let mut poll = tokio::time::interval(POLL);
    loop {
        poll.tick().await;
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
    }
}
