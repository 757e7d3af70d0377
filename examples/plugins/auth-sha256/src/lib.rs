//! An auth plugin for deployments that want stronger codes than the
//! contract's default: HMAC-SHA256, 8 digits, 60 s steps. Token rules (one
//! use per code, idle expiry, lockout after wrong codes) are the default
//! component's; only the code parameters change, and the token response
//! announces them so clients follow.
//!
//! Build: `cargo build -p madx-example-auth-sha256 --target wasm32-wasip2
//! --profile plugin`, then `madx-pusher serve --auth-component
//! target/wasm32-wasip2/plugin/madx_example_auth_sha256.wasm`.

use madx_auth_core::component::{AuthComponent, Profile};
use madx_auth_core::totp::{Algorithm, OtpProfile};

/// HMAC-SHA256, 8 digits, 60 s steps.
pub struct Sha256EightDigits;

impl Profile for Sha256EightDigits {
    const OTP: OtpProfile = OtpProfile {
        algorithm: Algorithm::Sha256,
        digits: 8,
        period_secs: 60,
    };
}

/// The component this crate exports.
pub type Sha256Auth = AuthComponent<Sha256EightDigits>;

#[cfg(target_arch = "wasm32")]
madx_auth_core::component::export_auth_component!(Sha256Auth);
