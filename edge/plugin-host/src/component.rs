//! The `plugin-host` world (`edge/wit/edge.wit`) over Spin's outbound Redis
//! (`fermyon:spin/redis@2.0.0`) and variables (`fermyon:spin/variables@2.0.0`).
//!
//! Spin gives each request a fresh instance of the composed component, so
//! the scope and the Redis connection live for one request.

use std::cell::RefCell;

use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::variables;

use crate::store::{Redis, Reply, Store, StoreError};

wit_bindgen::generate!({
    path: ["../../wit", "../wit"],
    world: "madx:edge/plugin-host",
    generate_all,
});

use exports::madx::edge::scope::{self, PluginKind};
use exports::madx::pusher::{settings, store as wit_store};

/// The app and plugin the next calls serve (`scope.enter`).
struct Scope {
    app_id: String,
    kind: &'static str,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
    static REDIS: SpinRedis = const { SpinRedis { connection: RefCell::new(None) } };
}

/// Spin's outbound Redis at the address of the `redis_url` variable; one
/// connection per instance.
struct SpinRedis {
    connection: RefCell<Option<Connection>>,
}

impl Redis for SpinRedis {
    fn execute(&self, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String> {
        let mut slot = self.connection.borrow_mut();
        let connection = match slot.take() {
            Some(connection) => connection,
            None => {
                let address = variable("redis_url")?
                    .ok_or_else(|| "the variable redis_url is not set".to_owned())?;
                Connection::open(&address).map_err(describe)?
            }
        };
        let arguments: Vec<RedisParameter> = args
            .iter()
            .map(|arg| RedisParameter::Binary(arg.to_vec()))
            .collect();
        let result = connection.execute(command, &arguments);
        *slot = Some(connection);
        Ok(result
            .map_err(describe)?
            .into_iter()
            .map(|result| match result {
                RedisResult::Nil => Reply::Nil,
                RedisResult::Status(status) => Reply::Status(status),
                RedisResult::Int64(value) => Reply::Int(value),
                RedisResult::Binary(bytes) => Reply::Bytes(bytes),
            })
            .collect())
    }
}

fn describe(error: spin_sdk::redis::Error) -> String {
    use spin_sdk::redis::Error;
    match error {
        Error::InvalidAddress => "invalid address (is it in allowed_outbound_hosts?)".to_owned(),
        Error::TooManyConnections => "too many connections".to_owned(),
        Error::TypeError => "unexpected value type".to_owned(),
        Error::Other(message) => message,
    }
}

/// A component variable; `None` when the manifest does not define it.
fn variable(name: &str) -> Result<Option<String>, String> {
    match variables::get(name) {
        Ok(value) => Ok(Some(value)),
        Err(variables::Error::Undefined(_)) => Ok(None),
        Err(error) => Err(format!("{error:?}")),
    }
}

/// Run `operation` on the store of the scope's app and plugin.
fn with_store<T>(
    operation: impl FnOnce(&Store<'_, SpinRedis>) -> Result<T, StoreError>,
) -> Result<T, wit_store::StoreError> {
    let (app_id, kind) = SCOPE
        .with_borrow(|scope| {
            scope
                .as_ref()
                .map(|scope| (scope.app_id.clone(), scope.kind))
        })
        .ok_or_else(|| {
            wit_store::StoreError::Unavailable("no app in scope (an edge bug)".to_owned())
        })?;
    let prefix = variable("store_prefix")
        .map_err(wit_store::StoreError::Unavailable)?
        .unwrap_or_else(|| "madx".to_owned());
    REDIS
        .with(|redis| operation(&Store::new(redis, &prefix, &app_id, kind)))
        .map_err(|error| match error {
            StoreError::Unavailable(message) => wit_store::StoreError::Unavailable(message),
            StoreError::InvalidArgument(message) => wit_store::StoreError::InvalidArgument(message),
        })
}

struct PluginHost;

impl scope::Guest for PluginHost {
    fn enter(app_id: String, plugin: PluginKind) {
        let kind = match plugin {
            PluginKind::Auth => "auth",
            PluginKind::Router => "router",
        };
        SCOPE.set(Some(Scope { app_id, kind }));
    }
}

impl wit_store::Guest for PluginHost {
    fn get(key: String) -> Result<Option<Vec<u8>>, wit_store::StoreError> {
        with_store(|store| store.get(&key))
    }

    fn set(key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), wit_store::StoreError> {
        with_store(|store| store.set(&key, &value, ttl_ms))
    }

    fn set_if_absent(
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<bool, wit_store::StoreError> {
        with_store(|store| store.set_if_absent(&key, &value, ttl_ms))
    }

    fn touch(key: String, ttl_ms: u64) -> Result<bool, wit_store::StoreError> {
        with_store(|store| store.touch(&key, ttl_ms))
    }

    fn delete(key: String) -> Result<bool, wit_store::StoreError> {
        with_store(|store| store.delete(&key))
    }

    fn increment(key: String, delta: u64, ttl_ms: u64) -> Result<u64, wit_store::StoreError> {
        with_store(|store| store.increment(&key, delta, ttl_ms))
    }

    fn decrement(key: String, delta: u64) -> Result<u64, wit_store::StoreError> {
        with_store(|store| store.decrement(&key, delta))
    }
}

impl settings::Guest for PluginHost {
    fn get(name: String) -> Option<String> {
        let kind = SCOPE.with_borrow(|scope| scope.as_ref().map(|scope| scope.kind))?;
        // An unreadable variable is an absent setting: the plugin applies
        // its default, as with a host whose config leaves it out.
        variable(&crate::setting_variable(kind, &name)?)
            .ok()
            .flatten()
    }
}

export!(PluginHost);
