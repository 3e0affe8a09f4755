//! One `[[tier]]` entry: where its plugin comes from, its limits and policies, and a builder
//! for cascades made in code.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::http::HttpConfig;
use super::params::flatten_params;
use crate::limits::{EngineConfig, TierLimits};
use crate::policy::breaker::BreakerConfig;
use crate::policy::chaos::ChaosConfig;
use crate::policy::hedge::HedgeConfig;
use crate::policy::ood::OodConfig;
use crate::shadow::ShadowConfig;

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

/// Where a tier's component comes from. In TOML it is a string: `builtin:<name>`,
/// `oci://REGISTRY/REPO[:TAG]@sha256:HEX` or a path.
#[derive(Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A `.wasm` component file (relative paths resolve against the config's directory).
    File(PathBuf),
    /// A reference tier embedded in the binary ([`crate::builtin`]).
    Builtin(String),
    /// A component's bytes, for cascades built in code (e.g. a plugin fetched by the embedder).
    Bytes(Arc<[u8]>),
    /// A component in an OCI registry (`[oci]`), pulled into the store before it is loaded.
    Oci {
        /// The reference as written, with its `oci://` prefix.
        reference: String,
        /// Where the pulled plugin lives in the store (set when the config is finished).
        local: PathBuf,
    },
}

impl PluginSource {
    /// The file a `File` source names, resolved against `base_dir`.
    pub fn file(&self, base_dir: &std::path::Path) -> Option<PathBuf> {
        match self {
            Self::File(path) => Some(super::resolve_path(base_dir, path)),
            Self::Oci { local, .. } => Some(super::resolve_path(base_dir, local)),
            Self::Builtin(_) | Self::Bytes(_) => None,
        }
    }
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::Bytes(bytes) => write!(f, "bytes:{}", bytes.len()),
            Self::Oci { reference, .. } => f.write_str(reference),
        }
    }
}

impl fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl From<&str> for PluginSource {
    fn from(text: &str) -> Self {
        if text.starts_with("oci://") {
            return Self::Oci {
                reference: text.to_string(),
                local: PathBuf::new(),
            };
        }
        match text.strip_prefix("builtin:") {
            Some(name) => Self::Builtin(name.to_string()),
            None => Self::File(PathBuf::from(text)),
        }
    }
}

impl Serialize for PluginSource {
    /// Bytes serialize as their sha256, so a config digest still changes with the plugin.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bytes(bytes) => {
                use sha2::Digest;
                serializer.serialize_str(&format!(
                    "bytes:sha256:{}",
                    hex::encode(sha2::Sha256::digest(bytes))
                ))
            }
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for PluginSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::from(text.as_str()))
    }
}

/// One `[[tier]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tier name, unique in the cascade (shown in trails, logs and metrics).
    pub name: String,
    /// The component: a path to a `.wasm` file (relative to the config), `builtin:<name>`, or
    /// (in code) its bytes.
    pub plugin: PluginSource,
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
    /// Least privilege: the only features the tier sees. The others are removed from the
    /// request before it is handed to the plugin (exact byte match on the name: no case
    /// folding, no Unicode normalisation). Unset: every feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// A file granted read-only to the tier through the `model` import (tree dump, rule list,
    /// weights), relative to the config. The tier gets its bytes, never file access.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Names of `[trust]` keys, one of which must have signed the plugin file (and the model
    /// file, when there is one) in a detached `<file>.sig`; empty: no signature required.
    #[serde(default)]
    pub signed_by: Vec<String>,
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
    /// A candidate version run in the shadow of this one and compared with it (off unless set).
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
    /// Outbound HTTP to the listed URL prefixes (remote-model tiers); without it the tier has
    /// no network at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConfig>,
}

/// Largest model document a tier may be granted.
pub const MAX_MODEL_BYTES: u64 = 64 * 1024 * 1024;

