//! Loading a cascade: every tier's plugin, model grant and policies, wired to the state
//! they keep across reloads.

use super::*;
use crate::signing::{Signers, check_plugin};

/// Reads a tier's model grant (at most [`MAX_MODEL_BYTES`]).
pub(crate) fn read_model(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
    let read_error = |message: String| LoadError::Model {
        path: path.to_path_buf(),
        message,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if size > MAX_MODEL_BYTES {
        return Err(read_error(format!(
            "{size} bytes, the limit is {MAX_MODEL_BYTES}"
        )));
    }
    std::fs::read(path).map_err(|e| read_error(e.to_string()))
}

/// Loads a tier's plugin and its model grant. With `signed_by`, each file's signature is
/// checked on the bytes read, before the plugin is compiled or the model granted.
async fn load_tier(
    engine: &TierEngine,
    config: &Config,
    tier: &TierConfig,
    params: &[(String, crate::config::ParamValue)],
) -> Result<Sandbox, LoadError> {
    let signers = Signers::of_tier(config, tier);
    // An `oci://` plugin is pulled into the store (or checked there) before anything reads it;
    // a failed pull fails this tier's load, so a reload keeps the version that was serving.
    #[cfg(feature = "oci")]
    if let PluginSource::Oci { reference, local } = &tier.plugin {
        crate::oci::ensure(&config.oci, reference, &config.resolve(local)).await?;
    }
    let model: Arc<[u8]> = match &tier.model {
        Some(path) => {
            let path = config.resolve(path);
            let bytes = read_model(&path)?;
            if let Some(signers) = &signers {
                let verified = signers.check(&path, &bytes)?;
                tracing::info!(tier = %tier.name, model = %path.display(), signer = %verified.signer, sha256 = %verified.sha256, "model signature verified");
            }
            Arc::from(bytes)
        }
        None => Arc::from(Vec::new()),
    };
    let plugin = match &signers {
        None => Plugin::load(engine, &tier.plugin, &config.base_dir, &tier.limits).await?,
        Some(signers) => {
            let bytes = crate::plugin::read_source(&tier.plugin, &config.base_dir)?;
            let verified = check_plugin(signers, &tier.plugin, &config.base_dir, &bytes)?;
            tracing::info!(tier = %tier.name, plugin = %tier.plugin, signer = %verified.signer, sha256 = %verified.sha256, "plugin signature verified");
            Plugin::from_bytes(engine, &tier.plugin.to_string(), &bytes, &tier.limits).await?
        }
    };
    if tier.http.is_none()
        && let Some(import) = plugin.network_import()
    {
        return Err(LoadError::NotGranted(format!(
            "the component imports {import} but the tier has no [tier.http] grant (add \
             [tier.http] allow = [\"http://host:port/path\"] to let it reach a model server)"
        )));
    }
    #[cfg(feature = "remote")]
    let grant = tier
        .http
        .as_ref()
        .map(|http| Arc::new(crate::guest::HttpGrant::new(http)));
    #[cfg(not(feature = "remote"))]
    let grant = None;
    Ok(Sandbox::new(
        Arc::new(plugin),
        &tier.name,
        tier.limits.clone(),
        params,
        model,
        tier.instances,
        tier.warm_instances,
    )
    .with_http(grant))
}

/// Loads the chaos sandbox of `[tier.chaos]`: `builtin:chaos` in the configured mode with the
/// tier's own limits.
async fn load_chaos(
    engine: &TierEngine,
    config: &Config,
    tier: &TierConfig,
    chaos: &ChaosConfig,
) -> Result<Chaos, LoadError> {
    if chaos.mode == ChaosMode::Latency {
        return Ok(Chaos {
            config: chaos.clone(),
            sandbox: None,
        });
    }
    let chaos_plugin = PluginSource::Builtin("chaos".into());
    let plugin = Plugin::load(engine, &chaos_plugin, &config.base_dir, &tier.limits).await?;
    let mut params = flatten_params(&chaos.params).map_err(LoadError::Describe)?;
    params.push((
        "mode".to_string(),
        crate::config::ParamValue::Text(chaos.mode.as_str().to_string()),
    ));
    let mut limits = tier.limits.clone();
    // Injected hangs must meet the deadline, not the fuel limit.
    if chaos.mode == ChaosMode::Spin {
        limits.fuel = u64::MAX / 2;
    }
    let sandbox = Sandbox::new(
        Arc::new(plugin),
        &tier.name,
        limits,
        &params,
        Arc::from(Vec::new()),
        InstanceMode::Fresh,
        0,
    );
    Ok(Chaos {
        config: chaos.clone(),
        sandbox: Some(sandbox),
    })
}

/// Loads the candidate of `[tier.shadow]` and starts its runner. A candidate that does not
/// load leaves the live tier untouched: the shadow report (and `tierhost check`) says why.
async fn load_shadow(
    engine: &TierEngine,
    config: &Config,
    tier: &TierConfig,
    section: &crate::shadow::ShadowConfig,
    live_sha256: &str,
    memory: &PolicyMemory,
    keys: &mut HashSet<String>,
) -> crate::shadow::Shadow {
    let Some(mut candidate) = tier.candidate() else {
        unreachable!("a tier with [tier.shadow] has a candidate")
    };
    // The candidate keeps no more warm instances than it may run calls.
    candidate.warm_instances = candidate.warm_instances.min(section.max_concurrent);
    let sandbox = match flatten_params(&candidate.params) {
        Ok(params) => load_tier(engine, config, &candidate, &params)
            .await
            .map_err(|e| e.to_string()),
        Err(problem) => Err(problem),
    };
    if let Err(error) = &sandbox {
        tracing::error!(tier = %tier.name, plugin = %section.plugin, %error, "shadow candidate failed to load; the live tier is unaffected");
    }
    let candidate_sha256 = sandbox
        .as_ref()
        .map_or("-".to_string(), |s| s.plugin().info().sha256.clone());
    let key = format!(
        "shadow/{}/{live_sha256}/{candidate_sha256}/{}",
        tier.name,
        serde_json::to_string(section).unwrap_or_default()
    );
    let stats = memory.state(&key, crate::shadow::ShadowStats::default);
    keys.insert(key);
    crate::shadow::Shadow::start(
        &tier.name,
        section.clone(),
        sandbox,
        crate::shadow::Judge {
            acceptance: acceptance::Acceptance {
                accept: tier.accept.clone(),
                limits: candidate.limits.clone(),
            },
            confidence: confidence::MinConfidence(tier.min_confidence),
        },
        stats,
        memory.observer().cloned(),
        Duration::from_millis(candidate.limits.deadline_ms),
    )
}

/// The escalation path of `[escalation]`, on the queue `memory` keeps open across reloads.
#[cfg(feature = "escalation")]
fn escalator(
    config: &Config,
    section: &crate::config::EscalationConfig,
    memory: &PolicyMemory,
    name: &Arc<str>,
    redaction: &Arc<Redaction>,
) -> Result<Escalator, ConfigError> {
    let path = config.resolve(&section.queue);
    let queue = memory
        .escalation_queue(&path, section)
        .map_err(|e| ConfigError::Invalid {
            path: config.source.clone(),
            field: "escalation.queue".into(),
            problem: e.to_string(),
        })?;
    Ok(Escalator::new(
        section.clone(),
        queue,
        redaction.clone(),
        name.clone(),
        config.answer_digest(),
    ))
}

/// Without the `escalation` feature, validation refuses `[escalation]` before this is reached.
#[cfg(not(feature = "escalation"))]
fn escalator(
    config: &Config,
    _section: &crate::config::EscalationConfig,
    _memory: &PolicyMemory,
    _name: &Arc<str>,
    _redaction: &Arc<Redaction>,
) -> Result<Escalator, ConfigError> {
    Err(ConfigError::Invalid {
        path: config.source.clone(),
        field: "escalation.queue".into(),
        problem: "this build of tierhost has no escalation queue (cargo feature `escalation`)"
            .into(),
    })
}

/// Where the policies of one tier find their shared state and report events.
struct PolicyWiring<'a> {
    memory: &'a PolicyMemory,
    cascade: &'a Arc<str>,
    audit: &'a Option<Arc<AuditLog>>,
    keys: &'a mut HashSet<String>,
}

