//! What a reload from one config to another would change (`tierhost diff`): tiers added,
//! removed, reordered or re-versioned, and every setting that differs, as a typed list.
//!
//! Settings are compared as the host reads them (after parsing, with every default filled
//! in), so `fuel = 10_000_000` and a missing `fuel` are the same. A tier's identity is its
//! name: a tier renamed is one removed and one added. Plugins and model grants are compared
//! by the sha256 of their bytes as they are on disk now (read, never compiled): a reload
//! would load those bytes; what a running service loaded earlier is in `GET /v1/tiers`.
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::{Config, PluginSource, TierConfig};

/// Everything a reload from `old` to `new` would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigDiff {
    /// The old config's [`Config::answer_digest`] (what its answers name as
    /// `served_by.config_digest`).
    pub old_digest: String,
    /// The new config's.
    pub new_digest: String,
    /// The changes: tiers added, removed and reordered first, then each tier's (in the new
    /// order), then the other sections'.
    pub changes: Vec<ConfigChange>,
}

/// One difference between two configs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum ConfigChange {
    /// A tier only the new config has.
    TierAdded {
        /// Its name.
        tier: String,
        /// Its place in the new cascade (0 = tried first).
        position: usize,
        /// Its plugin, as written.
        plugin: String,
        /// Its plugin's bytes.
        digest: FileDigest,
    },
    /// A tier only the old config has.
    TierRemoved {
        /// Its name.
        tier: String,
        /// Its place in the old cascade.
        position: usize,
    },
    /// The tiers both configs have are tried in another order.
    TiersReordered {
        /// Their old order.
        old: Vec<String>,
        /// Their new order.
        new: Vec<String>,
    },
    /// A tier's plugin or model grant has other bytes (a new version, even under the same
    /// file name).
    TierReversioned {
        /// The tier.
        tier: String,
        /// Which file.
        file: TierFile,
        /// The old bytes (`None`: no model granted).
        old: Option<FileDigest>,
        /// The new bytes.
        new: Option<FileDigest>,
    },
    /// A setting of a tier: `min_confidence`, `limits.fuel`, `accept.labels`, `params.w.amount`,
    /// `features`, `breaker`, `hedge.after_ms`, `plugin` (the name as written)...
    TierSetting {
        /// The tier.
        tier: String,
        /// The setting's dotted path within the tier.
        field: String,
        /// Its old value (`None`: unset).
        old: Option<Value>,
        /// Its new value.
        new: Option<Value>,
    },
    /// A setting outside the tiers: `cascade.budget_ms`, `safe_default.label`, `cache`,
    /// `escalation.tiers`, `engine.max_instances`, `server.listen`, `alerts.*`, `trust.*`.
    Setting {
        /// The setting's dotted path.
        field: String,
        /// Its old value (`None`: unset).
        old: Option<Value>,
        /// Its new value.
        new: Option<Value>,
    },
}

/// A file of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierFile {
    /// The `.wasm` component (or the builtin's embedded bytes).
    Plugin,
    /// The `model` grant.
    Model,
}

/// A file's identity: the sha256 of its bytes, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileDigest {
    /// sha256 of the bytes, hex (what answers name as `served_by.sha256` for a plugin).
    Sha256(String),
    /// The file could not be read (a reload would be refused for it).
    Unreadable(String),
}