fn default_warm_instances() -> usize {
    DEFAULT_WARM_INSTANCES
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
        // The candidate's calls, and as many warm instances when the tier reuses them.
        let shadow = self.shadow.as_ref().map_or(0, |s| match self.instances {
            InstanceMode::Reuse => s.max_concurrent.saturating_mul(2),
            InstanceMode::Fresh => s.max_concurrent,
        });
        (self.max_concurrent as u64)
            .saturating_add(warm as u64)
            .saturating_add(shadow as u64)
    }

    /// The tier as its shadow candidate would serve it: the candidate's plugin, and its model,
    /// params and limits where `[tier.shadow]` sets them (the rest is the tier's). `None`
    /// without a shadow. Promoting the candidate makes this the tier.
    pub fn candidate(&self) -> Option<TierConfig> {
        let shadow = self.shadow.as_ref()?;
        let mut tier = self.clone();
        tier.plugin = shadow.plugin.clone();
        if let Some(model) = &shadow.model {
            tier.model = Some(model.clone());
        }
        if let Some(params) = &shadow.params {
            tier.params = params.clone();
        }
        if let Some(limits) = &shadow.limits {
            tier.limits = limits.clone();
        }
        tier.shadow = None;
        Some(tier)
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

/// Default warm instances kept with `instances = "reuse"`.
pub const DEFAULT_WARM_INSTANCES: usize = 4;

impl TierConfig {
    /// A tier config with every default, built in code: `TierConfig::builder("rules",
    /// PluginSource::Builtin("rules".into())).deadline_ms(20).build()`.
    pub fn builder(name: impl Into<String>, plugin: PluginSource) -> TierConfigBuilder {
        TierConfigBuilder(TierConfig {
            name: name.into(),
            plugin,
            min_confidence: 0.0,
            instances: InstanceMode::Fresh,
            warm_instances: DEFAULT_WARM_INSTANCES,
            max_concurrent: 0,
            limits: TierLimits::default(),
            accept: AcceptConfig::default(),
            params: toml::Table::new(),
            features: None,
            model: None,
            signed_by: Vec::new(),
            chaos: None,
            ood: None,
            breaker: None,
            hedge: None,
            shadow: None,
            http: None,
        })
    }

    /// Checks this tier's own values; the error names the field within the tier.
    pub fn validate(&self, engine: &EngineConfig) -> Result<(), (String, String)> {
        let field = |name: &str, problem: &str| Err((name.to_string(), problem.to_string()));
        let nested = |section: &'static str| {
            move |(field, problem): (&str, String)| (format!("{section}.{field}"), problem)
        };
        match &self.plugin {
            PluginSource::File(path) if path.as_os_str().is_empty() => {
                return field("plugin", "must name a .wasm file or builtin:<name>");
            }
            PluginSource::Builtin(name) if name.is_empty() => {
                return field("plugin", "builtin: needs a name, e.g. builtin:rules");
            }
            _ => {}
        }
        if !self.signed_by.is_empty() {
            // A detached signature sits beside a file; builtins ship inside the host binary
            // (as trusted as the host itself) and bytes given in code have no file.
            let not_a_file = |source: &PluginSource| match source {
                // Pulled with its `.sig` layer into the store, beside the plugin.
                PluginSource::File(_) | PluginSource::Oci { .. } => None,
                PluginSource::Builtin(_) => Some(
                    "a builtin: plugin is part of the host binary and carries no signature; \
                     remove signed_by or name a .wasm file",
                ),
                PluginSource::Bytes(_) => Some(
                    "a plugin given as bytes has no file for a detached .sig; verify the bytes \
                     before building the config (tierhost::Signers::verify), or load a file",
                ),
            };
            if let Some(problem) = not_a_file(&self.plugin) {
                return field("signed_by", problem);
            }
            if let Some(problem) = self.shadow.as_ref().and_then(|s| not_a_file(&s.plugin)) {
                return field(
                    "shadow.plugin",
                    &format!("the tier has signed_by, so its candidate is checked too: {problem}"),
                );
            }
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return field("min_confidence", "must be within [0, 1]");
        }
        if self.max_concurrent == 0 {
            return field("max_concurrent", "must be at least 1");
        }
        if self.instances == InstanceMode::Reuse && self.warm_instances == 0 {
            return field(
                "warm_instances",
                "must be at least 1 with instances = \"reuse\"",
            );
        }
        self.limits.validate(engine).map_err(nested("limits"))?;
        self.accept.validate().map_err(nested("accept"))?;
        if let Some(chaos) = &self.chaos {
            chaos.validate().map_err(nested("chaos"))?;
            flatten_params(&chaos.params).map_err(|p| ("chaos.params".to_string(), p))?;
        }
        if let Some(breaker) = &self.breaker {
            breaker.validate().map_err(nested("breaker"))?;
        }
        if let Some(hedge) = &self.hedge {
            hedge.validate().map_err(nested("hedge"))?;
        }
        if let Some(shadow) = &self.shadow {
            shadow.validate().map_err(nested("shadow"))?;
            if let Some(limits) = &shadow.limits {
                limits.validate(engine).map_err(nested("shadow.limits"))?;
            }
            if let Some(params) = &shadow.params {
                flatten_params(params).map_err(|p| ("shadow.params".to_string(), p))?;
            }
        }
        flatten_params(&self.params).map_err(|p| ("params".to_string(), p))?;
        if let Some(http) = &self.http {
            if !cfg!(feature = "remote") {
                return field(
                    "http",
                    "this build of tierhost has no remote-model support (cargo feature `remote`)",
                );
            }
            http.validate().map_err(nested("http"))?;
        }
        if let Some(features) = &self.features {
            let mut seen = std::collections::HashSet::new();
            for name in features {
                if name.is_empty() {
                    return field("features", "feature names must be non-empty");
                }
                if !seen.insert(name.as_str()) {
                    return Err(("features".to_string(), format!("`{name}` is listed twice")));
                }
            }
        }
        Ok(())
    }
}

