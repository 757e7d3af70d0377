//! The embedded in-memory backend: one process, TTLs, atomic operations.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::StoreError;

/// Independent locks, so concurrent calls for different keys rarely wait on
/// each other.
const SHARDS: usize = 16;
/// How often expired entries are reclaimed in the background.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

type Shard = HashMap<String, Entry>;

/// Key-value entries with expiry, sharded by key hash.
///
/// A std `Mutex` is right here: every critical section is a hash-map
/// operation that never awaits, so the lock is held for microseconds.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Refuse new keys beyond this many, so a flood of token requests cannot
    /// exhaust the node's memory.
    max_entries: usize,
}

impl MemoryStore {
    /// A store holding at most `max_entries` live keys. Expired entries are
    /// reclaimed by a background task for as long as the store exists, so
    /// memory does not grow with time; call from within a tokio runtime.
    pub fn start(max_entries: usize) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: RandomState::new(),
            max_entries,
        });
        tokio::spawn(reap_expired(Arc::downgrade(&store)));
        store
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding the lock leaves a consistent map (every
        // critical section is a single map operation), so keep using it.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Live entries over all shards (expired ones not yet reaped included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map(|map| map.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ensure_room(&self) -> Result<(), StoreError> {
        if self.len() >= self.max_entries {
            return Err(StoreError::Unavailable(format!(
                "memory store is full ({} entries)",
                self.max_entries
            )));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let shard = self.shard(key);
        shard
            .get(key)
            .filter(|entry| entry.is_live(now))
            .map(|entry| entry.value.clone())
    }

    pub fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        if !self.contains_live(key, now) {
            self.ensure_room()?;
        }
        self.shard(key).insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: now + ttl,
            },
        );
        Ok(())
    }

    pub fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        if self.contains_live(key, now) {
            return Ok(false);
        }
        self.ensure_room()?;
        let mut shard = self.shard(key);
        // Checked again under the lock: another caller may have won the race.
        if shard.get(key).is_some_and(|entry| entry.is_live(now)) {
            return Ok(false);
        }
        shard.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: now + ttl,
            },
        );
        Ok(true)
    }

    pub fn touch(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        match self.shard(key).get_mut(key) {
            Some(entry) if entry.is_live(now) => {
                entry.expires_at = now + ttl;
                true
            }
            _ => false,
        }
    }

    pub fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        self.shard(key)
            .remove(key)
            .is_some_and(|entry| entry.is_live(now))
    }

    pub fn increment(&self, key: &str, delta: u64, ttl: Duration) -> Result<u64, StoreError> {
        let now = Instant::now();
        if !self.contains_live(key, now) {
            self.ensure_room()?;
        }
        let mut shard = self.shard(key);
        let (current, expires_at) = match shard.get(key) {
            Some(entry) if entry.is_live(now) => {
                let current = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| {
                        StoreError::InvalidArgument(format!("{key:?} does not hold a counter"))
                    })?;
                (current, entry.expires_at)
            }
            _ => (0, now + ttl),
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            StoreError::InvalidArgument(format!("counter {key:?} would overflow"))
        })?;
        shard.insert(
            key.to_owned(),
            Entry {
                value: next.to_string().into_bytes(),
                expires_at,
            },
        );
        Ok(next)
    }

    fn contains_live(&self, key: &str, now: Instant) -> bool {
        self.shard(key)
            .get(key)
            .is_some_and(|entry| entry.is_live(now))
    }

    /// Drop every expired entry; one shard locked at a time.
    fn reap(&self) -> usize {
        let now = Instant::now();
        let mut reaped = 0;
        for shard in &self.shards {
            let mut map = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = map.len();
            map.retain(|_, entry| entry.is_live(now));
            reaped += before - map.len();
        }
        reaped
    }
}

async fn reap_expired(store: Weak<MemoryStore>) {
    let mut interval = tokio::time::interval(REAP_INTERVAL);
    loop {
        interval.tick().await;
        let Some(store) = store.upgrade() else { return };
        let reaped = store.reap();
        if reaped > 0 {
            tracing::trace!(reaped, "expired store entries reclaimed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn set_if_absent_is_once_only() {
        let store = MemoryStore::start(100);
        assert_eq!(store.set_if_absent("k", b"1", TTL), Ok(true));
        assert_eq!(store.set_if_absent("k", b"2", TTL), Ok(false));
        assert_eq!(store.get("k"), Some(b"1".to_vec()));
    }

    #[tokio::test]
    async fn expired_entries_vanish_and_are_reclaimed() {
        let store = MemoryStore::start(100);
        store.set("short", b"x", Duration::from_millis(30)).unwrap();
        store.set("long", b"y", TTL).unwrap();
        assert!(!store.touch("missing", TTL));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.get("short"), None);
        assert!(!store.touch("short", TTL));
        assert_eq!(store.set_if_absent("short", b"z", TTL), Ok(true));
        store.set("gone", b"x", Duration::from_millis(1)).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.reap(), 1);
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn touch_extends_life() {
        let store = MemoryStore::start(100);
        store.set("k", b"x", Duration::from_millis(40)).unwrap();
        assert!(store.touch("k", TTL));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.get("k"), Some(b"x".to_vec()));
        assert!(store.delete("k"));
        assert!(!store.delete("k"));
    }

    #[tokio::test]
    async fn counters_count_and_keep_their_expiry() {
        let store = MemoryStore::start(100);
        assert_eq!(store.increment("c", 1, Duration::from_millis(40)), Ok(1));
        assert_eq!(store.increment("c", 2, TTL), Ok(3));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.increment("c", 1, TTL), Ok(1));
        store.set("text", b"abc", TTL).unwrap();
        assert!(matches!(
            store.increment("text", 1, TTL),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_keys_but_serves_existing_ones() {
        let store = MemoryStore::start(2);
        store.set("a", b"1", TTL).unwrap();
        store.set("b", b"1", TTL).unwrap();
        assert!(matches!(
            store.set_if_absent("c", b"1", TTL),
            Err(StoreError::Unavailable(_))
        ));
        store.set("a", b"2", TTL).unwrap();
        assert_eq!(store.get("a"), Some(b"2".to_vec()));
    }
}
