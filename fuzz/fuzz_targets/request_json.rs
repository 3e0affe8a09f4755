//! Request JSON decoding (`Request::from_json`, the body of `POST /v1/predict` and every line
//! of `tierhost eval`/`check_samples`), fed arbitrary bytes.
//!
//! Besides "no panic", it checks what the decoder promises: an accepted request keeps the
//! documented limits, holds only finite numbers, re-encodes to a request that decodes to the
//! same value, and the two decoding paths (`from_json` on text, `from_value` on a parsed
//! value) agree on what `from_json` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tierhost::defaults::{MAX_FEATURES, MAX_ID_BYTES, MAX_TEXT_BYTES};
use tierhost::{FeatureValue, Request};

fn encode(request: &Request) -> String {
    let features: serde_json::Map<String, serde_json::Value> = request
        .features
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::to_value(value).unwrap()))
        .collect();
    serde_json::json!({ "id": request.id, "features": features }).to_string()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = Request::from_json(text);
    // The other entry point: a value parsed first, then decoded (only where the text parses
    // as a value at all: with a duplicated key, `from_json` keeps the last value and never
    // decodes the shadowed one, which a value parse does).
    let via_value = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .map(|v| Request::from_value(v).map_err(|e| e.to_string()));
    // (`from_value` may accept what `from_json` refuses: a parsed value has already collapsed
    // a duplicated `id` key.)
    let request = match decoded {
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
        Ok(request) => request,
    };
    if let Some(other) = via_value {
        let other = other.expect("from_json accepted, from_value refused");
        // Same names and values; a number may differ only in kind (`from_value` sees numbers
        // already parsed, so `-0` can arrive as the float -0.0 instead of the integer 0).
        // `from_json` keeps the caller's order; a parsed value has sorted its keys.
        for ((n1, v1), (n2, v2)) in by_name(&request, &other) {
            assert_eq!(n1, n2);
            match (v1, v2) {
                (FeatureValue::Integer(i), FeatureValue::Float(x))
                | (FeatureValue::Float(x), FeatureValue::Integer(i)) => {
                    assert_eq!(*i as f64, *x, "{n1}: {v1:?} vs {v2:?}")
                }
                (FeatureValue::Float(a), FeatureValue::Float(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits(), "{n1}: {a} vs {b}")
                }
                _ => assert_eq!(v1, v2),
            }
        }
    }

    assert!(!request.id.is_empty() && request.id.len() <= MAX_ID_BYTES);
    assert!(request.features.len() <= MAX_FEATURES);
    for (name, value) in &request.features {
        assert!(!name.is_empty() && name.len() <= MAX_TEXT_BYTES);
        match value {
            FeatureValue::Float(x) => assert!(x.is_finite()),
            FeatureValue::Text(s) => assert!(s.len() <= MAX_TEXT_BYTES),
            FeatureValue::Null | FeatureValue::Bool(_) | FeatureValue::Integer(_) => {}
        }
    }
    // What the host hands a tier.
    let lowered = tierhost::fuzzing::lower(&request);
    assert_eq!(lowered.features.len(), request.features.len());

    // Encoding an accepted request and decoding it again gives the same request.
    let again = Request::from_json(&encode(&request))
        .unwrap_or_else(|e| panic!("re-encoded request refused: {e}"));
    assert_eq!(again.id, request.id);
    // The re-encoding goes through a JSON object whose keys are sorted: compare by name.
    for ((n1, v1), (n2, v2)) in by_name(&request, &again) {
        assert_eq!(n1, n2);
        match (v1, v2) {
            (FeatureValue::Float(a), FeatureValue::Float(b)) => {
                assert_eq!(a.to_bits(), b.to_bits(), "{a} -> {b}")
            }
            _ => assert_eq!(v1, v2),
        }
    }
});

/// The features of two requests paired by name (both must have the same number of them).
fn by_name<'a>(
    a: &'a Request,
    b: &'a Request,
) -> impl Iterator<Item = (&'a (String, FeatureValue), &'a (String, FeatureValue))> {
    assert_eq!(a.features.len(), b.features.len());
    let sorted = |r: &'a Request| {
        let mut f: Vec<&'a (String, FeatureValue)> = r.features.iter().collect();
        f.sort_by(|x, y| x.0.cmp(&y.0));
        f
    };
    sorted(a).into_iter().zip(sorted(b))
}
