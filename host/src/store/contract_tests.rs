//! What every backend promises its plugins, run against each backend: the
//! memory and file stores, one real `redis-server` and a real Redis
//! Cluster. Redis keeps no entry count or room limit of its own (its
//! `maxmemory` does that job), so the room checks run on the other two. Backend-specific
//! behaviour (a reopen, the sweep) is tested beside each backend.

use std::sync::Arc;
use std::time::Duration;

use madx_test_support::{RedisCluster, RedisServer};

use super::{FileStore, MAX_COUNTER, MemoryStore, RedisStore, Room, StoreBackend, StoreError};
use crate::config::{CLUSTER_SCHEME, FileStoreConfig, cluster_seeds};
use crate::data_dir::DataDir;
use crate::redis_link::RedisLink;

const TTL: Duration = Duration::from_secs(60);
const G: Room = Room::General;

/// A fresh store of one backend with room for `max_entries`, `reserved` of
/// them kept for reserved writes.
trait Fresh {
    fn fresh(&mut self, max_entries: usize, reserved: usize) -> StoreBackend;
}

struct Memory;

impl Fresh for Memory {
    fn fresh(&mut self, max_entries: usize, reserved: usize) -> StoreBackend {
        StoreBackend::Memory(MemoryStore::start(max_entries, reserved))
    }
}

/// File stores, each in its own directory under one temporary root.
struct Files {
    root: tempfile::TempDir,
    opened: usize,
}

impl Fresh for Files {
    fn fresh(&mut self, max_entries: usize, reserved: usize) -> StoreBackend {
        self.opened += 1;
        let config = FileStoreConfig {
            min_free_mib: 0,
            ..FileStoreConfig::default()
        };
        let dir = DataDir::open(&self.root.path().join(self.opened.to_string()), config).unwrap();
        let store: Arc<FileStore> = FileStore::start(dir, max_entries, reserved, 1 << 20).unwrap();
        StoreBackend::File(store)
    }
}

/// Stores on one Redis deployment (a server or a cluster), each under a
/// key prefix of its own.
struct Redis {
    link: RedisLink,
    opened: usize,
}

impl Fresh for Redis {
    fn fresh(&mut self, _max_entries: usize, _reserved: usize) -> StoreBackend {
        self.opened += 1;
        let prefix = format!("contract-{}", self.opened);
        StoreBackend::Redis(Arc::new(RedisStore::new(self.link.clone(), &prefix)))
    }
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    let mut memory = Memory;
    keeps_the_contract(&mut memory).await;
    keeps_its_room(&mut memory).await;
}

#[tokio::test]
async fn the_file_store_keeps_the_contract() {
    let root = tempfile::tempdir().unwrap();
    let mut files = Files { root, opened: 0 };
    keeps_the_contract(&mut files).await;
    keeps_its_room(&mut files).await;
}

#[tokio::test]
async fn one_redis_keeps_the_contract() {
    let server = RedisServer::start();
    let link = RedisLink::single(&server.url()).unwrap();
    keeps_the_contract(&mut Redis { link, opened: 0 }).await;
}

#[tokio::test]
async fn a_redis_cluster_keeps_the_contract() {
    let cluster = RedisCluster::start(3, 0);
    let url = cluster.url();
    let seeds = cluster_seeds(url.trim_start_matches(CLUSTER_SCHEME)).unwrap();
    let link = RedisLink::cluster(seeds).unwrap();
    keeps_the_contract(&mut Redis { link, opened: 0 }).await;
}

/// `racers` threads, started together at a barrier, each writing its own
/// `keys_each` keys with `write`; the keys, for counting what was kept.
pub(super) fn race_to_write(
    racers: usize,
    keys_each: usize,
    write: impl Fn(&str) + Sync,
) -> Vec<String> {
    let start = std::sync::Barrier::new(racers);
    let keys_of = |thread: usize| (0..keys_each).map(move |key| format!("{thread}/{key}"));
    std::thread::scope(|scope| {
        for thread in 0..racers {
            let (start, write) = (&start, &write);
            scope.spawn(move || {
                start.wait();
                keys_of(thread).for_each(|key| write(&key));
            });
        }
    });
    (0..racers).flat_map(keys_of).collect()
}

