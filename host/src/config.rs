//! The cascade configuration: plain data read from TOML, validated, with every default named.
//!
//! This module only describes and checks configuration; the code that acts on it lives in
//! [`crate::engine`], [`crate::plugin`] and [`crate::cascade`]. Every field and default is
//! documented in the README ("Configuration reference").
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::limits::{EngineLimits, TierLimits};
pub use crate::policy::breaker::BreakerConfig;
pub use crate::policy::cache::CacheConfig;
pub use crate::policy::chaos::ChaosConfig;
pub use crate::policy::hedge::HedgeConfig;
pub use crate::policy::ood::OodConfig;

/// A whole cascade: engine settings, ordered tiers, the safe default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// Cascade-wide settings.
    #[serde(default)]
    pub cascade: CascadeSection,
    /// Engine-wide settings (shared by every tier).
    #[serde(default)]
    pub engine: EngineLimits,
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
    /// Directory the config was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config came from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[cascade]`: settings of the cascade as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSection {
    /// Name shown in logs and metrics.
    #[serde(default = "default_cascade_name")]
    pub name: String,
    /// Total wall-clock budget of one request across all tiers, in milliseconds.
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u64,
    /// Optional audit file: one JSON line per fallback event (relative to the config file).
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Size at which the audit file is rotated, in bytes.
    #[serde(default = "default_audit_max_bytes")]
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`audit.jsonl.1` ... `.N`).
    #[serde(default = "default_audit_keep")]
    pub audit_keep: u32,
    /// Optional JSON-lines file of sample requests: every tier of a new or reloaded cascade
    /// must answer each of them without a fault before it is used.
    #[serde(default)]
    pub check_samples: Option<PathBuf>,
}

/// Default audit rotation size: 64 MiB holds ~150k fallback events.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 * 1024 * 1024;
fn default_audit_max_bytes() -> u64 {
    DEFAULT_AUDIT_MAX_BYTES
}
fn default_audit_keep() -> u32 {
    5
}

/// `[server]`: settings of `tierhost serve`, read when it starts (a reload does not change them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (overridden by `--listen`).
    pub listen: String,
    /// Largest request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Requests in the cascade at once; beyond it the safe default answers at once (`shed`).
    pub max_in_flight: usize,
    /// Largest number of requests in one batch.
    pub max_batch: usize,
    /// Watch the config and plugin files and reload on change.
    pub watch: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_in_flight: 256,
            max_batch: 256,
            watch: true,
        }
    }
}

/// `[alerts]`: the fallback-rate alert of each tier (defaults from reference article 004:
/// more than 10% of requests falling back from a tier over 5 minutes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Share of a tier's calls that fell back above which the alert fires.
    pub fallback_rate: f64,
    /// Sliding window, in seconds.
    pub window_s: u64,
    /// Calls a tier must have seen in the window before its alert can fire.
    pub min_requests: u64,
    /// Seconds the rate must stay above the threshold before the alert fires (and below it
    /// before it resolves), like a Prometheus rule's `for:`.
    pub for_s: u64,
    /// Optional `http://` URL that receives a JSON POST when an alert fires or clears.
    pub webhook: Option<String>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            fallback_rate: 0.10,
            window_s: 300,
            min_requests: 20,
            for_s: 300,
            webhook: None,
        }
    }
}

fn default_cascade_name() -> String {
    "cascade".into()
}
/// Default total request budget: enough for a 20 ms primary, a fallback model and rules, and
/// still inside a typical 100 ms service-level objective.
pub const DEFAULT_BUDGET_MS: u64 = 100;
fn default_budget_ms() -> u64 {
    DEFAULT_BUDGET_MS
}

impl Default for CascadeSection {
    fn default() -> Self {
        Self {
            name: default_cascade_name(),
            budget_ms: DEFAULT_BUDGET_MS,
            audit_log: None,
            audit_max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            audit_keep: default_audit_keep(),
            check_samples: None,
        }
    }
}

