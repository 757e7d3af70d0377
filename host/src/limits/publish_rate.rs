//! Rate limits on client `publish` frames: one token bucket per socket and
//! one per token (shared by all of the token's sockets on this node), so a
//! client with a `publish` grant cannot flood the node however many sockets
//! it opens. Over either rate a publish is refused with 4308.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::quota;
use crate::config::Limits;

type Bucket = DefaultDirectRateLimiter;
type TokenKey = (String, String);

/// The node's token-level buckets, alive while the token has a socket here.
pub struct PublishRates {
    socket: Quota,
    token: Quota,
    tokens: Mutex<HashMap<TokenKey, Weak<Bucket>>>,
}

/// The buckets one socket draws from; dropping it lets the token's bucket
/// go when it was the token's last socket.
pub struct SocketRate {
    socket: Bucket,
    token: Option<Arc<Bucket>>,
    key: TokenKey,
    rates: Arc<PublishRates>,
}

impl PublishRates {
    pub fn new(limits: &Limits) -> Arc<PublishRates> {
        Arc::new(PublishRates {
            socket: quota(limits.client_publish_per_sec, limits.client_publish_burst),
            token: quota(limits.token_publish_per_sec, limits.token_publish_burst),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<TokenKey, Weak<Bucket>>> {
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
            Some(bucket) => bucket,
            None => {
                let bucket = Arc::new(RateLimiter::direct(self.token));
                tokens.insert(key.clone(), Arc::downgrade(&bucket));
                bucket
            }
        };
        drop(tokens);
        SocketRate {
            socket: RateLimiter::direct(self.socket),
            token: Some(token),
            key,
            rates: Arc::clone(self),
        }
    }

    /// Tokens with a bucket on this node.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tokens().len()
    }
}

impl SocketRate {
    /// May this socket publish now? Takes one from both buckets when so.
    pub fn allow(&self) -> bool {
        self.socket.check().is_ok()
            && self
                .token
                .as_ref()
                .is_none_or(|token| token.check().is_ok())
    }
}

impl Drop for SocketRate {
    fn drop(&mut self) {
        drop(self.token.take());
        let mut tokens = self.rates.tokens();
        if tokens
            .get(&self.key)
            .is_some_and(|bucket| bucket.strong_count() == 0)
        {
            tokens.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(socket: (u32, u32), token: (u32, u32)) -> Arc<PublishRates> {
        PublishRates::new(&Limits {
            client_publish_per_sec: socket.0,
            client_publish_burst: socket.1,
            token_publish_per_sec: token.0,
            token_publish_burst: token.1,
            ..Limits::default()
        })
    }

    #[test]
    fn a_socket_gets_its_burst_then_is_refused() {
        let rates = rates((1, 5), (1, 100));
        let socket = rates.socket("a", "t");
        let allowed = (0..20).filter(|_| socket.allow()).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn sockets_of_one_token_share_its_bucket_and_others_do_not() {
        let rates = rates((1, 100), (1, 6));
        let first = rates.socket("a", "t");
        let second = rates.socket("a", "t");
        let allowed =
            (0..20).filter(|_| first.allow()).count() + (0..20).filter(|_| second.allow()).count();
        assert_eq!(allowed, 6);
        let other_token = rates.socket("a", "u");
        assert!(other_token.allow());
        let other_app = rates.socket("b", "t");
        assert!(other_app.allow());
        assert_eq!(rates.tracked(), 3);
        // The bucket outlives one socket of the token, not the last.
        drop(first);
        let third = rates.socket("a", "t");
        assert!(!third.allow());
        drop((second, third, other_token, other_app));
        assert_eq!(rates.tracked(), 0);
    }
}
