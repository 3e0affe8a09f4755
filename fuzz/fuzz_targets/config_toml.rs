//! Config parsing and validation (`Config::parse`: `tierhost check`, start-up and every
//! hot reload), fed arbitrary text.
//!
//! Besides "no panic", an accepted config must keep what validation promises: at least one
//! tier, every bulkhead at least 1, the tiers' instance reservations (computed here without
//! overflow) within `engine.max_instances`, flattenable params, finite bounds; and its answer
//! digest (the prediction cache's key) must be computable.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tierhost::fuzzing::flatten_params;
use tierhost::{Config, InstanceMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, Path::new("fuzz.toml"), Path::new("/base")) {
        Ok(config) => config,
        Err(error) => {
            assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
            return;
        }
    };
    assert!(!config.tiers.is_empty());
    assert!(config.cascade.budget_ms > 0);
    let mut reserved: u128 = 0;
    for tier in &config.tiers {
        assert!(
            tier.max_concurrent >= 1,
            "tier {} has no bulkhead",
            tier.name
        );
        let warm = match tier.instances {
            InstanceMode::Reuse => tier.warm_instances as u128,
            InstanceMode::Fresh => 0,
        };
        reserved += tier.max_concurrent as u128 + warm;
        assert!((0.0..=1.0).contains(&tier.min_confidence));
        flatten_params(&tier.params).expect("validated params flatten");
        let _ = tier.limits.max_memory_bytes();
        let _ = tierhost::fuzzing::hostcall_fuel(&tier.limits);
    }
    assert!(
        reserved <= u128::from(config.engine.max_instances),
        "validated config reserves {reserved} instance slots, engine.max_instances = {}",
        config.engine.max_instances
    );
    assert_eq!(config.answer_digest().len(), 64);
    let _ = config.resolve(Path::new("plugin.wasm"));
    config.validate().expect("a parsed config validates again");
});
