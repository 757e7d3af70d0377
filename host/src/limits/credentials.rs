//! Throttling of wrong app credentials (HTTP Basic), per key and source.
//!
//! The secret comparison is constant-time, but a guesser still gets one
//! answer per request. After `max_credential_failures` wrong secrets for one
//! key from one source address within `credential_failure_window_secs`,
//! that pair is refused with 429 for the rest of the window, before the
//! secret is compared. Throttling the pair, not the key, means a guesser
//! cannot lock the real back-end out: the right secret keeps working from
//! every source that has not been guessing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources tracked at most; past it, expired entries are dropped first,
/// then new pairs go untracked (logged) rather than grow memory.
const MAX_TRACKED: usize = 100_000;

/// Wrong-credential counts per (key, source).
pub struct CredentialThrottle {
    max_failures: u32,
    window: Duration,
    pairs: Mutex<HashMap<(String, IpAddr), Failures>>,
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
            pairs: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `key` may be tried again from `source`, if it is
    /// throttled now.
    pub fn retry_after(&self, key: &str, source: IpAddr) -> Option<u32> {
        let now = Instant::now();
        let pairs = self.lock();
        let failures = pairs.get(&(key.to_owned(), source))?;
        if failures.count < self.max_failures || failures.window_ends <= now {
            return None;
        }
        let left = failures.window_ends.duration_since(now).as_secs().max(1);
        Some(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Count a wrong secret for `key` from `source`.
    pub fn record_failure(&self, key: &str, source: IpAddr) -> Counted {
        let now = Instant::now();
        let mut pairs = self.lock();
        if pairs.len() >= MAX_TRACKED {
            pairs.retain(|_, failures| failures.window_ends > now);
        }
        let pair = (key.to_owned(), source);
        if !pairs.contains_key(&pair) && pairs.len() >= MAX_TRACKED {
            return Counted::Untracked;
        }
        let failures = pairs.entry(pair).or_insert(Failures {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Failures>> {
        // Every critical section leaves the map consistent.
        self.pairs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn a_pair_is_throttled_at_the_limit_and_others_are_not() {
        let throttle = CredentialThrottle::new(3, Duration::from_secs(60));
        assert_eq!(throttle.record_failure("k", A), Counted::Below);
        assert_eq!(throttle.record_failure("k", A), Counted::Below);
        assert_eq!(throttle.retry_after("k", A), None);
        assert_eq!(throttle.record_failure("k", A), Counted::Throttled);
        assert!(matches!(throttle.retry_after("k", A), Some(1..=60)));
        // Same key from elsewhere, or another key from here: untouched.
        assert_eq!(throttle.retry_after("k", B), None);
        assert_eq!(throttle.retry_after("other", A), None);
    }

    #[test]
    fn the_window_ends() {
        let throttle = CredentialThrottle::new(1, Duration::from_millis(20));
        assert_eq!(throttle.record_failure("k", A), Counted::Throttled);
        assert!(throttle.retry_after("k", A).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(throttle.retry_after("k", A), None);
        assert_eq!(throttle.record_failure("k", A), Counted::Throttled);
    }
}
