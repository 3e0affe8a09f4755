//! Built without the `redis` cargo feature: a config that asks for the Redis backend is refused
//! when it is validated, so no store is ever made.
use std::time::Duration;

const MISSING: &str = "this build of tierhost has no Redis support (cargo feature `redis`)";

/// Refuses every URL: the backend is not built in.
pub fn check_url(_url: &str) -> Result<(), String> {
    Err(MISSING.into())
}

/// Never constructed.
pub enum RedisStore {}

impl RedisStore {
    /// Refuses: the backend is not built in.
    pub fn new(_url: &str, _bound: Duration) -> Result<Self, String> {
        Err(MISSING.into())
    }

    /// Unreachable: no store exists.
    pub async fn get(&self, _key: &str) -> Result<Option<Vec<u8>>, String> {
        match *self {}
    }

    /// Unreachable: no store exists.
    pub fn set_in_background(&self, _key: String, _value: Vec<u8>, _ttl_ms: u64) {
        match *self {}
    }
}
