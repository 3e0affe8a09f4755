//! `tierhost calibrate --write`: sets `min_confidence` of calibrated tiers in the config text,
//! keeping every comment, blank line and the order of keys (toml_edit), and records how each
//! value was chosen in a comment after it.
use toml_edit::{DocumentMut, Item, value};

use crate::eval::EvalError;

/// Returns `config` with `min_confidence = <threshold>` in the `[[tier]]` entry of each named
/// tier, each followed by `# <note>`. The key is added at the end of the entry's own keys when
/// it was absent. Fails when the text is not TOML or a tier is not an entry of `[[tier]]`.
pub fn write_thresholds(
    config: &str,
    thresholds: &[(String, f64)],
    note: &str,
) -> Result<String, EvalError> {
    let mut doc: DocumentMut = config
        .parse()
        .map_err(|e| EvalError::WriteConfig(format!("not valid TOML: {e}")))?;
    let tiers = doc
        .get_mut("tier")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| EvalError::WriteConfig("no [[tier]] entries".into()))?;
    for (name, threshold) in thresholds {
        let entry = tiers
            .iter_mut()
            .find(|t| t.get("name").and_then(Item::as_str) == Some(name.as_str()))
            .ok_or_else(|| {
                EvalError::WriteConfig(format!("tier \"{name}\" is not a [[tier]] entry"))
            })?;
        // Four decimals, like the printed line: enough for a threshold, stable in diffs.
        let rounded = (threshold * 1e4).round() / 1e4;
        let old_suffix = entry
            .get("min_confidence")
            .and_then(Item::as_value)
            .and_then(|v| v.decor().suffix())
            .and_then(|s| s.as_str())
            .map(str::to_string);
        entry["min_confidence"] = value(rounded);
        if let Some(v) = entry["min_confidence"].as_value_mut() {
            // A comment of the user's stays unless it was an earlier calibration note.
            let kept = old_suffix.filter(|s| !s.contains("calibrated"));
            let suffix = match kept {
                Some(s) if !s.trim().is_empty() => format!("{} # {note}", s.trim_end()),
                _ => format!("  # {note}"),
            };
            v.decor_mut().set_suffix(suffix);
        }
    }
    Ok(doc.to_string())
}

/// The calibration notes `--write` left in `config`: `(tier, note)` for each `[[tier]]` whose
/// `min_confidence` carries one (what `tierhost check` shows). Text that is not TOML has none.
pub fn calibration_notes(config: &str) -> Vec<(String, String)> {
    let Ok(doc) = config.parse::<DocumentMut>() else {
        return Vec::new();
    };
    let Some(tiers) = doc.get("tier").and_then(Item::as_array_of_tables) else {
        return Vec::new();
    };
    tiers
        .iter()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?;
            let suffix = t
                .get("min_confidence")?
                .as_value()?
                .decor()
                .suffix()?
                .as_str()?;
            let note = suffix
                .split('#')
                .map(str::trim)
                .find(|c| c.starts_with("calibrated"))?;
            Some((name.to_string(), note.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"# The fraud cascade.
[cascade]
name = "x"   # its name

# The primary model.
[[tier]]
name = "primary"
plugin = "builtin:linear"
min_confidence = 0.8 # old value
[tier.params]
bias = -1.0

[[tier]]
name = "small"
plugin = "builtin:linear"
[tier.limits]
deadline_ms = 5
"#;

    #[test]
    fn only_the_thresholds_change_and_comments_stay() {
        let out = write_thresholds(
            CONFIG,
            &[("primary".into(), 0.612345), ("small".into(), 0.9)],
            "calibrated: conformal",
        )
        .unwrap();
        let expected = CONFIG
            .replace(
                "min_confidence = 0.8 # old value",
                "min_confidence = 0.6123 # old value # calibrated: conformal",
            )
            .replace(
                "plugin = \"builtin:linear\"\n[tier.limits]",
                "plugin = \"builtin:linear\"\nmin_confidence = 0.9  # calibrated: conformal\n[tier.limits]",
            );
        assert_eq!(out, expected);
        // Again: the earlier note is replaced, not stacked.
        let again = write_thresholds(&out, &[("small".into(), 0.95)], "calibrated: again").unwrap();
        assert!(
            again.contains("min_confidence = 0.95  # calibrated: again\n"),
            "{again}"
        );
        assert!(
            !again.contains("calibrated: conformal\n[tier.limits]"),
            "{again}"
        );
        assert_eq!(
            calibration_notes(&again),
            vec![
                ("primary".to_string(), "calibrated: conformal".to_string()),
                ("small".to_string(), "calibrated: again".to_string())
            ]
        );
        assert!(
            calibration_notes(CONFIG).is_empty(),
            "a user's comment is not a note"
        );
        let parsed: toml::Table = toml::from_str(&again).unwrap();
        assert_eq!(parsed["tier"][1]["min_confidence"].as_float(), Some(0.95));
    }

    #[test]
    fn unknown_tiers_and_bad_toml_are_refused() {
        let e = write_thresholds(CONFIG, &[("nope".into(), 0.5)], "n").unwrap_err();
        assert!(e.to_string().contains("tier \"nope\""), "{e}");
        let e = write_thresholds("[[tier]\n", &[], "n").unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }
}
