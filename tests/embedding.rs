//! The library as an embedder uses it: a cascade built in code (builder, plugin bytes), the
//! strict load, and a service reloaded with a config made in code.
use crate::common;

use std::sync::Arc;

use common::request;
use tierhost::{
    Cascade, CascadeService, ChaosConfig, ChaosMode, Config, ConfigError, LoadError, PluginSource,
    ReloadOutcome, Step, TierConfig,
};

fn rules_bytes() -> PluginSource {
    PluginSource::Bytes(Arc::from(
        tierhost::builtin::get("rules").expect("builtin rules"),
    ))
}

#[tokio::test]
async fn a_cascade_built_in_code_from_plugin_bytes_answers_and_steps_down() {
    let mut primary = TierConfig::builder("primary", rules_bytes())
        .deadline_ms(1_000)
        .build();
    primary.chaos = Some(ChaosConfig::new(ChaosMode::Trap, 1.0));
    let rules = TierConfig::builder("rules", rules_bytes())
        .deadline_ms(1_000)
        .build();
    let config = Config::from_tiers(vec![primary, rules]).expect("valid config");
    // The builder leaves the bulkhead to the fair share of the instance pool.
    assert!(config.tiers.iter().all(|t| t.max_concurrent > 0));
    let cascade = Cascade::load_strict(&config).await.expect("loads");
    let answer = cascade.predict(&request("embedded")).await;
    assert_eq!(answer.served_by.tier, "rules");
    assert_eq!(answer.trail[0].step, Step::FellThrough);
    assert_eq!(
        answer.trail[0].reason.as_ref().map(|r| r.kind()),
        Some("trap")
    );
    // Bytes are keyed by their digest: the same bytes give the same served plugin digest.
    let sha = answer
        .served_by
        .sha256
        .clone()
        .expect("a served tier has a digest");
    assert_eq!(sha.len(), 64);
}

#[tokio::test]
async fn a_strict_load_names_the_tier_that_did_not_load() {
    let config = Config::from_tiers(vec![
        TierConfig::builder("good", PluginSource::Builtin("rules".into())).build(),
        TierConfig::builder("broken", PluginSource::Bytes(Arc::from(&b"not wasm"[..]))).build(),
    ])
    .expect("valid config");
    // The lenient load keeps serving with what loaded...
    let lenient = Cascade::load(&config).await.expect("lenient load");
    assert_eq!(lenient.load_errors().len(), 1);
    // ...the strict one refuses, naming the tier and why.
    match Cascade::load_strict(&config).await {
        Err(ConfigError::TierLoad { tier, error, .. }) => {
            assert_eq!(tier, "broken");
            assert!(matches!(error, LoadError::Compile(_)), "{error}");
        }
        Err(other) => panic!("expected a tier load error, got {other}"),
        Ok(_) => panic!("a tier with invalid bytes must fail a strict load"),
    }
}

#[tokio::test]
async fn a_service_reloads_with_a_config_made_in_code() {
    let first = Config::from_tiers(vec![
        TierConfig::builder("only", PluginSource::Builtin("rules".into()))
            .deadline_ms(1_000)
            .build(),
    ])
    .expect("valid config");
    let service = CascadeService::new(first).await.expect("service starts");
    assert_eq!(service.current().generation, 1);

    let second = Config::from_tiers(vec![
        TierConfig::builder("only", PluginSource::Builtin("constant".into()))
            .deadline_ms(1_000)
            .build(),
    ])
    .expect("valid config");
    let report = service.reload_with(second, "test").await;
    assert_eq!(report.outcome, ReloadOutcome::Applied, "{report:?}");
    assert_eq!(service.current().generation, 2);
    let answer = service.predict(&request("after-reload")).await;
    assert_eq!(answer.served_by.plugin.as_deref(), Some("constant"));

    // A config made in code has no file: re-reading it is refused, the cascade keeps serving.
    let report = service.reload("test").await;
    assert_eq!(report.outcome, ReloadOutcome::Rejected);
    assert_eq!(service.current().generation, 2);
}

#[tokio::test]
async fn background_work_starts_for_a_config_made_in_code() {
    // [server] watch is on by default; a config made in code has no file to watch, and the
    // background work (SIGHUP reloads, the alert clock) still starts.
    let config = Config::from_tiers(vec![
        TierConfig::builder("only", PluginSource::Builtin("rules".into())).build(),
    ])
    .expect("valid config");
    assert!(config.server.watch);
    let service = CascadeService::new(config).await.expect("service starts");
    let background = service.run_background().expect("background work starts");
    drop(background);
}
