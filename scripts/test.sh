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
# tests/cache_redis.rs (each test starts its own on a loopback port); Chromium and its
# WebDriver drive the review page in tests/review_page.rs (headless, on loopback).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromedriver ] || missing+=(chromium chromium-driver)
# openssl makes the self-signed certificates and curl is the HTTPS client of tests/admin.rs.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# python3 runs the loopback KServe V2 model server of tests/remote.rs (standard library only).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# docker-registry (the CNCF distribution server) is the OCI registry tests/oci.rs pushes
# plugins to and pulls them from, on loopback (each test starts its own; never as a service).
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
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

echo "==> cargo fmt --check (fuzz targets)"
(cd fuzz && cargo fmt -- --check)

# Supply chain (README "Supply chain and fuzzing"): cargo-deny checks advisories, licenses,
# bans and sources of the three workspaces that have their own Cargo.lock, with deny.toml.
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    echo "==> installing cargo-deny $CARGO_DENY_VERSION"
    nice -n 10 cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
fi
# The RustSec advisory database is a git repository on GitHub, which cargo-deny clones into
# $CARGO_HOME/advisory-dbs. Where GitHub cannot be reached (machines that reach only package
# registries), a copy already in that directory is used without fetching, with a warning that
# names its date; with none, advisories are NOT checked, and the run says so loudly (or fails,
# with TIERHOST_REQUIRE_ADVISORIES=1).
ADVISORY_DB_URL=https://github.com/rustsec/advisory-db
advisory_db_dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
deny_global=()
deny_checks=(advisories bans licenses sources)
advisory_warning=""
if timeout 30 git ls-remote --heads "$ADVISORY_DB_URL" main >/dev/null 2>&1; then
    echo "==> cargo deny: advisory database fetched from $ADVISORY_DB_URL"
elif git -C "$advisory_db_dir" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    db_date=$(git -C "$advisory_db_dir" show -s --format=%cs HEAD)
    db_age_days=$(( ($(date +%s) - $(git -C "$advisory_db_dir" show -s --format=%ct HEAD)) / 86400 ))
    deny_global+=(--offline)
    advisory_warning="advisories were checked against a LOCAL copy of the RustSec database \
(last commit $db_date, $db_age_days days old) because $ADVISORY_DB_URL cannot be reached: \
advisories published since then were NOT checked"
else
    deny_checks=(bans licenses sources)
    advisory_warning="advisories were NOT checked: $ADVISORY_DB_URL cannot be reached from \
this machine and there is no local copy in $advisory_db_dir"
fi
for workspace in . plugins fuzz; do
    echo "==> cargo deny check ${deny_checks[*]} ($workspace)"
    # fuzz/Cargo.lock follows the host's manifest (a dependency added to host/ adds it there),
    # so it may be refreshed here; the host's and the guests' locks must be up to date.
    locked=(--locked)
    if [ "$workspace" = fuzz ]; then locked=(); fi
    cargo fetch "${locked[@]}" --manifest-path "$workspace/Cargo.toml" >/dev/null
    cargo deny "${locked[@]}" "${deny_global[@]}" --manifest-path "$workspace/Cargo.toml" \
        --config deny.toml check "${deny_checks[@]}"
done
if [ -n "$advisory_warning" ]; then
    echo "################################################################################"
    echo "WARNING: $advisory_warning"
    echo "################################################################################"
    if [ "${TIERHOST_REQUIRE_ADVISORIES:-0}" = 1 ]; then
        echo "TIERHOST_REQUIRE_ADVISORIES=1: failing" >&2
        exit 1
    fi
fi

echo "==> cargo clippy (host, release profile shared with the tests)"
cargo clippy --release --all-targets -- -D warnings
echo "==> cargo clippy (guest tiers, wasm32-wasip2)"
(cd plugins && cargo clippy --release --target wasm32-wasip2 --target-dir ../target/guests -- -D warnings)

# Python tiers (componentize-py, pinned in the script, installed into target/polyglot/venv):
# tests/polyglot.rs compares them with the Rust rules and checks their fault containment.
echo "==> scripts/polyglot.sh (Python tiers)"
./scripts/polyglot.sh
export TIERHOST_REQUIRE_POLYGLOT=1

echo "==> cargo test --release"
cargo test --release --no-fail-fast

# The library without the binary's features: what an embedder compiles (README "Embedding it
# in a Rust service"). It must build, and must not pull in the server, plot, watcher or CLI crates.
echo "==> cargo check --lib --no-default-features (the embedder's build)"
cargo check --lib --no-default-features
forbidden=$( (cargo tree --no-default-features -e normal --prefix none --format '{p}' \
    | awk '{print $1}' | grep -xE 'axum|hyper|plotters|notify|clap|indicatif|csv|tracing-subscriber|redis|reqwest|oci-client';
    cargo tree --no-default-features -e normal --depth 1 --prefix none --format '{p}' \
    | awk '{print $1}' | grep -xE 'anyhow') | sort -u || true)