/// The top-level sections besides the tiers, in the order they are reported. The exhaustive
/// destructuring makes a new section of [`Config`] a compile error here until it is compared.
fn sections(config: &Config) -> [(&'static str, Value); 9] {
    let Config {
        cascade,
        engine,
        tiers: _,
        safe_default,
        server,
        alerts,
        cache,
        escalation,
        trust,
        oci,
        base_dir: _,
        source: _,
    } = config;
    let json = |value: Result<Value, serde_json::Error>| value.unwrap_or(Value::Null);
    [
        ("cascade", json(serde_json::to_value(cascade))),
        ("safe_default", json(serde_json::to_value(safe_default))),
        ("cache", json(serde_json::to_value(cache))),
        ("escalation", json(serde_json::to_value(escalation))),
        ("trust", json(serde_json::to_value(trust))),
        ("alerts", json(serde_json::to_value(alerts))),
        ("engine", json(serde_json::to_value(engine))),
        ("server", json(serde_json::to_value(server))),
        ("oci", json(serde_json::to_value(oci))),
    ]
}

impl ConfigDiff {
    /// What a reload from `old` to `new` would change. Reads the plugin and model files both
    /// configs name (relative paths against each config's own directory).
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut changes = Vec::new();
        let position =
            |config: &Config, name: &str| config.tiers.iter().position(|t| t.name == name);
        for (i, tier) in new.tiers.iter().enumerate() {
            if position(old, &tier.name).is_none() {
                changes.push(ConfigChange::TierAdded {
                    tier: tier.name.clone(),
                    position: i,
                    plugin: tier.plugin.to_string(),
                    digest: plugin_digest(new, &tier.plugin),
                });
            }
        }
        for (i, tier) in old.tiers.iter().enumerate() {
            if position(new, &tier.name).is_none() {
                changes.push(ConfigChange::TierRemoved {
                    tier: tier.name.clone(),
                    position: i,
                });
            }
        }
        let kept = |config: &Config, other: &Config| -> Vec<String> {
            config
                .tiers
                .iter()
                .filter(|t| position(other, &t.name).is_some())
                .map(|t| t.name.clone())
                .collect()
        };
        let (old_order, new_order) = (kept(old, new), kept(new, old));
        if old_order != new_order {
            changes.push(ConfigChange::TiersReordered {
                old: old_order,
                new: new_order,
            });
        }
        for tier in &new.tiers {
            if let Some(before) = old.tiers.iter().find(|t| t.name == tier.name) {
                tier_changes(old, before, new, tier, &mut changes);
            }
        }
        for ((section, old_value), (_, new_value)) in sections(old).into_iter().zip(sections(new)) {
            compare(section, &old_value, &new_value, &mut |field, old, new| {
                changes.push(ConfigChange::Setting { field, old, new });
            });
        }
        Self {
            old_digest: old.answer_digest(),
            new_digest: new.answer_digest(),
            changes,
        }
    }

    /// Whether a reload would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The changes of one tier both configs have.
fn tier_changes(
    old: &Config,
    before: &TierConfig,
    new: &Config,
    after: &TierConfig,
    changes: &mut Vec<ConfigChange>,
) {
    let tier = &after.name;
    let (old_plugin, new_plugin) = (
        plugin_digest(old, &before.plugin),
        plugin_digest(new, &after.plugin),
    );
    if old_plugin != new_plugin {
        changes.push(ConfigChange::TierReversioned {
            tier: tier.clone(),
            file: TierFile::Plugin,
            old: Some(old_plugin),
            new: Some(new_plugin),
        });
    }
    let model = |config: &Config, tier: &TierConfig| {
        tier.model
            .as_ref()
            .map(|path| file_digest(std::fs::read(config.resolve(path))))
    };
    let (old_model, new_model) = (model(old, before), model(new, after));
    if old_model != new_model {
        changes.push(ConfigChange::TierReversioned {
            tier: tier.clone(),
            file: TierFile::Model,
            old: old_model,
            new: new_model,
        });
    }
    let settings = |t: &TierConfig| {
        let mut value = serde_json::to_value(t).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut value {
            fields.remove("name");
        }
        value
    };
    compare(
        "",
        &settings(before),
        &settings(after),
        &mut |field, old, new| {
            changes.push(ConfigChange::TierSetting {
                tier: tier.clone(),
                field,
                old,
                new,
            });
        },
    );
}

/// Reports every leaf that differs between `old` and `new` under `path`: objects are compared
/// field by field, anything else (numbers, strings, arrays) as a whole. `null` is unset.
fn compare(
    path: &str,
    old: &Value,
    new: &Value,
    report: &mut dyn FnMut(String, Option<Value>, Option<Value>),
) {
    if let (Value::Object(old), Value::Object(new)) = (old, new) {
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let null = Value::Null;
            compare(
                &at,
                old.get(key).unwrap_or(&null),
                new.get(key).unwrap_or(&null),
                report,
            );
        }
    } else if !same(old, new) {
        let set = |v: &Value| (!v.is_null()).then(|| v.clone());
        report(path.to_string(), set(old), set(new));
    }
}

