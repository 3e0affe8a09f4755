//! Cache keys and the embedded store.
use super::*;

fn cache(digest: &str) -> PredictionCache {
    let config = CacheConfig::default();
    PredictionCache::new(&config, digest.into(), || Arc::new(embedded_store(&config))).unwrap()
}

#[test]
fn keys_are_canonical_typed_and_bound_to_the_cascade() {
    let c = cache("d1");
    let r = |features: Vec<(&str, FeatureValue)>| {
        Request::new(
            "id-differs",
            features
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        )
    };
    let ab = r(vec![
        ("a", FeatureValue::Integer(1)),
        ("b", FeatureValue::Bool(true)),
    ]);
    let ba = r(vec![
        ("b", FeatureValue::Bool(true)),
        ("a", FeatureValue::Integer(1)),
    ]);
    assert_eq!(c.key(&ab), c.key(&ba), "order-independent");
    let text = r(vec![
        ("a", FeatureValue::Text("1".into())),
        ("b", FeatureValue::Bool(true)),
    ]);
    assert_ne!(c.key(&ab), c.key(&text), "typed");
    let float = r(vec![
        ("a", FeatureValue::Float(1.0)),
        ("b", FeatureValue::Bool(true)),
    ]);
    assert_ne!(c.key(&ab), c.key(&float), "typed");
    assert_ne!(
        c.key(&ab),
        cache("d2").key(&ab),
        "bound to the cascade digest"
    );
    let zero = r(vec![("x", FeatureValue::Float(0.0))]);
    let negative_zero = r(vec![("x", FeatureValue::Float(-0.0))]);
    assert_eq!(c.key(&zero), c.key(&negative_zero));
}

#[test]
fn cached_answers_survive_their_redis_encoding() {
    // The Redis backend stores answers as JSON: what is written must read back the same
    // (an internally tagged decision once failed to read back under a serde_json feature).
    for decision in [
        Decision::Answer {
            label: "block".into(),
            score: 0.55,
            confidence: 0.1 + 0.2,
            reasons: vec!["high_amount".into()],
        },
        Decision::Abstain {
            reason: "escalate".into(),
        },
    ] {
        let cached = CachedAnswer {
            decision: decision.clone(),
            served_by: ServedBy {
                tier: "rules".into(),
                plugin: Some("fraud-rules".into()),
                version: Some("0.1.0".into()),
                sha256: Some("ab".repeat(32)),
                config_digest: "cd".repeat(32),
            },
            degraded: true,
        };
        let bytes = serde_json::to_vec(&cached).unwrap();
        let back: CachedAnswer = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.decision, decision);
        assert_eq!(back.served_by, cached.served_by);
    }
}

#[test]
fn bad_values_name_the_field() {
    let bad = |c: CacheConfig| c.validate().unwrap_err().0;
    assert_eq!(
        bad(CacheConfig {
            ttl_s: 0,
            ..Default::default()
        }),
        "ttl_s"
    );
    assert_eq!(
        bad(CacheConfig {
            backend: CacheBackend::Redis,
            ..Default::default()
        }),
        "url"
    );
    assert_eq!(
        bad(CacheConfig {
            backend: CacheBackend::Redis,
            url: Some("http://x".into()),
            ..Default::default()
        }),
        "url"
    );
    assert!(
        CacheConfig {
            backend: CacheBackend::Redis,
            url: Some("redis://127.0.0.1:6379".into()),
            ..Default::default()
        }
        .validate()
        .is_ok()
    );
}
