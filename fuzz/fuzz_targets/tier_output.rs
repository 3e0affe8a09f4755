//! The host's handling of whatever a tier returns, without a guest: a prediction (label,
//! score, confidence, reasons), an abstain reason and a typed tier error built from fuzzed
//! bytes, as the WIT boundary would hand them over (strings are valid UTF-8: the component
//! model checks that before the host sees them).
//!
//! Runs them through what the cascade does with them: the lift (`Prediction::from`, which
//! makes every string printable), the acceptance contract and `[tier.accept]` constraints,
//! the min-confidence verdict, the trail entries and their messages, the answer's JSON, the
//! prediction cache's round trip, the fallback log events and the audit file's lines.
//! Checks: no panic; an accepted answer keeps the contract and survives the cache round trip
//! bit for bit; tier text never reaches a log or audit line with a control character, so a
//! tier cannot forge or split lines: one plain log line and one audit line per fallback.
//!
//! The abstain reason and tier-error message are cut like `guest::call_predict` does
//! (`printable`, then at `guest::MAX_MESSAGE_BYTES` on a char boundary); that cut is a private
//! helper of `guest.rs`, so it is mirrored here.
#![no_main]

use std::io::Write;
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tierhost::fuzzing::{
    Acceptance, CachedAnswer, MAX_MESSAGE_BYTES, MinConfidence, Prediction, TierPolicy, contract,
    emit_fallbacks, printable, wit,
};
use tierhost::{
    AcceptConfig, Answer, AuditLog, Decision, FallbackReason, ServedBy, Step, TierLimits,
    TrailEntry,
};

#[derive(Arbitrary, Debug)]
struct TierOutput {
    label: String,
    score: f64,
    confidence: f64,
    reasons: Vec<String>,
    abstain: String,
    error_kind: u8,
    error_message: String,
    // The tier's config.
    max_output_bytes: u16,
    max_reasons: u8,
    labels: Vec<String>,
    score_min: Option<f64>,
    score_max: Option<f64>,
    min_confidence: u8,
}

/// What `guest::call_predict` keeps of an abstain reason or a tier error message.
fn lift_message(text: String) -> String {
    let mut s = printable(text);
    if s.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn audit() -> &'static AuditLog {
    static AUDIT: std::sync::OnceLock<AuditLog> = std::sync::OnceLock::new();
    AUDIT.get_or_init(|| AuditLog::open("/dev/null".as_ref(), u64::MAX, 1).expect("open /dev/null"))
}

fn no_control(text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
}

