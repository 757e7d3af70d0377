//! The configuration file: TOML parsed and validated into a `Config`.

use std::collections::HashSet;
use std::time::Duration;

use madx_pusher::config::{Config, DEMO_APP, StoreConfig};

/// A configuration file's text. Invariants: a configuration that loads
/// keeps every documented bound, and the plugin sandbox gets exactly the
/// budget the file asked for.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let file: toml::Table = text.parse().expect("a file that loads is TOML");

    let limits = config.limits;
    assert!(limits.max_frame_bytes >= 256 && limits.max_body_bytes >= 256);
    for value in [
        limits.max_publish_bytes,
        limits.max_batch,
        limits.max_name_bytes,
        limits.max_subscriptions_per_socket,
        limits.max_sockets_per_token,
        limits.max_sockets_per_app,
        limits.send_queue,
        config.history.per_stream,
        config.history.total,
    ] {
        assert!(value >= 1);
    }
    assert!((1..=3600).contains(&config.heartbeat.as_secs()));
    assert_eq!(config.heartbeat.subsec_nanos(), 0);

    let plugins = file.get("plugins").and_then(toml::Value::as_table);
    let plugin_number = |name: &str| {
        plugins
            .and_then(|plugins| plugins.get(name))
            .and_then(toml::Value::as_integer)
    };
    let sandbox = config.sandbox;
    assert!(sandbox.call_timeout >= Duration::from_millis(10));
    if let Some(ms) = plugin_number("call_timeout_ms") {
        let ms = u64::try_from(ms).expect("a negative timeout loaded");
        assert_eq!(sandbox.call_timeout, Duration::from_millis(ms));
    }
    assert!(sandbox.memory_bytes >= 1 << 20);
    if let Some(mib) = plugin_number("memory_mib") {
        let bytes = u64::try_from(mib)
            .ok()
            .and_then(|mib| mib.checked_mul(1 << 20));
        assert_eq!(
            bytes,
            u64::try_from(sandbox.memory_bytes).ok(),
            "memory_mib = {mib}"
        );
    }
    assert!((1..=10_000).contains(&sandbox.max_concurrent_calls));

    assert!(!config.apps.is_empty());
    let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
    for app in &config.apps {
        assert!((1..=64).contains(&app.id.len()));
        assert!(
            app.id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        );
        assert!(!app.key.is_empty() && !app.key.contains(':'));
        assert!(app.secret.len() >= 8);
        assert!(ids.insert(&app.id) && keys.insert(&app.key));
        for webhook in &app.webhooks {
            assert!(
                webhook.url.starts_with("http://") || webhook.url.starts_with("https://"),
                "webhook url {:?}",
                webhook.url
            );
            assert!(!webhook.events.is_empty());
        }
    }
    let webhooks = config.webhooks;
    assert!(webhooks.batch_max >= 1 && webhooks.queue >= 1 && webhooks.timeout_ms >= 1);
    assert!((1..=webhooks.retry_max_ms).contains(&webhooks.retry_min_ms));
    if config.demo {
        assert_eq!(config.apps.len(), 1);
        assert_eq!(config.apps[0].id, DEMO_APP.0);
    }

    if let StoreConfig::Redis { url, prefix } = &config.store {
        assert!(url.starts_with("redis://") || url.starts_with("rediss://"));
        assert!((1..=64).contains(&prefix.len()));
    }
    if let Some(url) = &config.public_url {
        assert!(!url.contains('?') && !url.contains('#'));
    }
    if let Some(token) = &config.operator_token {
        assert!(token.len() >= 16);
    }
}
