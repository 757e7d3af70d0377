//! The WIT `store` over Redis, key for key and command for command the
//! hosts' Redis store: a plugin key `K` of app `A` and plugin kind `P`
//! lives at `<prefix>:app/<A>/<P>/<K>`; get = `GET`, set = `SET .. PX`,
//! set-if-absent = `SET .. NX PX`, touch = `PEXPIRE`, delete = `DEL`,
//! increment and decrement = the scripts of `madx_wire::scripts`. The
//! arguments are checked by `madx_wire::store` before they reach Redis.

use madx_wire::{scripts, store};

/// One value of a Redis reply, as Spin's `execute` hands it over: nested
/// arrays arrive flattened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Status(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// Somewhere to run Redis commands: Spin's outbound Redis in the
/// component, a recorder in unit tests.
pub trait Redis {
    fn execute(&self, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String>;
}

/// Why an operation failed: the WIT `store-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    Unavailable(String),
    InvalidArgument(String),
}

/// One plugin's keys of one app in the deployment's Redis.
pub struct Store<'a, R> {
    redis: &'a R,
    /// `<prefix>:app/<app>/<kind>/`
    namespace: String,
}

fn unexpected(command: &str, reply: &[Reply]) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected {command} reply {reply:?}"))
}

/// The single integer of a reply.
fn integer(command: &str, reply: &[Reply]) -> Result<i64, StoreError> {
    match reply {
        [Reply::Int(value)] => Ok(*value),
        other => Err(unexpected(command, other)),
    }
}

/// A count for a counter script, within the counters' range.
fn signed(delta: u64) -> Result<String, StoreError> {
    store::check_delta(delta).map_err(StoreError::InvalidArgument)?;
    Ok(delta.to_string())
}

fn ttl(ttl_ms: u64) -> Result<String, StoreError> {
    store::check_ttl_ms(ttl_ms).map_err(StoreError::InvalidArgument)?;
    Ok(ttl_ms.to_string())
}

fn value(value: &[u8]) -> Result<&[u8], StoreError> {
    store::check_value(value).map_err(StoreError::InvalidArgument)?;
    Ok(value)
}

impl<'a, R: Redis> Store<'a, R> {
    pub fn new(redis: &'a R, store_prefix: &str, app_id: &str, plugin_kind: &str) -> Self {
        Store {
            redis,
            namespace: format!(
                "{}{}",
                store::redis_key_prefix(store_prefix),
                store::plugin_namespace(app_id, plugin_kind)
            ),
        }
    }

    fn key(&self, key: &str) -> Result<String, StoreError> {
        store::check_key(key).map_err(StoreError::InvalidArgument)?;
        Ok(format!("{}{key}", self.namespace))
    }

