//! Prometheus metrics of a running service, derived from the answers (which already carry the
//! serving tier, every fallback reason, per-tier latency and fuel) plus the service's own
//! counters (in-flight, shed, reloads, alerts). Exposed in the text format at `/metrics`.
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::answer::{Answer, EscalationReceipt, Step};
use crate::policy::breaker::BreakerState;
use crate::policy::memory::PolicyObserver;

/// Latency buckets, in seconds: 25 us .. 1 s (tiers run in microseconds to tens of ms).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];
/// Fuel buckets: 1k .. 10 G.
const FUEL_BUCKETS: &[f64] = &[1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    fallbacks: IntCounterVec,
    degraded: IntCounter,
    request_latency: Histogram,
    tier_latency: HistogramVec,
    tier_fuel: HistogramVec,
    in_flight: IntGauge,
    shed: IntCounter,
    reloads: IntCounterVec,
    alert_firing: IntGaugeVec,
    fallback_rate: GaugeVec,
    tier_info: IntGaugeVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    hedged: IntCounterVec,
    cache: IntCounterVec,
    escalations: IntCounterVec,
    escalation_failures: IntCounterVec,
    escalations_pending: IntGaugeVec,
    escalation_oldest: GaugeVec,
    shadow_calls: IntCounterVec,
    shadow_agreement: GaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Registration only fails on duplicate names, which this module never creates.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        Ok(Self {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_requests_total",
                        "Requests answered, by serving tier (safe-default included).",
                    ),
                    &["served_by"],
                )?,
            ),
            fallbacks: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_fallbacks_total",
                        "Steps down the cascade, by tier stepped over and reason.",
                    ),
                    &["from_tier", "reason"],
                )?,
            ),
            degraded: register(
                &r,
                IntCounter::new(
                    "tierhost_degraded_requests_total",
                    "Requests not served by the first tier.",
                )?,
            ),
            request_latency: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tierhost_request_duration_seconds",
                        "Time in the cascade per request.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            ),
            tier_latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tierhost_tier_call_duration_seconds",
                        "Wall time of one tier call, instantiation included.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["tier"],
                )?,
            ),
            tier_fuel: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tierhost_tier_fuel_used",
                        "Fuel consumed by one tier call.",
                    )
                    .buckets(FUEL_BUCKETS.to_vec()),
                    &["tier"],
                )?,
            ),
            in_flight: register(
                &r,
                IntGauge::new(
                    "tierhost_in_flight_requests",
                    "Requests in the cascade right now (queue depth).",
                )?,
            ),
            shed: register(
                &r,
                IntCounter::new(
                    "tierhost_shed_requests_total",
                    "Requests answered by the safe default at once because the host was saturated.",
                )?,
            ),
            reloads: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_reloads_total",
                        "Cascade reloads, by outcome (applied or rejected).",
                    ),
                    &["outcome"],
                )?,
            ),
            alert_firing: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tierhost_fallback_alert_firing",
                        "1 while the tier's fallback-rate alert fires.",
                    ),
                    &["tier"],
                )?,
            ),
            fallback_rate: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "tierhost_fallback_rate",
                        "Share of the tier's calls that fell back, over the alert window.",
                    ),
                    &["tier"],
                )?,
            ),
            tier_info: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tierhost_tier_info",
                        "Loaded tiers: 1 per tier with its plugin version and digest.",
                    ),
                    &["tier", "plugin", "version", "sha256"],
                )?,
            ),
            breaker_state: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tierhost_breaker_state",
                        "Circuit breaker state per tier: 0 closed, 1 half-open, 2 open.",
                    ),
                    &["tier"],
                )?,
            ),
            breaker_transitions: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_breaker_transitions_total",
                        "Circuit breaker state changes, by tier and states.",
                    ),
                    &["tier", "from", "to"],
                )?,
            ),
            hedged: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_hedged_calls_total",
                        "Hedges started because the tier was slow (label: the slow tier).",
                    ),
                    &["tier"],
                )?,
            ),
            cache: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_cache_requests_total",
                        "Prediction cache lookups by outcome (hit, miss, bypass).",
                    ),
                    &["outcome"],
                )?,
            ),
            escalations: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_escalations_total",
                        "Escalations committed to the review queue.",
                    ),
                    &["cascade"],
                )?,
            ),
            escalation_failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_escalation_failures_total",
                        "Escalations not recorded, by problem (full, failed, timeout).",
                    ),
                    &["cascade", "problem"],
                )?,
            ),
            escalations_pending: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tierhost_escalations_pending",
                        "Escalations waiting for a reviewer (read at scrape time).",
                    ),
                    &["cascade"],
                )?,
            ),
            escalation_oldest: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "tierhost_escalation_oldest_pending_seconds",
                        "Age of the oldest pending escalation (0 when none; read at scrape time).",
                    ),
                    &["cascade"],
                )?,
            ),
            shadow_calls: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierhost_shadow_calls_total",
                        "Requests shadowed by a tier's candidate, by outcome (agree, disagree, \
                         candidate-fault, not-compared, dropped).",
                    ),
                    &["tier", "outcome"],
                )?,
            ),
            shadow_agreement: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "tierhost_shadow_agreement_ratio",
                        "Share of shadowed requests both versions answered with the same label.",
                    ),
                    &["tier"],
                )?,
            ),
            registry: r,
        })
    }

    /// Records one answer.
    pub fn observe(&self, answer: &Answer) {
        self.requests
            .with_label_values(&[answer.served_by.tier.as_str()])
            .inc();
        if answer.degraded {
            self.degraded.inc();
        }
        self.request_latency.observe(answer.elapsed_us as f64 / 1e6);
        if let Some(status) = answer.cache {
            self.cache.with_label_values(&[status.name()]).inc();
        }
        for pair in answer.trail.windows(2) {
            if pair[1].hedged {
                self.hedged
                    .with_label_values(&[pair[0].tier.as_str()])
                    .inc();
            }
        }
        for entry in &answer.trail {
            if entry.step != Step::Skipped {
                self.tier_latency
                    .with_label_values(&[entry.tier.as_str()])
                    .observe(entry.elapsed_us as f64 / 1e6);
                self.tier_fuel
                    .with_label_values(&[entry.tier.as_str()])
                    .observe(entry.fuel_used as f64);
            }
            if let Some(reason) = &entry.reason {
                self.fallbacks
                    .with_label_values(&[entry.tier.as_str(), reason.kind()])
                    .inc();
            }
        }
    }

    /// What became of an answer's escalation, if it escalated.
    pub fn escalation(&self, cascade: &str, receipt: Option<&EscalationReceipt>) {
        match receipt {
            None => {}
            Some(EscalationReceipt::Recorded { .. }) => {
                self.escalations.with_label_values(&[cascade]).inc();
            }
            Some(EscalationReceipt::NotRecorded { problem, .. }) => {
                self.escalation_failures
                    .with_label_values(&[cascade, problem.as_str()])
                    .inc();
            }
        }
    }

    /// The review queue's backlog.
    pub fn escalation_backlog(&self, cascade: &str, pending: u64, oldest_s: f64) {
        self.escalations_pending
            .with_label_values(&[cascade])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.escalation_oldest
            .with_label_values(&[cascade])
            .set(oldest_s);
    }

    /// A request shed by the host before any tier ran.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// In-flight gauge.
    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// A reload attempt's outcome.
    pub fn reload(&self, applied: bool) {
        self.reloads
            .with_label_values(&[if applied { "applied" } else { "rejected" }])
            .inc();
    }

    /// Alert state and windowed fallback rate of a tier.
    pub fn alert(&self, tier: &str, firing: bool, rate: f64) {
        self.alert_firing
            .with_label_values(&[tier])
            .set(i64::from(firing));
        self.fallback_rate.with_label_values(&[tier]).set(rate);
    }

    /// Replaces the loaded-tier info series.
    pub fn set_tiers(&self, tiers: &[(String, String, String, String)]) {
        self.tier_info.reset();
        for (tier, plugin, version, sha) in tiers {
            self.tier_info
                .with_label_values(&[tier.as_str(), plugin, version, sha])
                .set(1);
        }
    }

    /// Current breaker state of a tier.
    pub fn breaker_state(&self, tier: &str, state: BreakerState) {
        self.breaker_state
            .with_label_values(&[tier])
            .set(state.gauge());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric-family error would be a bug here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl PolicyObserver for Metrics {
    fn breaker_transition(&self, tier: &str, from: BreakerState, to: BreakerState) {
        self.breaker_transitions
            .with_label_values(&[tier, from.name(), to.name()])
            .inc();
        self.breaker_state(tier, to);
    }

    fn shadow_call(
        &self,
        tier: &str,
        outcome: crate::shadow::ShadowOutcome,
        agreement: Option<f64>,
    ) {
        self.shadow_calls
            .with_label_values(&[tier, outcome.as_str()])
            .inc();
        if let Some(agreement) = agreement {
            self.shadow_agreement
                .with_label_values(&[tier])
                .set(agreement);
        }
    }
}
