//! The default router component of madx-pusher.
//!
//! A connection may subscribe to a channel when the name is valid and one of
//! its token's `channels` globs matches it. The rules are in [`rules`]; this
//! file binds them to the `router-plugin` world from `wit/`.

pub mod rules;

/// The WIT binding, only in the WebAssembly build (natively, the crate is
/// just the rules and their tests).
#[cfg(target_arch = "wasm32")]
mod component {
    use super::rules;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "router-plugin",
    });

    use exports::madx::pusher::router::{Guest, RouteError};
    use madx::pusher::types::Claims;

    struct Component;

    impl Guest for Component {
        fn authorize_subscribe(claims: Claims, channel: String) -> Result<(), RouteError> {
            rules::validate_channel(&channel).map_err(RouteError::InvalidChannel)?;
            if rules::any_glob_matches(&claims.channels, &channel) {
                Ok(())
            } else {
                Err(RouteError::Forbidden(format!(
                    "the token does not allow subscribing to {channel:?}"
                )))
            }
        }
    }

    export!(Component);
}
