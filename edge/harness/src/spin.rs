//! Spin's host interfaces as the edge component uses them: component
//! variables (`fermyon:spin/variables@2.0.0`) and outbound Redis
//! (`fermyon:spin/redis@2.0.0`), with Spin's behaviour: variables resolved
//! from the manifest, Redis addresses checked against
//! `allowed_outbound_hosts`, one multiplexed connection per `open`, and
//! `execute` replies flattened to a list.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use wasmtime::component::{Resource, ResourceTable};

use crate::manifest::{Resolved, check_variable_name};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "edge-host",
        imports: { default: async },
        with: {
            "fermyon:spin/redis.connection": super::Connection,
        },
    });
}

pub use bindings::EdgeHost;
use bindings::fermyon::spin::{redis as wit_redis, variables as wit_variables};

/// An open outbound Redis connection, in the instance's resource table.
pub struct Connection(MultiplexedConnection);

/// The Spin part of one instance's state.
pub struct SpinState {
    pub component: Arc<Resolved>,
    pub table: ResourceTable,
}

/// Put the two interfaces in `linker`; `get` finds the [`SpinState`] in
/// the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut SpinState,
) -> wasmtime::Result<()> {
    wit_variables::add_to_linker::<T, wasmtime::component::HasSelf<SpinState>>(linker, get)?;
    wit_redis::add_to_linker::<T, wasmtime::component::HasSelf<SpinState>>(linker, get)?;
    Ok(())
}

impl wit_variables::Host for SpinState {
    async fn get(&mut self, name: String) -> Result<String, wit_variables::Error> {
        check_variable_name(&name)
            .map_err(|error| wit_variables::Error::InvalidName(error.to_string()))?;
        self.component.variables.get(&name).cloned().ok_or_else(|| {
            wit_variables::Error::Undefined(format!(
                "no variable for {:?}.{name:?}",
                self.component.name
            ))
        })
    }
}

impl wit_redis::Host for SpinState {}

impl SpinState {
    fn connection(
        &mut self,
        connection: &Resource<Connection>,
    ) -> Result<MultiplexedConnection, wit_redis::Error> {
        self.table
            .get(connection)
            .map(|connection| connection.0.clone())
            .map_err(|error| wit_redis::Error::Other(error.to_string()))
    }
}

fn other(error: impl std::fmt::Display) -> wit_redis::Error {
    wit_redis::Error::Other(error.to_string())
}

impl wit_redis::HostConnection for SpinState {
    async fn open(&mut self, address: String) -> Result<Resource<Connection>, wit_redis::Error> {
        if !is_allowed(&self.component.allowed_outbound_hosts, &address) {
            return Err(wit_redis::Error::InvalidAddress);
        }
        let client =
            redis::Client::open(address.as_str()).map_err(|_| wit_redis::Error::InvalidAddress)?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(other)?;
        self.table
            .push(Connection(connection))
            .map_err(|_| wit_redis::Error::TooManyConnections)
    }

    async fn publish(
        &mut self,
        connection: Resource<Connection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<(), wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<()>(&mut connection)
            .await
            .map_err(other)
    }