fuzz_target!(|out: TierOutput| {
    let limits = TierLimits {
        max_output_bytes: u64::from(out.max_output_bytes) + 1,
        max_reasons: u64::from(out.max_reasons),
        ..TierLimits::default()
    };
    let accept = AcceptConfig {
        labels: out.labels,
        score_min: out.score_min.filter(|x| x.is_finite()),
        score_max: out.score_max.filter(|x| x.is_finite()),
    };
    let min_confidence = f64::from(out.min_confidence) / 255.0;

    // The lift of the tier's answer.
    let raw = wit::Prediction {
        label: out.label.clone(),
        score: out.score,
        confidence: out.confidence,
        reasons: out.reasons.clone(),
    };
    let prediction = Prediction::from(raw);
    no_control(&prediction.label);
    prediction.reasons.iter().for_each(|r| no_control(r));
    if !out.label.chars().any(char::is_control) {
        assert_eq!(
            prediction.label, out.label,
            "printable changed a printable label"
        );
    }

    // The verdicts, in the cascade's order.
    let acceptance = Acceptance {
        accept,
        limits: limits.clone(),
    };
    let verdict = acceptance
        .judge(&prediction)
        .and_then(|()| MinConfidence(min_confidence).judge(&prediction));
    if verdict.is_ok() {
        assert!(contract(&prediction, &limits).is_ok());
        assert!(prediction.score.is_finite());
        assert!((0.0..=1.0).contains(&prediction.confidence));
        assert!(prediction.confidence >= min_confidence);
        assert!(!prediction.label.is_empty());
        assert!(prediction.reasons.len() as u64 <= limits.max_reasons);
        let size =
            prediction.label.len() + prediction.reasons.iter().map(String::len).sum::<usize>();
        assert!(size as u64 <= limits.max_output_bytes);
    }

    // The other two things a tier can return.
    let abstained = FallbackReason::Abstained {
        reason: lift_message(out.abstain),
    };
    let error = ["invalid-input", "missing-feature", "bad-params", "internal"]
        [usize::from(out.error_kind % 4)];
    let tier_error = FallbackReason::TierError {
        error: error.into(),
        message: lift_message(out.error_message),
    };

    let mut trail = vec![
        TrailEntry::new("abstainer", Some("0.1.0".into())).fell_back(abstained),
        TrailEntry::new("erring", Some("0.1.0".into())).fell_back(tier_error),
    ];
    let mut entry = TrailEntry::new("fuzzed", Some("0.1.0".into()));
    let decision = match verdict {
        Ok(()) => {
            entry.step = Step::Served;
            Decision::Answer {
                label: prediction.label.clone(),
                score: prediction.score,
                confidence: prediction.confidence,
                reasons: prediction.reasons.clone(),
            }
        }
        Err(reason) => {
            entry.step = Step::FellThrough;
            entry = entry.fell_back(reason);
            Decision::Answer {
                label: "review".into(),
                score: 0.0,
                confidence: 0.0,
                reasons: vec!["safe_default".into()],
            }
        }
    };
    trail.push(entry);
    for entry in &trail {
        if let Some(message) = &entry.message {
            no_control(message);
        }
    }
    let fallbacks = trail.iter().filter(|e| e.reason.is_some()).count();
    let answer = Answer {
        request_id: "fuzz".into(),
        decision: decision.clone(),
        served_by: ServedBy {
            tier: "fuzzed".into(),
            plugin: Some("fuzz".into()),
            version: Some("0.1.0".into()),
            sha256: None,
            config_digest: String::new(),
        },
        degraded: true,
        elapsed_us: 1,
        cache: None,
        trail,
        escalation: None,
    };

    // The answer's JSON, and the prediction cache's round trip of it.
    let json = serde_json::to_string(&answer).expect("an answer serializes");
    assert!(!json.contains('\n'));
    let value: serde_json::Value = serde_json::from_str(&json).expect("the answer is JSON");
    let back: Decision = serde_json::from_value(value["decision"].clone()).expect("decision");
    let cached = CachedAnswer {
        decision: decision.clone(),
        served_by: answer.served_by.clone(),
        degraded: answer.degraded,
    };
    let bytes = serde_json::to_vec(&cached).expect("cached answer serializes");
    // The Redis backend reads a cached answer back with `serde_json::from_slice`
    // (policy/cache.rs). This target found that, under serde_json's `arbitrary_precision`,
    // that failed for every `Decision::Answer` ("invalid type: map, expected f64"), so Redis
    // never served a hit.
    let from_cache: CachedAnswer = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "cached answer unreadable ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    for decoded in [&back, &from_cache.decision] {
        match (&decision, decoded) {
            (
                Decision::Answer {
                    label,
                    score,
                    confidence,
                    reasons,
                },
                Decision::Answer {
                    label: l2,
                    score: s2,
                    confidence: c2,
                    reasons: r2,
                },
            ) => {
                assert_eq!((label, reasons), (l2, r2));
                assert_eq!(score.to_bits(), s2.to_bits(), "score {score} -> {s2}");
                assert_eq!(confidence.to_bits(), c2.to_bits());
            }
            (a, b) => assert_eq!(a, b),
        }
    }

    // Fallback events: the plain-text log (one line per fallback) and the audit file.
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let no_rule = tierhost::escalation::Redaction::default();
        emit_fallbacks("fuzz", &answer, no_rule.view(&[]), Some(audit()));
    });
    let log = captured.0.lock().unwrap();
    let log = std::str::from_utf8(&log).expect("the log is UTF-8");
    assert_eq!(
        log.lines().count(),
        fallbacks,
        "log lines forged or lost:\n{log}"
    );
    assert!(log.ends_with('\n') || log.is_empty());
    for line in log.lines() {
        no_control(line);
    }
    let no_rule = tierhost::escalation::Redaction::default();
    for entry in answer.trail.iter().filter(|e| e.reason.is_some()) {
        let event = tierhost::FallbackEvent {
            time: String::new(),
            cascade: "fuzz",
            request_id: &answer.request_id,
            from_tier: &entry.tier,
            from_version: entry.version.as_deref(),
            reason: entry.reason.as_ref().unwrap().kind(),
            detail: entry.reason.as_ref().unwrap().to_string(),
            to_tier: "next",
            served_by: &answer.served_by.tier,
            served_version: answer.served_by.version.as_deref(),
            output: &answer.decision,
            features: no_rule.view(&[]),
        };
        let line = serde_json::to_vec(&event).expect("an audit line serializes");
        assert!(!line.contains(&b'\n'), "an audit line with a line break");
    }
});