async fn keeps_the_contract(backend: &mut impl Fresh) {
    set_if_absent_is_once_only(backend.fresh(100, 0)).await;
    expired_entries_vanish(backend.fresh(100, 0)).await;
    touch_extends_life(backend.fresh(100, 0)).await;
    counters_count_and_keep_their_expiry(backend.fresh(100, 0)).await;
    counters_go_down_to_zero_and_missing_ones_stay_missing(backend.fresh(100, 0)).await;
    counters_refuse_what_is_not_a_counter_and_overflow(backend.fresh(100, 0)).await;
}

/// The entry count and the room limit (the stores that keep them).
async fn keeps_its_room(backend: &mut impl Fresh) {
    a_full_store_refuses_new_keys_but_serves_existing_ones(backend.fresh(2, 1)).await;
    a_full_store_reuses_the_place_of_an_expired_key(backend.fresh(2, 0)).await;
    thousands_of_keys_are_all_found(backend.fresh(10_000, 0)).await;
}

async fn set_if_absent_is_once_only(store: StoreBackend) {
    assert_eq!(store.set_if_absent("k", b"1", TTL, G).await, Ok(true));
    assert_eq!(store.set_if_absent("k", b"2", TTL, G).await, Ok(false));
    assert_eq!(store.get("k").await, Ok(Some(b"1".to_vec())));
}

async fn expired_entries_vanish(store: StoreBackend) {
    store
        .set("short", b"x", Duration::from_millis(30), G)
        .await
        .unwrap();
    store.set("long", b"y", TTL, G).await.unwrap();
    assert_eq!(store.touch("missing", TTL).await, Ok(false));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.get("short").await, Ok(None));
    assert_eq!(store.touch("short", TTL).await, Ok(false));
    assert_eq!(store.delete("short").await, Ok(false));
    assert_eq!(store.set_if_absent("short", b"z", TTL, G).await, Ok(true));
    assert_eq!(store.get("long").await, Ok(Some(b"y".to_vec())));
}

async fn touch_extends_life(store: StoreBackend) {
    store
        .set("k", b"x", Duration::from_millis(40), G)
        .await
        .unwrap();
    assert_eq!(store.touch("k", TTL).await, Ok(true));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.get("k").await, Ok(Some(b"x".to_vec())));
    assert_eq!(store.delete("k").await, Ok(true));
    assert_eq!(store.delete("k").await, Ok(false));
}

