//! How fast one socket may subscribe. A `subscribe` costs the node a
//! router call, a store round trip in Redis mode and, when it occupies a
//! channel, a `channel_occupied` webhook (its `unsubscribe` a
//! `channel_vacated`): a client toggling a subscription would make all of
//! them without end. The burst is a whole subscription set, so a page that
//! subscribes to everything at once is never slowed down.

use governor::{DefaultDirectRateLimiter, RateLimiter};

use super::quota;
use crate::config::Limits;

/// One socket's subscribe bucket.
pub struct SubscribeRate(DefaultDirectRateLimiter);

impl SubscribeRate {
    pub fn new(limits: &Limits) -> SubscribeRate {
        SubscribeRate(RateLimiter::direct(quota(
            limits.client_subscribe_per_sec,
            limits.subscribe_burst(),
        )))
    }

    /// May this socket subscribe now? Takes one from its bucket when so.
    pub fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_gets_its_burst_then_is_refused() {
        let rate = SubscribeRate::new(&Limits {
            client_subscribe_per_sec: 1,
            client_subscribe_burst: Some(7),
            ..Limits::default()
        });
        let allowed = (0..50).filter(|_| rate.allow()).count();
        assert_eq!(allowed, 7);
    }

    #[test]
    fn the_default_burst_covers_a_full_subscription_set() {
        for max_subscriptions_per_socket in [100, 700] {
            let rate = SubscribeRate::new(&Limits {
                max_subscriptions_per_socket,
                ..Limits::default()
            });
            let allowed = (0..max_subscriptions_per_socket * 2)
                .filter(|_| rate.allow())
                .count();
            assert_eq!(allowed, max_subscriptions_per_socket);
        }
    }
}
