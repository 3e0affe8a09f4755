//! The fault catalogue ([`Fault`]) and the drill's copies of a cascade: the base copy without
//! the policies that would hide a failing tier ([`drill_base`]), and one copy per (tier, fault)
//! with that one tier broken ([`faulted`]).
use std::path::Path;

use serde::Serialize;

use crate::config::{ChaosConfig, Config, PluginSource};
use crate::policy::chaos::ChaosMode;

/// One kind of fault the drill injects into a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `loop {}`: burns CPU until a limit stops it.
    Loop,
    /// Allocates until the memory limit refuses.
    MemoryBomb,
    /// Executes `unreachable`.
    Trap,
    /// Unbounded recursion.
    StackOverflow,
    /// Blocks in a WASI sleep for an hour.
    Hang,
    /// Answers with a NaN score.
    Nan,
    /// Answers with a reason twice the tier's `max_output_bytes`.
    OversizedOutput,
    /// Abstains.
    Abstain,
    /// The tier's plugin is a file that is not a component.
    LoadFailure,
}

/// Reason kinds that skip a tier before it is called for reasons that have nothing to do with
/// the injected fault: the request is legitimately not this tier's (its OOD guard). Such a
/// request did not exercise the fault; it is counted as "gated", not as a gap.
pub const GATE_KINDS: [&str; 1] = ["out-of-distribution"];

impl Fault {
    /// Every fault, in matrix column order.
    pub const ALL: [Fault; 9] = [
        Self::Loop,
        Self::MemoryBomb,
        Self::Trap,
        Self::StackOverflow,
        Self::Hang,
        Self::Nan,
        Self::OversizedOutput,
        Self::Abstain,
        Self::LoadFailure,
    ];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loop => "loop",
            Self::MemoryBomb => "memory-bomb",
            Self::Trap => "trap",
            Self::StackOverflow => "stack-overflow",
            Self::Hang => "hang",
            Self::Nan => "nan",
            Self::OversizedOutput => "oversized-output",
            Self::Abstain => "abstain",
            Self::LoadFailure => "load-failure",
        }
    }

    /// The `builtin:chaos` mode that produces the fault (none for the load failure, which is
    /// injected by replacing the plugin).
    pub fn chaos_mode(self) -> Option<ChaosMode> {
        Some(match self {
            Self::Loop => ChaosMode::InfiniteLoop,
            Self::MemoryBomb => ChaosMode::MemoryBomb,
            Self::Trap => ChaosMode::Trap,
            Self::StackOverflow => ChaosMode::Recursion,
            Self::Hang => ChaosMode::Sleep,
            Self::Nan => ChaosMode::Nan,
            Self::OversizedOutput => ChaosMode::HugeReason,
            Self::Abstain => ChaosMode::Abstain,
            Self::LoadFailure => return None,
        })
    }

    /// How the fault is injected, as the report says it.
    pub fn injected_as(self) -> String {
        match (self, self.chaos_mode()) {
            (Self::OversizedOutput, Some(m)) => {
                format!("chaos mode {m}, bytes = 2 x max_output_bytes")
            }
            (_, Some(m)) => format!("chaos mode {m}"),
            (_, None) => "corrupt plugin (not a component)".into(),
        }
    }

    /// The reason kinds the faulted tier's trail entry may carry. A loop is stopped by fuel,
    /// or by the deadline when the tier's fuel outlasts it; every other fault has one right
    /// reason (README, "Fallback reasons").
    pub fn expected(self) -> &'static [&'static str] {
        match self {
            Self::Loop => &["out-of-fuel", "deadline"],
            Self::MemoryBomb => &["memory-limit"],
            Self::Trap => &["trap"],
            Self::StackOverflow => &["stack-overflow"],
            Self::Hang => &["deadline"],
            Self::Nan | Self::OversizedOutput => &["invalid-output"],
            Self::Abstain => &["abstained"],
            Self::LoadFailure => &["load-failed"],
        }
    }
}

