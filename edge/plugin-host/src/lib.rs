//! The plugin host at the edge: what an auth or router plugin imports
//! (`madx:pusher/store` and `settings`), served inside Spin.
//!
//! `madx-edge-build` composes this component with the edge component and
//! the deployment's plugins into the one component Spin runs (see
//! docs/edge.md). Before each plugin call the edge component names the app
//! and the plugin kind (`madx:edge/scope`); the store then keeps that
//! plugin's keys exactly where a host's Redis store keeps them, so a token
//! issued at the edge is the token a host verifies, and settings come from
//! the Spin variables `<kind>_<name>` (`auth_default_ttl_secs` is the
//! auth plugin's `default_ttl_secs`).
//!
//! - [`store`]: the store's commands over any [`store::Redis`].
//! - `component` (wasm32 only): the WIT exports over Spin's outbound Redis
//!   and variables.

pub mod store;

/// The Spin variable that holds setting `name` of the plugin `kind`
/// (`auth` or `router`); `None` when the name cannot be a Spin variable
/// name (lower-case ASCII letters, digits and `_`), so such a setting is
/// simply absent.
pub fn setting_variable(kind: &str, name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    valid.then(|| format!("{kind}_{name}"))
}

#[cfg(target_arch = "wasm32")]
mod component;

#[cfg(test)]
mod tests {
    use super::setting_variable;

    #[test]
    fn settings_are_variables_prefixed_with_the_plugin_kind() {
        assert_eq!(
            setting_variable("auth", "default_ttl_secs").as_deref(),
            Some("auth_default_ttl_secs")
        );
        assert_eq!(
            setting_variable("router", "namespaces").as_deref(),
            Some("router_namespaces")
        );
        for unusable in ["", "Upper", "with-dash", "dotted.name", "spaced name"] {
            assert_eq!(setting_variable("auth", unusable), None, "{unusable}");
        }
    }
}
