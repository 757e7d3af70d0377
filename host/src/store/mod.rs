//! The key-value backend behind the WIT `store` interface.
//!
//! Components see one flat key space; [`Namespace`] gives each (app, plugin
//! kind) its own prefix so they never see each other's keys. The in-memory
//! backend serves one node; the Redis backend (keys under
//! `<prefix>:app/<app>/<kind>/`) is shared by every node of a deployment.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value a plugin may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest time to live a plugin may ask for (30 days).
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid store request: {0}")]
    InvalidArgument(String),
}

/// The backend serving every app's plugins on this node.
#[derive(Clone)]
pub enum StoreBackend {
    /// The embedded default: one process, nothing to set up.
    Memory(Arc<MemoryStore>),
    /// Shared by every node of a deployment.
    Redis(Arc<RedisStore>),
}

impl StoreBackend {
    /// Is the backend able to take work? Backs `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            StoreBackend::Memory(_) => Ok(()),
            StoreBackend::Redis(redis) => redis.ping().await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            StoreBackend::Memory(memory) => Ok(memory.get(key)),
            StoreBackend::Redis(redis) => redis.get(key).await,
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.set(key, value, ttl),
            StoreBackend::Redis(redis) => redis.set(key, value, ttl).await,
        }
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.set_if_absent(key, value, ttl),
            StoreBackend::Redis(redis) => redis.set_if_absent(key, value, ttl).await,
        }
    }

    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            StoreBackend::Memory(memory) => Ok(memory.touch(key, ttl)),
            StoreBackend::Redis(redis) => redis.touch(key, ttl).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            StoreBackend::Memory(memory) => Ok(memory.delete(key)),
            StoreBackend::Redis(redis) => redis.delete(key).await,
        }
    }

    pub async fn increment(&self, key: &str, delta: u64, ttl: Duration) -> Result<u64, StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.increment(key, delta, ttl),
            StoreBackend::Redis(redis) => redis.increment(key, delta, ttl).await,
        }
    }
}

/// One plugin's view of the backend: every key is prefixed with the app and
/// the plugin kind, and every argument is checked before it reaches the
/// backend.
#[derive(Clone)]
pub struct Namespace {
    backend: StoreBackend,
    prefix: String,
}

impl Namespace {
    pub fn new(backend: StoreBackend, app_id: &str, plugin_kind: &str) -> Self {
        Namespace {
            backend,
            prefix: format!("app/{app_id}/{plugin_kind}/"),
        }
    }

    fn key(&self, key: &str) -> Result<String, StoreError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(StoreError::InvalidArgument(format!(
                "keys are 1 to {MAX_KEY_BYTES} bytes long"
            )));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(&self.key(key)?).await
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        check_value(value)?;
        self.backend.set(&key, value, ttl).await
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        check_value(value)?;
        self.backend.set_if_absent(&key, value, ttl).await
    }

    pub async fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        self.backend.touch(&key, ttl).await
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.backend.delete(&self.key(key)?).await
    }

    pub async fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        self.backend.increment(&key, delta, ttl).await
    }
}

fn checked_ttl(ttl_ms: u64) -> Result<Duration, StoreError> {
    let ttl = Duration::from_millis(ttl_ms);
    if ttl_ms == 0 || ttl > MAX_TTL {
        return Err(StoreError::InvalidArgument(format!(
            "ttl-ms must be between 1 and {}",
            MAX_TTL.as_millis()
        )));
    }
    Ok(ttl)
}

fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "values are at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}
