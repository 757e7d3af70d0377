//! A [`Platform`] for unit tests: variables from a table, Redis replies
//! queued in advance, every command recorded, and the built-in plugins'
//! rules linked natively in place of the composed `.wasm` plugins (the
//! harness tests in `edge/harness` run the real composition).
//!
//! The auth rules write through the edge plugin host's store
//! (`madx-edge-plugin-host`), so the recorded commands are the keys and
//! commands the composed component sends.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use madx_auth_core::tokens::{self, AuthFailure, Authority, Backend, StoreFailure};
use madx_auth_core::totp::OtpProfile;
use madx_edge_plugin_host::store::{self as plugin_store, Redis, Store};
use madx_router::rules;

use crate::broker::Target;
use crate::platform::{AuthError, IssuedToken, Platform, Reply, RouteError, TokenRequest};

pub struct FakePlatform {
    variables: HashMap<String, String>,
    replies: RefCell<VecDeque<Vec<Reply>>>,
    commands: RefCell<Vec<String>>,
}

impl FakePlatform {
    pub fn with_variables(variables: &[(&str, &str)]) -> FakePlatform {
        FakePlatform {
            variables: variables
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            replies: RefCell::default(),
            commands: RefCell::default(),
        }
    }

    pub fn set_variable(&mut self, name: &str, value: &str) {
        self.variables.insert(name.to_owned(), value.to_owned());
    }

    /// Queue the reply to the next Redis command.
    pub fn reply(&self, reply: Vec<Reply>) {
        self.replies.borrow_mut().push_back(reply);
    }

    /// Every command so far, its arguments joined by spaces.
    pub fn commands(&self) -> Vec<String> {
        self.commands.borrow().clone()
    }

    /// The auth rules over the plugin host's store for `app_id`.
    fn with_auth<T>(
        &self,
        app_id: &str,
        call: impl FnOnce(&Authority<'_, AuthBackend<'_>>) -> Result<T, AuthFailure>,
    ) -> Result<T, AuthError> {
        let prefix = self
            .variables
            .get("store_prefix")
            .map_or("madx", String::as_str);
        let backend = AuthBackend {
            store: Store::new(self, prefix, app_id, "auth"),
            default_ttl_secs: self.variables.get("auth_default_ttl_secs").cloned(),
        };
        call(&Authority::new(&backend, OtpProfile::RFC6238_DEFAULT)).map_err(
            |failure| match failure {
                AuthFailure::BadRequest(message) => AuthError::BadRequest(message),
                AuthFailure::OtpInvalid | AuthFailure::OtpReused => AuthError::OtpRefused,
                AuthFailure::TokenInvalid => AuthError::TokenInvalid,
                AuthFailure::RateLimited { retry_after_secs } => {
                    AuthError::RateLimited(retry_after_secs)
                }
                AuthFailure::Unavailable(message) => AuthError::Unavailable(message),
            },
        )
    }
}

impl Redis for FakePlatform {
    fn execute(&self, command: &str, args: &[&[u8]]) -> Result<Vec<plugin_store::Reply>, String> {
        let replies = Platform::redis(self, "redis://fake", command, args)?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Nil => plugin_store::Reply::Nil,
                Reply::Status(status) => plugin_store::Reply::Status(status),
                Reply::Int(value) => plugin_store::Reply::Int(value),
                Reply::Bytes(bytes) => plugin_store::Reply::Bytes(bytes),
            })
            .collect())
    }
}

/// The auth rules' backend: the plugin host's store and settings.
struct AuthBackend<'a> {
    store: Store<'a, FakePlatform>,
    default_ttl_secs: Option<String>,
}

fn failure(error: plugin_store::StoreError) -> StoreFailure {
    StoreFailure(format!("{error:?}"))
}

impl Backend for AuthBackend<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFailure> {
        self.store.get(key).map_err(failure)
    }
    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreFailure> {
        self.store.set(key, value, ttl_ms).map_err(failure)
    }
    fn set_if_absent(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreFailure> {
        self.store
            .set_if_absent(key, value, ttl_ms)
            .map_err(failure)
    }
    fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreFailure> {
        self.store.touch(key, ttl_ms).map_err(failure)
    }
    fn delete(&self, key: &str) -> Result<bool, StoreFailure> {
        self.store.delete(key).map_err(failure)
    }
    fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreFailure> {
        self.store.increment(key, delta, ttl_ms).map_err(failure)
    }
    fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreFailure> {
        self.store.decrement(key, delta).map_err(failure)
    }
    fn setting(&self, name: &str) -> Option<String> {
        (name == "default_ttl_secs")
            .then(|| self.default_ttl_secs.clone())
            .flatten()
    }
    fn now_unix_secs(&self) -> u64 {
        1_800_000_000
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        for (index, byte) in buf.iter_mut().enumerate() {
            *byte = index as u8;
        }
    }
}

impl Platform for FakePlatform {
    fn variable(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.variables.get(name).cloned())
    }

    fn redis(&self, _address: &str, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String> {
        let mut line = command.to_owned();
        for arg in args {
            line.push(' ');
            line.push_str(&String::from_utf8_lossy(arg));
        }
        self.commands.borrow_mut().push(line);
        self.replies
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| "connection refused".to_owned())
    }

    fn issue_token(&self, app_id: &str, request: TokenRequest) -> Result<IssuedToken, AuthError> {
        let issued = self.with_auth(app_id, |authority| {
            authority.issue(tokens::Request {
                user_id: request.user_id,
                channels: request.channels,
                publish: request.publish,
                ttl_secs: request.ttl_secs,
            })
        })?;
        let profile = OtpProfile::RFC6238_DEFAULT;
        Ok(IssuedToken {
            access_id: issued.access_id,
            secret_seed: issued.secret_seed,
            algorithm: profile.algorithm.name().to_owned(),
            digits: profile.digits,
            period_secs: profile.period_secs,
            expires_in_secs: issued.ttl_secs,
        })
    }

    fn revoke_token(&self, app_id: &str, access_id: &str) -> Result<bool, AuthError> {
        self.with_auth(app_id, |authority| authority.revoke(access_id))
    }

    /// The built-in router's `route-publish`: the target as named, once its
    /// name is valid.
    fn route_publish(
        &self,
        _app_id: &str,
        target: &Target,
        event: &str,
    ) -> Result<Vec<Target>, RouteError> {
        rules::validate_event(event).map_err(RouteError::Invalid)?;
        match target {
            Target::Channel(channel) => {
                rules::validate_channel(channel).map_err(RouteError::InvalidChannel)?
            }
            Target::User(id) | Target::Token(id) => {
                rules::validate_id(id).map_err(RouteError::Invalid)?
            }
        }
        Ok(vec![target.clone()])
    }
}
