//! Promote and rollback: a tier's shadow candidate becomes the live version atomically (the
//! same path as a reload: loaded off the request path, checked, swapped; in-flight requests
//! finish on the version they started with), and the version it replaced stays loaded and warm
//! so a rollback is one pointer swap back to it.
//!
//! A promote changes the running cascade, not the config file: a later reload from the file
//! (SIGHUP, a file change, `POST /admin/reload`) serves what the file says. Make a promotion
//! permanent by writing the candidate as the tier's `plugin` in the config.
use super::*;

/// Promote or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutAction {
    /// The candidate became the live version.
    Promote,
    /// The version a promote replaced serves again.
    Rollback,
}

/// What a promote or rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// Promote or rollback.
    pub action: RolloutAction,
    /// The tier.
    pub tier: String,
    /// Who asked (as they named themselves).
    pub by: String,
    /// The version that served before: plugin version and sha256.
    pub from: (String, String),
    /// The version that serves now.
    pub to: (String, String),
    /// Generation serving now.
    pub generation: u64,
}

/// Why a promote or rollback was refused (the serving cascade is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No tier has that name.
    #[error("no tier named \"{0}\"")]
    NoSuchTier(String),
    /// The tier has no `[tier.shadow]` candidate.
    #[error("tier \"{0}\" has no [tier.shadow] candidate to promote")]
    NoShadow(String),
    /// The promotion gate refused it.
    #[error("tier \"{tier}\": promotion refused: {refusal}")]
    Gate {
        /// The tier.
        tier: String,
        /// Why, with the numbers.
        refusal: String,
        /// The shadow report the decision was made on.
        report: Box<crate::shadow::ShadowReport>,
    },
    /// The promoted cascade did not load or check.
    #[error("tier \"{tier}\": promotion rejected: {reason}")]
    Rejected {
        /// The tier.
        tier: String,
        /// Why.
        reason: String,
    },
    /// Nothing to roll back to.
    #[error("{0}")]
    NoRollback(String),
}

/// The generation a rollback returns to.
pub(super) struct Rollback {
    tier: String,
    previous: Arc<Live>,
    promoted_generation: u64,
}

fn version_of(live: &Live, tier: &str) -> (String, String) {
    live.cascade
        .loaded_plugins()
        .find(|(name, _)| *name == tier)
        .map_or_else(Default::default, |(_, info)| {
            (info.version.clone(), info.sha256.clone())
        })
}

impl CascadeService {
    /// The shadow report of tier `name`.
    pub fn shadow_report(&self, name: &str) -> Result<crate::shadow::ShadowReport, RolloutError> {
        let live = self.current();
        let tier = live
            .cascade
            .tiers()
            .iter()
            .find(|t| t.config.name == name)
            .ok_or_else(|| RolloutError::NoSuchTier(name.to_string()))?;
        let shadow = tier
            .shadow
            .as_ref()
            .ok_or_else(|| RolloutError::NoShadow(name.to_string()))?;
        let info = tier
            .sandbox
            .as_ref()
            .ok()
            .map(|s| s.plugin().info().clone());
        Ok(shadow.report(info))
    }

    /// Makes tier `name`'s shadow candidate its live version, when the promotion gate (if
    /// configured) passes; the replaced version stays warm for [`Self::rollback`].
    pub async fn promote(&self, name: &str, by: &str) -> Result<RolloutReport, RolloutError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let before = self.current();
        let report = self.shadow_report(name)?;
        if let Some(refusal) = report.gate.refusal.clone() {
            return Err(RolloutError::Gate {
                tier: name.to_string(),
                refusal,
                report: Box::new(report),
            });
        }
        let mut config = before.config.clone();
        for tier in config.tiers.iter_mut().filter(|t| t.name == name) {
            if let Some(candidate) = tier.candidate() {
                *tier = candidate;
            }
        }
        let reload = self.apply(config, "promote").await;
        if reload.outcome != ReloadOutcome::Applied {
            return Err(RolloutError::Rejected {
                tier: name.to_string(),
                reason: reload.reason.unwrap_or_default(),
            });
        }
        let after = self.current();
        if let Ok(mut slot) = self.rollback.lock() {
            *slot = Some(Rollback {
                tier: name.to_string(),
                previous: before.clone(),
                promoted_generation: after.generation,
            });
        }
        Ok(self.rolled_out(RolloutAction::Promote, name, by, &before, &after))
    }

    /// Returns to the generation the last promote replaced: exactly the previous version
    /// (same sha256, its warm instances and policy state), in one atomic swap. Refused when
    /// the cascade changed since that promote (a reload or another promote).
    pub async fn rollback(&self, name: &str, by: &str) -> Result<RolloutReport, RolloutError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let current = self.current();
        let mut slot = self
            .rollback
            .lock()
            .map_err(|_| RolloutError::NoRollback("rollback state poisoned".into()))?;
        let Some(rollback) = slot.as_ref() else {
            return Err(RolloutError::NoRollback(format!(
                "tier \"{name}\": nothing to roll back (no promote since the service started)"
            )));
        };
        if rollback.tier != name {
            return Err(RolloutError::NoRollback(format!(
                "tier \"{name}\": the last promote was of tier \"{}\"",
                rollback.tier
            )));
        }
        if current.generation != rollback.promoted_generation {
            return Err(RolloutError::NoRollback(format!(
                "tier \"{name}\": the cascade changed since the promote (generation {} is \
                 serving, the promote made {}); reload the configuration you want instead",
                current.generation, rollback.promoted_generation
            )));
        }
        let previous = &rollback.previous;
        self.memory.retain(previous.cascade.memory_keys());
        self.current.store(Arc::new(Live {
            cascade: previous.cascade.clone(),
            config: previous.config.clone(),
            generation: current.generation + 1,
        }));
        *slot = None;
        drop(slot);
        self.publish_tiers();
        let after = self.current();
        Ok(self.rolled_out(RolloutAction::Rollback, name, by, &current, &after))
    }

    /// Logs and audits a promote or rollback, and reports it.
    fn rolled_out(
        &self,
        action: RolloutAction,
        tier: &str,
        by: &str,
        before: &Live,
        after: &Live,
    ) -> RolloutReport {
        let report = RolloutReport {
            action,
            tier: tier.to_string(),
            by: by.to_string(),
            from: version_of(before, tier),
            to: version_of(after, tier),
            generation: after.generation,
        };
        tracing::warn!(
            target: "tierhost::rollout",
            action = ?action,
            tier,
            by,
            from = %report.from.1,
            to = %report.to.1,
            generation = after.generation,
            "tier version changed by an operator"
        );
        if let Some(audit) = after.cascade.audit() {
            audit.write_record(&serde_json::json!({
                "time": crate::events::now_rfc3339(),
                "event": action,
                "cascade": after.cascade.name(),
                "tier": tier,
                "by": by,
                "from": { "version": report.from.0, "sha256": report.from.1 },
                "to": { "version": report.to.0, "sha256": report.to.1 },
                "generation": after.generation,
            }));
        }
        report
    }
}
