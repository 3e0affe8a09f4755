//! The Redis backend of the prediction cache: a lazily connecting, self-reconnecting
//! connection manager; every operation bounded by the cache's `timeout_ms`.
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Checks that `url` is a Redis URL.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("not a Redis URL: {e}"))
}

/// A shared Redis store.
pub struct RedisStore {
    manager: ConnectionManager,
    bound: Duration,
}

impl RedisStore {
    /// Connects lazily (a Redis that is down at start is only a bypass).
    pub fn new(url: &str, bound: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(bound))
            .set_response_timeout(Some(bound))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Self { manager, bound })
    }

    /// `GET key`, or why it failed (an error, or longer than the bound).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let mut conn = self.manager.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let get = cmd.query_async::<Option<Vec<u8>>>(&mut conn);
        match tokio::time::timeout(self.bound, get).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("GET failed: {e}")),
            Err(_) => Err(format!(
                "GET took longer than {} ms",
                self.bound.as_millis()
            )),
        }
    }

    /// `SET key value PX ttl_ms` in the background: the answer is never held back by the cache.
    pub fn set_in_background(&self, key: String, value: Vec<u8>, ttl_ms: u64) {
        let mut conn = self.manager.clone();
        let bound = self.bound;
        tokio::spawn(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(value).arg("PX").arg(ttl_ms);
            let set = cmd.query_async::<()>(&mut conn);
            match tokio::time::timeout(bound, set).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "cache SET failed"),
                Err(_) => tracing::debug!("cache SET timed out"),
            }
        });
    }
}