/// Equal as settings: numbers by value (`1` and `1.0` are the same fuel), the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn plugin_digest(config: &Config, plugin: &PluginSource) -> FileDigest {
    file_digest(crate::plugin::read_source(plugin, &config.base_dir))
}

fn file_digest<B: AsRef<[u8]>, E: fmt::Display>(bytes: Result<B, E>) -> FileDigest {
    use sha2::Digest;
    match bytes {
        Ok(bytes) => FileDigest::Sha256(hex::encode(sha2::Sha256::digest(bytes.as_ref()))),
        Err(e) => FileDigest::Unreadable(e.to_string()),
    }
}

impl fmt::Display for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(sha) => write!(f, "sha256 {sha}"),
            Self::Unreadable(problem) => write!(f, "unreadable ({problem})"),
        }
    }
}

impl fmt::Display for TierFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plugin => "plugin",
            Self::Model => "model",
        })
    }
}

/// A setting's value as a line shows it: `unset`, or compact JSON.
struct Shown<'a>(&'a Option<Value>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("unset"),
            Some(value) => write!(f, "{value}"),
        }
    }
}

impl fmt::Display for ConfigChange {
    /// One line: `+` added, `-` removed, `~` changed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TierAdded {
                tier,
                position,
                plugin,
                digest,
            } => write!(
                f,
                "+ tier \"{tier}\" added at position {position}: {plugin} ({digest})"
            ),
            Self::TierRemoved { tier, position } => {
                write!(f, "- tier \"{tier}\" removed (was at position {position})")
            }
            Self::TiersReordered { old, new } => {
                write!(f, "~ tier order: {} -> {}", old.join(", "), new.join(", "))
            }
            Self::TierReversioned {
                tier,
                file,
                old,
                new,
            } => {
                let shown = |d: &Option<FileDigest>| {
                    d.as_ref().map_or("none".to_string(), ToString::to_string)
                };
                write!(
                    f,
                    "~ tier \"{tier}\" {file} re-versioned: {} -> {}",
                    shown(old),
                    shown(new)
                )
            }
            Self::TierSetting {
                tier,
                field,
                old,
                new,
            } => write!(
                f,
                "~ tier \"{tier}\" {field}: {} -> {}",
                Shown(old),
                Shown(new)
            ),
            Self::Setting { field, old, new } => {
                write!(f, "~ {field}: {} -> {}", Shown(old), Shown(new))
            }
        }
    }
}

impl fmt::Display for ConfigDiff {
    /// The report `tierhost diff` prints: the config digest answers name before and after,
    /// then one line per change.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.old_digest == self.new_digest {
            writeln!(f, "config_digest {} (unchanged)", self.old_digest)?;
        } else {
            writeln!(
                f,
                "config_digest {} -> {}",
                self.old_digest, self.new_digest
            )?;
        }
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        match self.changes.len() {
            0 => writeln!(f, "no changes"),
            1 => writeln!(f, "1 change"),
            n => writeln!(f, "{n} changes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml"), Path::new(".")).unwrap()
    }

    const OLD: &str = r#"
