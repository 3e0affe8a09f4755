//! Reloads: a candidate cascade is loaded off the request path (on a low-priority thread),
//! must load every tier and pass `check_samples`, and is then swapped in atomically; otherwise
//! it is rejected and the working cascade keeps serving.
use super::*;

/// Whether a reload replaced the serving cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// The new cascade serves.
    Applied,
    /// The new cascade failed to load or check; the old one keeps serving.
    Rejected,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Whether the new cascade serves.
    pub outcome: ReloadOutcome,
    /// What triggered it (`sighup`, `admin`, `file-change`).
    pub trigger: String,
    /// Generation serving after the reload.
    pub generation: u64,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tier -> (version, sha256) serving after the reload.
    pub tiers: Vec<(String, String, String)>,
    /// Time spent loading and checking, in milliseconds.
    pub elapsed_ms: u64,
}

impl CascadeService {
    /// Re-reads the config file, loads every tier (compiling off the request path), checks it,
    /// and swaps it in atomically, or rejects it and keeps the working cascade.
    pub async fn reload(&self, trigger: &str) -> ReloadReport {
        let started = Instant::now();
        match Config::load(&self.config_path) {
            Ok(config) => self.reload_with(config, trigger).await,
            Err(e) => {
                let _one_at_a_time = self.reload_lock.lock().await;
                self.rejected(trigger, e.to_string(), started)
            }
        }
    }

    /// Loads `config` (every tier must load and pass `check_samples`) and swaps it in
    /// atomically, or rejects it and keeps the working cascade.
    pub async fn reload_with(&self, config: Config, trigger: &str) -> ReloadReport {
        let _one_at_a_time = self.reload_lock.lock().await;
        self.apply(config, trigger).await
    }

    /// [`Self::reload_with`]'s work; the caller holds the reload lock.
    pub(super) async fn apply(&self, config: Config, trigger: &str) -> ReloadReport {
        let started = Instant::now();
        let result = self.load_candidate(config).await;
        let previous = self.current.load_full();
        match result {
            Ok((cascade, config)) => {
                let generation = previous.generation + 1;
                // Forget the policy state of tiers that are gone or changed; state of the
                // old generation's tiers stays alive as long as its requests are in flight.
                self.memory.retain(cascade.memory_keys());
                let digests = cascade.plugin_digests();
                self.engine.retain_compiled(|sha| digests.contains(sha));
                self.current.store(Arc::new(Live {
                    cascade: Arc::new(cascade),
                    config,
                    generation,
                }));
                self.publish_tiers();
                self.metrics.reload(true);
                let report = self.report(ReloadOutcome::Applied, trigger, None, started);
                tracing::info!(trigger, generation, tiers = ?report.tiers, "reload applied");
                report
            }
            Err(reason) => self.rejected(trigger, reason, started),
        }
    }

    fn rejected(&self, trigger: &str, reason: String, started: Instant) -> ReloadReport {
        self.metrics.reload(false);
        tracing::error!(trigger, %reason, "reload rejected; the previous cascade keeps serving");
        self.report(ReloadOutcome::Rejected, trigger, Some(reason), started)
    }

    async fn load_candidate(&self, config: Config) -> Result<(Cascade, Config), String> {
        let cascade =
            load_off_request_path(self.engine.clone(), config.clone(), self.memory.clone())
                .await
                .map_err(|e| e.to_string())?;
        if let Some((tier, error)) = cascade.load_errors().first() {
            return Err(format!("tier \"{tier}\": {error}"));
        }
        if let Some(path) = &config.cascade.check_samples {
            let samples = read_samples(&config.resolve(path))?;
            cascade
                .check_samples(&samples)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok((cascade, config))
    }

    fn report(
        &self,
        outcome: ReloadOutcome,
        trigger: &str,
        reason: Option<String>,
        started: Instant,
    ) -> ReloadReport {
        let current = self.current.load();
        ReloadReport {
            outcome,
            trigger: trigger.to_string(),
            generation: current.generation,
            reason,
            tiers: current
                .cascade
                .loaded_plugins()
                .map(|(tier, info)| (tier.to_string(), info.version.clone(), info.sha256.clone()))
                .collect(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// Nice value of the thread that loads (compiles) cascades: on a busy host the request
/// workers get ~10x its CPU share, so a hot swap barely moves request latency.
const LOADER_NICE: i32 = 10;

/// Loads a cascade on a dedicated low-priority thread: compiling components is CPU work that
/// must not stall the runtime's workers, which keep answering requests meanwhile.
pub(super) async fn load_off_request_path(
    engine: TierEngine,
    config: Config,
    memory: Arc<PolicyMemory>,
) -> Result<Cascade, ServiceError> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tierhost-loader".into())
        .spawn(move || {
            // On Linux the nice value is per thread; failure only means normal priority.
            #[cfg(target_os = "linux")]
            let _ = rustix::process::setpriority_process(None, LOADER_NICE);
            let _ = tx.send(handle.block_on(Cascade::with_memory(engine, &config, &memory)));
        })
        .map_err(|e| ServiceError::Loader(e.to_string()))?;
    Ok(rx
        .await
        .map_err(|_| ServiceError::Loader("the loader thread died".into()))??)
}

fn read_samples(path: &Path) -> Result<Vec<Request>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Request::from_json(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
