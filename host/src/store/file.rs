//! The `file:` backend: the plugins' keys in the directory's `store`
//! keyspace, kept across restarts.
//!
//! A value is stored behind its expiry (milliseconds since the Unix epoch,
//! big-endian): wall-clock time, so a token that idled out while the node
//! was down is gone when it comes back. Reads ignore expired entries; a
//! background sweep deletes them, and fjall's compaction gives their space
//! back. Each operation holds its key's stripe lock from read to write,
//! which makes `set_if_absent` and the counters atomic (one process owns
//! the directory).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Room, StoreError, claim, counter_sum, counter_value};
use crate::data_dir::{DataDir, DiskError};

/// Independent locks, so concurrent calls for different keys rarely wait.
const STRIPES: usize = 64;
/// How often expired entries are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes counted per entry besides its key and value (the expiry, and the
/// LSM tree's own record).
const ENTRY_OVERHEAD: usize = 32;

/// An entry as read back: its value and when it expires.
struct Entry {
    value: Vec<u8>,
    expires_ms: u64,
}

impl Entry {
    fn decode(bytes: &[u8]) -> Option<Entry> {
        let (expiry, value) = bytes.split_first_chunk::<8>()?;
        Some(Entry {
            value: value.to_vec(),
            expires_ms: u64::from_be_bytes(*expiry),
        })
    }

    fn encode(value: &[u8], expires_ms: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + value.len());
        bytes.extend_from_slice(&expires_ms.to_be_bytes());
        bytes.extend_from_slice(value);
        bytes
    }

    fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms > now_ms
    }
}

/// What an entry counts against the byte budget.
fn charge(key: &str, value_len: usize) -> usize {
    key.len() + value_len + ENTRY_OVERHEAD
}

pub struct FileStore {
    dir: Arc<DataDir>,
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
    /// Entries on disk, expired-but-not-swept ones included.
    entries: AtomicUsize,
    /// What those entries count against `max_bytes`.
    bytes: AtomicUsize,
    max_entries: usize,
    reserved_entries: usize,
    max_bytes: usize,
}

impl FileStore {
    /// The store in `dir`: counts what it holds (one pass over the keys)
    /// and deletes expired entries in the background while it exists.
    pub fn start(
        dir: Arc<DataDir>,
        max_entries: usize,
        reserved_entries: usize,
        max_bytes: usize,
    ) -> anyhow::Result<Arc<FileStore>> {
        let store = Arc::new(FileStore {
            dir,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_entries,
            reserved_entries,
            max_bytes,
        });
        store.recount()?;
        store.sweep();
        tokio::spawn(sweep_periodically(Arc::downgrade(&store)));
        Ok(store)
    }

    /// Count what the database holds (at start, and after a reopen).
    fn recount(&self) -> anyhow::Result<()> {
        let (entries, bytes) = self.count()?;
        self.entries.store(entries, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn count(&self) -> anyhow::Result<(usize, usize)> {
        let (mut entries, mut bytes) = (0, 0);
        let engine = self.dir.engine()?;
        for item in engine.store.iter() {
            let (key, value) = item.into_inner()?;
            entries += 1;
            bytes += key.len() + value.len().saturating_sub(8) + ENTRY_OVERHEAD;
        }
        Ok((entries, bytes))
    }

    fn stripe(&self, key: &str) -> MutexGuard<'_, ()> {
        let index = (self.hasher.hash_one(key) % STRIPES as u64) as usize;
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Is there no room left for general writes (new tokens), or no disk
    /// space? Says why.
    pub fn full(&self) -> Option<String> {
        if let Err(DiskError::Full(reason)) = self.dir.writable() {
            return Some(reason);
        }
        let (entries, bytes) = (self.entries(), self.bytes.load(Ordering::Relaxed));
        (entries >= self.max_entries || bytes >= self.max_bytes).then(|| {
            format!(
                "the file store holds {entries} entries ({} MiB) of its {} ({} MiB)",
                bytes >> 20,
                self.max_entries,
                self.max_bytes >> 20
            )
        })
    }

    /// Entries held, expired ones not yet swept included.
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Bytes the database takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.dir.disk_bytes()
    }

    /// Force everything written so far to the disk.
    pub fn sync(&self) {
        self.dir.sync();
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        match self.dir.writable() {
            // A full disk is reported as "full" by `full`, with its reason.
            Ok(()) | Err(DiskError::Full(_)) => Ok(()),
            Err(failed @ DiskError::Failed(_)) => Err(disk_error(failed)),
        }
    }

    /// The entry under `key`, live or expired.
    fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let bytes = self
            .dir
            .engine()
            .map_err(disk_error)?
            .store
            .get(key)
            .map_err(|error| {
                StoreError::Unavailable(format!("the file store cannot read: {error}"))
            })?;
        Ok(bytes.as_deref().and_then(Entry::decode))
    }

