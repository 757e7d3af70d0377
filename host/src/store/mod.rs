//! The key-value backend behind the WIT `store` interface.
//!
//! Components see one flat key space; [`Namespace`] gives each (app, plugin
//! kind) its own prefix so they never see each other's keys. The in-memory
//! backend serves one node; the file backend serves one node and survives
//! its restarts; the Redis backend (keys under `<prefix>:app/<app>/<kind>/`)
//! is shared by every node of a deployment.

#[cfg(test)]
mod contract_tests;
mod file;
mod memory;
mod redis;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use madx_wire::store::MAX_COUNTER;
use tokio::time::Instant;

pub use file::FileStore;
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// No room for a new key in this [`Room`] (the in-memory or file
    /// store's budget), or no space left on the file store's disk.
    #[error("store full: {0}")]
    Full(String),
    #[error("invalid store request: {0}")]
    InvalidArgument(String),
}

/// Which share of a bounded store a plugin call may fill. New tokens use
/// the general room; the one-time guards and failure counters that checking
/// a connection string writes use a reserved one on top, so a store full of
/// tokens still lets every valid token connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    General,
    Reserved,
}

/// The backend serving every app's plugins on this node.
#[derive(Clone)]
pub enum StoreBackend {
    /// The embedded default: one process, nothing to set up.
    Memory(Arc<MemoryStore>),
    /// One process, kept on disk across restarts.
    File(Arc<FileStore>),
    /// Shared by every node of a deployment.
    Redis(Arc<RedisStore>),
}

impl StoreBackend {
    /// Is the backend able to take work? Backs `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            StoreBackend::Memory(_) => Ok(()),
            StoreBackend::File(file) => file.ping(),
            StoreBackend::Redis(redis) => redis.ping().await,
        }
    }

    /// Is there no room left for new tokens, and why? (Redis reports its
    /// own memory limit as a failed write.)
    pub fn full(&self) -> Option<String> {
        match self {
            StoreBackend::Memory(memory) => memory
                .is_full()
                .then(|| "the token store is full; retry when tokens have expired".to_owned()),
            StoreBackend::File(file) => file.full(),
            StoreBackend::Redis(_) => None,
        }
    }

    /// Entries held in this process's store (none counted with Redis).
    pub fn entries(&self) -> usize {
        match self {
            StoreBackend::Memory(memory) => memory.len(),
            StoreBackend::File(file) => file.entries(),
            StoreBackend::Redis(_) => 0,
        }
    }

    /// Bytes the file store takes on disk (0 for the others).
    pub fn disk_bytes(&self) -> u64 {
        match self {
            StoreBackend::File(file) => file.disk_bytes(),
            _ => 0,
        }
    }

    /// Force what the file store wrote to the disk (at shutdown; the
    /// others have nothing to force).
    pub fn sync(&self) {
        if let StoreBackend::File(file) = self {
            file.sync();
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            StoreBackend::Memory(memory) => Ok(memory.get(key)),
            StoreBackend::File(file) => file.get(key),
            StoreBackend::Redis(redis) => redis.get(key).await,
        }
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<(), StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.set(key, value, ttl, room),
            StoreBackend::File(file) => file.set(key, value, ttl, room),
            StoreBackend::Redis(redis) => redis.set(key, value, ttl).await,
        }
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<bool, StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.set_if_absent(key, value, ttl, room),
            StoreBackend::File(file) => file.set_if_absent(key, value, ttl, room),
            StoreBackend::Redis(redis) => redis.set_if_absent(key, value, ttl).await,
        }
    }

    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            StoreBackend::Memory(memory) => Ok(memory.touch(key, ttl)),
            StoreBackend::File(file) => file.touch(key, ttl),
            StoreBackend::Redis(redis) => redis.touch(key, ttl).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            StoreBackend::Memory(memory) => Ok(memory.delete(key)),
            StoreBackend::File(file) => file.delete(key),
            StoreBackend::Redis(redis) => redis.delete(key).await,
        }
    }

    pub async fn increment(
        &self,
        key: &str,
        delta: u64,
        ttl: Duration,
        room: Room,
    ) -> Result<u64, StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.increment(key, delta, ttl, room),
            StoreBackend::File(file) => file.increment(key, delta, ttl, room),
            StoreBackend::Redis(redis) => redis.increment(key, delta, ttl).await,
        }
    }

    pub async fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        match self {
            StoreBackend::Memory(memory) => memory.decrement(key, delta),
            StoreBackend::File(file) => file.decrement(key, delta),
            StoreBackend::Redis(redis) => redis.decrement(key, delta).await,
        }
    }
}

