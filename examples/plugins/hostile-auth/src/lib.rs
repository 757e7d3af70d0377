//! A hostile auth component, to show that a host's sandbox holds: a token
//! request for user `loop` spins forever, one for `alloc` grows memory
//! without end; every other request gets the default token rules.

use madx_auth_core::component::{AuthComponent, Profile, TokenRequest};
use madx_auth_core::totp::OtpProfile;

pub struct Hostile;

impl Profile for Hostile {
    const OTP: OtpProfile = OtpProfile::RFC6238_DEFAULT;

    fn check_request(request: &TokenRequest) -> Result<(), String> {
        match request.user_id.as_deref() {
            Some("loop") => loop {
                std::hint::spin_loop();
            },
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => Ok(()),
        }
    }
}

pub type HostileAuth = AuthComponent<Hostile>;

#[cfg(target_arch = "wasm32")]
madx_auth_core::component::export_auth_component!(HostileAuth);
