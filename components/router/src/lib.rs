//! The default router component of madx-pusher.
//!
//! - A connection may subscribe to a channel when the name is valid and one
//!   of its token's `channels` globs matches it.
//! - A connection may publish to a channel from its socket when one of its
//!   token's `publish` globs matches; the message goes to that channel
//!   unchanged.
//! - An app's publish reaches exactly the target it names, once the name is
//!   checked.
//!
//! The rules are in [`rules`]; the `component` module binds them to the
//! `router-plugin` world from `wit/`.

pub mod rules;

// Links the allocator of the wasm32-unknown-unknown build.
#[cfg(all(target_arch = "wasm32", feature = "component"))]
use madx_guest_arena as _;

/// The WIT binding, only in the WebAssembly build with the `component`
/// feature (natively, or without it, the crate is just the rules and their
/// tests).
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::rules;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "router-plugin",
    });

    use exports::madx::pusher::router::{ClientPublication, Guest, RouteError, Target};
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

        fn authorize_publish(
            claims: Claims,
            channel: String,
            event: String,
        ) -> Result<ClientPublication, RouteError> {
            rules::validate_channel(&channel).map_err(RouteError::InvalidChannel)?;
            rules::validate_event(&event).map_err(RouteError::Invalid)?;
            if rules::any_glob_matches(&claims.publish, &channel) {
                Ok(ClientPublication { channel, event })
            } else {
                Err(RouteError::Forbidden(format!(
                    "the token does not allow publishing to {channel:?}"
                )))
            }
        }

        fn route_publish(target: Target, event: String) -> Result<Vec<Target>, RouteError> {
            rules::validate_event(&event).map_err(RouteError::Invalid)?;
            match &target {
                Target::Channel(channel) => {
                    rules::validate_channel(channel).map_err(RouteError::InvalidChannel)?
                }
                Target::User(id) | Target::Token(id) => {
                    rules::validate_id(id).map_err(RouteError::Invalid)?
                }
            }
            Ok(vec![target])
        }
    }

    export!(Component);
}
