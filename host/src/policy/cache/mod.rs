//! The prediction cache (`[cache]`), in front of the whole cascade (reference article 004): an
//! identical request is answered from the cache without calling any tier.
//!
//! Key: sha256 of the request's features in canonical form (sorted by name, typed, so
//! `{"a":1,"b":2}` and `{"b":2,"a":1}` meet and `1` never meets `"1"`), the cascade's config
//! digest and every tier's plugin sha256. A hot swap of any tier or any config change gives
//! new keys, so a cache can never serve an answer the current cascade would not give.
//!
//! Backends: `embedded` (moka, bounded, per process, kept across reloads) and `redis` (shared
//! by replicas). A Redis that is down or slow never fails a request: every operation is
//! bounded by `timeout_ms`, and on a miss of that bound the request goes through the cascade
//! (`cache: bypass`, counted, WARN at most every 10 s); after a failure Redis is skipped for a
//! second, so a dead Redis costs one `timeout_ms` per second rather than one per request.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::answer::{Answer, Decision, ServedBy};

#[cfg(feature = "redis")]
mod redis_store;
#[cfg(not(feature = "redis"))]
#[path = "no_redis.rs"]
mod redis_store;
use crate::request::{FeatureValue, Request};

/// Which store holds cached answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheBackend {
    /// In this process (moka).
    Embedded,
    /// A Redis server shared by replicas.
    Redis,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `embedded` (default) or `redis`.
    pub backend: CacheBackend,
    /// How long an answer stays valid, in seconds.
    pub ttl_s: u64,
    /// Most answers kept (embedded backend).
    pub max_entries: u64,
    /// Also cache answers not served by the first tier (off: a degraded answer is cached only
    /// if asked, so a recovered primary is used again at once).
    pub cache_degraded: bool,
    /// `redis://host:port[/db]` (redis backend).
    pub url: Option<String>,
    /// Bound on each Redis operation, in ms; past it the request bypasses the cache.
    pub timeout_ms: u64,
    /// Prefix of Redis keys (to share one Redis between cascades or environments).
    pub key_prefix: String,
}

/// Default TTL: 5 minutes, short enough that a retrained tier's answers replace old ones soon
/// even without a hot swap of the cascade.
pub const DEFAULT_TTL_S: u64 = 300;
/// Default size of the embedded cache: 100k answers (~30 MB at ~300 bytes each).
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;
/// Default Redis bound: 5 ms, 5% of the default 100 ms request budget; a loopback or same-zone
/// Redis answers in well under 1 ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 5;

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: CacheBackend::Embedded,
            ttl_s: DEFAULT_TTL_S,
            max_entries: DEFAULT_MAX_ENTRIES,
            cache_degraded: false,
            url: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            key_prefix: "tierhost:".into(),
        }
    }
}

impl CacheConfig {
    /// Checks the values; `Err((field, problem))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.ttl_s == 0 {
            return Err(("ttl_s", "must be at least 1".into()));
        }
        if self.max_entries == 0 {
            return Err(("max_entries", "must be at least 1".into()));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms", "must be at least 1".into()));
        }
        match (self.backend, &self.url) {
            (CacheBackend::Redis, None) => Err((
                "url",
                "the redis backend needs url = \"redis://host:port\"".into(),
            )),
            (CacheBackend::Redis, Some(url)) => redis_store::check_url(url).map_err(|e| ("url", e)),
            (CacheBackend::Embedded, Some(_)) => {
                Err(("url", "only used with backend = \"redis\"".into()))
            }
            (CacheBackend::Embedded, None) => Ok(()),
        }
    }
}

/// Whether the cache answered a request, shown in the answer and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// Answered from the cache; no tier was called.
    Hit,
    /// Not in the cache; the cascade answered.
    Miss,
    /// The cache could not be asked in time (Redis down or slow); the cascade answered.
    Bypass,
}

impl CacheStatus {
    /// Kebab-case name (the `outcome` label of `tierhost_cache_requests_total`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// What is kept of an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The decision.
    pub decision: Decision,
    /// Who served it originally.
    pub served_by: ServedBy,
    /// Whether it was degraded.
    pub degraded: bool,
}

/// The result of a lookup.
pub enum Lookup {
    /// Found.
    Hit(CachedAnswer),
    /// Not found.
    Miss,
    /// The backend did not answer in time or failed.
    Bypass,
}

/// The embedded store, kept in [`super::memory::PolicyMemory`] across reloads.
pub type EmbeddedStore = moka::sync::Cache<String, Arc<CachedAnswer>>;

/// Makes the embedded store for `config`.
pub fn embedded_store(config: &CacheConfig) -> EmbeddedStore {
    moka::sync::Cache::builder()
        .max_capacity(config.max_entries)
        .time_to_live(Duration::from_secs(config.ttl_s))
        .build()
}

enum Store {
    Embedded(Arc<EmbeddedStore>),
    Redis(redis_store::RedisStore),
}

