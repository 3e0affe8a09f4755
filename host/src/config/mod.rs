//! The cascade configuration: plain data read from TOML, validated, with every default named.
//!
//! This module only describes and checks configuration; the code that acts on it lives in
//! [`crate::engine`], [`crate::plugin`] and [`crate::cascade`]. Every field and default is
//! documented in the README ("Configuration reference").
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod diff;
mod http;
mod oci;
mod params;
mod sections;
mod tier;

use crate::error::ConfigError;
use crate::limits::EngineConfig;
pub use crate::policy::breaker::BreakerConfig;
pub use crate::policy::cache::CacheConfig;
pub use crate::policy::chaos::{ChaosConfig, ChaosMode};
pub use crate::policy::hedge::HedgeConfig;
pub use crate::policy::ood::{OodConfig, OodMethod};
use crate::signing::PublicKey;
pub use diff::{ConfigChange, ConfigDiff, FileDigest, TierFile};
pub use http::{AllowRule, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RESPONSE_BYTES, HttpConfig};
pub use oci::{OciConfig, OciRef};
pub use params::{ParamValue, flatten_params};
pub use sections::{
    AlertConfig, CascadeSettings, DEFAULT_AUDIT_MAX_BYTES, DEFAULT_BUDGET_MS, DEFAULT_MAX_PENDING,
    EscalationConfig, MAX_LABEL_BYTES, QueueSync, SafeDefaultConfig, ServerConfig, TlsConfig,
};
pub use tier::{
    AcceptConfig, DEFAULT_MAX_CONCURRENT, InstanceMode, MAX_MODEL_BYTES, PluginSource, TierConfig,
    TierConfigBuilder,
};