impl AcceptConfig {
    /// Checks the `[tier.accept]` values.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, bound) in [("score_min", self.score_min), ("score_max", self.score_max)] {
            if bound.is_some_and(|b| !b.is_finite()) {
                return Err((name, "must be finite".into()));
            }
        }
        if let (Some(lo), Some(hi)) = (self.score_min, self.score_max)
            && lo > hi
        {
            return Err(("score_min", format!("{lo} > score_max {hi}")));
        }
        Ok(())
    }
}

/// Builds a [`TierConfig`] in code; every field not set keeps its documented default.
#[derive(Debug, Clone)]
pub struct TierConfigBuilder(TierConfig);

impl TierConfigBuilder {
    /// Answers below this confidence fall through.
    pub fn min_confidence(mut self, value: f64) -> Self {
        self.0.min_confidence = value;
        self
    }
    /// Per-call sandbox limits.
    pub fn limits(mut self, limits: TierLimits) -> Self {
        self.0.limits = limits;
        self
    }
    /// Per-call deadline, in milliseconds.
    pub fn deadline_ms(mut self, ms: u64) -> Self {
        self.0.limits.deadline_ms = ms;
        self
    }
    /// Fuel (instructions, roughly) per call.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.0.limits.fuel = fuel;
        self
    }
    /// Linear memory per call, in MiB.
    pub fn max_memory_mib(mut self, mib: u64) -> Self {
        self.0.limits.max_memory_mib = mib;
        self
    }
    /// Keep warm instances across calls.
    pub fn reuse_instances(mut self, warm: usize) -> Self {
        self.0.instances = InstanceMode::Reuse;
        self.0.warm_instances = warm;
        self
    }
    /// Calls in flight at once (bulkhead).
    pub fn max_concurrent(mut self, calls: usize) -> Self {
        self.0.max_concurrent = calls;
        self
    }
    /// Acceptance constraints on the output.
    pub fn accept(mut self, accept: AcceptConfig) -> Self {
        self.0.accept = accept;
        self
    }
    /// Parameters handed to the tier through the `params` import.
    pub fn params(mut self, params: toml::Table) -> Self {
        self.0.params = params;
        self
    }
    /// Least privilege: the tier sees only these features (exact names).
    pub fn features<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.0.features = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// A circuit breaker.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.0.breaker = Some(breaker);
        self
    }
    /// Hedging to the next tiers when this one is slow.
    pub fn hedge(mut self, hedge: HedgeConfig) -> Self {
        self.0.hedge = Some(hedge);
        self
    }
    /// An out-of-distribution guard.
    pub fn ood(mut self, ood: OodConfig) -> Self {
        self.0.ood = Some(ood);
        self
    }
    /// Outbound HTTP to these URL prefixes (`[tier.http]`), with the default limits.
    pub fn http(mut self, http: HttpConfig) -> Self {
        self.0.http = Some(http);
        self
    }
    /// Require the plugin (and model) files to be signed by one of these `[trust]` keys.
    pub fn signed_by(mut self, keys: Vec<String>) -> Self {
        self.0.signed_by = keys;
        self
    }
    /// The tier config.
    pub fn build(self) -> TierConfig {
        self.0
    }
}