async fn counters_count_and_keep_their_expiry(store: StoreBackend) {
    let short = Duration::from_millis(40);
    assert_eq!(store.increment("c", 1, short, G).await, Ok(1));
    assert_eq!(store.increment("c", 2, TTL, G).await, Ok(3));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.increment("c", 1, TTL, G).await, Ok(1));
    store.set("text", b"abc", TTL, G).await.unwrap();
    assert!(matches!(
        store.increment("text", 1, TTL, G).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

async fn counters_go_down_to_zero_and_missing_ones_stay_missing(store: StoreBackend) {
    assert_eq!(store.decrement("c", 1).await, Ok(0));
    assert_eq!(store.get("c").await, Ok(None));
    assert_eq!(store.increment("c", 2, TTL, G).await, Ok(2));
    assert_eq!(store.decrement("c", 1).await, Ok(1));
    assert_eq!(store.decrement("c", 5).await, Ok(0));
    assert_eq!(store.get("c").await, Ok(None));
    assert_eq!(store.entries(), 0);
}

async fn a_full_store_refuses_new_keys_but_serves_existing_ones(store: StoreBackend) {
    store.set("a", b"1", TTL, G).await.unwrap();
    store.set("b", b"1", TTL, G).await.unwrap();
    assert!(store.full().is_some());
    assert!(matches!(
        store.set_if_absent("c", b"1", TTL, G).await,
        Err(StoreError::Full(_))
    ));
    store.set("a", b"2", TTL, G).await.unwrap();
    assert_eq!(store.get("a").await, Ok(Some(b"2".to_vec())));
    // The reserved room takes what general writes may not, up to its size.
    assert_eq!(
        store.set_if_absent("c", b"1", TTL, Room::Reserved).await,
        Ok(true)
    );
    assert!(matches!(
        store.increment("d", 1, TTL, Room::Reserved).await,
        Err(StoreError::Full(_))
    ));
    assert_eq!(store.delete("a").await, Ok(true));
    assert_eq!(store.entries(), 2);
}

async fn a_full_store_reuses_the_place_of_an_expired_key(store: StoreBackend) {
    let short = Duration::from_millis(30);
    store.set("guard", b"1", short, G).await.unwrap();
    store.increment("count", 1, short, G).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Whether or not the sweep has run meanwhile, the expired keys' places
    // are taken again, and counted once.
    assert_eq!(store.set_if_absent("guard", b"2", TTL, G).await, Ok(true));
    assert_eq!(store.increment("count", 5, TTL, G).await, Ok(5));
    assert_eq!(store.entries(), 2);
    assert!(matches!(
        store.set("third", b"1", TTL, G).await,
        Err(StoreError::Full(_))
    ));
}

async fn counters_refuse_what_is_not_a_counter_and_overflow(store: StoreBackend) {
    store.set("text", b"abc", TTL, G).await.unwrap();
    assert!(matches!(
        store.decrement("text", 1).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.get("text").await, Ok(Some(b"abc".to_vec())));

    // A number that Redis would not count (a sign, a leading zero, a
    // space) is no counter on any backend either, and is left as it was.
    for odd in ["-5", "+5", "05", " 5"] {
        store.set("odd", odd.as_bytes(), TTL, G).await.unwrap();
        assert!(
            matches!(
                store.increment("odd", 1, TTL, G).await,
                Err(StoreError::InvalidArgument(_))
            ),
            "increment of {odd:?}"
        );
        assert!(
            matches!(
                store.decrement("odd", 1).await,
                Err(StoreError::InvalidArgument(_))
            ),
            "decrement of {odd:?}"
        );
        assert_eq!(store.get("odd").await, Ok(Some(odd.as_bytes().to_vec())));
    }

    // Counters stop at 2^63 - 1, where Redis's stop, on every backend.
    assert!(matches!(
        store.increment("huge", MAX_COUNTER + 1, TTL, G).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.get("huge").await, Ok(None));
    assert_eq!(
        store.increment("big", MAX_COUNTER, TTL, G).await,
        Ok(MAX_COUNTER)
    );
    assert!(matches!(
        store.increment("big", 1, TTL, G).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(
        store.get("big").await,
        Ok(Some(MAX_COUNTER.to_string().into_bytes()))
    );
    store
        .set("beyond", (MAX_COUNTER + 1).to_string().as_bytes(), TTL, G)
        .await
        .unwrap();
    assert!(matches!(
        store.increment("beyond", 0, TTL, G).await,
        Err(StoreError::InvalidArgument(_))
    ));

    // An expired value, counter or not, is no obstacle: a counter starts
    // afresh there, and an expired counter decrements to nothing.
    let short = Duration::from_millis(30);
    store.set("old text", b"abc", short, G).await.unwrap();
    store.increment("old count", 7, short, G).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.increment("old text", 3, TTL, G).await, Ok(3));
    assert_eq!(store.decrement("old count", 1).await, Ok(0));
    assert_eq!(store.get("old count").await, Ok(None));
}

/// Enough keys that every shard's table grows several times, so entries
/// are moved to new slots while the store holds them.
async fn thousands_of_keys_are_all_found(store: StoreBackend) {
    const KEYS: usize = 3_000;
    for key in 0..KEYS {
        let value = key.to_string();
        assert_eq!(
            store
                .set_if_absent(&format!("token:{key}"), value.as_bytes(), TTL, G)
                .await,
            Ok(true)
        );
    }
    assert_eq!(store.entries(), KEYS);
    for key in 0..KEYS {
        assert_eq!(
            store.get(&format!("token:{key}")).await,
            Ok(Some(key.to_string().into_bytes())),
            "token:{key}"
        );
    }
    assert_eq!(store.delete("token:7").await, Ok(true));
    assert_eq!(store.entries(), KEYS - 1);
}
