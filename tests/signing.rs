//! Signed plugins: a tier with `signed_by` loads only a plugin (and model) whose detached
//! `<file>.sig` holds for its bytes and was made by one of the tier's `[trust]` keys. Unsigned,
//! tampered (one byte flipped), unknown-key and wrong-signer files are refused at load, before
//! anything is compiled, and on hot swap, where the old version keeps serving; the refusal names
//! the reason. The CLI round trip keygen -> sign -> verify runs the real binary.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::http::Served;
use common::{engine, replace_atomically, request, variant_of, wait_for, write_config_dir};
use tierhost::signing::{PrivateKey, sign_file, signature_path};
use tierhost::{
    Cascade, CascadeService, Config, Decision, EngineConfig, LoadError, PluginSource,
    ReloadOutcome, TierConfig, TierEngine,
};

/// Two trusted keys (`team-fraud`, `team-ops`) and one nobody trusts.
struct Keys {
    fraud: PrivateKey,
    ops: PrivateKey,
    stranger: PrivateKey,
}

impl Keys {
    fn new() -> Self {
        let key = || PrivateKey::generate().expect("randomness");
        Self {
            fraud: key(),
            ops: key(),
            stranger: key(),
        }
    }

    fn trust(&self) -> String {
        format!(
            "[trust]\nteam-fraud = \"{}\"\nteam-ops = \"{}\"\n",
            self.fraud.public_key(),
            self.ops.public_key()
        )
    }
}

/// The rules tier from `rules.wasm`, accepting `team-fraud` only.
const SIGNED_RULES: &str = "[[tier]]\nname = \"rules\"\nplugin = \"rules.wasm\"\nsigned_by = [\"team-fraud\"]\nmin_confidence = 0.3\n[tier.limits]\ndeadline_ms = 10000\n";

/// The ruleset tier from `ruleset.wasm` with its rule list `rules.json` as its model.
const SIGNED_RULESET: &str = "[[tier]]\nname = \"ruleset\"\nplugin = \"ruleset.wasm\"\nmodel = \"rules.json\"\nsigned_by = [\"team-fraud\"]\n[tier.limits]\ndeadline_ms = 10000\n[tier.params]\npositive_label = \"block\"\n";

/// A rule list that blocks the standard request (amount 9000).
const RULES_JSON: &str = r#"{"rules": [{"id": "big_amount", "when": [["amount", ">", 5000]], "label": "block", "precision": 0.9}]}"#;

