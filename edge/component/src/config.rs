//! The edge's configuration, read from Spin variables on every request (a
//! Spin instance serves one request, so there is nothing to cache).
//!
//! Every value is a host setting with its default from `madx_wire::settings`,
//! so an edge and the hosts it serves agree unless an operator sets one and
//! not the other. The variables are declared in the top-level `spin.toml`.

use madx_wire::settings;

use crate::platform::Platform;

/// An application the edge serves: the same `{id, key, secret}` as the
/// hosts' `[[apps]]` / `MADX_APPS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: String,
    pub key: String,
    pub secret: String,
}

/// The `[limits]` settings the HTTP API enforces (`madx_wire::settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_publish_bytes: usize,
    pub max_batch: usize,
    pub max_name_bytes: usize,
}

impl Limits {
    /// The body limit of one message: `max_publish_bytes` of data plus its
    /// envelope.
    pub fn message_body(&self) -> usize {
        settings::message_body_limit(self.max_publish_bytes)
    }

    /// What a published message is checked against.
    pub fn message(&self) -> madx_wire::v1::MessageLimits {
        madx_wire::v1::MessageLimits {
            max_publish_bytes: self.max_publish_bytes,
            max_name_bytes: self.max_name_bytes,
        }
    }

    /// The body limit of a batch: `max_batch` messages.
    pub fn batch_body(&self) -> usize {
        settings::batch_body_limit(self.max_publish_bytes, self.max_batch)
    }
}

/// The `[history]` settings the publish script needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    pub per_stream: u64,
    pub ttl_secs: u64,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub apps: Vec<App>,
    /// `redis://...`: the Redis the hosts run with `--store`.
    pub redis_url: String,
    /// The hosts' `store_prefix`.
    pub store_prefix: String,
    /// The hosts' public base URL; tokens' `ws_url` points there.
    pub public_url: String,
    pub limits: Limits,
    pub history: History,
    /// The hosts' `[presence] channel_prefix`: channels whose names start
    /// with it have members; empty turns presence off.
    pub presence_prefix: String,
}

impl EdgeConfig {
    /// Read every variable; an error names the variable and what is wrong,
    /// never its value (some are secrets).
    pub fn load(platform: &impl Platform) -> Result<EdgeConfig, String> {
        let read = |name: &str| -> Result<Option<String>, String> {
            let value = platform
                .variable(name)
                .map_err(|error| format!("variable {name}: {error}"))?;
            Ok(value.filter(|value| !value.trim().is_empty()))
        };
        let required = |name: &str| -> Result<String, String> {
            read(name)?.ok_or_else(|| format!("variable {name} is not set"))
        };
        let number = |name: &str, default: u64, min: u64| -> Result<u64, String> {
            match read(name)? {
                None => Ok(default),
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(value) if value >= min => Ok(value),
                    _ => Err(format!(
                        "variable {name} must be a whole number of at least {min}"
                    )),
                },
            }
        };
        let size = |name: &str, default: u64, min: u64| -> Result<usize, String> {
            number(name, default, min).and_then(|value| {
                usize::try_from(value).map_err(|_| format!("variable {name} is too large"))
            })
        };

        let apps = parse_apps(&required("apps")?)?;
        let public_url = required("public_url")?;
        validate_public_url(&public_url)?;
        let store_prefix =
            read("store_prefix")?.unwrap_or_else(|| settings::STORE_PREFIX.to_owned());
        settings::check_store_prefix(&store_prefix)
            .map_err(|message| format!("variable {message}"))?;
        let redis_url = required("redis_url")?;
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err("variable redis_url must be a redis:// or rediss:// URL".to_owned());
        }
        // Not `read`: an empty prefix is a setting (presence off), as on
        // the hosts.
        let presence_prefix = platform
            .variable("presence_channel_prefix")
            .map_err(|error| format!("variable presence_channel_prefix: {error}"))?
            .unwrap_or_else(|| madx_wire::presence::CHANNEL_PREFIX.to_owned());
        Ok(EdgeConfig {
            apps,
            presence_prefix,
            redis_url,
            store_prefix,
            public_url,
            limits: Limits {
                max_body_bytes: size(
                    "max_body_bytes",
                    settings::MAX_BODY_BYTES as u64,
                    settings::MIN_BODY_BYTES as u64,
                )?,
                max_publish_bytes: size(
                    "max_publish_bytes",
                    settings::MAX_PUBLISH_BYTES as u64,
                    1,
                )?,
                max_batch: size("max_batch", settings::MAX_BATCH as u64, 1)?,
                max_name_bytes: size("max_name_bytes", settings::MAX_NAME_BYTES as u64, 1)?,
            },
            history: History {
                per_stream: number("history_per_stream", settings::HISTORY_PER_STREAM as u64, 1)?,
                ttl_secs: number("history_ttl_secs", settings::HISTORY_TTL_SECS, 1)?,
            },
        })
    }

    /// The app whose key this is.
    pub fn app_by_key(&self, key: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.key == key)
    }

    /// The WebSocket URL a token's client connects to: on the hosts, since
    /// Spin has no inbound WebSockets.
    pub fn ws_url(&self, app_id: &str) -> String {
        settings::ws_url(&self.public_url, app_id)
    }
}

