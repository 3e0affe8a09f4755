//! The shadow report as a person reads it: the block `tierhost eval --shadow` and `tierhost
//! shadow` print. It reads the report's JSON document (what `GET /v1/tiers/{name}/shadow`
//! serves and [`ShadowReport`] serializes to), so a report fetched from a server prints the
//! same way as one computed here.
use std::fmt::{self, Write as _};

use serde_json::Value;

use super::ShadowReport;

/// Most disagreeing requests the block lists (the JSON document has all that were kept).
pub const LISTED_DISAGREEMENTS: usize = 20;

/// The readable block of a shadow report's JSON document (lines end in `\n`).
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    let _ = write_report(&mut out, report);
    out
}

impl fmt::Display for ShadowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(&render(&value))
    }
}

fn write_report(out: &mut String, r: &Value) -> fmt::Result {
    writeln!(out, "shadow of tier `{}`", text(&r["tier"]))?;
    writeln!(out, "  live:      {}", plugin(&r["live"]))?;
    let candidate = match (&r["candidate"]["Ok"], &r["candidate"]["Err"]) {
        (Value::Object(_), _) => plugin(&r["candidate"]["Ok"]),
        (_, Value::String(e)) => format!("did not load: {e}"),
        _ => "-".into(),
    };
    writeln!(out, "  candidate: {candidate}")?;
    writeln!(
        out,
        "  calls {} (share {}), dropped {} (queue or bulkhead full)",
        int(&r["calls"]),
        num(&r["share"], 2),
        int(&r["dropped"])
    )?;
    let agreement = match r["agreement"].as_f64() {
        Some(a) => format!("{a:.4}"),
        None => "- (no request answered by both)".into(),
    };
    writeln!(
        out,
        "  both answered {}, same label {}: agreement {agreement}",
        int(&r["both_answered"]),
        int(&r["agreed"])
    )?;
    writeln!(
        out,
        "  served differently {} (one version's answer passes the tier's acceptance and min_confidence, the other's does not)",
        int(&r["served_differently"])
    )?;
    for (name, key) in [
        ("score delta", "score_delta"),
        ("confidence delta", "confidence_delta"),
    ] {
        let s = &r[key];
        writeln!(
            out,
            "  {name} (candidate - live): mean {}, p50 {}, p99 {}, max {} (last {} compared)",
            signed(&s["mean"]),
            signed(&s["p50"]),
            signed(&s["p99"]),
            signed(&s["max"]),
            int(&s["n"])
        )?;
    }
    writeln!(
        out,
        "  faults: live {}; candidate {}",
        counts(&r["faults"]["live"]),
        counts(&r["faults"]["candidate"])
    )?;
    let latency = |s: &Value| format!("p50 {} us, p99 {} us", num(&s["p50"], 0), num(&s["p99"], 0));
    writeln!(
        out,
        "  latency: live {}; candidate {}",
        latency(&r["latency_us"]["live"]),
        latency(&r["latency_us"]["candidate"])
    )?;
    let gate = &r["gate"];
    let verdict = match (gate["min_agreement"].as_f64(), gate["refusal"].as_str()) {
        (_, Some(refusal)) => format!("refuses: {refusal}"),
        (None, None) => "none (promote_min_agreement unset): promote is allowed".into(),
        (Some(min), None) => format!(
            "passes (agreement >= {min} over >= {} compared calls, no candidate fault)",
            int(&gate["min_calls"])
        ),
    };
    writeln!(out, "  promotion gate: {verdict}")?;
    let listed = r["disagreements"].as_array().map_or(&[][..], Vec::as_slice);
    if listed.is_empty() {
        return writeln!(out, "  disagreeing requests: none");
    }
    let shown = listed.len().min(LISTED_DISAGREEMENTS);
    writeln!(
        out,
        "  disagreeing requests ({} kept, the most recent last{}):",
        listed.len(),
        if shown < listed.len() {
            format!("; the last {shown} shown, the JSON document has all")
        } else {
            String::new()
        }
    )?;
    for d in &listed[listed.len() - shown..] {
        writeln!(
            out,
            "    {}  live: {}  candidate: {}",
            text(&d["request_id"]),
            observed(&d["live"]),
            observed(&d["candidate"])
        )?;
    }
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| "-".into(), str::to_string)
}

fn int(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |n| n.to_string())
}

fn num(v: &Value, decimals: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{x:.decimals$}"))
}

fn signed(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{x:+.4}"))
}

/// `name version (sha256 0123456789ab, source)`.
fn plugin(v: &Value) -> String {
    if !v.is_object() {
        return "-".into();
    }
    let sha = text(&v["sha256"]);
    format!(
        "{} {} (sha256 {}, {})",
        text(&v["name"]),
        text(&v["version"]),
        sha.get(..12).unwrap_or(&sha),
        text(&v["source"])
    )
}

/// `trap: 3, deadline: 1`, or `none`.
fn counts(v: &Value) -> String {
    let counts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(kind, n)| format!("{kind}: {}", int(n)))
        .collect();
    if counts.is_empty() {
        "none".into()
    } else {
        counts.join(", ")
    }
}

/// `phishing 0.91 (conf 0.93, served)` or `no answer: deadline`.
fn observed(v: &Value) -> String {
    match v["outcome"].as_str() {
        Some("answer") => format!(
            "{} {} (conf {}, {})",
            text(&v["label"]),
            num(&v["score"], 4),
            num(&v["confidence"], 4),
            if v["served"].as_bool() == Some(true) {
                "served"
            } else {
                "not served"
            }
        ),
        Some(_) => format!("no answer: {}", text(&v["reason"])),
        None => "-".into(),
    }
}
