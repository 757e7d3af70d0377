//! The auth rules' store at the edge: the hosts' Redis store backend, key
//! for key and command for command, so a token written here is the token a
//! host reads.
//!
//! A plugin key `K` of app `A` lives at `<prefix>:app/<A>/auth/<K>` (the
//! host's `Namespace` plus `RedisStore` prefix). get = `GET`, set =
//! `SET .. PX`, set-if-absent = `SET .. NX PX`, touch = `PEXPIRE`, delete =
//! `DEL`, increment and decrement = `host/src/store/{increment,decrement}.lua`. The arguments are
//! checked as the host's `Namespace` checks them before they reach Redis.

use madx_auth_core::tokens::{Backend, StoreFailure};

use crate::platform::{Platform, Reply};

/// The host's `store::MAX_KEY_BYTES`.
const MAX_KEY_BYTES: usize = 512;
/// The host's `store::MAX_VALUE_BYTES`.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The host's `store::MAX_TTL` (30 days), in milliseconds.
const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// The same scripts the hosts run for `increment` and `decrement`.
const INCREMENT: &str = include_str!("../../../host/src/store/increment.lua");
const DECREMENT: &str = include_str!("../../../host/src/store/decrement.lua");

/// One app's auth keys in the shared Redis.
pub struct AuthStore<'a, P> {
    platform: &'a P,
    redis_url: &'a str,
    /// `<prefix>:app/<app>/auth/`
    namespace: String,
    /// Idle timeout of a token issued without `ttl`, as the hosts'
    /// `[plugins.auth.settings] default_ttl_secs` (`None`: the rules' default).
    default_ttl_secs: Option<String>,
}

impl<'a, P: Platform> AuthStore<'a, P> {
    pub fn new(platform: &'a P, redis_url: &'a str, prefix: &str, app_id: &str) -> Self {
        // Only issue reads a setting, and only this one; the lockout settings
        // matter where codes are verified, on the hosts.
        let default_ttl_secs = platform.variable("auth_default_ttl_secs").ok().flatten();
        AuthStore {
            platform,
            redis_url,
            namespace: format!("{prefix}:app/{app_id}/auth/"),
            default_ttl_secs,
        }
    }

    fn key(&self, key: &str) -> Result<String, StoreFailure> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(refused(format!("keys are 1 to {MAX_KEY_BYTES} bytes long")));
        }
        Ok(format!("{}{key}", self.namespace))
    }

    fn run(&self, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, StoreFailure> {
        self.platform
            .redis(self.redis_url, command, args)
            .map_err(|error| StoreFailure(format!("redis: {error}")))
    }
}

fn refused(message: String) -> StoreFailure {
    StoreFailure(format!("store refused the request: {message}"))
}

fn checked_ttl(ttl_ms: u64) -> Result<String, StoreFailure> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(refused(format!(
            "ttl-ms must be between 1 and {MAX_TTL_MS}"
        )));
    }
    Ok(ttl_ms.to_string())
}

