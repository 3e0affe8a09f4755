//! Builds the guest tiers in `plugins/` for `wasm32-wasip2` (one target dir for all of them,
//! `target/guests`) and generates `guests.rs`: the product's reference tiers, embedded as
//! `builtin:<name>` plugins. Test-only guests are built too but never embedded: the tests find
//! them in the directory named by `TIERHOST_TEST_GUESTS` (set for every target of this
//! package, see `tests/common`). Nobody commits `.wasm` files.
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest crates and the name the host knows them by. `builtin` ones are embedded in the binary;
/// the others exist for the tests only (`tests/common::test_guest`).
const GUESTS: &[(&str, &str, bool)] = &[
    ("tier-rules", "rules", true),
    ("tier-linear", "linear", true),
    ("tier-constant", "constant", true),
    ("tier-chaos", "chaos", true),
    ("tier-trees", "trees", true),
    ("tier-ruleset", "ruleset", true),
    ("tier-onnx", "onnx", true),
    ("tier-kserve", "kserve", true),
    ("tier-wrong-world", "wrong_world", false),
    ("tier-forged-describe", "forged_describe", false),
    ("tier-feature-echo", "feature_echo", false),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    // The package sits at the top of the repository.
    let root = manifest_dir;
    let plugins = root.join("plugins");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Only the guests the host embeds or tests with; other members of plugins/ build on demand.
    for (krate, _, _) in GUESTS {
        cmd.arg("-p").arg(krate);
    }
    // The outer build's flags are for the host target; keep them away from the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_PROFILE_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .output()
        .expect("failed to run cargo for the guest plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("wasm32-wasip2") && stderr.contains("not installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`")
        {
            panic!(
                "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`\n{stderr}"
            );
        }
        panic!("building the guest plugins failed:\n{stderr}");
    }

    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut generated = String::from(
        "/// Reference tiers embedded in the binary, usable as `builtin:<name>` plugins.\n",
    );
    generated.push_str("pub static BUILTIN: &[(&str, &[u8])] = &[\n");
    for (krate, name, builtin) in GUESTS {
        let wasm = out_dir.join(format!("{}.wasm", krate.replace('-', "_")));
        assert!(
            wasm.exists(),
            "expected guest component at {}",
            wasm.display()
        );
        if *builtin {
            let path = escape(&wasm);
            writeln!(generated, "    (\"{name}\", include_bytes!(\"{path}\")),").unwrap();
        }
    }
    generated.push_str("];\n");
    // Where the tests find the test-only guests (`tier_<name>.wasm`); not part of the library.
    println!("cargo:rustc-env=TIERHOST_TEST_GUESTS={}", out_dir.display());
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests.rs");
    std::fs::write(out, generated).expect("write guests.rs");
}

fn escape(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}
