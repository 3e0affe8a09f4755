//! `tierhost new tier`: each language's project builds as generated and its own `test.sh`
//! passes (the tier answers the samples it should, the others fall back to the safe default),
//! through the real binary. Bad names and non-empty directories are refused, nothing is
//! written over.
use std::path::Path;
use std::process::Command;

fn tierhost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .args(args)
        .output()
        .expect("run tierhost")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generates a project for `lang` and runs its `test.sh` with this build's binary.
fn generate_and_test(lang: &str, extra_env: &[(&str, &Path)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join(format!("card-{lang}"));
    let name = format!("card-{lang}");
    let out = tierhost(&[
        "new",
        "tier",
        &name,
        "--lang",
        lang,
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut test = Command::new(project.join("test.sh"));
    test.env("TIERHOST", env!("CARGO_BIN_EXE_tierhost"));
    for (key, value) in extra_env {
        test.env(key, value);
    }
    let out = test.output().expect("run test.sh");
    let log = text(&out);
    assert!(
        out.status.success(),
        "{lang} project's test.sh failed:\n{log}"
    );
    assert!(
        log.contains("5 of 5 sample requests answered as expected"),
        "{log}"
    );
    log
}

#[test]
fn a_rust_tier_project_builds_and_passes_its_own_test() {
    // The guests' target dir: wit-bindgen is already built there for the same profile.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/guests");
    let log = generate_and_test("rust", &[("CARGO_TARGET_DIR", &target)]);
    assert!(log.contains("allow from card-rust"), "{log}");
    assert!(log.contains("review from safe-default"), "{log}");
}

/// A component toolchain that scripts/polyglot.sh installed under target/polyglot (the
/// project's own build.sh would install the same pinned version); None (skip, loudly) when it
/// is missing and TIERHOST_REQUIRE_POLYGLOT is not 1.
fn polyglot_tool(relative: &str) -> Option<std::path::PathBuf> {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/polyglot")
        .join(relative);
    if tool.exists() {
        return Some(tool);
    }
    assert_ne!(
        std::env::var("TIERHOST_REQUIRE_POLYGLOT").as_deref(),
        Ok("1"),
        "{} is missing: run ./scripts/polyglot.sh",
        tool.display()
    );
    eprintln!(
        "SKIPPED: {} is missing (run ./scripts/polyglot.sh)",
        tool.display()
    );
    None
}

#[test]
fn a_python_tier_project_builds_and_passes_its_own_test() {
    let Some(componentize) = polyglot_tool("venv/bin/componentize-py") else {
        return;
    };
    let log = generate_and_test("python", &[("COMPONENTIZE_PY", &componentize)]);
    assert!(log.contains("allow from card-python"), "{log}");
    assert!(log.contains("review from safe-default"), "{log}");
}

#[test]
fn a_javascript_tier_project_builds_and_passes_its_own_test() {
    let Some(componentize) = polyglot_tool("node/node_modules/.bin/componentize-js") else {
        return;
    };
    let log = generate_and_test("js", &[("COMPONENTIZE_JS", &componentize)]);
    assert!(log.contains("allow from card-js"), "{log}");
    assert!(log.contains("review from safe-default"), "{log}");
}

#[test]
fn bad_names_and_existing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["Card", "card_rules", "x-", "a--b", "safe-default", ""] {
        let out = tierhost(&["new", "tier", bad, "--dir", dir.path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", text(&out));
        assert!(text(&out).contains("error: tier name"), "{}", text(&out));
        assert!(!text(&out).contains("panicked"));
    }
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = tierhost(&["new", "tier", "x", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("never writes over files"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
