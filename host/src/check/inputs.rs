//! What the checks ask the components, and what the author expects back:
//! a check file (TOML) and flags, flags winning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::plugins::bindings::{Claims, RouteTarget, TokenRequest};

/// The flags of `plugin check` that set inputs.
#[derive(Debug, Default, clap::Args)]
pub struct InputFlags {
    /// A check file (TOML): the token request, settings and router
    /// expectations; see docs/plugins.md. Flags override its values.
    #[arg(long, value_name = "PATH")]
    pub check_file: Option<PathBuf>,
    /// The user id of the token request (and of the router's claims).
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,
    /// A channel glob the token may subscribe to (repeatable).
    #[arg(long = "channels", value_name = "GLOB")]
    pub channels: Vec<String>,
    /// A channel glob the token may publish to from its socket (repeatable).
    #[arg(long = "publish", value_name = "GLOB")]
    pub publish: Vec<String>,
    /// The token's idle timeout; the component's default when not given.
    #[arg(long, value_name = "SECONDS")]
    pub ttl_secs: Option<u32>,
    /// A setting handed to the auth component, as in
    /// `[plugins.auth.settings]` (repeatable).
    #[arg(long = "auth-setting", value_name = "NAME=VALUE", value_parser = setting)]
    pub auth_settings: Vec<(String, String)>,
    /// A setting handed to the router component, as in
    /// `[plugins.router.settings]` (repeatable).
    #[arg(long = "router-setting", value_name = "NAME=VALUE", value_parser = setting)]
    pub router_settings: Vec<(String, String)>,
}

fn setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// Everything the checks take from the author.
#[derive(Debug, Default)]
pub struct Inputs {
    /// What `issue` is asked for; the router gets the same claims.
    pub token: TokenInputs,
    pub auth_settings: BTreeMap<String, String>,
    pub router_settings: BTreeMap<String, String>,
    pub expectations: Expectations,
}

#[derive(Debug, Clone, Default)]
pub struct TokenInputs {
    pub user_id: Option<String>,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
    pub ttl_secs: Option<u32>,
}

impl TokenInputs {
    pub fn request(&self) -> TokenRequest {
        TokenRequest {
            user_id: self.user_id.clone(),
            channels: self.channels.clone(),
            publish: self.publish.clone(),
            ttl_secs: self.ttl_secs,
        }
    }

    /// The claims of a token issued for this request.
    pub fn claims(&self) -> Claims {
        Claims {
            access_id: "plugin-check".into(),
            user_id: self.user_id.clone(),
            channels: self.channels.clone(),
            publish: self.publish.clone(),
            idle_timeout_secs: self.ttl_secs.unwrap_or(7200),
        }
    }

    pub fn describe(&self) -> String {
        let user = match &self.user_id {
            Some(user) => format!("user-id {user:?}"),
            None => "no user-id".to_owned(),
        };
        let ttl = match self.ttl_secs {
            Some(ttl) => format!("ttl-secs {ttl}"),
            None => "no ttl-secs".to_owned(),
        };
        format!(
            "{user}, channels {:?}, publish {:?}, {ttl}",
            self.channels, self.publish
        )
    }
}

/// What the router must answer for the author's claims.
#[derive(Debug, Default)]
pub struct Expectations {
    pub subscribe: Verdicts,
    pub client_publish: Verdicts,
    /// The event of the client publishes.
    pub client_event: String,
    pub route_publish: Vec<RouteExpectation>,
}

impl Expectations {
    pub fn is_empty(&self) -> bool {
        self.subscribe.allowed.is_empty()
            && self.subscribe.forbidden.is_empty()
            && self.client_publish.allowed.is_empty()
            && self.client_publish.forbidden.is_empty()
            && self.route_publish.is_empty()
    }
}

/// Channel names that must be allowed, and names that must be refused as
/// `forbidden`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Verdicts {
    pub allowed: Vec<String>,
    pub forbidden: Vec<String>,
}

/// An app's publish and what it must reach.
#[derive(Debug)]
pub struct RouteExpectation {
    pub target: RouteTarget,
    pub event: String,
    pub outcome: RouteOutcome,
}

#[derive(Debug)]
pub enum RouteOutcome {
    /// Exactly these targets, in any order.
    Reaches(BTreeSet<TargetKey>),
    /// Any `route-error`.
    Refused,
}

/// A target as the check file writes it: `{ channel = "news" }`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetKey {
    Channel(String),
    User(String),
    Token(String),
}

impl TargetKey {
    pub fn of(target: &RouteTarget) -> TargetKey {
        match target {
            RouteTarget::Channel(name) => TargetKey::Channel(name.clone()),
            RouteTarget::User(name) => TargetKey::User(name.clone()),
            RouteTarget::Token(name) => TargetKey::Token(name.clone()),
        }
    }

    fn target(&self) -> RouteTarget {
        match self {
            TargetKey::Channel(name) => RouteTarget::Channel(name.clone()),
            TargetKey::User(name) => RouteTarget::User(name.clone()),
            TargetKey::Token(name) => RouteTarget::Token(name.clone()),
        }
    }
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetKey::Channel(name) => write!(f, "channel {name:?}"),
            TargetKey::User(name) => write!(f, "user {name:?}"),
            TargetKey::Token(name) => write!(f, "token {name:?}"),
        }
    }
}

/// The event of client and app publishes when the check file names none.
const DEFAULT_EVENT: &str = "message";