    /// Write `key` (under its stripe lock), counting it when it is new;
    /// refused when the key is new and `room` has no space left.
    fn put(
        &self,
        key: &str,
        old: Option<&Entry>,
        value: &[u8],
        expires_ms: u64,
        room: Room,
    ) -> Result<(), StoreError> {
        let new_charge = charge(key, value.len());
        let old_charge = old.map(|entry| charge(key, entry.value.len()));
        if old.is_none() {
            let limit = match room {
                Room::General => self.max_entries,
                Room::Reserved => self.max_entries.saturating_add(self.reserved_entries),
            };
            let byte_limit = match room {
                Room::General => self.max_bytes,
                // The reserved room's small guards may go a tenth over.
                Room::Reserved => self.max_bytes.saturating_add(self.max_bytes / 10),
            };
            self.claim_room(limit, byte_limit, new_charge)?;
        }
        let encoded = Entry::encode(value, expires_ms);
        let committed = self
            .dir
            .commit(|engine, batch| batch.insert(&engine.store, key, encoded));
        if let Err(error) = committed {
            if old.is_none() {
                // The new key's place was taken for nothing: give it back.
                decrease(&self.entries, 1);
                decrease(&self.bytes, new_charge);
            }
            return Err(disk_error(error));
        }
        if let Some(old_charge) = old_charge {
            self.bytes.fetch_add(new_charge, Ordering::Relaxed);
            decrease(&self.bytes, old_charge);
        }
        Ok(())
    }

    /// Take a place and `charge` bytes for a new key, each atomically
    /// (across stripe locks), or neither.
    fn claim_room(&self, limit: usize, byte_limit: usize, charge: usize) -> Result<(), StoreError> {
        if !claim(&self.entries, 1, limit) {
            return Err(Self::full_error(limit, byte_limit));
        }
        if !claim(&self.bytes, charge, byte_limit) {
            decrease(&self.entries, 1);
            return Err(Self::full_error(limit, byte_limit));
        }
        Ok(())
    }

    fn full_error(limit: usize, byte_limit: usize) -> StoreError {
        StoreError::Full(format!(
            "the file store is full ({limit} entries, {} MiB)",
            byte_limit >> 20
        ))
    }

    /// Remove `key` (under its stripe lock), which holds `old`.
    fn remove(&self, key: &str, old: &Entry) -> Result<(), StoreError> {
        self.dir
            .commit_deletes(|engine, batch| batch.remove(&engine.store, key))
            .map_err(disk_error)?;
        decrease(&self.entries, 1);
        decrease(&self.bytes, charge(key, old.value.len()));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = now_ms();
        Ok(self
            .read(key)?
            .filter(|entry| entry.is_live(now))
            .map(|entry| entry.value))
    }

    pub fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<(), StoreError> {
        let _stripe = self.stripe(key);
        let old = self.read(key)?;
        self.put(key, old.as_ref(), value, expiry(ttl), room)
    }

    pub fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        room: Room,
    ) -> Result<bool, StoreError> {
        let _stripe = self.stripe(key);
        let old = self.read(key)?;
        if old.as_ref().is_some_and(|entry| entry.is_live(now_ms())) {
            return Ok(false);
        }
        self.put(key, old.as_ref(), value, expiry(ttl), room)?;
        Ok(true)
    }

    pub fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let _stripe = self.stripe(key);
        match self.read(key)? {
            Some(entry) if entry.is_live(now_ms()) => {
                self.put(key, Some(&entry), &entry.value, expiry(ttl), Room::Reserved)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let _stripe = self.stripe(key);
        match self.read(key)? {
            Some(entry) => {
                self.remove(key, &entry)?;
                Ok(entry.is_live(now_ms()))
            }
            None => Ok(false),
        }
    }

    pub fn increment(
        &self,
        key: &str,
        delta: u64,
        ttl: Duration,
        room: Room,
    ) -> Result<u64, StoreError> {
        let _stripe = self.stripe(key);
        let old = self.read(key)?;
        let (current, expires_ms) = match &old {
            Some(entry) if entry.is_live(now_ms()) => {
                (counter_value(key, &entry.value)?, entry.expires_ms)
            }
            _ => (0, expiry(ttl)),
        };
        let next = counter_sum(key, current, delta)?;
        self.put(
            key,
            old.as_ref(),
            next.to_string().as_bytes(),
            expires_ms,
            room,
        )?;
        Ok(next)
    }

    /// Subtract from a live counter; one that reaches 0 is removed.
    pub fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let _stripe = self.stripe(key);
        let Some(entry) = self.read(key)?.filter(|entry| entry.is_live(now_ms())) else {
            return Ok(0);
        };
        let next = counter_value(key, &entry.value)?.saturating_sub(delta);
        if next == 0 {
            self.remove(key, &entry)?;
        } else {
            let value = next.to_string();
            self.put(
                key,
                Some(&entry),
                value.as_bytes(),
                entry.expires_ms,
                Room::Reserved,
            )?;
        }
        Ok(next)
    }

    /// Delete every expired entry; returns how many.
    fn sweep(&self) -> usize {
        let now = now_ms();
        let mut expired = Vec::new();
        let Ok(engine) = self.dir.engine() else {
            return 0;
        };
        for item in engine.store.iter() {
            let Ok((key, value)) = item.into_inner() else {
                break;
            };
            let dead = Entry::decode(&value).is_none_or(|entry| !entry.is_live(now));
            if dead && let Ok(key) = String::from_utf8(key.to_vec()) {
                expired.push(key);
            }
        }
        drop(engine);
        let mut swept = 0;
        for key in expired {
            let _stripe = self.stripe(&key);
            // Written again since the scan? Then it stays.
            let Ok(Some(entry)) = self.read(&key) else {
                continue;
            };
            if !entry.is_live(now_ms()) && self.remove(&key, &entry).is_ok() {
                swept += 1;
            }
        }
        swept
    }
}