/// A whole cascade: engine settings, ordered tiers, the safe default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cascade-wide settings.
    #[serde(default)]
    pub cascade: CascadeSettings,
    /// Engine-wide settings (shared by every tier).
    #[serde(default)]
    pub engine: EngineConfig,
    /// Tiers, tried in order.
    #[serde(rename = "tier", default)]
    pub tiers: Vec<TierConfig>,
    /// The host's own last answer when every tier fails.
    #[serde(default)]
    pub safe_default: SafeDefaultConfig,
    /// HTTP service settings (`tierhost serve`; read at start only).
    #[serde(default)]
    pub server: ServerConfig,
    /// Fallback-rate alerting.
    #[serde(default)]
    pub alerts: AlertConfig,
    /// Prediction cache in front of the cascade (off unless set).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// The durable review queue for escalated requests (off unless set).
    #[serde(default)]
    pub escalation: Option<EscalationConfig>,
    /// Public keys that may sign plugin and model files, by name; a tier's `signed_by` names
    /// the ones it accepts.
    #[serde(default)]
    pub trust: BTreeMap<String, PublicKey>,
    /// Plugins from an OCI registry: where they are kept, tags, plain-HTTP registries.
    #[serde(default)]
    pub oci: OciConfig,
    /// Directory the config was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config came from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parses and validates config text. `source` names it in errors; relative paths resolve
    /// against `base_dir`.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.source = source.to_path_buf();
        config.finish()
    }

    /// A config made in code: default sections (change them before or after) and `tiers`,
    /// finished with [`Self::finish`]. Relative paths resolve against the working directory.
    pub fn from_tiers(tiers: Vec<TierConfig>) -> Result<Self, ConfigError> {
        Self {
            tiers,
            source: PathBuf::from("<in code>"),
            ..Self::default()
        }
        .finish()
    }

    /// Fills in what is derived from the rest (each tier's share of the instance pool when
    /// `max_concurrent` is unset) and validates. Call it after changing a config in code.
    pub fn finish(mut self) -> Result<Self, ConfigError> {
        self.share_instance_pool();
        self.place_oci_plugins()?;
        self.validate()?;
        Ok(self)
    }

    /// Parses every `oci://` plugin reference (a tier's and its shadow candidate's) and sets
    /// where it lives in the `[oci] store`; a reference without a digest needs
    /// `[oci] allow_tags = true`.
    fn place_oci_plugins(&mut self) -> Result<(), ConfigError> {
        let store = self.resolve(&self.oci.store);
        let allow_tags = self.oci.allow_tags;
        let mut problems = Vec::new();
        for (i, tier) in self.tiers.iter_mut().enumerate() {
            let name = tier.name.clone();
            let shadow = tier.shadow.as_mut().map(|s| &mut s.plugin);
            for (field, plugin) in [
                ("plugin", Some(&mut tier.plugin)),
                ("shadow.plugin", shadow),
            ] {
                let Some(PluginSource::Oci { reference, local }) = plugin else {
                    continue;
                };
                let field = format!("tier \"{name}\" (tier[{i}]).{field}");
                match OciRef::parse(reference) {
                    Ok(parsed) if parsed.digest.is_none() && !allow_tags => problems.push((
                        field,
                        format!(
                            "`{reference}` has no digest: pin it (@sha256:...; `tierhost push` \
                             prints it) or set [oci] allow_tags = true"
                        ),
                    )),
                    Ok(parsed) => *local = parsed.local_file(&store),
                    Err(problem) => problems.push((field, problem)),
                }
            }
        }
        match problems.into_iter().next() {
            Some((field, problem)) => Err(self.invalid(field, problem)),
            None => Ok(()),
        }
    }

    /// Gives every tier without a `max_concurrent` an even share of the instance slots the
    /// others leave (at most [`DEFAULT_MAX_CONCURRENT`]); [`Self::validate`] then checks that the
    /// tiers' reservations fit in `engine.max_instances`.
    fn share_instance_pool(&mut self) {
        let unset = self.tiers.iter().filter(|t| t.max_concurrent == 0).count() as u64;
        if unset == 0 {
            return;
        }
        let reserved: u64 = self
            .tiers
            .iter()
            .filter(|t| t.max_concurrent != 0)
            .map(TierConfig::pool_slots)
            .fold(0, u64::saturating_add);
        let share = u64::from(self.engine.max_instances).saturating_sub(reserved) / unset;
        for tier in self.tiers.iter_mut().filter(|t| t.max_concurrent == 0) {
            let warm = tier.pool_slots();
            let calls = usize::try_from(share.saturating_sub(warm)).unwrap_or(usize::MAX);
            tier.max_concurrent = calls.clamp(1, DEFAULT_MAX_CONCURRENT);
        }
    }

    fn invalid(&self, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Checks every value; the error names the file, the field and the problem. Each section
    /// checks its own fields; this adds what spans sections (the instance pool, tier names).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let section = |name: &'static str| {
            move |(field, problem): (&str, String)| self.invalid(format!("{name}.{field}"), problem)
        };
        if self.tiers.is_empty() {
            return Err(self.invalid("tier", "no tiers: add at least one [[tier]] entry"));
        }
        self.cascade.validate().map_err(section("cascade"))?;
        self.server.validate().map_err(section("server"))?;
        self.alerts.validate().map_err(section("alerts"))?;
        self.engine.validate().map_err(section("engine"))?;
        self.oci.validate().map_err(section("oci"))?;
        self.safe_default
            .validate()
            .map_err(section("safe_default"))?;
        if let Some(cache) = &self.cache {
            cache.validate().map_err(section("cache"))?;
        }
        if let Some(escalation) = &self.escalation {
            escalation.validate().map_err(section("escalation"))?;
            for tier in &escalation.tiers {
                if tier != crate::cascade::SAFE_DEFAULT
                    && !self.tiers.iter().any(|t| &t.name == tier)
                {
                    return Err(self.invalid(
                        "escalation.tiers",
                        format!(
                            "no tier is named `{tier}` (nor is it `{}`)",
                            crate::cascade::SAFE_DEFAULT
                        ),
                    ));
                }
            }
            if escalation.tiers.is_empty() && self.safe_default.abstain.is_none() {
                return Err(self.invalid(
                    "escalation",
                    "nothing would ever escalate: set [safe_default] abstain (the cascade then \
                     abstains and escalates when no tier serves) or escalation.tiers",
                ));
            }
        }
        // Partition the instance pool: the tiers' bulkheads together fit in it, so a tier
        // running at its max_concurrent can never take the slots the next tier needs.
        // Saturating: huge values must not wrap around to a sum that fits.
        let reserved = self
            .tiers
            .iter()
            .map(TierConfig::pool_slots)
            .fold(0, u64::saturating_add);
        if reserved > u64::from(self.engine.max_instances) {
            return Err(self.invalid(
                "tier.max_concurrent",
                format!(
                    "the tiers reserve {reserved} instance slots (max_concurrent, plus \
                     warm_instances with instances = \"reuse\"), more than \
                     engine.max_instances = {}: one tier at its limit could starve the others \
                     of instances; lower max_concurrent or raise engine.max_instances",
                    self.engine.max_instances
                ),
            ));
        }
        if let Some(name) = self.trust.keys().find(|n| !crate::signing::is_key_name(n)) {
            return Err(self.invalid(
                format!("trust.{name:?}"),
                "a key name is 1-64 letters, digits, `-`, `_` or `.`",
            ));
        }
        let mut seen = BTreeMap::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            let at = |field: &str| format!("tier \"{}\" (tier[{i}]).{field}", tier.name);
            if tier.name.is_empty() || tier.name == crate::cascade::SAFE_DEFAULT {
                return Err(self.invalid(
                    format!("tier[{i}].name"),
                    format!(
                        "must be non-empty and not `{}`",
                        crate::cascade::SAFE_DEFAULT
                    ),
                ));
            }
            if let Some(first) = seen.insert(tier.name.as_str(), i) {
                return Err(self.invalid(
                    at("name"),
                    format!("duplicate tier name, also used by tier[{first}]"),
                ));
            }
            tier.validate(&self.engine)
                .map_err(|(field, problem)| self.invalid(at(&field), problem))?;
            if let Some(name) = tier.signed_by.iter().find(|n| !self.trust.contains_key(*n)) {
                let known: Vec<&str> = self.trust.keys().map(String::as_str).collect();
                return Err(self.invalid(
                    at("signed_by"),
                    format!(
                        "`{name}` is not a key in [trust] (known: [{}])",
                        known.join(", ")
                    ),
                ));
            }
            if tier.hedge.is_some() && i + 1 == self.tiers.len() {
                return Err(self.invalid(at("hedge"), "the last tier has no next tier to hedge to"));
            }
        }
        Ok(())
    }

    /// sha256 of everything that decides an answer: the budget, every tier's entry and the
    /// safe default (with the tiers' plugin digests, it keys the prediction cache).
    pub fn answer_digest(&self) -> String {
        use sha2::Digest;
        let decisive = serde_json::json!({
            "budget_ms": self.cascade.budget_ms,
            "tiers": self.tiers,
            "safe_default": self.safe_default,
        });
        hex::encode(sha2::Sha256::digest(decisive.to_string().as_bytes()))
    }

    /// Resolves a path from the config (relative to the config file's directory).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve_path(&self.base_dir, path)
    }
}