    async fn get(
        &mut self,
        connection: Resource<Connection>,
        key: String,
    ) -> Result<Option<Vec<u8>>, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(other)
    }

    async fn set(
        &mut self,
        connection: Resource<Connection>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut connection)
            .await
            .map_err(other)
    }

    async fn incr(
        &mut self,
        connection: Resource<Connection>,
        key: String,
    ) -> Result<i64, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("INCRBY")
            .arg(key)
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(other)
    }

    async fn del(
        &mut self,
        connection: Resource<Connection>,
        keys: Vec<String>,
    ) -> Result<u32, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .map_err(other)
    }

    async fn sadd(
        &mut self,
        connection: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("SADD")
            .arg(key)
            .arg(values)
            .query_async(&mut connection)
            .await
            .map_err(other)
    }

    async fn smembers(
        &mut self,
        connection: Resource<Connection>,
        key: String,
    ) -> Result<Vec<String>, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(other)
    }

    async fn srem(
        &mut self,
        connection: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        redis::cmd("SREM")
            .arg(key)
            .arg(values)
            .query_async(&mut connection)
            .await
            .map_err(other)
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        command: String,
        arguments: Vec<wit_redis::RedisParameter>,
    ) -> Result<Vec<wit_redis::RedisResult>, wit_redis::Error> {
        let mut connection = self.connection(&connection)?;
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                wit_redis::RedisParameter::Int64(value) => cmd.arg(value),
                wit_redis::RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        let value: redis::Value = cmd.query_async(&mut connection).await.map_err(other)?;
        let mut results = Vec::new();
        flatten(&mut results, value)?;
        Ok(results)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

/// A reply as Spin returns it from `execute`: arrays (and sets) flattened
/// into one list, in order; maps and the other RESP3 types are refused.
fn flatten(
    results: &mut Vec<wit_redis::RedisResult>,
    value: redis::Value,
) -> Result<(), wit_redis::Error> {
    use wit_redis::RedisResult;
    match value {
        redis::Value::Nil => results.push(RedisResult::Nil),
        redis::Value::Int(value) => results.push(RedisResult::Int64(value)),
        redis::Value::BulkString(bytes) => results.push(RedisResult::Binary(bytes)),
        redis::Value::SimpleString(status) => results.push(RedisResult::Status(status)),
        redis::Value::Okay => results.push(RedisResult::Status("OK".to_owned())),
        redis::Value::Array(values) | redis::Value::Set(values) => {
            for value in values {
                flatten(results, value)?;
            }
        }
        redis::Value::ServerError(error) => return Err(other(format!("{error:?}"))),
        other_value => {
            return Err(other(format!(
                "could not convert the Redis response {other_value:?}"
            )));
        }
    }
    Ok(())
}

/// Spin's `allowed_outbound_hosts` check for a Redis address: the scheme,
/// host and port must match an entry (`*` matches any host or port; a
/// missing port is Redis's 6379).
pub fn is_allowed(allowed: &[String], address: &str) -> bool {
    let Some(wanted) = Endpoint::parse(address) else {
        return false;
    };
    allowed.iter().any(|entry| {
        Endpoint::parse(entry).is_some_and(|entry| {
            entry.scheme == wanted.scheme
                && (entry.host == "*" || entry.host.eq_ignore_ascii_case(&wanted.host))
                && (entry.port == "*" || entry.port == wanted.port)
        })
    })
}

struct Endpoint {
    scheme: String,
    host: String,
    port: String,
}

impl Endpoint {
    /// `scheme://[userinfo@]host[:port][/path]`.
    fn parse(url: &str) -> Option<Endpoint> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split('/').next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => (host, port),
            _ => (host_port, "6379"),
        };
        if host.is_empty() || port.is_empty() {
            return None;
        }
        Some(Endpoint {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_owned(),
            port: port.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_addresses_are_checked_like_spin() {
        let allowed = vec!["redis://127.0.0.1:6380".to_owned()];
        assert!(is_allowed(&allowed, "redis://127.0.0.1:6380"));
        assert!(is_allowed(&allowed, "redis://:pw@127.0.0.1:6380/0"));
        assert!(!is_allowed(&allowed, "redis://127.0.0.1:6379"));
        assert!(!is_allowed(&allowed, "rediss://127.0.0.1:6380"));
        assert!(!is_allowed(&allowed, "redis://10.0.0.1:6380"));
        assert!(!is_allowed(&[], "redis://127.0.0.1:6380"));
        assert!(is_allowed(&["redis://*:*".to_owned()], "redis://h:1"));
        assert!(is_allowed(&["redis://h".to_owned()], "redis://h:6379"));
    }
}
