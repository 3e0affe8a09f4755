//! Running one tier call in its sandbox: a fresh instance per call (or a warm one for
//! `instances = "reuse"`), the tier's limits armed on its store, a wall-clock timeout for tiers
//! blocked inside host calls, and a [`CallReport`] with the answer or the classified fault.
//!
//! This module never decides what happens next; it reports what the tier did. The guest's
//! world (bindings, store data, WASI, fault classification) lives in [`crate::guest`];
//! acceptance checks and every other trigger live in [`crate::policy`]; routing in
//! [`crate::cascade`].
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::config::{InstanceMode, ParamValue};
use crate::guest::{
    self, CallState, HttpGrant, Params, StoreSetup, TierInstance, TierOutcome, TierRequest,
};
use crate::limits::TierLimits;
use crate::plugin::Plugin;
use crate::reason::FallbackReason;

/// The report of one call.
#[derive(Debug)]
pub(crate) struct CallReport {
    /// The tier's answer, or why there is none.
    pub result: Result<TierOutcome, FallbackReason>,
    /// Wall time of the call, instantiation included.
    pub elapsed: Duration,
    /// Fuel the call consumed (instantiation included).
    pub fuel_used: u64,
    /// Log lines the tier wrote past its budget.
    pub logs_dropped: u64,
}

type Warm = (Store<CallState>, TierInstance);

/// One tier ready to be called: its plugin, limits and params, and its warm instances when it
/// reuses them.
pub struct Sandbox {
    plugin: Arc<Plugin>,
    name: Arc<str>,
    limits: TierLimits,
    params: Params,
    model: Arc<[u8]>,
    mode: InstanceMode,
    warm: Mutex<Vec<Warm>>,
    max_warm: usize,
    http: Option<Arc<HttpGrant>>,
}

impl Sandbox {
    /// A sandbox for `plugin` serving as tier `name`.
    pub(crate) fn new(
        plugin: Arc<Plugin>,
        name: &str,
        limits: TierLimits,
        params: &[(String, ParamValue)],
        model: Arc<[u8]>,
        mode: InstanceMode,
        max_warm: usize,
    ) -> Self {
        Self {
            plugin,
            name: Arc::from(name),
            limits,
            params: Params::new(params),
            model,
            mode,
            warm: Mutex::new(Vec::new()),
            max_warm,
            http: None,
        }
    }

    /// Grants the tier outbound HTTP (`[tier.http]`).
    pub(crate) fn with_http(mut self, grant: Option<Arc<HttpGrant>>) -> Self {
        self.http = grant;
        self
    }

    /// The plugin this tier runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The tier's limits.
    pub fn limits(&self) -> &TierLimits {
        &self.limits
    }

    fn new_store(&self, request_id: &str) -> Store<CallState> {
        let setup = StoreSetup {
            tier: &self.name,
            limits: &self.limits,
            params: &self.params,
            model: &self.model,
            http: self.http.as_ref(),
        };
        guest::new_store(self.plugin.engine().engine(), &setup, request_id)
    }

    /// Calls the tier's `predict` with `deadline` of wall time. Never panics; every fault is
    /// returned as a [`FallbackReason`]. The request is lowered once per cascade walk with
    /// `guest::lower`, not once per tier (a tier with a `features` allowlist gets its own
    /// filtered copy, `guest::lower_allowed`).
    pub(crate) async fn predict(&self, request: &TierRequest, deadline: Duration) -> CallReport {
        let started = Instant::now();
        let reused = match self.mode {
            InstanceMode::Reuse => self.warm.lock().ok().and_then(|mut w| w.pop()),
            InstanceMode::Fresh => None,
        };
        let (mut store, instance) = match reused {
            Some((store, instance)) => (store, Some(instance)),
            None => (self.new_store(&request.id), None),
        };
        let ticks = self.plugin.engine().deadline_ticks(deadline);
        guest::arm(&mut store, &self.limits, deadline, ticks, &request.id);

        let pre = self.plugin.pre();
        let outcome = {
            let call = async {
                let instance = match instance {
                    Some(i) => i,
                    None => pre.instantiate_async(&mut store).await?,
                };
                let result = guest::call_predict(&instance, &mut store, request).await?;
                Ok::<_, wasmtime::Error>((instance, result))
            };
            tokio::time::timeout(deadline, call).await
        };

        let fuel_used = self
            .limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let logs_dropped = guest::logs_dropped(&store);
        let denied = guest::denied(&mut store);
        let (result, keep) = match outcome {
            Err(_elapsed) => (
                Err(FallbackReason::Deadline {
                    deadline_us: deadline.as_micros() as u64,
                }),
                None,
            ),
            Ok(Err(error)) => (
                Err(guest::classify(&error, &store, &self.limits, deadline)),
                None,
            ),
            // A clean return (answer, abstention or typed error) leaves the instance usable.
            Ok(Ok((instance, result))) => (result, Some(instance)),
        };
        // A tier that reached for what it was not granted is stepped over (and its instance
        // dropped), whatever it made of the refusal.
        let (result, keep) = match denied {
            Some(detail) => (Err(FallbackReason::CapabilityDenied { detail }), None),
            None => (result, keep),
        };
        if let (InstanceMode::Reuse, Some(instance)) = (self.mode, keep)
            && let Ok(mut warm) = self.warm.lock()
            && warm.len() < self.max_warm
        {
            warm.push((store, instance));
        }
        CallReport {
            result,
            elapsed: started.elapsed(),
            fuel_used,
            logs_dropped,
        }
    }
}