[cascade]
budget_ms = 100
[[tier]]
name = "primary"
plugin = "builtin:linear"
min_confidence = 0.8
[tier.params]
bias = 0.5
[[tier]]
name = "rules"
plugin = "builtin:rules"
[tier.limits]
fuel = 10_000_000
[[tier]]
name = "legacy"
plugin = "builtin:constant"
"#;

    #[test]
    fn identical_configs_differ_in_nothing_even_when_written_differently() {
        // The same settings, one with its defaults spelled out.
        let spelled = OLD.replace(
            "fuel = 10_000_000",
            "fuel = 10000000\ndeadline_ms = 20\n[tier.accept]\nlabels = []",
        );
        let diff = ConfigDiff::between(&parse(OLD), &parse(&spelled));
        assert!(diff.is_empty(), "{diff}");
        assert_eq!(diff.old_digest, diff.new_digest);
        assert!(diff.to_string().ends_with("no changes\n"), "{diff}");
    }

    #[test]
    fn a_reload_names_every_tier_and_setting_it_changes() {
        let new = r#"
[cascade]
budget_ms = 250
[cache]
[[tier]]
name = "rules"
plugin = "builtin:rules"
features = ["amount"]
[tier.limits]
fuel = 20_000_000
[tier.breaker]
[[tier]]
name = "primary"
plugin = "builtin:trees"
min_confidence = 0.9
[tier.params]
bias = 0.25
[[tier]]
name = "small"
plugin = "builtin:linear"
"#;
        let diff = ConfigDiff::between(&parse(OLD), &parse(new));
        let has = |wanted: &ConfigChange| diff.changes.contains(wanted);
        let setting = |tier: &str, field: &str, old: Option<Value>, new: Option<Value>| {
            ConfigChange::TierSetting {
                tier: tier.into(),
                field: field.into(),
                old,
                new,
            }
        };
        let linear = FileDigest::Sha256(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            crate::builtin::get("linear").unwrap(),
        )));
        assert!(has(&ConfigChange::TierAdded {
            tier: "small".into(),
            position: 2,
            plugin: "builtin:linear".into(),
            digest: linear.clone(),
        }));
        assert!(has(&ConfigChange::TierRemoved {
            tier: "legacy".into(),
            position: 2
        }));
        assert!(has(&ConfigChange::TiersReordered {
            old: vec!["primary".into(), "rules".into()],
            new: vec!["rules".into(), "primary".into()],
        }));
        assert!(
            diff.changes.iter().any(|c| matches!(c,
                ConfigChange::TierReversioned { tier, file: TierFile::Plugin, old: Some(old), new: Some(FileDigest::Sha256(_)) }
                    if tier == "primary" && *old == linear)),
            "{diff}"
        );
        assert!(has(&setting(
            "primary",
            "plugin",
            Some("builtin:linear".into()),
            Some("builtin:trees".into())
        )));
        assert!(has(&setting(
            "primary",
            "min_confidence",
            Some(0.8.into()),
            Some(0.9.into())
        )));
        assert!(has(&setting(
            "primary",
            "params.bias",
            Some(0.5.into()),
            Some(0.25.into())
        )));
        assert!(has(&setting(
            "rules",
            "limits.fuel",
            Some(10_000_000.into()),
            Some(20_000_000.into())
        )));
        assert!(has(&setting(
            "rules",
            "features",
            None,
            Some(serde_json::json!(["amount"]))
        )));
        assert!(
            diff.changes.iter().any(|c| matches!(c,
                ConfigChange::TierSetting { tier, field, old: None, new: Some(Value::Object(_)) }
                    if tier == "rules" && field == "breaker")),
            "{diff}"
        );
        assert!(has(&ConfigChange::Setting {
            field: "cascade.budget_ms".into(),
            old: Some(100.into()),
            new: Some(250.into()),
        }));
        assert!(
            diff.changes.iter().any(|c| matches!(c,
                ConfigChange::Setting { field, old: None, new: Some(_) } if field == "cache")),
            "{diff}"
        );
        // The rules tier's plugin is the same builtin: not re-versioned.
        assert!(!diff.changes.iter().any(|c| matches!(c,
            ConfigChange::TierReversioned { tier, .. } if tier == "rules")));
        assert_ne!(diff.old_digest, diff.new_digest);
        let text = diff.to_string();
        assert!(
            text.contains("~ tier \"rules\" limits.fuel: 10000000 -> 20000000"),
            "{text}"
        );
        assert!(text.contains("- tier \"legacy\" removed"), "{text}");
    }

    #[test]
    fn a_plugin_file_with_new_bytes_is_re_versioned_under_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tier.wasm"), b"version one").unwrap();
        std::fs::write(b.join("tier.wasm"), b"version two").unwrap();
        let text = "[[tier]]\nname = \"t\"\nplugin = \"tier.wasm\"\nmodel = \"gone.json\"\n";
        let load = |dir: &Path| {
            let path = dir.join("c.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&path).unwrap()
        };
        let diff = ConfigDiff::between(&load(&a), &load(&b));
        assert_eq!(diff.changes.len(), 1, "{diff}");
        assert!(
            matches!(
                &diff.changes[0],
                ConfigChange::TierReversioned {
                    file: TierFile::Plugin,
                    ..
                }
            ),
            "{diff}"
        );
        // The same config text: answers keep their config digest, the plugin digest moves.
        assert_eq!(diff.old_digest, diff.new_digest);
    }
}