/// The check file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CheckFile {
    token: TokenFile,
    auth: AuthFile,
    router: RouterFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TokenFile {
    user_id: Option<String>,
    channels: Vec<String>,
    publish: Vec<String>,
    ttl_secs: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AuthFile {
    settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RouterFile {
    settings: BTreeMap<String, toml::Value>,
    subscribe: Verdicts,
    client_publish: ClientPublishFile,
    route_publish: Vec<RouteFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClientPublishFile {
    event: Option<String>,
    allowed: Vec<String>,
    forbidden: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    target: TargetKey,
    event: Option<String>,
    reaches: Option<Vec<TargetKey>>,
    #[serde(default)]
    refused: bool,
}

impl Inputs {
    /// The check file (if any) with the flags on top.
    pub fn resolve(flags: InputFlags) -> anyhow::Result<Inputs> {
        let file = match &flags.check_file {
            Some(path) => read_check_file(path)?,
            None => CheckFile::default(),
        };
        let mut inputs = Inputs::from_file(file)?;
        let token = &mut inputs.token;
        if flags.user_id.is_some() {
            token.user_id = flags.user_id;
        }
        if !flags.channels.is_empty() {
            token.channels = flags.channels;
        }
        if !flags.publish.is_empty() {
            token.publish = flags.publish;
        }
        if flags.ttl_secs.is_some() {
            token.ttl_secs = flags.ttl_secs;
        }
        inputs.auth_settings.extend(flags.auth_settings);
        inputs.router_settings.extend(flags.router_settings);
        Ok(inputs)
    }

    fn from_file(file: CheckFile) -> anyhow::Result<Inputs> {
        let CheckFile {
            token,
            auth,
            router,
        } = file;
        let route_publish = router
            .route_publish
            .into_iter()
            .map(|route| {
                let outcome = match (route.reaches, route.refused) {
                    (Some(targets), false) => RouteOutcome::Reaches(targets.into_iter().collect()),
                    (None, true) => RouteOutcome::Refused,
                    _ => bail!(
                        "[[router.route_publish]] to {}: give either reaches = [...] or refused = true",
                        route.target
                    ),
                };
                Ok(RouteExpectation {
                    target: route.target.target(),
                    event: route.event.unwrap_or_else(|| DEFAULT_EVENT.to_owned()),
                    outcome,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Inputs {
            token: TokenInputs {
                user_id: token.user_id,
                channels: token.channels,
                publish: token.publish,
                ttl_secs: token.ttl_secs,
            },
            auth_settings: crate::config::plugin_settings(auth.settings)
                .context("[auth.settings]")?,
            router_settings: crate::config::plugin_settings(router.settings)
                .context("[router.settings]")?,
            expectations: Expectations {
                subscribe: router.subscribe,
                client_publish: Verdicts {
                    allowed: router.client_publish.allowed,
                    forbidden: router.client_publish.forbidden,
                },
                client_event: router
                    .client_publish
                    .event
                    .unwrap_or_else(|| DEFAULT_EVENT.to_owned()),
                route_publish,
            },
        })
    }
}

fn read_check_file(path: &Path) -> anyhow::Result<CheckFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read check file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid check file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Inputs> {
        Inputs::from_file(toml::from_str(text)?)
    }

    #[test]
    fn a_check_file_holds_the_request_settings_and_expectations() {
        let inputs = parse(
            r#"
            [token]
            user_id = "user-42"
            channels = ["news.*"]
            ttl_secs = 600
            [auth.settings]
            max_failures = 3
            [router.subscribe]
            forbidden = ["admin"]
            [[router.route_publish]]
            target = { user = "user-42" }
            reaches = [{ channel = "inbox" }, { user = "user-42" }]
            "#,
        )
        .unwrap();
        assert_eq!(inputs.token.user_id.as_deref(), Some("user-42"));
        assert_eq!(inputs.token.ttl_secs, Some(600));
        assert_eq!(inputs.auth_settings["max_failures"], "3");
        assert_eq!(inputs.expectations.subscribe.forbidden, ["admin"]);
        assert_eq!(inputs.expectations.client_event, "message");
        let route = &inputs.expectations.route_publish[0];
        assert!(matches!(&route.target, RouteTarget::User(user) if user == "user-42"));
        let RouteOutcome::Reaches(targets) = &route.outcome else {
            panic!("{route:?}");
        };
        assert!(targets.contains(&TargetKey::Channel("inbox".into())));
    }

    #[test]
    fn a_check_file_with_a_typo_or_an_ambiguous_route_is_refused() {
        let typo = parse("[token]\nuser = \"x\"\n").unwrap_err();
        assert!(
            format!("{typo:#}").contains("unknown field `user`"),
            "{typo:#}"
        );
        let both = parse(
            "[[router.route_publish]]\ntarget = { channel = \"a\" }\nreaches = []\nrefused = true\n",
        )
        .unwrap_err();
        assert!(format!("{both:#}").contains("either reaches"), "{both:#}");
        let table = parse("[auth.settings]\nnested = { a = 1 }\n").unwrap_err();
        assert!(
            format!("{table:#}").contains("[auth.settings]"),
            "{table:#}"
        );
    }

    #[test]
    fn flags_override_the_check_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("check.toml");
        std::fs::write(
            &path,
            "[token]\nuser_id = \"a\"\nchannels = [\"x\"]\n[auth.settings]\nmode = \"file\"\nkeep = 1\n",
        )
        .unwrap();
        let inputs = Inputs::resolve(InputFlags {
            check_file: Some(path),
            user_id: Some("b".into()),
            auth_settings: vec![("mode".into(), "flag".into())],
            ..InputFlags::default()
        })
        .unwrap();
        assert_eq!(inputs.token.user_id.as_deref(), Some("b"));
        assert_eq!(inputs.token.channels, ["x"]);
        assert_eq!(inputs.auth_settings["mode"], "flag");
        assert_eq!(inputs.auth_settings["keep"], "1");
    }
}