/// Builds a loaded tier's policies. `sha256` is its plugin digest: state is keyed by it.
fn tier_policies(
    tier: &TierConfig,
    sha256: Option<&str>,
    ood: Option<ood::OodGuard>,
    chaos: Option<Chaos>,
    wiring: &mut PolicyWiring<'_>,
) -> TierPolicies {
    let memory = wiring.memory;
    let breaker = match (&tier.breaker, sha256) {
        (Some(config), Some(_)) => {
            let k = state_key("breaker", tier, sha256, config);
            let core = memory.state(&k, || BreakerCore::new(config));
            wiring.keys.insert(k);
            Some(Arc::new(Breaker::new(
                config.clone(),
                core,
                memory.clock().clone(),
                BreakerEvents {
                    cascade: wiring.cascade.clone(),
                    tier: Arc::from(tier.name.as_str()),
                    audit: wiring.audit.clone(),
                    observer: memory.observer().cloned(),
                },
            )))
        }
        _ => None,
    };
    let hedge = match (&tier.hedge, sha256) {
        (Some(config), Some(_)) => {
            let k = state_key("hedge", tier, sha256, config);
            let state = memory.state(&k, HedgeState::default);
            wiring.keys.insert(k);
            Some(Arc::new(Hedge::new(config.clone(), state)))
        }
        _ => None,
    };
    TierPolicies::new(
        Arc::new(bulkhead::Bulkhead::new(tier.max_concurrent)),
        breaker,
        ood.map(Arc::new),
        chaos.map(Arc::new),
        Arc::new(acceptance::Acceptance {
            accept: tier.accept.clone(),
            limits: tier.limits.clone(),
        }),
        Arc::new(confidence::MinConfidence(tier.min_confidence)),
        hedge,
    )
}

