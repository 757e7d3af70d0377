//! The embedded in-memory backend: one process, TTLs, atomic operations.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Room, StoreError, counter_value};

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
/// A std `Mutex` is right here: every critical section is a few hash-map
/// operations that never await, so a lock is held for microseconds. Each
/// operation holds its key's shard lock from check to write, which is what
/// makes `set_if_absent` and `increment` atomic.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Entries in the maps, expired-but-not-reaped ones included.
    entries: AtomicUsize,
    /// Refuse new keys beyond this many, so a flood of token requests cannot
    /// exhaust the node's memory.
    max_entries: usize,
    /// Headroom above `max_entries` that only [`Room::Reserved`] writes may
    /// use: a store full of tokens still takes their one-time guards.
    reserved_entries: usize,
}

impl MemoryStore {
    /// A store holding at most `max_entries` keys written from the
    /// [`Room::General`] room, plus `reserved_entries` more from the
    /// reserved one. Expired entries are reclaimed by a background task for
    /// as long as the store exists, so memory does not grow with time; call
    /// from within a tokio runtime.
    pub fn start(max_entries: usize, reserved_entries: usize) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: RandomState::new(),
            entries: AtomicUsize::new(0),
            max_entries,
            reserved_entries,
        });
        tokio::spawn(reap_expired(Arc::downgrade(&store)));
        store
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        lock(&self.shards[index])
    }

    /// Entries held, expired ones not yet reaped included.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No room left for general writes (new tokens); reserved writes may
    /// still have some.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_entries
    }

    /// Write `key`, counting it when it is new to the map; refused when the
    /// key is new and `room` has no space left.
    fn put(
        &self,
        shard: &mut Shard,
        key: &str,
        entry: Entry,
        room: Room,
    ) -> Result<(), StoreError> {
        if let Some(slot) = shard.get_mut(key) {
            *slot = entry;
            return Ok(());
        }
        let limit = match room {
            Room::General => self.max_entries,
            Room::Reserved => self.max_entries.saturating_add(self.reserved_entries),
        };
        if self.entries.load(Ordering::Relaxed) >= limit {
            return Err(StoreError::Full(format!(
                "the memory store is full ({limit} entries)"
            )));
        }
        self.entries.fetch_add(1, Ordering::Relaxed);
        shard.insert(key.to_owned(), entry);
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

    pub fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            value: value.to_vec(),
            expires_at: Instant::now() + ttl,
        };
        self.put(&mut self.shard(key), key, entry, room)
    }

    pub fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if shard.get(key).is_some_and(|entry| entry.is_live(now)) {
            return Ok(false);
        }
        let entry = Entry {
            value: value.to_vec(),
            expires_at: now + ttl,
        };
        self.put(&mut shard, key, entry, room)?;
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
        let removed = self.shard(key).remove(key);
        if removed.is_some() {
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
        removed.is_some_and(|entry| entry.is_live(now))
    }

    pub fn increment(
        &self,
        key: &str,
        delta: u64,
        ttl: Duration,
        room: Room,
    ) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let (current, expires_at) = match shard.get(key) {
            Some(entry) if entry.is_live(now) => (counter(key, entry)?, entry.expires_at),
            _ => (0, now + ttl),
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            StoreError::InvalidArgument(format!("counter {key:?} would overflow"))
        })?;
        let entry = Entry {
            value: next.to_string().into_bytes(),
            expires_at,
        };
        self.put(&mut shard, key, entry, room)?;
        Ok(next)
    }

    /// Subtract from a live counter; one that reaches 0 is removed.
    pub fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let next = match shard.get_mut(key) {
            Some(entry) if entry.is_live(now) => {
                let next = counter(key, entry)?.saturating_sub(delta);
                entry.value = next.to_string().into_bytes();
                next
            }
            _ => return Ok(0),
        };
        if next == 0 {
            shard.remove(key);
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(next)
    }

    /// Drop every expired entry; one shard locked at a time.
    fn reap(&self) -> usize {
        let now = Instant::now();
        let mut reaped = 0;
        for shard in &self.shards {
            let mut map = lock(shard);
            let before = map.len();
            map.retain(|_, entry| entry.is_live(now));
            reaped += before - map.len();
        }
        self.entries.fetch_sub(reaped, Ordering::Relaxed);
        reaped
    }
}

/// The value of a counter entry.
fn counter(key: &str, entry: &Entry) -> Result<u64, StoreError> {
    counter_value(key, &entry.value)
}

/// Every critical section leaves its map consistent, so a lock poisoned by
/// a panic elsewhere is still safe to use.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    const G: Room = Room::General;

    // What every backend promises is in `contract_tests`; here, what only
    // this one does.
    #[tokio::test]
    async fn expired_entries_are_reclaimed() {
        let store = MemoryStore::start(100, 0);
        // The background reaper's first pass runs now, not during the test.
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.set("long", b"y", TTL, G).unwrap();
        store
            .set("gone", b"x", Duration::from_millis(1), G)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.reap(), 1);
        assert_eq!(store.len(), 1);
        assert!(!store.is_empty());
    }
}
