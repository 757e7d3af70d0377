//! The embedded in-memory backend: one process, TTLs, atomic operations.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hashbrown::hash_table::{Entry as Slot, HashTable};

use super::{Room, StoreError, claim, counter_sum, counter_value};

/// Independent locks, so concurrent calls for different keys rarely wait on
/// each other.
const SHARDS: usize = 16;
/// How often expired entries are reclaimed in the background.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

struct Entry {
    key: Box<str>,
    value: Vec<u8>,
    expires_at: Instant,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

type Shard = HashTable<Entry>;

/// Matches the entry stored under `key`.
fn holds(key: &str) -> impl Fn(&Entry) -> bool + '_ {
    move |entry| &*entry.key == key
}

/// A key's shard, locked, and the key's hash, which also finds its slot in
/// the shard: every operation hashes its key once.
struct Located<'a> {
    shard: MutexGuard<'a, Shard>,
    hash: u64,
}

/// Key-value entries with expiry, sharded by key hash.
///
/// A std `Mutex` is right here: every critical section is a few hash-table
/// operations that never await, so a lock is held for microseconds. Each
/// operation holds its key's shard lock from check to write, which is what
/// makes `set_if_absent` and `increment` atomic. Keys are hashed with std's
/// randomly keyed SipHash: they hold client input (access ids).
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    /// Entries in the tables, expired-but-not-reaped ones included.
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

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn locate(&self, key: &str) -> Located<'_> {
        let hash = self.hash(key);
        // The table picks a slot with the hash's low bits and tags it with
        // the top seven; the shard takes bits from neither, so keys spread
        // evenly over shards and over each shard's slots.
        let index = (hash >> 32) as usize % SHARDS;
        Located {
            shard: lock(&self.shards[index]),
            hash,
        }
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

    /// Take a place for a new key (atomically, across shards), refused
    /// when `room` has no space left.
    fn claim_room(&self, room: Room) -> Result<(), StoreError> {
        let limit = match room {
            Room::General => self.max_entries,
            Room::Reserved => self.max_entries.saturating_add(self.reserved_entries),
        };
        if !claim(&self.entries, 1, limit) {
            return Err(StoreError::Full(format!(
                "the memory store is full ({limit} entries)"
            )));
        }
        Ok(())
    }

    /// Write `key` (with `value`, expiring at `expires_at`) into the slot
    /// found for it; a new key counts against `room`.
    fn put(
        &self,
        slot: Slot<'_, Entry>,
        key: &str,
        value: Vec<u8>,
        expires_at: Instant,
        room: Room,
    ) -> Result<(), StoreError> {
        match slot {
            Slot::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                entry.value = value;
                entry.expires_at = expires_at;
            }
            Slot::Vacant(vacant) => {
                self.claim_room(room)?;
                vacant.insert(Entry {
                    key: key.into(),
                    value,
                    expires_at,
                });
            }
        }
        Ok(())
    }

    /// The slot of `key` in its shard, occupied or vacant.
    fn slot<'a>(&self, located: &'a mut Located<'_>, key: &str) -> Slot<'a, Entry> {
        located
            .shard
            .entry(located.hash, holds(key), |entry| self.hash(&entry.key))
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let located = self.locate(key);
        located
            .shard
            .find(located.hash, holds(key))
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
        let expires_at = Instant::now() + ttl;
        let mut located = self.locate(key);
        let slot = self.slot(&mut located, key);
        self.put(slot, key, value.to_vec(), expires_at, room)
    }

    pub fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut located = self.locate(key);
        let slot = self.slot(&mut located, key);
        if let Slot::Occupied(occupied) = &slot
            && occupied.get().is_live(now)
        {
            return Ok(false);
        }
        self.put(slot, key, value.to_vec(), now + ttl, room)?;
        Ok(true)
    }

    pub fn touch(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut located = self.locate(key);
        match located.shard.find_mut(located.hash, holds(key)) {
            Some(entry) if entry.is_live(now) => {
                entry.expires_at = now + ttl;
                true
            }
            _ => false,
        }
    }

    pub fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut located = self.locate(key);
        let Ok(found) = located.shard.find_entry(located.hash, holds(key)) else {
            return false;
        };
        let (removed, _) = found.remove();
        self.entries.fetch_sub(1, Ordering::Relaxed);
        removed.is_live(now)
    }

    pub fn increment(
        &self,
        key: &str,
        delta: u64,
        ttl: Duration,
        room: Room,
    ) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut located = self.locate(key);
        let slot = self.slot(&mut located, key);
        let (current, expires_at) = match &slot {
            Slot::Occupied(occupied) if occupied.get().is_live(now) => {
                let entry = occupied.get();
                (counter(key, entry)?, entry.expires_at)
            }
            _ => (0, now + ttl),
        };
        let next = counter_sum(key, current, delta)?;
        self.put(slot, key, next.to_string().into_bytes(), expires_at, room)?;
        Ok(next)
    }

    /// Subtract from a live counter; one that reaches 0 is removed.
    pub fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut located = self.locate(key);
        let Ok(mut found) = located.shard.find_entry(located.hash, holds(key)) else {
            return Ok(0);
        };
        let entry = found.get_mut();
        if !entry.is_live(now) {
            return Ok(0);
        }
        let next = counter(key, entry)?.saturating_sub(delta);
        if next == 0 {
            found.remove();
            self.entries.fetch_sub(1, Ordering::Relaxed);
        } else {
            entry.value = next.to_string().into_bytes();
        }
        Ok(next)
    }

    /// Drop every expired entry; one shard locked at a time.
    fn reap(&self) -> usize {
        let now = Instant::now();
        let mut reaped = 0;
        for shard in &self.shards {
            let mut table = lock(shard);
            let before = table.len();
            table.retain(|entry| entry.is_live(now));
            // Given back shard by shard, so writes are not refused for room
            // that is already free while the other shards are swept.
            let freed = before - table.len();
            self.entries.fetch_sub(freed, Ordering::Relaxed);
            reaped += freed;
        }
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
    use crate::store::contract_tests::race_to_write;

    const TTL: Duration = Duration::from_secs(60);
    const G: Room = Room::General;

    // What every backend promises is in `contract_tests`; here, what only
    // this one does.
    /// The one-time guard's promise under real contention: threads racing
    /// for one key, exactly one wins; and the room limit holds across shards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_get_one_winner_and_never_overshoot_the_room() {
        const RACERS: usize = 8;
        let store = MemoryStore::start(64, 0);
        // Every racer waits at the barrier, so they start together rather
        // than one after another as their threads come up.
        let start = std::sync::Barrier::new(RACERS);
        let winners = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..RACERS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        store.set_if_absent("used:a:1", b"1", TTL, G)
                    })
                })
                .collect();
            racers
                .into_iter()
                .filter_map(|racer| racer.join().ok())
                .filter(|won| *won == Ok(true))
                .count()
        });
        assert_eq!(winners, 1);

        let keys = race_to_write(RACERS, 32, |key| {
            let _ = store.set(key, b"x", TTL, G);
        });
        assert_eq!(store.len(), 64);
        let stored = keys.iter().filter(|key| store.get(key).is_some()).count();
        assert_eq!(stored, 63, "the guard above holds the 64th place");
    }

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

    /// The sweep's side of reusing a place (`contract_tests` covers the
    /// expired key found before the sweep): the room it gives back takes
    /// a new key, and only one.
    #[tokio::test]
    async fn a_swept_place_takes_one_new_key() {
        let store = MemoryStore::start(2, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.set("kept", b"1", TTL, G).unwrap();
        store
            .increment("spent", 1, Duration::from_millis(1), G)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            store.set("new", b"1", TTL, G),
            Err(StoreError::Full(_))
        ));
        assert_eq!(store.reap(), 1);
        assert_eq!(store.set_if_absent("new", b"1", TTL, G), Ok(true));
        assert!(matches!(
            store.set("newer", b"1", TTL, G),
            Err(StoreError::Full(_))
        ));
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("spent"), None);
    }
}