    fn run(&self, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, StoreError> {
        self.redis.execute(command, args).map_err(|error| {
            // Redis refusing the value (not a counter) is the plugin's
            // mistake, as on the hosts; anything else is the backend's.
            if store::redis_refused_value(&error) {
                StoreError::InvalidArgument(format!("redis: {error}"))
            } else {
                StoreError::Unavailable(format!("redis: {error}"))
            }
        })
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(key)?;
        match self.run("GET", &[key.as_bytes()])?.as_slice() {
            [Reply::Nil] => Ok(None),
            [Reply::Bytes(value)] => Ok(Some(value.clone())),
            other => Err(unexpected("GET", other)),
        }
    }

    pub fn set(&self, key: &str, data: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let (key, ttl, data) = (self.key(key)?, ttl(ttl_ms)?, value(data)?);
        match self
            .run("SET", &[key.as_bytes(), data, b"PX", ttl.as_bytes()])?
            .as_slice()
        {
            [Reply::Status(_)] => Ok(()),
            other => Err(unexpected("SET", other)),
        }
    }

    pub fn set_if_absent(&self, key: &str, data: &[u8], ttl_ms: u64) -> Result<bool, StoreError> {
        let (key, ttl, data) = (self.key(key)?, ttl(ttl_ms)?, value(data)?);
        let args: [&[u8]; 5] = [key.as_bytes(), data, b"NX", b"PX", ttl.as_bytes()];
        match self.run("SET", &args)?.as_slice() {
            [Reply::Status(_)] => Ok(true),
            [Reply::Nil] => Ok(false),
            other => Err(unexpected("SET", other)),
        }
    }

    pub fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let (key, ttl) = (self.key(key)?, ttl(ttl_ms)?);
        let reply = self.run("PEXPIRE", &[key.as_bytes(), ttl.as_bytes()])?;
        Ok(integer("PEXPIRE", &reply)? == 1)
    }

    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.key(key)?;
        let reply = self.run("DEL", &[key.as_bytes()])?;
        Ok(integer("DEL", &reply)? > 0)
    }

    pub fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreError> {
        let (key, ttl, delta) = (self.key(key)?, ttl(ttl_ms)?, signed(delta)?);
        let args: [&[u8]; 5] = [
            scripts::INCREMENT.as_bytes(),
            b"1",
            key.as_bytes(),
            delta.as_bytes(),
            ttl.as_bytes(),
        ];
        self.counter(&key, &args)
    }

    pub fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreError> {
        let (key, delta) = (self.key(key)?, signed(delta)?);
        let args: [&[u8]; 4] = [
            scripts::DECREMENT.as_bytes(),
            b"1",
            key.as_bytes(),
            delta.as_bytes(),
        ];
        self.counter(&key, &args)
    }

    fn counter(&self, key: &str, args: &[&[u8]]) -> Result<u64, StoreError> {
        let reply = self.run("EVAL", args)?;
        let value = match reply.as_slice() {
            [Reply::Int(value)] => Some(*value),
            // The scripts read a counter back as text (Lua's numbers are
            // doubles, short of a counter's 63 bits).
            [Reply::Bytes(text)] => std::str::from_utf8(text)
                .ok()
                .and_then(|text| text.parse::<i64>().ok()),
            _ => None,
        }
        .ok_or_else(|| unexpected("EVAL", &reply))?;
        u64::try_from(value)
            .map_err(|_| StoreError::InvalidArgument(format!("counter {key:?} is negative")))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::*;

    /// Replies (or errors) queued in advance; every command recorded.
    #[derive(Default)]
    struct Recorder {
        replies: RefCell<VecDeque<Result<Vec<Reply>, String>>>,
        commands: RefCell<Vec<String>>,
    }

    impl Recorder {
        fn reply(&self, reply: Vec<Reply>) {
            self.replies.borrow_mut().push_back(Ok(reply));
        }

        fn fail(&self, error: &str) {
            self.replies.borrow_mut().push_back(Err(error.to_owned()));
        }
    }

    impl Redis for Recorder {
        fn execute(&self, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String> {
            let mut line = command.to_owned();
            for arg in args {
                line.push(' ');
                line.push_str(&String::from_utf8_lossy(arg));
            }
            self.commands.borrow_mut().push(line);
            self.replies
                .borrow_mut()
                .pop_front()
                .unwrap_or_else(|| Err("connection refused".to_owned()))
        }
    }

    #[test]
    fn keys_are_the_hosts_and_commands_are_atomic_ones() {
        let redis = Recorder::default();
        let store = Store::new(&redis, "madx", "alpha", "auth");
        redis.reply(vec![Reply::Status("OK".into())]);
        assert_eq!(store.set_if_absent("token:abc", b"{}", 7_200_000), Ok(true));
        redis.reply(vec![Reply::Nil]);
        assert_eq!(
            store.set_if_absent("token:abc", b"{}", 7_200_000),
            Ok(false)
        );
        redis.reply(vec![Reply::Int(1)]);
        assert_eq!(store.delete("token:abc"), Ok(true));
        redis.reply(vec![Reply::Bytes(b"3".to_vec())]);
        assert_eq!(store.increment("fails:abc", 1, 300_000), Ok(3));
        let commands = redis.commands.borrow();
        assert_eq!(
            commands[0],
            "SET madx:app/alpha/auth/token:abc {} NX PX 7200000"
        );
        assert_eq!(commands[2], "DEL madx:app/alpha/auth/token:abc");
        assert!(commands[3].starts_with("EVAL "));
        assert!(commands[3].ends_with(" 1 madx:app/alpha/auth/fails:abc 1 300000"));
    }

    #[test]
    fn arguments_are_refused_before_redis() {
        let redis = Recorder::default();
        let store = Store::new(&redis, "madx", "alpha", "router");
        let refused = |result: Result<(), StoreError>| {
            assert!(matches!(result, Err(StoreError::InvalidArgument(_))));
        };
        refused(store.get("").map(drop));
        refused(store.set("k", b"v", 0));
        refused(store.set("k", &vec![0; store::MAX_VALUE_BYTES + 1], 1));
        refused(store.touch("k", store::MAX_TTL_MS + 1).map(drop));
        refused(store.increment("k", u64::MAX, 1).map(drop));
        assert!(redis.commands.borrow().is_empty());
    }

    #[test]
    fn redis_failures_are_unavailable() {
        let redis = Recorder::default();
        let store = Store::new(&redis, "madx", "alpha", "auth");
        assert!(matches!(store.get("k"), Err(StoreError::Unavailable(_))));
        redis.reply(vec![Reply::Status("OK".into())]);
        assert!(matches!(store.get("k"), Err(StoreError::Unavailable(_))));
    }

    /// Redis refusing a value is the plugin's mistake, as on the hosts.
    #[test]
    fn a_value_redis_cannot_count_is_an_invalid_argument() {
        let redis = Recorder::default();
        let store = Store::new(&redis, "madx", "alpha", "auth");
        redis.fail("ResponseError: value is not an integer or out of range");
        assert!(matches!(
            store.increment("k", 1, 1_000),
            Err(StoreError::InvalidArgument(_))
        ));
        redis.fail("WRONGTYPE: Operation against a key holding the wrong kind of value");
        assert!(matches!(
            store.decrement("k", 1),
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