fn check_value(value: &[u8]) -> Result<(), StoreFailure> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(refused(format!(
            "values are at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn unexpected(command: &str, reply: &[Reply]) -> StoreFailure {
    StoreFailure(format!("redis: unexpected {command} reply {reply:?}"))
}

/// The single integer of a reply.
fn integer(command: &str, reply: &[Reply]) -> Result<i64, StoreFailure> {
    match reply {
        [Reply::Int(value)] => Ok(*value),
        other => Err(unexpected(command, other)),
    }
}

impl<P: Platform> Backend for AuthStore<'_, P> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFailure> {
        let key = self.key(key)?;
        match self.run("GET", &[key.as_bytes()])?.as_slice() {
            [Reply::Nil] => Ok(None),
            [Reply::Bytes(value)] => Ok(Some(value.clone())),
            other => Err(unexpected("GET", other)),
        }
    }

    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreFailure> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        check_value(value)?;
        match self
            .run("SET", &[key.as_bytes(), value, b"PX", ttl.as_bytes()])?
            .as_slice()
        {
            [Reply::Status(_)] => Ok(()),
            other => Err(unexpected("SET", other)),
        }
    }

    fn set_if_absent(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreFailure> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        check_value(value)?;
        let args: [&[u8]; 5] = [key.as_bytes(), value, b"NX", b"PX", ttl.as_bytes()];
        match self.run("SET", &args)?.as_slice() {
            [Reply::Status(_)] => Ok(true),
            [Reply::Nil] => Ok(false),
            other => Err(unexpected("SET", other)),
        }
    }

    fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreFailure> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        let reply = self.run("PEXPIRE", &[key.as_bytes(), ttl.as_bytes()])?;
        Ok(integer("PEXPIRE", &reply)? == 1)
    }

    fn delete(&self, key: &str) -> Result<bool, StoreFailure> {
        let key = self.key(key)?;
        let reply = self.run("DEL", &[key.as_bytes()])?;
        Ok(integer("DEL", &reply)? > 0)
    }

    fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreFailure> {
        let (key, ttl) = (self.key(key)?, checked_ttl(ttl_ms)?);
        // Redis counters are signed 64-bit.
        let delta =
            i64::try_from(delta).map_err(|_| refused(format!("increment {delta} is too large")))?;
        let delta = delta.to_string();
        let args: [&[u8]; 5] = [
            INCREMENT.as_bytes(),
            b"1",
            key.as_bytes(),
            delta.as_bytes(),
            ttl.as_bytes(),
        ];
        let value = integer("EVAL", &self.run("EVAL", &args)?)?;
        u64::try_from(value).map_err(|_| refused(format!("counter {key:?} is negative")))
    }

    fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreFailure> {
        let key = self.key(key)?;
        let delta =
            i64::try_from(delta).map_err(|_| refused(format!("decrement {delta} is too large")))?;
        let delta = delta.to_string();
        let args: [&[u8]; 4] = [DECREMENT.as_bytes(), b"1", key.as_bytes(), delta.as_bytes()];
        let value = integer("EVAL", &self.run("EVAL", &args)?)?;
        u64::try_from(value).map_err(|_| refused(format!("counter {key:?} is negative")))
    }

    fn setting(&self, name: &str) -> Option<String> {
        match name {
            "default_ttl_secs" => self.default_ttl_secs.clone(),
            _ => None,
        }
    }

    fn now_unix_secs(&self) -> u64 {
        // WASI wall clock, provided by Spin.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0)
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        fill_random(buf);
    }
}

/// WASI random: Spin's cryptographically secure generator. A failure means
/// the runtime is broken; trapping fails the request.
#[cfg(target_arch = "wasm32")]
fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        panic!("WASI random is unavailable");
    }
}

/// Natively (unit tests) the bytes only need to differ between calls.
#[cfg(not(target_arch = "wasm32"))]
fn fill_random(buf: &mut [u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    for (index, byte) in buf.iter_mut().enumerate() {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        *byte = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (8 * (index % 8))) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakePlatform;

    #[test]
    fn keys_are_the_hosts_and_commands_are_atomic_ones() {
        let platform = FakePlatform::with_variables(&[]);
        platform.reply(vec![Reply::Status("OK".into())]);
        let store = AuthStore::new(&platform, "redis://r", "madx", "alpha");
        assert!(store.set_if_absent("token:abc", b"{}", 7_200_000).unwrap());
        platform.reply(vec![Reply::Nil]);
        assert!(!store.set_if_absent("token:abc", b"{}", 7_200_000).unwrap());
        platform.reply(vec![Reply::Int(1)]);
        assert!(store.delete("token:abc").unwrap());
        let commands = platform.commands();
        assert_eq!(
            commands[0],
            "SET madx:app/alpha/auth/token:abc {} NX PX 7200000"
        );
        assert_eq!(commands[2], "DEL madx:app/alpha/auth/token:abc");
    }

    #[test]
    fn arguments_are_checked_before_redis() {
        let platform = FakePlatform::with_variables(&[]);
        let store = AuthStore::new(&platform, "redis://r", "madx", "alpha");
        assert!(store.get("").is_err());
        assert!(store.set("k", b"v", 0).is_err());
        assert!(store.set("k", &vec![0; MAX_VALUE_BYTES + 1], 1).is_err());
        assert!(store.touch("k", MAX_TTL_MS + 1).is_err());
        assert!(platform.commands().is_empty());
    }

    #[test]
    fn only_the_issue_setting_is_read() {
        let platform = FakePlatform::with_variables(&[("auth_default_ttl_secs", "60")]);
        let store = AuthStore::new(&platform, "redis://r", "madx", "alpha");
        assert_eq!(store.setting("default_ttl_secs").as_deref(), Some("60"));
        assert_eq!(store.setting("max_failures"), None);
    }
}