/// The cascade as the drill runs it: no breakers, hedging or cache (each would, correctly,
/// stop calling a failing tier or answer without it, and the drill must see the tier's own
/// reason on every request), no configured chaos (the drill injects its own), no audit file
/// and no review queue (a drill must not write production logs, nor put its broken copies'
/// abstentions in front of reviewers). Returns the copy and what was removed.
pub fn drill_base(config: &Config) -> (Config, Vec<String>) {
    let mut base = config.clone();
    let mut removed = Vec::new();
    if base.cache.take().is_some() {
        removed.push("[cache]".to_string());
    }
    if base.cascade.audit_log.take().is_some() {
        removed.push("cascade.audit_log".to_string());
    }
    if base.escalation.take().is_some() {
        removed.push("[escalation]".to_string());
    }
    for tier in &mut base.tiers {
        for (section, present) in [
            ("breaker", tier.breaker.take().is_some()),
            ("hedge", tier.hedge.take().is_some()),
            ("chaos", tier.chaos.take().is_some()),
        ] {
            if present {
                removed.push(format!("tier \"{}\".{section}", tier.name));
            }
        }
    }
    (base, removed)
}

/// The drill copy of `base` with tier `index` carrying `fault`; `corrupt` is the file a
/// load failure points the tier at.
pub fn faulted(base: &Config, index: usize, fault: Fault, corrupt: &Path) -> Config {
    let mut config = base.clone();
    if let Some(tier) = config.tiers.get_mut(index) {
        match fault.chaos_mode() {
            Some(mode) => {
                let mut params = toml::Table::new();
                if fault == Fault::OversizedOutput {
                    // Twice the tier's output limit: clearly oversized, yet cheap enough to
                    // build within the tier's fuel (a fixed 10 MB reason runs out of fuel
                    // first under default limits, and the output guard would go untested).
                    let bytes = tier.limits.max_output_bytes.saturating_mul(2);
                    params.insert(
                        "bytes".into(),
                        toml::Value::Integer(i64::try_from(bytes).unwrap_or(i64::MAX)),
                    );
                }
                tier.chaos = Some(ChaosConfig {
                    params,
                    ..ChaosConfig::new(mode, 1.0)
                });
            }
            None => tier.plugin = PluginSource::File(corrupt.to_path_buf()),
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_copies_strip_memory_and_inject_one_fault() {
        let toml = "[cache]\n[[tier]]\nname = \"a\"\nplugin = \"builtin:rules\"\n\
                    [tier.breaker]\n[[tier]]\nname = \"b\"\nplugin = \"builtin:rules\"\n";
        let config = Config::parse(toml, Path::new("t.toml"), Path::new(".")).unwrap();
        let (base, removed) = drill_base(&config);
        assert_eq!(removed, vec!["[cache]", "tier \"a\".breaker"]);
        assert!(base.cache.is_none() && base.tiers[0].breaker.is_none());
        let hang = faulted(&base, 1, Fault::Hang, Path::new("/x"));
        assert_eq!(
            hang.tiers[1].chaos.as_ref().map(|c| c.mode),
            Some(ChaosMode::Sleep)
        );
        assert!(hang.tiers[0].chaos.is_none());
        let broken = faulted(&base, 0, Fault::LoadFailure, Path::new("/x/corrupt.wasm"));
        assert_eq!(
            broken.tiers[0].plugin,
            PluginSource::File("/x/corrupt.wasm".into())
        );
        assert!(broken.tiers[0].chaos.is_none());
        let big = faulted(&base, 0, Fault::OversizedOutput, Path::new("/x"));
        let chaos = big.tiers[0]
            .chaos
            .as_ref()
            .map(|c| (c.mode, c.params["bytes"].as_integer()));
        assert_eq!(chaos, Some((ChaosMode::HugeReason, Some(2 * 16_384))));
    }
}