/// Counts are estimates after a failed write (its key may or may not have
/// landed): they never wrap below zero, and are recounted after a reopen.
fn decrease(counter: &AtomicUsize, by: usize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        Some(now.saturating_sub(by))
    });
}

fn disk_error(error: DiskError) -> StoreError {
    match error {
        DiskError::Full(reason) => StoreError::Full(reason),
        DiskError::Failed(reason) => StoreError::Unavailable(reason),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn expiry(ttl: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

async fn sweep_periodically(store: Weak<FileStore>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.tick().await;
    let mut generation = 0;
    loop {
        interval.tick().await;
        let Some(store) = store.upgrade() else { return };
        // A pass over every key reads the disk: not on a runtime thread.
        let swept = tokio::task::spawn_blocking(move || {
            let reopened = store.dir.generation();
            if reopened != generation && store.recount().is_ok() {
                generation = reopened;
            }
            (store.sweep(), generation)
        })
        .await;
        let Ok((swept, seen)) = swept else { return };
        generation = seen;
        if swept > 0 {
            tracing::trace!(swept, "expired file store entries deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    // What every backend promises is in `contract_tests`; here, what only
    // this one does.
    use super::*;
    use crate::config::FileStoreConfig;
    use crate::store::contract_tests::race_to_write;

    const TTL: Duration = Duration::from_secs(60);
    const G: Room = Room::General;

    fn open(path: &std::path::Path, max_entries: usize, reserved: usize) -> Arc<FileStore> {
        let config = FileStoreConfig {
            min_free_mib: 0,
            ..FileStoreConfig::default()
        };
        let dir = DataDir::open(path, config).unwrap();
        FileStore::start(dir, max_entries, reserved, 1 << 20).unwrap()
    }

    #[tokio::test]
    async fn set_if_absent_is_once_only_and_survives_a_reopen() {
        let path = tempfile::tempdir().unwrap();
        let store = open(path.path(), 100, 0);
        assert_eq!(store.set_if_absent("k", b"1", TTL, G), Ok(true));
        assert_eq!(store.set_if_absent("k", b"2", TTL, G), Ok(false));
        assert_eq!(store.increment("c", 5, TTL, G), Ok(5));
        drop(store);

        let store = open(path.path(), 100, 0);
        assert_eq!(store.entries(), 2);
        assert_eq!(store.get("k"), Ok(Some(b"1".to_vec())));
        assert_eq!(store.set_if_absent("k", b"3", TTL, G), Ok(false));
        assert_eq!(store.increment("c", 1, TTL, G), Ok(6));
    }

    #[tokio::test]
    async fn expired_entries_are_swept() {
        let path = tempfile::tempdir().unwrap();
        let store = open(path.path(), 100, 0);
        // The background sweep's first pass runs now, not during the test.
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.set("long", b"y", TTL, G).unwrap();
        store
            .set("gone", b"x", Duration::from_millis(1), G)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.sweep(), 1);
        assert_eq!(store.entries(), 1);
        assert_eq!(store.get("long"), Ok(Some(b"y".to_vec())));
    }

    /// Writers under different stripe locks racing for the last places:
    /// the limit holds exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_never_overshoot_the_room() {
        const RACERS: usize = 8;
        // A few rounds, each on a fresh store: one race may by chance not
        // overlap at the boundary, several together do.
        for _ in 0..4 {
            let path = tempfile::tempdir().unwrap();
            let store = open(path.path(), 24, 0);
            let keys = race_to_write(RACERS, 8, |key| {
                let _ = store.set(key, b"x", TTL, G);
            });
            assert_eq!(store.entries(), 24);
            let stored = keys
                .iter()
                .filter(|key| store.get(key).is_ok_and(|value| value.is_some()))
                .count();
            assert_eq!(stored, 24);
        }
    }
}
