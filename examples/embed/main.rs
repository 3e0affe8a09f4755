//! A Rust service embedding a tierhost cascade, built in code, with no HTTP server and no
//! config file. Run it with `cargo run --release --example embed`; an embedder's own crate
//! depends on `tierhost = { default-features = false }` (wasmtime and the cascade only).
//!
//! The primary tier is the host's `chaos` tier made to loop forever: the sandbox stops it at
//! its fuel limit and the rules tier answers instead, as every step down is recorded.
use tierhost::{
    CascadeService, ChaosConfig, ChaosMode, Config, Decision, PluginSource, Request, TierConfig,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut primary = TierConfig::builder("primary", PluginSource::Builtin("rules".into()))
        .deadline_ms(20)
        .build();
    primary.chaos = Some(ChaosConfig::new(ChaosMode::InfiniteLoop, 1.0));
    let rules = TierConfig::builder("rules", PluginSource::Builtin("rules".into()))
        .deadline_ms(50)
        .build();
    let service = CascadeService::new(Config::from_tiers(vec![primary, rules])?).await?;

    let request = Request::from_json(
        r#"{"id": "embed-1", "features": {"amount": 4200.0, "account_age_days": 3,
            "merchant_category": "crypto", "is_international": true}}"#,
    )?;
    let answer = service.predict(&request).await;
    let Decision::Answer { label, .. } = &answer.decision else {
        return Err("the cascade abstained".into());
    };
    println!(
        "{} -> {label} (served by {})",
        answer.request_id, answer.served_by.tier
    );
    for step in &answer.trail {
        let why = step
            .reason
            .as_ref()
            .map_or("served".to_string(), |r| r.to_string());
        println!("  {:<8} {why}", step.tier);
    }
    Ok(())
}