if [ -n "$forbidden" ]; then
    echo "the library without default features depends on: $forbidden" >&2
    exit 1
fi
echo "==> cargo doc (the library's curated API; broken or private links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib
echo "==> cargo run --example embed (a Rust service embedding a cascade built in code)"
cargo run --release --example embed

# Fire drills on the example cascades: every fault kind injected into every tier; exits
# non-zero on any gap (a wrong reason, a request over budget, a fallback no sample exercises).
echo "==> tierhost drill (examples/fraud, examples/phishing, examples/breast-cancer)"
target/release/tierhost drill --config examples/fraud/cascade.toml \
    --samples examples/fraud/requests.jsonl
target/release/tierhost drill --config examples/phishing/cascade.toml \
    --data examples/phishing/data/test.csv --labels 1=phishing,0=legitimate --rows 30
target/release/tierhost drill --config examples/breast-cancer/cascade.toml \
    --data examples/breast-cancer/data/test.csv --labels 1=malignant,0=benign --rows 114

echo '==> promtool check rules + test rules (deploy/prometheus: the fleet alerts and their unit tests)'
(cd deploy/prometheus && promtool check rules rules.yml && promtool test rules rules.test.yml)
echo '==> kubernetes-validate (deploy/k8s, strict, against the bundled Kubernetes 1.33 schemas)'
k8s_python="$(scripts/python-venv.sh k8s-venv deploy/k8s/requirements.txt | tail -n1)"
"$(dirname "$k8s_python")/kubernetes-validate" -k 1.33.0 --strict --quiet \
    deploy/k8s/configmap.yaml deploy/k8s/deployment.yaml deploy/k8s/service.yaml \
    deploy/k8s/poddisruptionbudget.yaml
echo '==> benchmark smoke run (checks the bench program still works; README figures come from cargo bench)'
cargo bench --bench sandbox -- --smoke

echo '==> soak, short version (20,000 requests with 20% mixed primary faults and hot swaps; the 1M run: cargo bench --bench soak)'
cargo bench --bench soak -- --smoke
echo '==> fleet bench, short version (the Redis cache cost per request; the full run: cargo bench --bench fleet)'
cargo bench --bench fleet -- --smoke
echo '==> escalation queue bench, short version (queue off / sync = normal / sync = full over HTTP; the full run: cargo bench --bench escalation)'
cargo bench --bench escalation -- --smoke
echo '==> shadow bench, short version (shadow off / a core that never idles / shadow on, over HTTP; the full run: cargo bench --bench shadow)'
cargo bench --bench shadow -- --smoke
echo '==> remote-tier bench, short version (native HTTP client vs builtin:kserve, fresh and reused; the full run: cargo bench --bench remote)'
cargo bench --bench remote -- --smoke

# Fuzzing (README "Supply chain and fuzzing"): coverage-guided libFuzzer through cargo-fuzz on
# the stable toolchain (`--sanitizer none`: no nightly, no RUSTC_BOOTSTRAP). A short run of
# every target from its committed seed corpus (fuzz/corpus/<target>); any panic fails. The
# growing corpus and crash inputs go to target/fuzz/{corpus,artifacts}/<target>.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    nice -n 10 cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
fuzz_seconds="${TIERHOST_FUZZ_SECONDS:-30}"
fuzz_opts=(-O --sanitizer none --codegen-units 16 --target-dir ../target/fuzz)
echo "==> cargo fuzz build (instrumented host; first build ~12 min on 2 cores)"
(cd fuzz && nice -n 10 cargo fuzz build "${fuzz_opts[@]}")
for target in request_json config_toml tier_output; do
    echo "==> cargo fuzz run $target (${fuzz_seconds} s)"
    mkdir -p "target/fuzz/corpus/$target" "target/fuzz/artifacts/$target"
    dict=()
    if [ -f "fuzz/dict/$target.dict" ]; then dict=("-dict=dict/$target.dict"); fi
    log="target/fuzz/$target.log"
    if (cd fuzz && cargo fuzz run "${fuzz_opts[@]}" "$target" "../target/fuzz/corpus/$target" \
        "corpus/$target" -- -max_total_time="$fuzz_seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="../target/fuzz/artifacts/$target/" "${dict[@]}") >"$log" 2>&1; then
        grep -E '^Done|^stat::number_of_executed_units' "$log"
    else
        tail -n 80 "$log"
        echo "fuzz target $target FAILED (full log: $log; input: target/fuzz/artifacts/$target/)" >&2
        exit 1
    fi
done
