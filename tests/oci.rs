//! Plugins from an OCI registry: a real registry (Debian's `docker-registry`, the CNCF
//! distribution server, installed by `scripts/test.sh`) on loopback; `tierhost push` uploads a
//! component with its signature, a tier pinned by digest pulls, verifies and serves it, a
//! wrong digest is refused (and a reload to it keeps the old version serving), a damaged store
//! entry is fetched again, and a tag alone needs `[oci] allow_tags`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::*;
use tierhost::signing::{PrivateKey, sign_file};

/// A registry process on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/docker-registry");
    assert!(
        path.exists(),
        "docker-registry is not installed (scripts/test.sh installs Debian's docker-registry)"
    );
    path
}

async fn start_registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", crate::common::http::free_port());
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(registry_binary())
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let registry = Registry {
        child,
        addr,
        _dir: dir,
    };
    // Up when /v2/ answers 200 (the distribution API's version check).
    let client = crate::common::http::Http::new(format!("http://{}", registry.addr));
    wait_for("the registry's /v2/ to answer 200", async || {
        matches!(client.try_send("GET", "/v2/", "").await, Ok((200, _))).then_some(())
    })
    .await;
    registry
}

/// `tierhost push FILE --to REFERENCE`: the pinned reference it prints.
fn push(registry: &Registry, file: &Path, reference: &str) -> String {
    let (code, stdout, stderr) = tierhost(&[
        "push",
        file.to_str().unwrap(),
        "--to",
        reference,
        "--insecure",
        &registry.addr,
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let pinned = stdout.trim().to_string();
    assert!(
        pinned.starts_with(&format!("{reference}@sha256:")) && pinned.len() == reference.len() + 72,
        "{pinned}"
    );
    pinned
}

fn cascade_toml(registry: &Registry, plugin: &str, extra_oci: &str, trust: &str) -> String {
    format!(
        "{trust}[oci]\nstore = \"store\"\ninsecure = [\"{}\"]\n{extra_oci}\n\
         [[tier]]\nname = \"remote\"\nplugin = \"{plugin}\"\nsigned_by = [\"team\"]\n\
         [tier.limits]\ndeadline_ms = 10000\n[tier.params]\nlabel = \"pulled\"\n",
        registry.addr
    )
}

/// The constant tier copied into `dir` and signed by a new `team` key: the key, its `[trust]`
/// section and the component's path (its `.sig` beside it).
fn signed_constant(dir: &Path) -> (PrivateKey, String, PathBuf) {
    let key = PrivateKey::generate().unwrap();
    let trust = format!("[trust]\nteam = \"{}\"\n", key.public_key());
    let wasm = dir.join("constant.wasm");
    std::fs::copy(test_guest("constant"), &wasm).unwrap();
    sign_file(&key, "team", &wasm).unwrap();
    (key, trust, wasm)
}

#[tokio::test]
async fn a_plugin_pinned_by_digest_is_pulled_verified_and_served_and_a_wrong_digest_is_refused() {
    let registry = start_registry().await;
    let dir = tempfile::tempdir().unwrap();

    // The constant tier, signed by the team key: push sends the .sig along.
    let (_key, trust, wasm) = signed_constant(dir.path());
    let reference = format!("oci://{}/tiers/constant:v1", registry.addr);
    let pinned = push(&registry, &wasm, &reference);

    // A tier pinned by that digest pulls it, checks the signature and serves.
    let path = write_config_dir(dir.path(), &cascade_toml(&registry, &pinned, "", &trust));
    let config = tierhost::Config::load(&path).unwrap();
    let cascade = tierhost::Cascade::load_strict(&config).await.unwrap();
    let answer = cascade.predict(&request("pulled")).await;
    assert_eq!(answer.served_by.tier, "remote", "{answer:?}");
    let digest = pinned.rsplit_once("sha256:").unwrap().1;
    let stored = dir.path().join("store/sha256").join(digest);
    assert_eq!(
        std::fs::read(stored.join("plugin.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap(),
        "the store holds the pushed bytes"
    );
    assert!(stored.join("plugin.wasm.sig").exists());
    assert!(stored.join("manifest.json").exists());

    // `tierhost pull` finds it present (checked, not fetched again).
    let (code, stdout, stderr) = tierhost(&["pull", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("present "), "{stdout}");

    // A damaged store entry is not trusted: it is fetched again.
    std::fs::write(stored.join("plugin.wasm"), b"not the plugin").unwrap();
    let cascade = tierhost::Cascade::load_strict(&config).await.unwrap();
    assert_eq!(
        cascade.predict(&request("again")).await.served_by.tier,
        "remote"
    );
    assert_eq!(
        std::fs::read(stored.join("plugin.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap()
    );

    // [oci] max_bytes below the plugin's size: the stored copy is not trusted and the pull is
    // refused before the layer is downloaded.
    let small = tierhost::Config::parse(
        &cascade_toml(&registry, &pinned, "max_bytes = 1000", &trust),
        &path,
        dir.path(),
    )
    .unwrap();
    let error = tierhost::Cascade::load_strict(&small)
        .await
        .err()
        .expect("a plugin above max_bytes does not load")
        .to_string();
    assert!(error.contains("above [oci] max_bytes = 1000"), "{error}");

    // A digest the registry does not have: refused with the reference and the reason.
    let wrong = format!("{}@sha256:{}", reference, "0".repeat(64));
    let bad_config = tierhost::Config::parse(
        &cascade_toml(&registry, &wrong, "", &trust),
        &path,
        dir.path(),
    )
    .unwrap();
    let error = tierhost::Cascade::load_strict(&bad_config)
        .await
        .err()
        .expect("a digest the registry lacks does not load")
        .to_string();
    assert!(
        error.contains("cannot pull plugin") && error.contains(&"0".repeat(64)),
        "{error}"
    );

    // The same as a reload of a serving host: rejected, the old version keeps serving.
    let service = tierhost::CascadeService::start(&path).await.unwrap();
    assert_eq!(
        service.predict(&request("before")).await.served_by.tier,
        "remote"
    );
    std::fs::write(&path, cascade_toml(&registry, &wrong, "", &trust)).unwrap();
    let report = service.reload("test").await;
    assert_eq!(
        report.outcome,
        tierhost::ReloadOutcome::Rejected,
        "{report:?}"
    );
    assert_eq!(service.current().generation, 1);
    let answer = service.predict(&request("after")).await;
    assert_eq!(
        answer.served_by.tier, "remote",
        "the pulled version still serves"
    );

    // Unsigned push of other bytes under another tag: the signature check refuses it.
    let unsigned = dir.path().join("unsigned.wasm");
    std::fs::write(
        &unsigned,
        variant_of(&std::fs::read(&wasm).unwrap(), "unsigned"),
    )
    .unwrap();
    let other = push(
        &registry,
        &unsigned,
        &format!("oci://{}/tiers/constant:unsigned", registry.addr),
    );
    let config = tierhost::Config::parse(
        &cascade_toml(&registry, &other, "", &trust),
        &path,
        dir.path(),
    )
    .unwrap();
    let error = tierhost::Cascade::load_strict(&config)
        .await
        .err()
        .expect("an unsigned plugin does not load for a signed_by tier")
        .to_string();
    assert!(error.contains("signature"), "{error}");
}

#[tokio::test]
async fn a_tag_alone_needs_allow_tags_and_is_resolved_at_load() {
    let registry = start_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let (key, trust, wasm) = signed_constant(dir.path());
    let reference = format!("oci://{}/tiers/constant:stable", registry.addr);
    push(&registry, &wasm, &reference);

    let error = tierhost::Config::parse(
        &cascade_toml(&registry, &reference, "", &trust),
        Path::new("cascade.toml"),
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("has no digest") && error.contains("allow_tags"),
        "{error}"
    );
    let config = tierhost::Config::parse(
        &cascade_toml(&registry, &reference, "allow_tags = true", &trust),
        Path::new("cascade.toml"),
        dir.path(),
    )
    .unwrap();
    let cascade = tierhost::Cascade::load_strict(&config).await.unwrap();
    assert_eq!(
        cascade.predict(&request("tagged")).await.served_by.tier,
        "remote"
    );
    // The tag is resolved again at the next load; unmoved, nothing is fetched.
    let path = write_config_dir(
        dir.path(),
        &cascade_toml(&registry, &reference, "allow_tags = true", &trust),
    );
    let (code, stdout, stderr) = tierhost(&["pull", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("present "), "{stdout}");
    // Moved to other bytes, the next load fetches them.
    let moved = dir.path().join("moved.wasm");
    std::fs::write(&moved, variant_of(&std::fs::read(&wasm).unwrap(), "moved")).unwrap();
    sign_file(&key, "team", &moved).unwrap();
    push(&registry, &moved, &reference);
    let (code, stdout, stderr) = tierhost(&["pull", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("pulled "), "{stdout}");
}