/// One plugin call's view of the backend: every key is prefixed with the
/// app and the plugin kind, every argument is checked before it reaches the
/// backend, writes go to the call's [`Room`], and every operation must
/// answer before the call's store deadline.
#[derive(Clone)]
pub struct Namespace {
    backend: StoreBackend,
    prefix: String,
    room: Room,
    deadline: Instant,
}

impl Namespace {
    /// `deadline` comes before the end of the plugin's own time budget, so
    /// a store that hangs is reported to the plugin (and by it) as the
    /// store's failure, not as a plugin that ran out of time.
    pub fn new(
        backend: StoreBackend,
        app_id: &str,
        plugin_kind: &str,
        room: Room,
        deadline: Instant,
    ) -> Self {
        Namespace {
            backend,
            prefix: madx_wire::store::plugin_namespace(app_id, plugin_kind),
            room,
            deadline,
        }
    }

    /// Run one backend operation within the call's store deadline. Only
    /// Redis can keep a call waiting: the memory and file stores do their
    /// work synchronously on the first poll, where no timer could stop
    /// them, so they get none (a timer per store operation is a
    /// measurable part of a plugin call).
    async fn timed<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !matches!(self.backend, StoreBackend::Redis(_)) {
            return operation.await;
        }
        tokio::time::timeout_at(self.deadline, operation)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the store did not answer within the plugin call's store budget".into(),
                ))
            })
    }

    fn key(&self, key: &str) -> Result<String, StoreError> {
        madx_wire::store::check_key(key).map_err(StoreError::InvalidArgument)?;
        Ok([self.prefix.as_str(), key].concat())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(key)?;
        self.timed(self.backend.get(&key)).await
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        check_value(value)?;
        self.timed(self.backend.set(&key, value, ttl, self.room))
            .await
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        check_value(value)?;
        self.timed(self.backend.set_if_absent(&key, value, ttl, self.room))
            .await
    }

    pub async fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        self.timed(self.backend.touch(&key, ttl)).await
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.key(key)?;
        self.timed(self.backend.delete(&key)).await
    }

    pub async fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreError> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        checked_delta(delta)?;
        self.timed(self.backend.increment(&key, delta, ttl, self.room))
            .await
    }

    pub async fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let key = self.key(key)?;
        checked_delta(delta)?;
        self.timed(self.backend.decrement(&key, delta)).await
    }
}

fn checked_ttl(ttl_ms: u64) -> Result<Duration, StoreError> {
    madx_wire::store::check_ttl_ms(ttl_ms).map_err(StoreError::InvalidArgument)?;
    Ok(Duration::from_millis(ttl_ms))
}

/// Add `amount` to `counter` unless that takes it past `limit`, in one
/// atomic step, so writers under different locks cannot all pass the check
/// together and overshoot; whether it was added.
fn claim(counter: &AtomicUsize, amount: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            held.checked_add(amount).filter(|&total| total <= limit)
        })
        .is_ok()
}

fn checked_delta(delta: u64) -> Result<(), StoreError> {
    madx_wire::store::check_delta(delta).map_err(StoreError::InvalidArgument)
}

/// The number a counter entry holds, as Redis reads it, so a plugin sees
/// the same counters on every backend.
fn counter_value(key: &str, value: &[u8]) -> Result<u64, StoreError> {
    madx_wire::store::parse_counter(value)
        .ok_or_else(|| StoreError::InvalidArgument(format!("{key:?} does not hold a counter")))
}

/// `current + delta`, refused past `MAX_COUNTER` (as Redis refuses it).
fn counter_sum(key: &str, current: u64, delta: u64) -> Result<u64, StoreError> {
    current
        .checked_add(delta)
        .filter(|&sum| sum <= MAX_COUNTER)
        .ok_or_else(|| StoreError::InvalidArgument(format!("counter {key:?} would overflow")))
}

fn check_value(value: &[u8]) -> Result<(), StoreError> {
    madx_wire::store::check_value(value).map_err(StoreError::InvalidArgument)
}
