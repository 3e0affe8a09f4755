//! The cascade-wide sections of the config: `[cascade]`, `[server]`, `[alerts]`,
//! `[safe_default]`. Each validates itself; [`super::Config::validate`] names the file.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[cascade]`: settings of the cascade as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSettings {
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// A separate address for the admin endpoints (`/admin/*`, `/v1/escalations*`, `/review`);
    /// when set they are served there only, not on `listen`.
    pub admin_listen: Option<String>,
    /// sha256 (hex) of the admin bearer token; the token itself is never in the config.
    pub admin_token_sha256: Option<String>,
    /// TLS for the public listener (off unless set).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: HTTPS on the public listener with rustls; the certificate and key are
/// re-read when their files change, without a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (relative to the config file).
    pub cert: PathBuf,
    /// PEM private key (relative to the config file).
    pub key: PathBuf,
    /// How often the files are checked for a change, in seconds.
    #[serde(default = "default_tls_check_s")]
    pub check_s: u64,
}

fn default_tls_check_s() -> u64 {
    5
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_in_flight: 256,
            max_batch: 256,
            watch: true,
            admin_listen: None,
            admin_token_sha256: None,
            tls: None,
        }
    }
}

/// `[alerts]`: the fallback-rate alert of each tier (defaults from reference article 004:
/// more than 10% of requests falling back from a tier over 5 minutes).
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl Default for CascadeSettings {
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

/// A section's own check: the field (within the section) and the problem.
type SectionResult = Result<(), (&'static str, String)>;

impl CascadeSettings {
    /// Checks the `[cascade]` values.
    pub fn validate(&self) -> SectionResult {
        if self.budget_ms == 0 {
            return Err(("budget_ms", "must be greater than 0".into()));
        }
        if self.audit_max_bytes < 4096 {
            return Err(("audit_max_bytes", "must be at least 4096".into()));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// Checks the `[server]` values.
    pub fn validate(&self) -> SectionResult {
        if self.max_body_bytes < 256 {
            return Err(("max_body_bytes", "must be at least 256".into()));
        }
        if self.max_in_flight == 0 {
            return Err(("max_in_flight", "must be at least 1".into()));
        }
        if self.max_batch == 0 {
            return Err(("max_batch", "must be at least 1".into()));
        }
        if let Some(digest) = &self.admin_token_sha256
            && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err((
                "admin_token_sha256",
                "must be 64 hex digits: the sha256 of the token (`printf %s \"$TOKEN\" | sha256sum`)"
                    .into(),
            ));
        }
        if self.admin_listen.as_deref() == Some(self.listen.as_str()) {
            return Err(("admin_listen", "must differ from `listen`".into()));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
                return Err(("tls", "`cert` and `key` must name PEM files".into()));
            }
            if tls.check_s == 0 {
                return Err(("tls.check_s", "must be at least 1".into()));
            }
            if !cfg!(feature = "server") {
                return Err((
                    "tls",
                    "this build of tierhost has no HTTP server (cargo feature `server`)".into(),
                ));
            }
        }
        Ok(())
    }
}

impl AlertConfig {
    /// Checks the `[alerts]` values.
    pub fn validate(&self) -> SectionResult {
        if !(0.0..=1.0).contains(&self.fallback_rate) {
            return Err(("fallback_rate", "must be within [0, 1]".into()));
        }
        if self.window_s == 0 {
            return Err(("window_s", "must be greater than 0".into()));
        }
        if let Some(webhook) = &self.webhook {
            if !webhook.starts_with("http://") {
                return Err(("webhook", "must be an http:// URL".into()));
            }
            if !cfg!(feature = "webhooks") {
                return Err((
                    "webhook",
                    "this build of tierhost has no webhook support (cargo feature `webhooks`)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

impl SafeDefaultConfig {
    /// Checks the `[safe_default]` values.
    pub fn validate(&self) -> SectionResult {
        if !self.score.is_finite() {
            return Err(("score", "must be a finite number".into()));
        }
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(("confidence", "must be within [0, 1]".into()));
        }
        if self.label.is_empty() && self.abstain.is_none() {
            return Err(("label", "must not be empty".into()));
        }
        Ok(())
    }
}

/// `[escalation]`: the durable review queue. When the final outcome of a request is an
/// abstention (the safe default's `abstain`) or comes from one of `tiers`, the request
/// (features after redaction), the cascade name and config digest, the trail and a new
/// escalation id are committed to the queue before the answer is returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// The queue: a SQLite file in WAL mode (relative to the config file), created if missing.
    pub queue: PathBuf,
    /// Tiers whose answers escalate too (the escalation points; `safe-default` names the
    /// host's own answer). Abstentions always escalate.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Labels a reviewer chooses from (the review page's buttons); empty: any label.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Allowlist: only these features are stored (in the queue and the audit log).
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// Features never stored (in the queue and the audit log). Exclusive with `features`.
    #[serde(default)]
    pub redact: Vec<String>,
    /// Pending items at which the queue counts as full: further escalations are not recorded
    /// (the answer says so, `tierhost_escalation_failures_total{problem="full"}` counts them).
    #[serde(default = "default_max_pending")]
    pub max_pending: u64,
    /// How long a request waits for its escalation to be committed before it is answered as
    /// not recorded, in milliseconds.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// `full`: every commit is fsync'd (survives power loss); `normal`: committed escalations
    /// survive a crash of the process, not of the machine.
    #[serde(default)]
    pub sync: QueueSync,
    /// Most escalations committed in one transaction (group commit across concurrent requests).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

/// How hard the escalation queue pushes each commit to disk (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueSync {
    /// fsync at every commit.
    #[default]
    Full,
    /// fsync at WAL checkpoints only.
    Normal,
}

/// Default `escalation.max_pending`.
pub const DEFAULT_MAX_PENDING: u64 = 1_000_000;
fn default_max_pending() -> u64 {
    DEFAULT_MAX_PENDING
}
fn default_write_timeout_ms() -> u64 {
    1000
}
fn default_max_batch() -> usize {
    256
}

/// Longest label or reviewer name, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

impl EscalationConfig {
    /// Escalation to `queue` with every other field at its default.
    pub fn new(queue: impl Into<PathBuf>) -> Self {
        Self {
            queue: queue.into(),
            tiers: Vec::new(),
            labels: Vec::new(),
            features: None,
            redact: Vec::new(),
            max_pending: DEFAULT_MAX_PENDING,
            write_timeout_ms: default_write_timeout_ms(),
            sync: QueueSync::Full,
            max_batch: default_max_batch(),
        }
    }

    /// Checks the `[escalation]` values that need no other section.
    pub fn validate(&self) -> SectionResult {
        if !cfg!(feature = "escalation") {
            return Err((
                "queue",
                "this build of tierhost has no escalation queue (cargo feature `escalation`)"
                    .into(),
            ));
        }
        if self.queue.as_os_str().is_empty() {
            return Err(("queue", "must name a file".into()));
        }
        if self.features.is_some() && !self.redact.is_empty() {
            return Err((
                "redact",
                "set either `features` (what is kept) or `redact` (what is dropped), not both"
                    .into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for label in &self.labels {
            if label.trim().is_empty() || label.len() > MAX_LABEL_BYTES {
                return Err((
                    "labels",
                    format!("each label must be 1..={MAX_LABEL_BYTES} bytes of text"),
                ));
            }
            if !seen.insert(label) {
                return Err(("labels", format!("`{label}` is listed twice")));
            }
        }
        if self.max_pending == 0 {
            return Err(("max_pending", "must be at least 1".into()));
        }
        if self.write_timeout_ms == 0 {
            return Err(("write_timeout_ms", "must be greater than 0".into()));
        }
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(("max_batch", "must be within 1..=10000".into()));
        }
        Ok(())
    }
}