/// How a tier's instances live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// A fresh instance per call: no state survives between requests (the default).
    #[default]
    Fresh,
    /// Warm instances are reused across calls (for tiers with a costly start-up). An instance
    /// that faulted is always discarded.
    Reuse,
}

/// One `[[tier]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tier name, unique in the cascade (shown in trails, logs and metrics).
    pub name: String,
    /// The component: a path to a `.wasm` file (relative to the config) or `builtin:<name>`.
    pub plugin: String,
    /// Answers with lower confidence fall through to the next tier.
    #[serde(default)]
    pub min_confidence: f64,
    /// `fresh` (default) or `reuse`.
    #[serde(default)]
    pub instances: InstanceMode,
    /// Warm instances kept for `instances = "reuse"`.
    #[serde(default = "default_warm_instances")]
    pub warm_instances: usize,
    /// Calls of this tier in flight at once (bulkhead); beyond it the tier is skipped (`shed`).
    /// Unset (or 0): a fair share of `engine.max_instances` (what the tiers that set it leave,
    /// split evenly, at most 64), filled in when the config is parsed.
    #[serde(default)]
    pub max_concurrent: usize,
    /// Per-call sandbox limits.
    #[serde(default)]
    pub limits: TierLimits,
    /// Acceptance constraints on the tier's output.
    #[serde(default)]
    pub accept: AcceptConfig,
    /// Parameters handed to the tier through the `params` import.
    #[serde(default)]
    pub params: toml::Table,
    /// A file granted read-only to the tier through the `model` import (tree dump, rule list,
    /// weights), relative to the config. The tier gets its bytes, never file access.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Fault injection for rehearsals and `tierhost eval`: a share of this tier's calls run the
    /// `builtin:chaos` tier in `mode` instead, inside the same sandbox limits.
    #[serde(default)]
    pub chaos: Option<ChaosConfig>,
    /// Out-of-distribution guard: requests that fail it skip this tier.
    #[serde(default)]
    pub ood: Option<OodConfig>,
    /// Circuit breaker (off unless set).
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Hedging to the next tiers when this one is slow (off unless set).
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
}

/// Largest model document a tier may be granted.
pub const MAX_MODEL_BYTES: u64 = 64 * 1024 * 1024;

fn default_warm_instances() -> usize {
    4
}
/// Largest default bulkhead per tier: far above what 2-8 cores can run at once, low enough
/// that a tier stuck in blocking calls cannot hold every instance slot.
pub const DEFAULT_MAX_CONCURRENT: usize = 64;

impl TierConfig {
    /// Pool slots this tier may hold at once: its calls in flight plus its idle warm
    /// instances (`instances = "reuse"`).
    pub fn pool_slots(&self) -> u64 {
        let warm = match self.instances {
            InstanceMode::Reuse => self.warm_instances,
            InstanceMode::Fresh => 0,
        };
        (self.max_concurrent as u64).saturating_add(warm as u64)
    }
}

/// `[tier.accept]`: constraints an answer must satisfy to be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    /// Allowed labels; empty means any label.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Smallest acceptable score.
    #[serde(default)]
    pub score_min: Option<f64>,
    /// Largest acceptable score.
    #[serde(default)]
    pub score_max: Option<f64>,
}

/// `[safe_default]`: the host's own answer when every tier fails. It has no dependencies and
/// cannot fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeDefaultConfig {
    /// Label of the safe answer.
    #[serde(default = "default_safe_label")]
    pub label: String,
    /// Score of the safe answer.
    #[serde(default)]
    pub score: f64,
    /// Confidence of the safe answer (0: it is a guess by design).
    #[serde(default)]
    pub confidence: f64,
    /// Reasons attached to the safe answer.
    #[serde(default = "default_safe_reasons")]
    pub reasons: Vec<String>,
    /// When set, the final outcome is an abstention with this reason (e.g. "escalated to
    /// human review") instead of the safe label.
    #[serde(default)]
    pub abstain: Option<String>,
}