/// The one rule for paths in a config: absolute as written, relative to the config's directory.
pub(crate) fn resolve_path(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::TierLimits;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("."))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse("[[tier]]\nname = \"a\"\nplugin = \"builtin:rules\"\n").unwrap();
        assert_eq!(c.cascade.budget_ms, DEFAULT_BUDGET_MS);
        assert_eq!(c.tiers[0].limits, TierLimits::default());
        assert_eq!(c.tiers[0].instances, InstanceMode::Fresh);
        assert_eq!(c.safe_default.label, "review");
        assert_eq!(c.tiers[0].max_concurrent, DEFAULT_MAX_CONCURRENT);
    }

    #[test]
    fn the_instance_pool_is_partitioned_between_tiers() {
        let tier = |name: &str, extra: &str| {
            format!("[[tier]]\nname = \"{name}\"\nplugin = \"builtin:rules\"\n{extra}")
        };
        // Six tiers without a bulkhead share 256 slots: 42 each, never more than the pool.
        let six: String = (0..6).map(|i| tier(&format!("t{i}"), "")).collect();
        let c = parse(&six).unwrap();
        assert!(c.tiers.iter().all(|t| t.max_concurrent == 42));
        // One tier that asks for 200 leaves 56 for the other two.
        let c = parse(&format!(
            "{}{}{}",
            tier("big", "max_concurrent = 200\n"),
            tier("a", ""),
            tier("b", "instances = \"reuse\"\nwarm_instances = 4\n")
        ))
        .unwrap();
        assert_eq!(c.tiers[1].max_concurrent, 28);
        assert_eq!(c.tiers[2].max_concurrent, 24, "its 4 warm instances count");
        // Reservations beyond the pool are refused, naming the fix.
        let err = parse(&format!(
            "{}{}",
            tier("a", "max_concurrent = 200\n"),
            tier("b", "max_concurrent = 100\n")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("max_concurrent") && err.contains("engine.max_instances"),
            "{err}"
        );
    }

    #[test]
    fn closed_sets_and_plugin_sources_are_checked_when_parsed() {
        let tier = |extra: &str| format!("[[tier]]\nname = \"a\"\n{extra}");
        let err = parse(&tier(
            "plugin = \"builtin:rules\"\n[tier.chaos]\nmode = \"explode\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("explode") && err.contains("infinite-loop"),
            "{err}"
        );
        let err = parse(&tier(
            "plugin = \"builtin:rules\"\n[tier.ood]\nstats = \"s.json\"\nmethod = \"guess\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("guess") && err.contains("zscore"), "{err}");
        let err = parse(&tier("plugin = \"\"\n")).unwrap_err().to_string();
        assert!(err.contains("tier[0]).plugin"), "{err}");
        let err = parse(&tier("plugin = \"builtin:\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("builtin: needs a name"), "{err}");
        let c = parse(&tier("plugin = \"models/x.wasm\"\n")).unwrap();
        assert_eq!(
            c.tiers[0].plugin,
            PluginSource::File("models/x.wasm".into())
        );
        assert_eq!(
            c.tiers[0].plugin.file(Path::new("/etc/tierhost")),
            Some(PathBuf::from("/etc/tierhost/models/x.wasm"))
        );
        let err = parse(&tier(
            "plugin = \"builtin:rules\"\n[tier.accept]\nscore_min = 2.0\nscore_max = 1.0\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("accept.score_min"), "{err}");
    }

    #[test]
    fn errors_name_the_file_tier_and_field() {
        let err =
            parse("[[tier]]\nname = \"a\"\nplugin = \"x\"\nmin_confidence = 1.5\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("test.toml") && msg.contains("tier \"a\" (tier[0]).min_confidence"),
            "{msg}"
        );

        let err = parse("[[tier]]\nname = \"a\"\nplugin = \"x\"\n[tier.limits]\ndeadline_ms = 0\n")
            .unwrap_err();
        assert!(err.to_string().contains("limits.deadline_ms"), "{err}");

        let err = parse("[[tier]]\nname = \"a\"\nplugin = \"x\"\n[tier.limits]\nfuel_typo = 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("fuel_typo"), "{err}");

        let err = parse(
            "[[tier]]\nname = \"a\"\nplugin = \"x\"\n[[tier]]\nname = \"a\"\nplugin = \"y\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");

        let err = parse("").unwrap_err();
        assert!(err.to_string().contains("no tiers"), "{err}");

        let err = parse("[[tier]]\nname = \"a\"\nplugin = \"x\"\n[tier.params]\nw = [1, 2]\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("params") && err.to_string().contains("`w`"),
            "{err}"
        );

        let err = parse("[[tier]\nname=").unwrap_err();
        assert!(err.to_string().starts_with("test.toml:"), "{err}");
    }
}