/// A cascade's prediction cache.
pub struct PredictionCache {
    config: CacheConfig,
    store: Store,
    /// sha256 of the cascade config and every tier's plugin digest.
    cascade_digest: String,
    last_warning_s: AtomicU64,
    /// Microseconds since `origin` before which Redis is not asked (after a failure).
    skip_until_us: AtomicU64,
    origin: Instant,
}

/// Seconds between two WARN lines about a failing Redis.
const WARN_EVERY_S: u64 = 10;
/// After a failed or slow Redis operation, requests skip Redis (bypass at once) this long, so a
/// dead Redis costs one `timeout_ms` per second, not one per request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl PredictionCache {
    /// A cache for a cascade whose identity is `cascade_digest`. The embedded store is shared
    /// through `embedded` (so it survives reloads); Redis connects lazily and reconnects on its
    /// own, so a Redis that is down at start is only a bypass.
    pub fn new(
        config: &CacheConfig,
        cascade_digest: String,
        embedded: impl FnOnce() -> Arc<EmbeddedStore>,
    ) -> Result<Self, String> {
        let store = match config.backend {
            CacheBackend::Embedded => Store::Embedded(embedded()),
            CacheBackend::Redis => Store::Redis(redis_store::RedisStore::new(
                config.url.as_deref().unwrap_or_default(),
                Duration::from_millis(config.timeout_ms),
            )?),
        };
        Ok(Self {
            config: config.clone(),
            store,
            cascade_digest,
            last_warning_s: AtomicU64::new(u64::MAX),
            skip_until_us: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// Its config.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The key of `request` for this cascade.
    pub fn key(&self, request: &Request) -> String {
        let mut features: Vec<&(String, FeatureValue)> = request.features.iter().collect();
        features.sort_by(|a, b| a.0.cmp(&b.0));
        let mut h = Sha256::new();
        h.update(self.cascade_digest.as_bytes());
        for (name, value) in features {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match value {
                FeatureValue::Null => h.update([0u8]),
                FeatureValue::Bool(b) => h.update([1u8, u8::from(*b)]),
                FeatureValue::Integer(i) => {
                    h.update([2u8]);
                    h.update(i.to_le_bytes());
                }
                FeatureValue::Float(x) => {
                    h.update([3u8]);
                    // -0.0 and 0.0 are the same input.
                    h.update((x + 0.0).to_bits().to_le_bytes());
                }
                FeatureValue::Text(s) => {
                    h.update([4u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        format!("{}{}", self.config.key_prefix, hex::encode(h.finalize()))
    }

    /// Looks `key` up, bounded by `timeout_ms` for Redis.
    pub async fn get(&self, key: &str) -> Lookup {
        match &self.store {
            Store::Embedded(store) => match store.get(key) {
                Some(a) => Lookup::Hit(a.as_ref().clone()),
                None => Lookup::Miss,
            },
            Store::Redis(redis) => {
                if self.in_backoff() {
                    return Lookup::Bypass;
                }
                match redis.get(key).await {
                    Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                        Ok(answer) => Lookup::Hit(answer),
                        Err(e) => {
                            self.warn(&format!("unreadable cached answer under {key}: {e}"));
                            Lookup::Miss
                        }
                    },
                    Ok(None) => Lookup::Miss,
                    Err(problem) => {
                        self.failed(&problem);
                        Lookup::Bypass
                    }
                }
            }
        }
    }

    /// Whether `answer` may be cached.
    pub fn admits(&self, answer: &Answer) -> bool {
        !answer.degraded || self.config.cache_degraded
    }

    /// Stores `answer` under `key`. For Redis the write runs in the background, bounded by
    /// `timeout_ms`: the answer is never held back by the cache.
    pub fn put(&self, key: String, answer: &Answer) {
        let cached = CachedAnswer {
            decision: answer.decision.clone(),
            served_by: answer.served_by.clone(),
            degraded: answer.degraded,
        };
        match &self.store {
            Store::Embedded(store) => store.insert(key, Arc::new(cached)),
            Store::Redis(redis) => {
                if let Ok(bytes) = serde_json::to_vec(&cached) {
                    redis.set_in_background(key, bytes, self.config.ttl_s * 1_000);
                }
            }
        }
    }

    fn in_backoff(&self) -> bool {
        (self.origin.elapsed().as_micros() as u64) < self.skip_until_us.load(Ordering::Relaxed)
    }

    fn failed(&self, problem: &str) {
        let until = self.origin.elapsed() + RETRY_AFTER_FAILURE;
        self.skip_until_us
            .store(until.as_micros() as u64, Ordering::Relaxed);
        self.warn(problem);
    }

    fn warn(&self, problem: &str) {
        let now = self.origin.elapsed().as_secs();
        let last = self.last_warning_s.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last + WARN_EVERY_S)
            && self
                .last_warning_s
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "tierhost::cache",
                url = self.config.url.as_deref().unwrap_or(""),
                "prediction cache bypassed: {problem} (requests are answered by the cascade)"
            );
        }
    }
}

#[cfg(test)]
mod tests;
