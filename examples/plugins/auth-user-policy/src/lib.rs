//! An auth plugin with a policy of its own: the default token rules, but
//! tokens only for user ids that start with the `user_prefix` setting
//! (`user-` when not set). A request without a user id, or for another
//! user, is a bad request.
//!
//! It is what `madx-pusher plugin check` must be able to check: a
//! component that refuses the checker's default request is still correct,
//! given a request its policy accepts (`--user-id user-42`, or the check
//! file in docs/plugins.md).
//!
//! Build: `cargo build -p madx-example-auth-user-policy --target
//! wasm32-wasip2 --profile plugin`.

use madx_auth_core::component::madx::pusher::settings;
use madx_auth_core::component::madx::pusher::types::Claims;
use madx_auth_core::component::{AuthError, DefaultAuth, Guest, IssuedToken, TokenRequest};

/// The prefix every user id must start with when none is configured.
const DEFAULT_PREFIX: &str = "user-";

/// The default component behind a user-id policy.
pub struct UserPolicyAuth;

impl Guest for UserPolicyAuth {
    fn issue(request: TokenRequest) -> Result<IssuedToken, AuthError> {
        let prefix = settings::get("user_prefix").unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        match &request.user_id {
            Some(user_id) if user_id.starts_with(&prefix) => DefaultAuth::issue(request),
            _ => Err(AuthError::BadRequest(format!(
                "tokens are issued only for user ids starting with {prefix:?}"
            ))),
        }
    }

    fn verify(access_id: String, otp: String) -> Result<Claims, AuthError> {
        DefaultAuth::verify(access_id, otp)
    }

    fn touch(access_id: String) -> Result<(), AuthError> {
        DefaultAuth::touch(access_id)
    }

    fn revoke(access_id: String) -> Result<bool, AuthError> {
        DefaultAuth::revoke(access_id)
    }
}

#[cfg(target_arch = "wasm32")]
madx_auth_core::component::export_auth_component!(UserPolicyAuth);
