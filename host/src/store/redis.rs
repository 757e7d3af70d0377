//! The Redis backend: every node of a deployment sees the same tokens and
//! one-time guards. Each operation is one atomic Redis command (or one Lua
//! script) on one key, so the guarantees of the WIT `store` interface hold
//! across nodes, and on a Redis Cluster each key (a token, a one-time
//! guard, a lockout) lands in its own slot: they spread over the shards.

use std::time::Duration;

use redis::{AsyncCommands as _, ErrorKind, Script, ServerErrorKind};

use super::StoreError;
use crate::redis_link::RedisLink;

/// Keys and values of every app's plugins, under the deployment's prefix.
pub struct RedisStore {
    connection: RedisLink,
    /// `<prefix>:`, so deployments sharing one Redis never meet.
    prefix: String,
    increment: Script,
    decrement: Script,
}

impl RedisStore {
    pub fn new(connection: RedisLink, prefix: &str) -> RedisStore {
        RedisStore {
            connection,
            prefix: madx_wire::store::redis_key_prefix(prefix),
            increment: Script::new(madx_wire::scripts::INCREMENT),
            decrement: Script::new(madx_wire::scripts::DECREMENT),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A cheap handle: the link multiplexes its connections.
    fn connection(&self) -> RedisLink {
        self.connection.clone()
    }

    /// Does Redis answer? (On a cluster, every primary is asked.)
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: redis::Value = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        if pong.clone().extract_error().is_ok() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.connection().get(self.key(key)).await.map_err(classify)
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(classify)
    }

    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.connection())
            .await
            .map_err(classify)?;
        Ok(reply.is_some())
    }

    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
        self.connection()
            .pexpire(self.key(key), ttl)
            .await
            .map_err(classify)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let removed: u64 = self
            .connection()
            .del(self.key(key))
            .await
            .map_err(classify)?;
        Ok(removed > 0)
    }

    pub async fn increment(&self, key: &str, delta: u64, ttl: Duration) -> Result<u64, StoreError> {
        // Redis counters are signed 64-bit.
        let delta = i64::try_from(delta)
            .map_err(|_| StoreError::InvalidArgument(format!("increment {delta} is too large")))?;
        let value: i64 = self
            .increment
            .key(self.key(key))
            .arg(delta)
            .arg(millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(classify)?;
        u64::try_from(value)
            .map_err(|_| StoreError::InvalidArgument(format!("counter {key:?} is negative")))
    }

    pub async fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let delta = i64::try_from(delta)
            .map_err(|_| StoreError::InvalidArgument(format!("decrement {delta} is too large")))?;
        let value: i64 = self
            .decrement
            .key(self.key(key))
            .arg(delta)
            .invoke_async(&mut self.connection())
            .await
            .map_err(classify)?;
        u64::try_from(value)
            .map_err(|_| StoreError::InvalidArgument(format!("counter {key:?} is negative")))
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A refusal of the value (wrong type, not a counter, overflow) is the
/// caller's mistake; anything else (connection refused, timeout, out of
/// memory, loading) means Redis cannot serve the request now.
fn classify(error: redis::RedisError) -> StoreError {
    let detail = error.detail().unwrap_or_default();
    let bad_value = error.code() == Some("WRONGTYPE")
        || (matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ResponseError)
        ) && madx_wire::store::redis_refused_value(detail));
    if bad_value {
        StoreError::InvalidArgument(error.to_string())
    } else {
        unavailable(error)
    }
}

pub(crate) fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}