/// `ID:KEY:SECRET` triples separated by commas, `MADX_APPS`' form
/// (whitespace around a triple is ignored), under `madx_wire::settings`'
/// rules for apps.
pub fn parse_apps(text: &str) -> Result<Vec<App>, String> {
    let mut apps = Vec::new();
    for triple in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (id, key, secret) =
            settings::parse_app(triple).map_err(|error| format!("variable apps: {error}"))?;
        apps.push(App {
            id: id.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
        });
    }
    if apps.is_empty() {
        return Err("variable apps names no app".to_owned());
    }
    settings::check_apps(
        apps.iter()
            .map(|app| (app.id.as_str(), app.key.as_str(), app.secret.as_str())),
    )
    .map_err(|error| format!("variable apps: {error}"))?;
    Ok(apps)
}

fn validate_public_url(url: &str) -> Result<(), String> {
    settings::check_public_url(url).map_err(|error| format!("variable {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakePlatform;

    fn platform(extra: &[(&str, &str)]) -> FakePlatform {
        let mut platform = FakePlatform::with_variables(&[
            (
                "apps",
                "alpha:alpha-key:alpha-secret, beta:beta-key:beta:secret:with:colons",
            ),
            ("public_url", "https://push.example.com/"),
            ("redis_url", "redis://127.0.0.1:6379"),
        ]);
        for (name, value) in extra {
            platform.set_variable(name, value);
        }
        platform
    }

    #[test]
    fn defaults_are_the_hosts() {
        let config = EdgeConfig::load(&platform(&[])).unwrap();
        assert_eq!(config.store_prefix, "madx");
        assert_eq!(
            config.limits,
            Limits {
                max_body_bytes: 65536,
                max_publish_bytes: 65536,
                max_batch: 100,
                max_name_bytes: 200,
            }
        );
        assert_eq!(
            config.history,
            History {
                per_stream: 100,
                ttl_secs: 600
            }
        );
        assert_eq!(config.presence_prefix, "presence-");
        assert_eq!(config.apps.len(), 2);
        assert_eq!(config.apps[1].secret, "beta:secret:with:colons");
        assert_eq!(config.app_by_key("alpha-key").unwrap().id, "alpha");
        assert!(config.app_by_key("nobody").is_none());
    }

    #[test]
    fn an_empty_presence_prefix_turns_presence_off() {
        let config = EdgeConfig::load(&platform(&[("presence_channel_prefix", "")])).unwrap();
        assert_eq!(config.presence_prefix, "");
        let config =
            EdgeConfig::load(&platform(&[("presence_channel_prefix", "online-")])).unwrap();
        assert_eq!(config.presence_prefix, "online-");
    }

    #[test]
    fn ws_url_points_at_the_hosts() {
        let config = EdgeConfig::load(&platform(&[])).unwrap();
        assert_eq!(
            config.ws_url("alpha"),
            "wss://push.example.com/v1/ws?app=alpha"
        );
        let config =
            EdgeConfig::load(&platform(&[("public_url", "http://127.0.0.1:8080")])).unwrap();
        assert_eq!(config.ws_url("b"), "ws://127.0.0.1:8080/v1/ws?app=b");
    }

    #[test]
    fn bad_values_name_the_variable_not_the_value() {
        for (name, value, expected) in [
            ("apps", "alpha:key", "ID:KEY:SECRET"),
            ("apps", "alpha:key:short", "at least 8"),
            ("apps", "a:k:secret-1,a:k2:secret-2", "appears twice"),
            ("apps", "a:k:secret-1,b:k:secret-2", "two apps"),
            ("apps", "bad id:k:secret-1", "app id"),
            ("apps", " , ", "names no app"),
            ("public_url", "push.example.com", "public_url"),
            ("redis_url", "http://redis", "redis_url"),
            ("store_prefix", "a b", "store_prefix"),
            ("max_batch", "0", "max_batch"),
            ("max_body_bytes", "100", "max_body_bytes"),
            ("history_ttl_secs", "soon", "history_ttl_secs"),
        ] {
            let error = EdgeConfig::load(&platform(&[(name, value)])).unwrap_err();
            assert!(error.contains(expected), "{name}={value}: {error}");
        }
        let error = EdgeConfig::load(&platform(&[("apps", "a:k:very-secret-value,")]))
            .map(|config| config.apps.len());
        assert_eq!(error, Ok(1));
    }
}
