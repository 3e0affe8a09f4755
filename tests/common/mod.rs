//! Shared helpers for the integration tests: one engine per test binary (so each guest is
//! compiled once), config builders and a standard request.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

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

pub fn request(id: &str) -> Request {
    Request::from_json(&format!(
        r#"{{"id":"{id}","features":{{"amount":9000,"account_age_days":3,"merchant_category":"crypto","is_international":true,"has_international_history":false}}}}"#
    ))
    .expect("valid request")
}

pub fn kinds(answer: &Answer) -> Vec<&'static str> {
    answer.fallback_kinds()
}
