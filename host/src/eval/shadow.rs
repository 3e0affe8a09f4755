//! Shadow runs offline (`tierhost eval --shadow TIER=FILE`): candidate versions run in the
//! shadow of their tiers during one scenario's replay, and the decision diff each leaves: the
//! same [`ShadowReport`] `GET /v1/tiers/{name}/shadow` serves, on a data set instead of live
//! traffic.
//!
//! The replay is the scenario's own; only `[tier.shadow]` is added, with every call shadowed
//! (`share = 1.0`), a queue that holds the whole replay (nothing is dropped) and room for every
//! disagreement. The live answers, and so the scenario's numbers, are the ones the cascade
//! gives without the candidate.
use serde::Serialize;

use crate::cascade::{Cascade, CascadeTier};
use crate::config::{Config, PluginSource};
use crate::eval::{EvalError, Scenario};
use crate::shadow::{Shadow, ShadowConfig, ShadowReport};

/// Most disagreeing requests a shadowed replay keeps per tier (the `disagreements` ceiling of
/// `[tier.shadow]`).
pub const MAX_DISAGREEMENTS: usize = 10_000;

/// Candidates to run in the shadow of their tiers during one scenario's replay.
#[derive(Debug, Clone)]
pub struct ShadowCandidates {
    /// The scenario whose replay is shadowed.
    pub scenario: Scenario,
    /// Tier name and candidate plugin, in the order given.
    pub candidates: Vec<(String, PluginSource)>,
}

impl ShadowCandidates {
    /// `candidates` for the tiers of `config`, shadowing `scenario`; fails on a tier the
    /// config does not have or a tier named twice.
    pub fn new(
        config: &Config,
        scenario: Scenario,
        candidates: Vec<(String, PluginSource)>,
    ) -> Result<Self, EvalError> {
        for (i, (tier, _)) in candidates.iter().enumerate() {
            if !config.tiers.iter().any(|t| &t.name == tier) {
                return Err(EvalError::Shadow(format!(
                    "no tier named `{tier}` in cascade `{}` (tiers: {})",
                    config.cascade.name,
                    config
                        .tiers
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if candidates[..i].iter().any(|(t, _)| t == tier) {
                return Err(EvalError::Shadow(format!(
                    "tier `{tier}` is given two candidates"
                )));
            }
        }
        Ok(Self {
            scenario,
            candidates,
        })
    }

    /// `config` with each candidate in its tier's shadow, for a replay of `rows` requests:
    /// every call shadowed, a queue that holds all of them, every disagreement kept (up to
    /// [`MAX_DISAGREEMENTS`]). A tier that already has `[tier.shadow]` keeps its candidate
    /// model, params, limits and promotion gate; only the plugin is replaced.
    pub fn apply(&self, config: &Config, rows: usize) -> Config {
        let mut config = config.clone();
        for (name, plugin) in &self.candidates {
            for tier in config.tiers.iter_mut().filter(|t| &t.name == name) {
                let mut section = tier
                    .shadow
                    .take()
                    .unwrap_or_else(|| ShadowConfig::new(plugin.clone()));
                section.plugin = plugin.clone();
                section.share = 1.0;
                // One slot more than the replay's calls: nothing is ever dropped.
                section.max_queued = rows.saturating_add(1);
                section.disagreements = rows.clamp(1, MAX_DISAGREEMENTS);
                tier.shadow = Some(section);
            }
        }
        config
    }

    /// The shadow of each tier named here in `cascade` (loaded from [`Self::apply`]'s
    /// config), in the order given; fails when a candidate did not load (a diff against
    /// nothing would be empty), so a replay need not run to find out.
    pub fn shadows<'c>(
        &self,
        cascade: &'c Cascade,
    ) -> Result<Vec<(&'c CascadeTier, &'c Shadow)>, EvalError> {
        self.candidates
            .iter()
            .map(|(name, plugin)| {
                let tier = cascade
                    .tiers()
                    .iter()
                    .find(|t| &t.config.name == name)
                    .ok_or_else(|| EvalError::Shadow(format!("no tier named `{name}`")))?;
                let shadow = tier
                    .shadow
                    .as_ref()
                    .ok_or_else(|| EvalError::Shadow(format!("tier `{name}` has no shadow")))?;
                shadow.candidate().map_err(|error| {
                    EvalError::Shadow(format!(
                        "tier `{name}`: the candidate {plugin} did not load: {error}"
                    ))
                })?;
                Ok((tier, shadow))
            })
            .collect()
    }

    /// Waits until every shadow named here has compared every call handed to it, and returns
    /// their reports, in the order given.
    pub async fn reports(&self, cascade: &Cascade) -> Result<Vec<ShadowReport>, EvalError> {
        let mut reports = Vec::with_capacity(self.candidates.len());
        for (tier, shadow) in self.shadows(cascade)? {
            shadow.settle().await;
            let live = tier
                .sandbox
                .as_ref()
                .ok()
                .map(|s| s.plugin().info().clone());
            reports.push(shadow.report(live));
        }
        Ok(reports)
    }
}

/// The decision diffs a shadowed replay left ([`crate::eval::EvalOptions::shadow`]).
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRuns {
    /// The scenario whose replay was shadowed.
    pub scenario: Scenario,
    /// One report per candidate, in the order given.
    pub reports: Vec<ShadowReport>,
}