fn default_safe_label() -> String {
    "review".into()
}
fn default_safe_reasons() -> Vec<String> {
    vec!["safe_default".into()]
}

impl Default for SafeDefaultConfig {
    fn default() -> Self {
        Self {
            label: default_safe_label(),
            score: 0.0,
            confidence: 0.0,
            reasons: default_safe_reasons(),
            abstain: None,
        }
    }
}

impl CascadeConfig {
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
        let mut config: CascadeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.source = source.to_path_buf();
        config.share_instance_pool();
        config.validate()?;
        Ok(config)
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

    /// Checks every value; the error names the file, the field and the problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tiers.is_empty() {
            return Err(self.invalid("tier", "no tiers: add at least one [[tier]] entry"));
        }
        if self.cascade.budget_ms == 0 {
            return Err(self.invalid("cascade.budget_ms", "must be greater than 0"));
        }
        if self.cascade.audit_max_bytes < 4096 {
            return Err(self.invalid("cascade.audit_max_bytes", "must be at least 4096"));
        }
        let server = &self.server;
        if server.max_body_bytes < 256 {
            return Err(self.invalid("server.max_body_bytes", "must be at least 256"));
        }
        if server.max_in_flight == 0 || server.max_batch == 0 {
            return Err(self.invalid("server", "max_in_flight and max_batch must be at least 1"));
        }
        let alerts = &self.alerts;
        if !(0.0..=1.0).contains(&alerts.fallback_rate) {
            return Err(self.invalid("alerts.fallback_rate", "must be within [0, 1]"));
        }
        if alerts.window_s == 0 {
            return Err(self.invalid("alerts.window_s", "must be greater than 0"));
        }
        if alerts
            .webhook
            .as_ref()
            .is_some_and(|w| !w.starts_with("http://"))
        {
            return Err(self.invalid("alerts.webhook", "must be an http:// URL"));
        }
        self.engine
            .validate()
            .map_err(|(field, problem)| self.invalid(format!("engine.{field}"), problem))?;
        let sd = &self.safe_default;
        if !sd.score.is_finite() {
            return Err(self.invalid("safe_default.score", "must be a finite number"));
        }
        if !(0.0..=1.0).contains(&sd.confidence) {
            return Err(self.invalid("safe_default.confidence", "must be within [0, 1]"));
        }
        if sd.label.is_empty() && sd.abstain.is_none() {
            return Err(self.invalid("safe_default.label", "must not be empty"));
        }
        if let Some(cache) = &self.cache {
            cache
                .validate()
                .map_err(|(field, problem)| self.invalid(format!("cache.{field}"), problem))?;
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
        let mut seen = BTreeMap::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            let at = |field: &str| format!("tier \"{}\" (tier[{i}]).{field}", tier.name);
            if tier.name.is_empty() || tier.name == "safe-default" {
                return Err(self.invalid(
                    format!("tier[{i}].name"),
                    "must be non-empty and not `safe-default`",
                ));
            }
            if let Some(first) = seen.insert(tier.name.as_str(), i) {
                return Err(self.invalid(
                    at("name"),
                    format!("duplicate tier name, also used by tier[{first}]"),
                ));
            }
            if tier.plugin.is_empty() {
                return Err(self.invalid(at("plugin"), "must name a .wasm file or builtin:<name>"));
            }
            if !(0.0..=1.0).contains(&tier.min_confidence) {
                return Err(self.invalid(at("min_confidence"), "must be within [0, 1]"));
            }
            if tier.max_concurrent == 0 {
                return Err(self.invalid(at("max_concurrent"), "must be at least 1"));
            }
            if tier.instances == InstanceMode::Reuse && tier.warm_instances == 0 {
                return Err(self.invalid(
                    at("warm_instances"),
                    "must be at least 1 with instances = \"reuse\"",
                ));
            }
            tier.limits
                .validate(&self.engine)
                .map_err(|(field, problem)| {
                    self.invalid(at(&format!("limits.{field}")), problem)
                })?;
            let accept = &tier.accept;
            for (name, bound) in [
                ("score_min", accept.score_min),
                ("score_max", accept.score_max),
            ] {
                if bound.is_some_and(|b| !b.is_finite()) {
                    return Err(self.invalid(at(&format!("accept.{name}")), "must be finite"));
                }
            }
            if let (Some(lo), Some(hi)) = (accept.score_min, accept.score_max)
                && lo > hi
            {
                return Err(self.invalid(at("accept"), format!("score_min {lo} > score_max {hi}")));
            }
            if let Some(chaos) = &tier.chaos {
                chaos.validate().map_err(|(field, problem)| {
                    self.invalid(at(&format!("chaos.{field}")), problem)
                })?;
                flatten_params(&chaos.params)
                    .map_err(|problem| self.invalid(at("chaos.params"), problem))?;
            }
            if let Some(breaker) = &tier.breaker {
                breaker.validate().map_err(|(field, problem)| {
                    self.invalid(at(&format!("breaker.{field}")), problem)
                })?;
            }
            if let Some(hedge) = &tier.hedge {
                hedge.validate().map_err(|(field, problem)| {
                    self.invalid(at(&format!("hedge.{field}")), problem)
                })?;
                if i + 1 == self.tiers.len() {
                    return Err(
                        self.invalid(at("hedge"), "the last tier has no next tier to hedge to")
                    );
                }
            }
            if let Err(problem) = flatten_params(&tier.params) {
                return Err(self.invalid(at("params"), problem));
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
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A parameter value after flattening, as handed to a tier.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Integer(i64),
    /// Float.
    Float(f64),
    /// Text (TOML strings and datetimes).
    Text(String),
}

/// Flattens a `params` table into dotted names. Arrays are not supported (a tier reads named
/// values); nested tables become `outer.inner`.
pub fn flatten_params(table: &toml::Table) -> Result<Vec<(String, ParamValue)>, String> {
    fn walk(
        prefix: &str,
        table: &toml::Table,
        out: &mut Vec<(String, ParamValue)>,
    ) -> Result<(), String> {
        for (key, value) in table {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => walk(&name, t, out)?,
                toml::Value::Boolean(b) => out.push((name, ParamValue::Bool(*b))),
                toml::Value::Integer(i) => out.push((name, ParamValue::Integer(*i))),
                toml::Value::Float(x) if x.is_finite() => out.push((name, ParamValue::Float(*x))),
                toml::Value::Float(_) => return Err(format!("`{name}` must be finite")),
                toml::Value::String(s) => out.push((name, ParamValue::Text(s.clone()))),
                toml::Value::Datetime(d) => out.push((name, ParamValue::Text(d.to_string()))),
                toml::Value::Array(_) => {
                    return Err(format!(
                        "`{name}` is an array; use a table of named values (e.g. [params.{name}] a = 1.0)"
                    ));
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk("", table, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CascadeConfig, ConfigError> {
        CascadeConfig::parse(text, Path::new("test.toml"), Path::new("."))
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

    #[test]
    fn params_flatten_with_dots() {
        let table: toml::Table =
            toml::from_str("bias = -1.0\n[weights]\namount = 0.5\n[weights.cat]\ncrypto = 2\n")
                .unwrap();
        let flat = flatten_params(&table).unwrap();
        assert!(flat.contains(&("weights.amount".into(), ParamValue::Float(0.5))));
        assert!(flat.contains(&("weights.cat.crypto".into(), ParamValue::Integer(2))));
        assert!(flat.contains(&("bias".into(), ParamValue::Float(-1.0))));
    }
}
