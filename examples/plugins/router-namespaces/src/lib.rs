//! A router plugin for apps that group channels into namespaces: a channel
//! is `<namespace>:<name>` (`news:sports`, `chat:room-7`), and only the
//! namespaces the operator lists exist. A subscribe, a client publish or an
//! app publish to any other channel is refused as an invalid channel;
//! everything else follows the built-in router's rules.
//!
//! Setting `namespaces`: comma-separated, default `public`. On a host:
//! `[plugins.router.settings] namespaces = "news,chat"`; at the edge, the
//! Spin variable `router_namespaces`.
//!
//! Build: `cargo build -p madx-example-router-namespaces --target
//! wasm32-wasip2 --profile plugin`, then point `[plugins.router] path` (or
//! `--router-component`, or `madx-edge-build --router`) at
//! `target/wasm32-wasip2/plugin/madx_example_router_namespaces.wasm`.

/// The namespaces when the operator names none.
pub const DEFAULT_NAMESPACES: &str = "public";

/// Is `channel` in one of the comma-separated `namespaces`?
pub fn in_namespace(namespaces: &str, channel: &str) -> bool {
    channel.split_once(':').is_some_and(|(namespace, name)| {
        !name.is_empty()
            && namespaces
                .split(',')
                .any(|listed| listed.trim() == namespace)
    })
}

/// The refusal for a channel outside the namespaces.
pub fn outside(namespaces: &str, channel: &str) -> String {
    format!(
        "channel {channel:?} is in none of this app's namespaces ({namespaces}): name it <namespace>:<name>"
    )
}

#[cfg(target_arch = "wasm32")]
mod component {
    use super::{DEFAULT_NAMESPACES, in_namespace, outside};
    use madx_router::rules;

    wit_bindgen::generate!({
        path: "../../../wit",
        world: "router-plugin",
    });

    use exports::madx::pusher::router::{ClientPublication, Guest, RouteError, Target};
    use madx::pusher::settings;
    use madx::pusher::types::Claims;

    /// The built-in naming rule, then the namespace.
    fn check_channel(channel: &str) -> Result<(), RouteError> {
        rules::validate_channel(channel).map_err(RouteError::InvalidChannel)?;
        let namespaces =
            settings::get("namespaces").unwrap_or_else(|| DEFAULT_NAMESPACES.to_owned());
        if in_namespace(&namespaces, channel) {
            Ok(())
        } else {
            Err(RouteError::InvalidChannel(outside(&namespaces, channel)))
        }
    }

    struct Namespaces;

    impl Guest for Namespaces {
        fn authorize_subscribe(claims: Claims, channel: String) -> Result<(), RouteError> {
            check_channel(&channel)?;
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
            check_channel(&channel)?;
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
                Target::Channel(channel) => check_channel(channel)?,
                Target::User(id) | Target::Token(id) => {
                    rules::validate_id(id).map_err(RouteError::Invalid)?
                }
            }
            Ok(vec![target])
        }
    }

    export!(Namespaces);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_a_listed_namespace_and_a_name() {
        assert!(in_namespace("public", "public:news"));
        assert!(in_namespace("news, chat", "chat:room-7"));
        for outside in ["news", "public:", "private:x", ":x", "publicity:x"] {
            assert!(!in_namespace("public", outside), "{outside}");
        }
    }
}
