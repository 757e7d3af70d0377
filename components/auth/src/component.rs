//! Binds the token rules to the `auth-plugin` world from `wit/`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "auth-plugin",
});

use crate::tokens::{self, AuthFailure, Authority, StoreFailure};
use crate::totp::OtpProfile;
use exports::madx::pusher::auth::{AuthError, Guest, IssuedToken, OtpParams, TokenRequest};
use madx::pusher::types::Claims;
use madx::pusher::{settings, store};

/// The host's store, settings, clock and randomness.
struct Host;

fn store_failure(error: store::StoreError) -> StoreFailure {
    match error {
        store::StoreError::Unavailable(message) => StoreFailure(message),
        store::StoreError::InvalidArgument(message) => {
            StoreFailure(format!("store refused the request: {message}"))
        }
    }
}

impl tokens::Backend for Host {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFailure> {
        store::get(key).map_err(store_failure)
    }
    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreFailure> {
        store::set(key, value, ttl_ms).map_err(store_failure)
    }
    fn set_if_absent(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreFailure> {
        store::set_if_absent(key, value, ttl_ms).map_err(store_failure)
    }
    fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreFailure> {
        store::touch(key, ttl_ms).map_err(store_failure)
    }
    fn delete(&self, key: &str) -> Result<bool, StoreFailure> {
        store::delete(key).map_err(store_failure)
    }
    fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreFailure> {
        store::increment(key, delta, ttl_ms).map_err(store_failure)
    }
    fn setting(&self, name: &str) -> Option<String> {
        settings::get(name)
    }
    fn now_unix_secs(&self) -> u64 {
        // WASI wall clock, provided by the host.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0)
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        // WASI random: the host's cryptographically secure generator. A
        // failure here means the host is broken; trapping fails the call.
        if getrandom::fill(buf).is_err() {
            panic!("WASI random is unavailable");
        }
    }
}

impl From<AuthFailure> for AuthError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::BadRequest(message) => AuthError::BadRequest(message),
            AuthFailure::OtpInvalid => AuthError::OtpInvalid,
            AuthFailure::OtpReused => AuthError::OtpReused,
            AuthFailure::TokenInvalid => AuthError::TokenInvalid,
            AuthFailure::RateLimited { retry_after_secs } => {
                AuthError::RateLimited(retry_after_secs)
            }
            AuthFailure::Unavailable(message) => AuthError::Unavailable(message),
        }
    }
}

fn authority() -> Authority<'static, Host> {
    Authority::new(&Host, OtpProfile::RFC6238_DEFAULT)
}

struct Component;

impl Guest for Component {
    fn issue(request: TokenRequest) -> Result<IssuedToken, AuthError> {
        let request = tokens::Request {
            user_id: request.user_id,
            channels: request.channels,
            publish: request.publish,
            ttl_secs: request.ttl_secs,
        };
        let authority = authority();
        let issued = authority.issue(request)?;
        let profile = authority.profile();
        Ok(IssuedToken {
            access_id: issued.access_id,
            secret_seed: issued.secret_seed,
            otp: OtpParams {
                algorithm: profile.algorithm.name().into(),
                digits: profile.digits,
                period_secs: profile.period_secs,
            },
            expires_in_secs: issued.ttl_secs,
        })
    }

    fn verify(access_id: String, otp: String) -> Result<Claims, AuthError> {
        let grant = authority().verify(&access_id, &otp)?;
        Ok(Claims {
            access_id: grant.access_id,
            user_id: grant.user_id,
            channels: grant.channels,
            publish: grant.publish,
            idle_timeout_secs: grant.ttl_secs,
        })
    }

    fn touch(access_id: String) -> Result<(), AuthError> {
        Ok(authority().touch(&access_id)?)
    }

    fn revoke(access_id: String) -> Result<bool, AuthError> {
        Ok(authority().revoke(&access_id)?)
    }
}

export!(Component);
