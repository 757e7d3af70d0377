//! Throttling of wrong app credentials (HTTP Basic, and Pusher signatures),
//! per key and source.
//!
//! The secret comparison is constant-time, but a guesser still gets one
//! answer per request. After `max_credential_failures` wrong secrets for one
//! key from one source address within `credential_failure_window_secs`,
//! that pair is refused with 429 for the rest of the window, before the
//! secret is compared. Throttling the pair, not the key, means a guesser
//! cannot lock the real back-end out: the right secret keeps working from
//! every source that has not been guessing. Keys that name no app share
//! one count per source, so the table's size does not depend on what
//! clients send; an IPv6 source is its /64.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pairs tracked at most; past it, new pairs go untracked (logged) rather
/// than grow memory.
const MAX_TRACKED: usize = 100_000;
/// A full table drops its expired pairs at most this often.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Whose failures a pair counts. Only keys of configured apps are kept:
/// a key that names no app is the client's text, any length and endlessly
/// varied, so every unknown key from one source shares one count (and key
/// guessing from that source is throttled as one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyName {
    /// A configured app's key.
    App(String),
    /// A key no app has.
    Unknown,
}

/// Wrong-credential counts per (key, source).
pub struct CredentialThrottle {
    max_failures: u32,
    window: Duration,
    table: Mutex<Table>,
}

struct Table {
    pairs: HashMap<(KeyName, IpAddr), Failures>,
    /// When expired pairs are next dropped: once a window, so the table
    /// holds at most two windows' worth of sources, and no failure pays
    /// for a scan of the whole table.
    next_sweep: Instant,
    /// When a full table may be swept again.
    next_full_sweep: Instant,
}

struct Failures {
    count: u32,
    /// When the window of the first counted failure ends.
    window_ends: Instant,
}

/// The outcome of counting one wrong secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Under the limit.
    Below,
    /// This failure reached the limit: the pair is throttled from now on.
    Throttled,
    /// The table is full; the failure was not counted.
    Untracked,
}

impl CredentialThrottle {
    pub fn new(max_failures: u32, window: Duration) -> CredentialThrottle {
        CredentialThrottle {
            max_failures,
            window,
            table: Mutex::new(Table {
                pairs: HashMap::new(),
                next_sweep: Instant::now() + window,
                next_full_sweep: Instant::now(),
            }),
        }
    }

    /// Seconds until `key` may be tried again from `source`, if it is
    /// throttled now.
    pub fn retry_after(&self, key: &KeyName, source: IpAddr) -> Option<u32> {
        let now = Instant::now();
        let table = self.lock();
        let failures = table.pairs.get(&(key.clone(), counted_source(source)))?;
        if failures.count < self.max_failures || failures.window_ends <= now {
            return None;
        }
        let left = failures.window_ends.duration_since(now).as_secs().max(1);
        Some(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Count a wrong secret for `key` from `source`.
    pub fn record_failure(&self, key: KeyName, source: IpAddr) -> Counted {
        let now = Instant::now();
        let mut table = self.lock();
        let full = table.pairs.len() >= MAX_TRACKED;
        if now >= table.next_sweep || (full && now >= table.next_full_sweep) {
            table.pairs.retain(|_, failures| failures.window_ends > now);
            table.next_sweep = now + self.window;
            table.next_full_sweep = now + FULL_SWEEP_EVERY;
        }
        let pair = (key, counted_source(source));
        if !table.pairs.contains_key(&pair) && table.pairs.len() >= MAX_TRACKED {
            return Counted::Untracked;
        }
        let failures = table.pairs.entry(pair).or_insert(Failures {
            count: 0,
            window_ends: now + self.window,
        });
        if failures.window_ends <= now {
            *failures = Failures {
                count: 0,
                window_ends: now + self.window,
            };
        }
        failures.count = failures.count.saturating_add(1);
        if failures.count == self.max_failures {
            Counted::Throttled
        } else {
            Counted::Below
        }
    }

    /// Pairs held now (expired ones included until the next sweep).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().pairs.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every critical section leaves the table consistent.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a failure counts against: an IPv4 address, or an IPv6 /64 (one
/// network, whose hosts may use any address in it).
fn counted_source(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V6(address) => {
            let mut segments = address.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        IpAddr::V4(_) => source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn app(key: &str) -> KeyName {
        KeyName::App(key.to_owned())
    }

    #[test]
    fn a_pair_is_throttled_at_the_limit_and_others_are_not() {
        let throttle = CredentialThrottle::new(3, Duration::from_secs(60));
        assert_eq!(throttle.record_failure(app("k"), A), Counted::Below);
        assert_eq!(throttle.record_failure(app("k"), A), Counted::Below);
        assert_eq!(throttle.retry_after(&app("k"), A), None);
        assert_eq!(throttle.record_failure(app("k"), A), Counted::Throttled);
        assert!(matches!(throttle.retry_after(&app("k"), A), Some(1..=60)));
        // Same key from elsewhere, or another key from here: untouched.
        assert_eq!(throttle.retry_after(&app("k"), B), None);
        assert_eq!(throttle.retry_after(&app("other"), A), None);
        assert_eq!(throttle.retry_after(&KeyName::Unknown, A), None);
    }

    #[test]
    fn the_window_ends() {
        let throttle = CredentialThrottle::new(1, Duration::from_millis(20));
        assert_eq!(throttle.record_failure(app("k"), A), Counted::Throttled);
        assert!(throttle.retry_after(&app("k"), A).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(throttle.retry_after(&app("k"), A), None);
        assert_eq!(throttle.record_failure(app("k"), A), Counted::Throttled);
    }

    #[test]
    fn an_ipv6_network_counts_as_one_source() {
        let throttle = CredentialThrottle::new(2, Duration::from_secs(60));
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        assert_eq!(throttle.record_failure(app("k"), host(1)), Counted::Below);
        assert_eq!(
            throttle.record_failure(app("k"), host(2)),
            Counted::Throttled
        );
        assert!(throttle.retry_after(&app("k"), host(3)).is_some());
        let elsewhere = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert_eq!(throttle.retry_after(&app("k"), elsewhere), None);
    }

    #[test]
    fn expired_pairs_are_dropped_once_a_window_has_passed() {
        let throttle = CredentialThrottle::new(10, Duration::from_millis(20));
        for source in 0..50u8 {
            let source = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, source));
            throttle.record_failure(KeyName::Unknown, source);
        }
        assert_eq!(throttle.tracked(), 50);
        std::thread::sleep(Duration::from_millis(30));
        // The next failure sweeps: only its own pair is left.
        throttle.record_failure(app("k"), A);
        assert_eq!(throttle.tracked(), 1);
    }
}
