//! The default auth component of madx-pusher: the token rules of
//! `madx-auth-core` with the contract's default codes (HMAC-SHA1, 6 digits,
//! 30 s steps), exported as the `auth-plugin` world.

#[cfg(target_arch = "wasm32")]
use madx_auth_core::component::DefaultAuth;

#[cfg(target_arch = "wasm32")]
madx_auth_core::component::export_auth_component!(DefaultAuth);

// Links the allocator of the wasm32-unknown-unknown build.
#[cfg(target_arch = "wasm32")]
use madx_guest_arena as _;
