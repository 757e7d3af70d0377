//! Binds the token rules to the `auth-plugin` world from `wit/`.
//!
//! [`AuthComponent`] implements the world for any [`Profile`]; a crate
//! exports it with [`export_auth_component!`].
//! The default component does so with [`Rfc6238`]; a variant with other
//! code parameters is a few lines (see `examples/plugins/auth-sha256`), and
//! a deployment's own rule for who gets a token is one more method
//! ([`Profile::check_request`], see `examples/plugins/auth-policy`, a crate
//! outside this workspace).

use std::marker::PhantomData;

wit_bindgen::generate!({
    path: "../../wit",
    world: "auth-plugin",
    pub_export_macro: true,
    export_macro_name: "export_auth_component",
    default_bindings_module: "madx_auth_core::component",
});

use crate::tokens::{self, AuthFailure, Authority, StoreFailure};
use crate::totp::OtpProfile;
pub use exports::madx::pusher::auth::{AuthError, Guest, IssuedToken, OtpParams, TokenRequest};
pub use madx::pusher::types::Claims;
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

    fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreFailure> {
        store::decrement(key, delta).map_err(store_failure)
    }
    fn setting(&self, name: &str) -> Option<String> {
        settings::get(name)
    }
    // The clock and randomness come straight from their two WASI
    // interfaces, not through the standard library, so a component built
    // for wasm32-unknown-unknown imports these two and no other part of
    // WASI (each import is wired into every fresh instance).
    fn now_unix_secs(&self) -> u64 {
        wasip2::clocks::wall_clock::now().seconds
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        // The host's cryptographically secure generator.
        let random = wasip2::random::random::get_random_bytes(buf.len() as u64);
        buf.copy_from_slice(&random);
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

/// What makes one auth component differ from another: the code parameters
/// it announces and checks, and an optional rule for token requests.
pub trait Profile: 'static {
    const OTP: OtpProfile;

    /// A deployment's own rule, checked before a token is issued (after the
    /// contract's own checks: ttl bounds, user id length, glob syntax).
    /// `Err(text)` refuses the request with `bad-request(text)`, which the
    /// app sees as HTTP 400 `invalid_request` with that text. The default
    /// accepts every request.
    fn check_request(request: &TokenRequest) -> Result<(), String> {
        let _ = request;
        Ok(())
    }
}

/// The contract's default: HMAC-SHA1, 6 digits, 30 s.
pub struct Rfc6238;

impl Profile for Rfc6238 {
    const OTP: OtpProfile = OtpProfile::RFC6238_DEFAULT;
}

/// The auth world implemented with the token rules of [`tokens`] and the
/// code parameters of `P`.
pub struct AuthComponent<P>(PhantomData<P>);

fn authority<P: Profile>() -> Authority<'static, Host> {
    Authority::new(&Host, P::OTP)
}

impl<P: Profile> Guest for AuthComponent<P> {
    fn issue(request: TokenRequest) -> Result<IssuedToken, AuthError> {
        let authority = authority::<P>();
        let rules_request = tokens::Request {
            user_id: request.user_id.clone(),
            channels: request.channels.clone(),
            publish: request.publish.clone(),
            ttl_secs: request.ttl_secs,
        };
        // The contract's checks first, so a policy sees only sound requests.
        authority.check_request(&rules_request)?;
        P::check_request(&request).map_err(AuthError::BadRequest)?;
        let issued = authority.issue(rules_request)?;
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
        let grant = authority::<P>().verify(&access_id, &otp)?;
        Ok(Claims {
            access_id: grant.access_id,
            user_id: grant.user_id,
            channels: grant.channels,
            publish: grant.publish,
            idle_timeout_secs: grant.ttl_secs,
        })
    }

    fn touch(access_id: String) -> Result<(), AuthError> {
        Ok(authority::<P>().touch(&access_id)?)
    }

    fn revoke(access_id: String) -> Result<bool, AuthError> {
        Ok(authority::<P>().revoke(&access_id)?)
    }
}

/// The default auth component (`components/auth` exports it).
pub type DefaultAuth = AuthComponent<Rfc6238>;
