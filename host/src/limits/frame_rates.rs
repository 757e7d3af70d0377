//! Rate limits on the client frames that make the node do work for others:
//! `publish` (a message to a channel, a `client_event` webhook) and
//! `subscribe` (a router call, a store round trip in Redis mode, and a
//! `channel_occupied` webhook when it occupies a channel, its `unsubscribe`
//! a `channel_vacated`). Each kind has a token bucket per socket and one per
//! token (shared by all of the token's sockets on this node), so a client
//! can flood the node neither with one socket nor by opening many. Over
//! either rate the frame is refused with 4308.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::quota;
use crate::config::Limits;

type Bucket = DefaultDirectRateLimiter;
type TokenKey = (String, String);

/// The frames that draw on a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Publish,
    Subscribe,
}

/// A bucket for each kind of frame.
struct Buckets {
    publish: Bucket,
    subscribe: Bucket,
}

impl Buckets {
    fn new(publish: Quota, subscribe: Quota) -> Buckets {
        Buckets {
            publish: RateLimiter::direct(publish),
            subscribe: RateLimiter::direct(subscribe),
        }
    }

    /// Take one from the frame's bucket, if it has one.
    fn take(&self, frame: Frame) -> bool {
        let bucket = match frame {
            Frame::Publish => &self.publish,
            Frame::Subscribe => &self.subscribe,
        };
        bucket.check().is_ok()
    }
}

/// The node's frame budgets: the quotas, and each token's buckets, alive
/// while the token has a socket here.
pub struct FrameRates {
    socket: (Quota, Quota),
    token: (Quota, Quota),
    tokens: Mutex<HashMap<TokenKey, Weak<Buckets>>>,
}

/// The buckets one socket draws from; dropping it lets the token's buckets
/// go when it was the token's last socket.
pub struct SocketRate {
    socket: Buckets,
    token: Option<Arc<Buckets>>,
    key: TokenKey,
    rates: Arc<FrameRates>,
}

impl FrameRates {
    pub fn new(limits: &Limits) -> Arc<FrameRates> {
        Arc::new(FrameRates {
            socket: (
                quota(limits.client_publish_per_sec, limits.client_publish_burst),
                quota(limits.client_subscribe_per_sec, limits.subscribe_burst()),
            ),
            token: (
                quota(limits.token_publish_per_sec, limits.token_publish_burst),
                quota(
                    limits.token_subscribe_per_sec,
                    limits.token_subscribe_burst(),
                ),
            ),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<TokenKey, Weak<Buckets>>> {
        // Each critical section leaves the map consistent.
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The buckets for a new socket of `access_id`.
    pub fn socket(self: &Arc<Self>, app_id: &str, access_id: &str) -> SocketRate {
        let key = (app_id.to_owned(), access_id.to_owned());
        let mut tokens = self.tokens();
        let token = match tokens.get(&key).and_then(Weak::upgrade) {
            Some(buckets) => buckets,
            None => {
                let buckets = Arc::new(Buckets::new(self.token.0, self.token.1));
                tokens.insert(key.clone(), Arc::downgrade(&buckets));
                buckets
            }
        };
        drop(tokens);
        SocketRate {
            socket: Buckets::new(self.socket.0, self.socket.1),
            token: Some(token),
            key,
            rates: Arc::clone(self),
        }
    }

    /// Tokens with buckets on this node.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tokens().len()
    }
}

impl SocketRate {
    /// May this socket send this frame now? Takes one from both of the
    /// frame's buckets when so.
    pub fn allow(&self, frame: Frame) -> bool {
        self.socket.take(frame) && self.token.as_ref().is_none_or(|token| token.take(frame))
    }
}

impl Drop for SocketRate {
    fn drop(&mut self) {
        drop(self.token.take());
        let mut tokens = self.rates.tokens();
        if tokens
            .get(&self.key)
            .is_some_and(|buckets| buckets.strong_count() == 0)
        {
            tokens.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(socket: (u32, u32), token: (u32, u32)) -> Arc<FrameRates> {
        FrameRates::new(&Limits {
            client_publish_per_sec: socket.0,
            client_publish_burst: socket.1,
            token_publish_per_sec: token.0,
            token_publish_burst: token.1,
            client_subscribe_per_sec: socket.0,
            client_subscribe_burst: Some(socket.1 + 1),
            token_subscribe_per_sec: token.0,
            token_subscribe_burst: Some(token.1 + 1),
            ..Limits::default()
        })
    }

    fn allowed(socket: &SocketRate, frame: Frame, tries: usize) -> usize {
        (0..tries).filter(|_| socket.allow(frame)).count()
    }

    #[test]
    fn a_socket_gets_its_burst_of_each_frame_then_is_refused() {
        let rates = rates((1, 5), (1, 100));
        let socket = rates.socket("a", "t");
        assert_eq!(allowed(&socket, Frame::Publish, 20), 5);
        // The subscribe bucket is a bucket of its own.
        assert_eq!(allowed(&socket, Frame::Subscribe, 20), 6);
    }

    #[test]
    fn sockets_of_one_token_share_its_buckets_and_others_do_not() {
        let rates = rates((1, 100), (1, 6));
        let first = rates.socket("a", "t");
        let second = rates.socket("a", "t");
        for (frame, burst) in [(Frame::Publish, 6), (Frame::Subscribe, 7)] {
            let both = allowed(&first, frame, 20) + allowed(&second, frame, 20);
            assert_eq!(both, burst, "{frame:?}");
        }
        let other_token = rates.socket("a", "u");
        assert!(other_token.allow(Frame::Publish));
        let other_app = rates.socket("b", "t");
        assert!(other_app.allow(Frame::Subscribe));
        assert_eq!(rates.tracked(), 3);
        // The buckets outlive one socket of the token, not the last.
        drop(first);
        let third = rates.socket("a", "t");
        assert!(!third.allow(Frame::Publish));
        assert!(!third.allow(Frame::Subscribe));
        drop((second, third, other_token, other_app));
        assert_eq!(rates.tracked(), 0);
    }

    #[test]
    fn the_default_bursts_cover_full_subscription_sets() {
        for max_subscriptions_per_socket in [100, 700] {
            let limits = Limits {
                max_subscriptions_per_socket,
                ..Limits::default()
            };
            let rates = FrameRates::new(&limits);
            // Every socket a token may open subscribes to all it may, at
            // once (a node's sockets reconnecting after a restart).
            let sockets: Vec<SocketRate> = (0..limits.max_sockets_per_token)
                .map(|_| rates.socket("a", "t"))
                .collect();
            for socket in &sockets {
                let tries = max_subscriptions_per_socket * 2;
                assert_eq!(
                    allowed(socket, Frame::Subscribe, tries),
                    max_subscriptions_per_socket
                );
            }
        }
    }
}
