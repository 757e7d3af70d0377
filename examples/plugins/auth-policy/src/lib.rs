//! An auth component with a policy of its own: the built-in token rules
//! (one use per code, idle expiry, lockouts), 8-digit codes, and tokens
//! only for user ids of the form `u-...`.

use madx_auth_core::component::{AuthComponent, Profile, TokenRequest};
use madx_auth_core::totp::{Algorithm, OtpProfile};

pub struct UsersOnly;

impl Profile for UsersOnly {
    const OTP: OtpProfile = OtpProfile {
        algorithm: Algorithm::Sha1,
        digits: 8,
        period_secs: 30,
    };

    fn check_request(request: &TokenRequest) -> Result<(), String> {
        match request.user_id.as_deref() {
            Some(user_id) if user_id.starts_with("u-") => Ok(()),
            _ => Err("tokens are only issued for user ids that start with u-".into()),
        }
    }
}

/// The component this crate exports.
pub type UsersOnlyAuth = AuthComponent<UsersOnly>;

#[cfg(target_arch = "wasm32")]
madx_auth_core::component::export_auth_component!(UsersOnlyAuth);