/// The key of a policy's state in [`PolicyMemory`]: the policy, the tier, its plugin digest
/// and the policy's config section, so state is never shared by two different things.
fn state_key(
    policy: &str,
    tier: &TierConfig,
    sha256: Option<&str>,
    section: &impl serde::Serialize,
) -> String {
    format!(
        "{policy}/{}/{}/{}",
        tier.name,
        sha256.unwrap_or("-"),
        serde_json::to_string(section).unwrap_or_default()
    )
}

impl Cascade {
    /// Creates the engine from `[engine]` and loads every tier.
    pub async fn load(config: &Config) -> Result<Self, ConfigError> {
        let engine = TierEngine::new(&config.engine, &config.base_dir).map_err(|e| {
            ConfigError::Invalid {
                path: config.source.clone(),
                field: "engine".into(),
                problem: e.to_string(),
            }
        })?;
        Self::with_engine(engine, config).await
    }

    /// Creates the engine and loads every tier, failing if any tier does not load (for tools,
    /// tests and embedders that want all or nothing; a server uses [`Self::load`], which keeps
    /// serving with the tiers that did load and records the rest).
    pub async fn load_strict(config: &Config) -> Result<Self, ConfigError> {
        Self::load(config).await?.strict(config)
    }

    /// Fails with the first tier that did not load.
    pub fn strict(self, config: &Config) -> Result<Self, ConfigError> {
        match self.load_errors().first() {
            Some((tier, error)) => Err(ConfigError::TierLoad {
                path: config.source.clone(),
                tier: tier.to_string(),
                error: (*error).clone(),
            }),
            None => Ok(self),
        }
    }

    /// Loads every tier of `config` on an existing engine, with fresh policy state.
    pub async fn with_engine(engine: TierEngine, config: &Config) -> Result<Self, ConfigError> {
        Self::with_memory(engine, config, &PolicyMemory::default()).await
    }