/// A directory with `cascade.toml` (`[server] extra` + the trust keys + `tiers`), the rules and
/// ruleset plugins and the rule list, each signed by `team-fraud`.
fn signed_dir(keys: &Keys, server: &str, tiers: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_dir(dir.path(), &format!("{server}{}{tiers}", keys.trust()));
    std::fs::write(
        dir.path().join("ruleset.wasm"),
        tierhost::builtin::get("ruleset").unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.json"), RULES_JSON).unwrap();
    for file in ["rules.wasm", "ruleset.wasm", "rules.json"] {
        sign(&keys.fraud, "team-fraud", &dir.path().join(file));
    }
    (dir, config)
}

fn sign(key: &PrivateKey, name: &str, file: &Path) {
    sign_file(key, name, file).expect("signed");
}

/// Flips one byte of `file` in place (its last: any byte would do).
fn flip_one_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

/// The ways a file can fail its tier's signature check, and what the refusal must say.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Unsigned,
    Tampered,
    UnknownKey,
    WrongSigner,
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::Unsigned,
        Fault::Tampered,
        Fault::UnknownKey,
        Fault::WrongSigner,
    ];

    /// Breaks the (already signed) `file` this way.
    fn apply(self, keys: &Keys, file: &Path) {
        match self {
            Fault::Unsigned => std::fs::remove_file(signature_path(file)).unwrap(),
            Fault::Tampered => flip_one_byte(file),
            Fault::UnknownKey => sign(&keys.stranger, "team-fraud", file),
            Fault::WrongSigner => sign(&keys.ops, "team-ops", file),
        }
    }

    /// What the refusal of `file` says.
    fn reason(self, keys: &Keys, file: &Path) -> String {
        match self {
            Fault::Unsigned => format!("no signature file {}", signature_path(file).display()),
            Fault::Tampered => "signature does not match the bytes".into(),
            Fault::UnknownKey => format!(
                "signed by untrusted key {} (calling itself `team-fraud`), not one of [team-fraud]",
                keys.stranger.public_key()
            ),
            Fault::WrongSigner => "signed by key `team-ops`, not one of [team-fraud]".into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_plugin_and_model_load_and_serve() {
    let keys = Keys::new();
    let (_dir, path) = signed_dir(&keys, "", &format!("{SIGNED_RULESET}{SIGNED_RULES}"));
    let config = Config::load(&path).unwrap();
    let cascade = Cascade::with_engine(engine(), &config).await.unwrap();
    assert!(
        cascade.load_errors().is_empty(),
        "{:?}",
        cascade.load_errors()
    );
    let answer = cascade.predict(&request("signed-1")).await;
    assert_eq!(answer.served_by.tier, "ruleset", "{answer:?}");
    assert!(
        matches!(&answer.decision, Decision::Answer { label, .. } if label == "block"),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plugin_signature_is_refused_at_load_before_anything_is_compiled() {
    let keys = Keys::new();
    for fault in Fault::ALL {
        let (dir, path) = signed_dir(&keys, "", SIGNED_RULES);
        // Bytes no engine has seen, so compiling them would show in the engine's counters.
        let plugin = dir.path().join("rules.wasm");
        std::fs::write(
            &plugin,
            variant_of(
                tierhost::builtin::get("rules").unwrap(),
                &format!("{fault:?}"),
            ),
        )
        .unwrap();
        sign(&keys.fraud, "team-fraud", &plugin);
        fault.apply(&keys, &plugin);

        let engine = TierEngine::new(&EngineConfig::default(), dir.path()).unwrap();
        let config = Config::load(&path).unwrap();
        let cascade = Cascade::with_engine(engine.clone(), &config).await.unwrap();
        let errors = cascade.load_errors();
        assert!(
            matches!(errors.as_slice(), [("rules", LoadError::Signature { .. })]),
            "{fault:?}: {errors:?}"
        );
        let error = errors[0].1.to_string();
        let reason = fault.reason(&keys, &plugin);
        assert!(
            error.contains(&reason),
            "{fault:?}: `{error}` lacks `{reason}`"
        );
        assert!(error.contains("rules.wasm refused"), "{fault:?}: {error}");
        assert_eq!(
            engine.compile_stats().compiled,
            0,
            "{fault:?}: compiled first"
        );
        // A strict load (check, embedders) fails with the same reason.
        let Err(strict) = cascade.strict(&config) else {
            panic!("{fault:?}: a strict load accepted it");
        };
        assert!(strict.to_string().contains(&reason), "{fault:?}: {strict}");
        // The tier is stepped over: the safe default answers.
        let answer = Cascade::with_engine(engine, &config)
            .await
            .unwrap()
            .predict(&request("refused"))
            .await;
        assert_eq!(answer.served_by.tier, tierhost::SAFE_DEFAULT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_model_signature_is_refused_at_load() {
    let keys = Keys::new();
    for fault in Fault::ALL {
        let (dir, path) = signed_dir(&keys, "", SIGNED_RULESET);
        let model = dir.path().join("rules.json");
        fault.apply(&keys, &model);
        let config = Config::load(&path).unwrap();
        let cascade = Cascade::with_engine(engine(), &config).await.unwrap();
        let errors = cascade.load_errors();
        let [("ruleset", error @ LoadError::Signature { path, .. })] = errors.as_slice() else {
            panic!("{fault:?}: {errors:?}");
        };
        assert_eq!(path, &model, "{fault:?}: the model is named");
        let reason = fault.reason(&keys, &model);
        assert!(
            error.to_string().contains(&reason),
            "{fault:?}: `{error}` lacks `{reason}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_on_hot_swap_is_rejected_and_the_old_version_keeps_serving() {
    let keys = Keys::new();
    let (dir, path) = signed_dir(&keys, "[server]\nwatch = false\n", SIGNED_RULES);
    let service = CascadeService::start(&path).await.unwrap();
    let first = service.predict(&request("before")).await;
    assert_eq!(first.served_by.tier, "rules");
    let old_sha = first.served_by.sha256.clone();

    let plugin = dir.path().join("rules.wasm");
    let rules = tierhost::builtin::get("rules").unwrap();
    for (i, fault) in Fault::ALL.into_iter().enumerate() {
        // A new version, signed by team-fraud, then broken.
        replace_atomically(&plugin, &variant_of(rules, &format!("v{i}")));
        sign(&keys.fraud, "team-fraud", &plugin);
        fault.apply(&keys, &plugin);
        let report = service.reload("test").await;
        assert_eq!(
            report.outcome,
            ReloadOutcome::Rejected,
            "{fault:?}: {report:?}"
        );
        let reason = report.reason.clone().unwrap_or_default();
        let expected = fault.reason(&keys, &plugin);
        assert!(
            reason.contains(&expected) && reason.contains("tier \"rules\""),
            "{fault:?}: `{reason}` lacks `{expected}`"
        );
        assert_eq!(report.generation, 1, "{fault:?}");
        let answer = service.predict(&request(&format!("after-{i}"))).await;
        assert_eq!(answer.served_by.tier, "rules", "{fault:?}: {answer:?}");
        assert_eq!(
            answer.served_by.sha256, old_sha,
            "{fault:?}: the old version serves"
        );
    }
    assert!(
        service
            .render_metrics()
            .contains("tierhost_reloads_total{outcome=\"rejected\"} 4"),
        "{}",
        service.render_metrics()
    );

    // A properly signed new version is swapped in.
    let new_version = variant_of(rules, "good");
    replace_atomically(&plugin, &new_version);
    sign(&keys.fraud, "team-fraud", &plugin);
    let report = service.reload("test").await;
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    let answer = service.predict(&request("new")).await;
    assert_ne!(answer.served_by.sha256, old_sha);
    assert_eq!(answer.served_by.sha256.as_ref(), Some(&report.tiers[0].2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tierhost_serve_rejects_an_unsigned_swap_and_reloads_when_its_signature_arrives() {
    let keys = Keys::new();
    let (dir, path) = signed_dir(&keys, "", SIGNED_RULES);
    let served = Served::start(&path).await;
    let http = &served.http;
    let (_, first) = http.predict("before").await;
    let old_sha = first["served_by"]["sha256"].as_str().unwrap().to_string();

    // A deploy writes the new plugin first: its old signature no longer matches, so the
    // watcher's reload is rejected and the old version keeps serving.
    let plugin = dir.path().join("rules.wasm");
    replace_atomically(
        &plugin,
        &variant_of(tierhost::builtin::get("rules").unwrap(), "deployed"),
    );
    wait_for("the watcher to reject the unsigned plugin", async || {
        (http
            .metric(r#"tierhost_reloads_total{outcome="rejected"}"#)
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let (status, body) = http.send("POST", "/admin/reload", "").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("signature does not match the bytes"),
        "{body}"
    );
    let (_, answer) = http.predict("during").await;
    assert_eq!(answer["served_by"]["sha256"], old_sha.as_str(), "{answer}");

    // Its signature arrives: the watcher reloads and the new version serves.
    sign(&keys.fraud, "team-fraud", &plugin);
    let new_sha = wait_for("the watcher to apply the signed plugin", async || {
        let tiers = http.get_json("/v1/tiers").await;
        let sha = tiers["tiers"][0]["info"]["sha256"].as_str()?.to_string();
        (sha != old_sha).then_some(sha)
    })
    .await;
    let (_, answer) = http.predict("after").await;
    assert_eq!(answer["served_by"]["sha256"], new_sha.as_str(), "{answer}");
}

#[test]
fn config_refuses_unknown_signers_bad_keys_and_signed_builtins() {
    let keys = Keys::new();
    let parse = |text: &str| {
        Config::parse(text, Path::new("t.toml"), Path::new("."))
            .unwrap_err()
            .to_string()
    };
    let err = parse(&format!(
        "{}[[tier]]\nname = \"a\"\nplugin = \"a.wasm\"\nsigned_by = [\"team-x\"]\n",
        keys.trust()
    ));
    assert!(
        err.contains("tier \"a\" (tier[0]).signed_by: `team-x` is not a key in [trust] (known: [team-fraud, team-ops])"),
        "{err}"
    );
    let err = parse(
        "[trust]\nteam-fraud = \"ed25519:AAAA\"\n[[tier]]\nname = \"a\"\nplugin = \"a.wasm\"\n",
    );
    assert!(
        err.contains("team-fraud") && err.contains("not an ed25519 public key"),
        "{err}"
    );
    let err = parse(&format!(
        "{}[[tier]]\nname = \"a\"\nplugin = \"builtin:rules\"\nsigned_by = [\"team-fraud\"]\n",
        keys.trust()
    ));
    assert!(
        err.contains("(tier[0]).signed_by: a builtin: plugin is part of the host binary"),
        "{err}"
    );
    let bytes = tierhost::builtin::get("rules").unwrap();
    let tier = TierConfig::builder("a", PluginSource::Bytes(bytes.into()))
        .signed_by(vec!["team-fraud".into()])
        .build();
    let err = Config::from_tiers(vec![tier]).unwrap_err().to_string();
    assert!(
        err.contains(
            "(tier[0]).signed_by: a plugin given as bytes has no file for a detached .sig"
        ),
        "{err}"
    );
}

fn tierhost(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run tierhost");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn cli_keygen_sign_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (code, trust_line, stderr) = tierhost(dir, &["keygen", "--out", "team-fraud.key"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        trust_line.starts_with("team-fraud = \"ed25519:"),
        "{trust_line}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("team-fraud.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
    }
    let (code, _, stderr) = tierhost(dir, &["keygen", "--out", "team-fraud.key"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("never overwritten"), "{stderr}");

    std::fs::write(
        dir.join("ruleset.wasm"),
        tierhost::builtin::get("ruleset").unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("rules.json"), RULES_JSON).unwrap();
    std::fs::write(
        dir.join("cascade.toml"),
        format!("[trust]\n{trust_line}{SIGNED_RULESET}"),
    )
    .unwrap();

    // Nothing signed yet: verify and check both refuse, naming the missing files.
    let (code, _, stderr) = tierhost(dir, &["verify", "--config", "cascade.toml"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no signature file ruleset.wasm.sig")
            && stderr.contains("no signature file rules.json.sig"),
        "{stderr}"
    );

    let (code, stdout, stderr) = tierhost(
        dir,
        &[
            "sign",
            "--key",
            "team-fraud.key",
            "ruleset.wasm",
            "rules.json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("ruleset.wasm.sig") && stdout.contains("rules.json.sig"),
        "{stdout}"
    );
    let (code, stdout, stderr) = tierhost(dir, &["verify", "--config", "cascade.toml"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("tier \"ruleset\" plugin: signed by `team-fraud`")
            && stdout.contains("tier \"ruleset\" model: signed by `team-fraud`"),
        "{stdout}"
    );
    let (code, stdout, stderr) = tierhost(dir, &["check", "--config", "cascade.toml"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let pubkey = trust_line.split('"').nth(1).unwrap();
    let (code, _, stderr) = tierhost(dir, &["verify", "--pubkey", pubkey, "ruleset.wasm"]);
    assert_eq!(code, 0, "{stderr}");

    // One byte of the model flipped: verify and check refuse it with the reason.
    flip_one_byte(&dir.join("rules.json"));
    let (code, _, stderr) = tierhost(dir, &["verify", "--config", "cascade.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "tier \"ruleset\" model: rules.json refused: signature does not match the bytes"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = tierhost(dir, &["check", "--config", "cascade.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("signature does not match the bytes"),
        "{stderr}"
    );

    // Another key's signature does not pass for this one.
    let (code, other, _) = tierhost(dir, &["keygen", "--out", "other.key"]);
    assert_eq!(code, 0);
    let other = other.split('"').nth(1).unwrap();
    let (code, _, stderr) = tierhost(dir, &["verify", "--pubkey", other, "ruleset.wasm"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("signed by untrusted key"), "{stderr}");
}

#[test]
fn verify_checks_a_signed_tiers_shadow_candidate_with_the_same_keys() {
    let keys = Keys::new();
    let shadow = "[tier.shadow]\nplugin = \"candidate.wasm\"\n";
    let (dir, path) = signed_dir(&keys, "", &format!("{SIGNED_RULES}{shadow}"));
    let candidate = dir.path().join("candidate.wasm");
    std::fs::write(&candidate, tierhost::builtin::get("rules").unwrap()).unwrap();
    let config = Config::load(&path).unwrap();
    let outcomes = |config: &Config| -> Vec<(&'static str, String)> {
        tierhost::signing::verify_config(config)
            .into_iter()
            .map(|c| {
                let outcome = match c.outcome {
                    Ok(v) => format!("signed by {}", v.signer),
                    Err(e) => e.to_string(),
                };
                (c.role, outcome)
            })
            .collect()
    };
    let unsigned = outcomes(&config);
    assert_eq!(unsigned.len(), 2, "{unsigned:?}");
    assert_eq!(unsigned[0], ("plugin", "signed by team-fraud".to_string()));
    assert_eq!(unsigned[1].0, "shadow plugin");
    assert!(
        unsigned[1].1.contains("no signature file") && unsigned[1].1.contains("candidate.wasm.sig"),
        "{unsigned:?}"
    );
    sign(&keys.ops, "team-ops", &candidate);
    let wrong = outcomes(&config);
    assert!(
        wrong[1]
            .1
            .contains("signed by key `team-ops`, not one of [team-fraud]"),
        "{wrong:?}"
    );
    sign(&keys.fraud, "team-fraud", &candidate);
    assert_eq!(
        outcomes(&config)[1],
        ("shadow plugin", "signed by team-fraud".to_string())
    );
}
