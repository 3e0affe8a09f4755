//! The README's configuration tables cannot drift from the code: every default the README
//! states is compared with the value a config gets when the field is left out.
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tierhost::Config;

/// A config with every section present and every optional field left out.
const ALL_SECTIONS: &str = r#"
[trust]
[server.tls]
cert = "c.pem"
key = "k.pem"
[cache]
[escalation]
queue = "q.db"
tiers = ["b"]
[[tier]]
name = "a"
plugin = "builtin:rules"
[tier.ood]
stats = "stats.json"
[tier.chaos]
mode = "trap"
[tier.breaker]
[tier.hedge]
after_ms = 1.0
[tier.shadow]
plugin = "candidate.wasm"
[tier.http]
allow = ["http://127.0.0.1:9000/v2"]
[[tier]]
name = "b"
plugin = "builtin:rules"
"#;

/// Fields `ALL_SECTIONS` has to set (a hedge needs a delay, a queue its file and something that
/// escalates), so their defaults cannot show.
const SET_BY_THIS_TEST: &[(&str, &str)] = &[
    ("[tier.hedge]", "after_ms"),
    ("[escalation]", "queue"),
    ("[tier.shadow]", "plugin"),
    ("[server.tls]", "cert"),
    ("[server.tls]", "key"),
    ("[escalation]", "tiers"),
    ("[tier.http]", "allow"),
];

/// README section heading (its first backticked word) -> the section's defaults, as JSON.
fn actual_defaults() -> BTreeMap<&'static str, Value> {
    let config = Config::parse(ALL_SECTIONS, Path::new("t.toml"), Path::new(".")).unwrap();
    let json = |v: &dyn erased::Json| v.json();
    // Tier "a" has every sub-table; tier "b" none, so its entry shows the tier's defaults.
    let tier = &config.tiers[0];
    BTreeMap::from([
        ("[cascade]", json(&config.cascade)),
        ("[[tier]]", json(&config.tiers[1])),
        ("[tier.ood]", json(tier.ood.as_ref().unwrap())),
        ("[tier.chaos]", json(tier.chaos.as_ref().unwrap())),
        ("[tier.breaker]", json(tier.breaker.as_ref().unwrap())),
        ("[tier.hedge]", json(tier.hedge.as_ref().unwrap())),
        ("[tier.shadow]", json(tier.shadow.as_ref().unwrap())),
        ("[tier.limits]", json(&tier.limits)),
        ("[tier.accept]", json(&tier.accept)),
        ("[tier.http]", json(tier.http.as_ref().unwrap())),
        ("[safe_default]", json(&config.safe_default)),
        ("[cache]", json(config.cache.as_ref().unwrap())),
        ("[escalation]", json(config.escalation.as_ref().unwrap())),
        ("[engine]", json(&config.engine)),
        ("[server]", json(&config.server)),
        ("[server.tls]", json(config.server.tls.as_ref().unwrap())),
        ("[alerts]", json(&config.alerts)),
        ("[oci]", json(&config.oci)),
        // Named keys, no fixed fields: empty unless set.
        ("[trust]", json(&config.trust)),
    ])
}

mod erased {
    pub trait Json {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("config sections serialize")
        }
    }
}

/// The README's tables: section -> (field, default cell).
fn readme_tables() -> BTreeMap<String, Vec<(String, String)>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let reference = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("a Configuration reference section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut tables = BTreeMap::new();
    let mut section = None;
    for line in reference.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            section = heading.split('`').nth(1).map(str::to_string);
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let (Some(section), [_, field, default, ..]) = (&section, cells.as_slice())
            && field.starts_with('`')
        {
            tables
                .entry(section.clone())
                .or_insert_with(Vec::new)
                .push((field.to_string(), default.to_string()));
        }
    }
    tables
}

/// The README's default as JSON: `None` for a field without a default (`required`), `Null`
/// for one that is off unless set (`unset ...`), else its first backticked TOML literal.
fn stated(cell: &str) -> Option<Value> {
    if cell.starts_with("required") {
        return None;
    }
    if cell.starts_with("unset") {
        return Some(Value::Null);
    }
    let literal = cell.split('`').nth(1)?;
    let table: toml::Table = toml::from_str(&format!("v = {literal}"))
        .unwrap_or_else(|e| panic!("README default `{literal}` is not a TOML value: {e}"));
    Some(serde_json::to_value(&table["v"]).unwrap())
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => x.is_empty() && y.is_empty(),
        _ => a == b,
    }
}

#[test]
fn every_default_in_the_readme_is_the_one_the_code_applies() {
    let actual = actual_defaults();
    let tables = readme_tables();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (section, rows) in &tables {
        let Some(defaults) = actual.get(section.as_str()) else {
            wrong.push(format!(
                "README documents {section}, which this test does not know"
            ));
            continue;
        };
        for (field_cell, default_cell) in rows {
            // A row may document several fields: `from_s`, `until_s`.
            for field in field_cell.split(',').map(|f| f.trim().trim_matches('`')) {
                let Some(expected) = stated(default_cell) else {
                    continue;
                };
                if SET_BY_THIS_TEST.contains(&(section.as_str(), field)) {
                    continue;
                }
                let got = defaults.get(field).cloned().unwrap_or(Value::Null);
                checked += 1;
                if !same(&expected, &got) {
                    wrong.push(format!(
                        "{section} {field}: README says {expected}, the code applies {got}"
                    ));
                }
            }
        }
    }
    for section in actual.keys() {
        if !tables.contains_key(*section) {
            wrong.push(format!("README has no table for {section}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked > 60, "only {checked} defaults found in the README");
}

#[test]
fn every_field_of_every_section_is_documented() {
    let tables = readme_tables();
    let mut missing = Vec::new();
    for (section, defaults) in actual_defaults() {
        let documented: Vec<String> = tables
            .get(section)
            .into_iter()
            .flatten()
            .flat_map(|(f, _)| f.split(',').map(|f| f.trim().trim_matches('`').to_string()))
            .collect();
        let Value::Object(fields) = defaults else {
            continue;
        };
        for field in fields.keys() {
            // Sub-tables have their own section.
            let base = section.trim_matches(|c| c == '[' || c == ']');
            let nested = format!("[{base}.{field}]");
            if !documented.contains(field) && !tables.contains_key(&nested) {
                missing.push(format!("{section} {field}"));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented fields: {missing:?}");
}