    /// Loads every tier of `config` on an existing engine. Policy state (breakers, hedging
    /// latency, the embedded cache, the audit writer) comes from `memory`, so a service that
    /// reloads with the same memory keeps the state of every tier whose plugin did not change.
    pub async fn with_memory(
        engine: TierEngine,
        config: &Config,
        memory: &PolicyMemory,
    ) -> Result<Self, ConfigError> {
        let invalid = |field: String, problem: String| ConfigError::Invalid {
            path: config.source.clone(),
            field,
            problem,
        };
        let audit = match &config.cascade.audit_log {
            Some(path) => {
                let path = config.resolve(path);
                Some(
                    memory
                        .audit_log(
                            &path,
                            config.cascade.audit_max_bytes,
                            config.cascade.audit_keep,
                        )
                        .map_err(|e| {
                            invalid(
                                "cascade.audit_log".into(),
                                format!("cannot open {}: {e}", path.display()),
                            )
                        })?,
                )
            }
            None => None,
        };
        let name: Arc<str> = Arc::from(config.cascade.name.as_str());
        let redaction = Arc::new(Redaction::from_config(config.escalation.as_ref()));
        let escalation = match &config.escalation {
            Some(section) => Some(escalator(config, section, memory, &name, &redaction)?),
            None => None,
        };
        let mut keys = HashSet::new();
        let mut tiers = Vec::with_capacity(config.tiers.len());
        for tier in &config.tiers {
            let params = flatten_params(&tier.params)
                .map_err(|problem| invalid(format!("tier \"{}\".params", tier.name), problem))?;
            let loaded = load_tier(&engine, config, tier, &params).await;
            let chaos = match (&loaded, &tier.chaos) {
                (Ok(_), Some(chaos)) => Some(load_chaos(&engine, config, tier, chaos).await),
                _ => None,
            }
            .transpose();
            let ood = tier
                .ood
                .as_ref()
                .map(|ood| ood::OodGuard::load(ood, &config.resolve(&ood.stats)))
                .transpose()
                .map_err(LoadError::Ood);
            let (sandbox, chaos, ood) = match (loaded, chaos, ood) {
                (Ok(sandbox), Ok(chaos), Ok(ood)) => (Ok(sandbox), chaos, ood),
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                    (Err(error), None, None)
                }
            };
            if let Err(error) = &sandbox {
                tracing::error!(tier = %tier.name, plugin = %tier.plugin, %error, "tier failed to load");
            }
            let sha256 = sandbox
                .as_ref()
                .ok()
                .map(|s| s.plugin().info().sha256.clone());
            let mut wiring = PolicyWiring {
                memory,
                cascade: &name,
                audit: &audit,
                keys: &mut keys,
            };
            let policies = tier_policies(tier, sha256.as_deref(), ood, chaos, &mut wiring);
            let shadow = match (&sha256, &tier.shadow) {
                (Some(live), Some(section)) => {
                    Some(load_shadow(&engine, config, tier, section, live, memory, &mut keys).await)
                }
                _ => None,
            };
            tiers.push(CascadeTier {
                config: tier.clone(),
                sandbox,
                policies,
                shadow,
                features: tier.features.as_ref().map(guest::FeatureAllowlist::new),
            });
        }
        let config_digest = config.answer_digest();
        let cache = match &config.cache {
            Some(cache) => {
                let mut digest = config_digest.clone();
                for tier in &tiers {
                    digest.push('/');
                    match &tier.sandbox {
                        Ok(s) => digest.push_str(&s.plugin().info().sha256),
                        Err(_) => digest.push_str("load-failed"),
                    }
                }
                let store_key = format!("cache/{}/{}", cache.max_entries, cache.ttl_s);
                keys.insert(store_key.clone());
                Some(
                    PredictionCache::new(cache, digest, || {
                        memory.state(&store_key, || crate::policy::cache::embedded_store(cache))
                    })
                    .map_err(|problem| invalid("cache".into(), problem))?,
                )
            }
            None => None,
        };
        Ok(Self {
            name,
            budget: Duration::from_millis(config.cascade.budget_ms),
            tiers,
            safe_default: config.safe_default.clone(),
            audit,
            redaction,
            escalation,
            engine,
            cache,
            clock: memory.clock().clone(),
            memory_keys: keys,
            config_digest,
        })
    }
}
