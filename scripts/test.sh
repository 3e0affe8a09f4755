#!/usr/bin/env bash
# The project's test command (see README): installs what the build needs beyond the Rust
# toolchain, checks formatting and lints, then runs every test. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> rustup target add wasm32-wasip2 (guest tiers are wasm32-wasip2 components)"
rustup target add wasm32-wasip2
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Debian packages the tests use for real: promtool (package `prometheus`) checks the /metrics
# exposition in tests/server.rs; redis-server backs the shared prediction cache in
# tests/cache_redis.rs (each test starts its own on a loopback port).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export TIERHOST_REQUIRE_PROMTOOL=1
export TIERHOST_REQUIRE_REDIS=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "==> cargo clippy (host, release profile shared with the tests)"
cargo clippy --release --all-targets -- -D warnings
echo "==> cargo clippy (guest tiers, wasm32-wasip2)"
(cd plugins && cargo clippy --release --target wasm32-wasip2 --target-dir ../target/guests -- -D warnings)

echo "==> cargo test --release"
cargo test --release --no-fail-fast

# Fire drills on the example cascades: every fault kind injected into every tier; exits
# non-zero on any gap (a wrong reason, a request over budget, a fallback no sample exercises).
echo "==> tierhost drill (examples/fraud, examples/phishing)"
target/release/tierhost drill --config examples/fraud/cascade.toml \
    --samples examples/fraud/requests.jsonl
target/release/tierhost drill --config examples/phishing/cascade.toml \
    --data examples/phishing/data/test.csv --labels 1=phishing,0=legitimate --rows 30

echo '==> benchmark smoke run (checks the bench program still works; README figures come from cargo bench)'
cargo bench --bench sandbox -- --smoke
