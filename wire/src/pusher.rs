//! Pusher's HTTP API as both a host and the edge serve it: the request
//! signature, the `events` and `batch_events` bodies, and what they publish
//! in madx terms. The servers read the request and answer; the rules are
//! here, so both answer alike (see docs/pusher-compat.md).
//!
//! Every `Err(String)` of this module is the message of a 400
//! `invalid_request`; a [`Refusal`] is the message of a 401.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::presence::ChannelInfo;

/// Signed requests are accepted this long either side of the server's
/// clock, as Pusher does: the window bounds how long a captured request
/// can be replayed.
pub const TIMESTAMP_WINDOW_SECS: u64 = 600;
/// Pusher's limit on the channels of one trigger.
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
/// Pusher's "send to user" channel: `#server-to-user-<user_id>`.
pub const SERVER_TO_USER: &str = "#server-to-user-";

/// Why a request's signature does not hold: the message of the 401.
pub type Refusal = &'static str;

/// The refusal when no app of the request's `app_id` has its `auth_key`.
pub const UNKNOWN_KEY: Refusal = "unknown auth_key for this app";
/// The refusal when the HMAC does not hold with the app's secret.
pub const INVALID_SIGNATURE: Refusal = "invalid signature";

/// A request's Pusher authentication, read from its raw query string.
///
/// `auth_signature` is the hex HMAC-SHA256, with the app's secret, of
/// `METHOD\nPATH\nQUERY`, where QUERY is every other parameter as sent,
/// keys lowercased and sorted, joined with `&`. Checking takes steps, so
/// the server can find the app by [`Signature::key`] after
/// [`Signature::read`], and check [`Signature::verify_signed`] before it
/// reads the body and [`Signature::verify_body`] after
/// ([`Signature::verify`] does both).
#[derive(Debug)]
pub struct Signature<'q> {
    key: &'q str,
    signature: &'q str,
    body_md5: Option<&'q str>,
    /// Every parameter but `auth_signature`, keys lowercased, sorted.
    signed: Vec<(String, &'q str)>,
}

impl<'q> Signature<'q> {
    /// The auth parameters, present, of version 1.0, and with a timestamp
    /// within [`TIMESTAMP_WINDOW_SECS`] of `now` (unix seconds).
    pub fn read(query: Option<&'q str>, now: u64) -> Result<Signature<'q>, Refusal> {
        let mut signature = None;
        let mut signed: Vec<(String, &str)> = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "auth_signature" {
                signature = Some(value);
            } else {
                signed.push((key.to_ascii_lowercase(), value));
            }
        }
        signed.sort_by(|a, b| a.0.cmp(&b.0));
        let param = |name: &str| {
            signed
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| *value)
        };
        let (Some(key), Some(timestamp), Some(signature)) =
            (param("auth_key"), param("auth_timestamp"), signature)
        else {
            return Err("auth_key, auth_timestamp and auth_signature are required");
        };
        if param("auth_version") != Some("1.0") {
            return Err("auth_version must be 1.0");
        }
        let timestamp: u64 = timestamp
            .parse()
            .map_err(|_| "auth_timestamp must be a unix time in seconds")?;
        if now.abs_diff(timestamp) > TIMESTAMP_WINDOW_SECS {
            return Err("auth_timestamp is more than 600 s away from the server's clock");
        }
        let body_md5 = param("body_md5");
        Ok(Signature {
            key,
            signature,
            body_md5,
            signed,
        })
    }

    /// What a server checks before it reads a request's body, the same on
    /// a host and at the edge: the request line's signature
    /// ([`Signature::read`] at the clock's time), the app `app_of_key`
    /// finds for its key ([`UNKNOWN_KEY`] when none), and the HMAC with
    /// that app's `secret` ([`Signature::verify_signed`]). The app, and the
    /// signature for [`Signature::verify_body`] once the body is read.
    pub fn check_request_line<A>(
        query: Option<&'q str>,
        method: &str,
        path: &str,
        app_of_key: impl FnOnce(&str) -> Option<A>,
        secret: impl FnOnce(&A) -> &str,
    ) -> Result<(A, Signature<'q>), Refusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let signature = Signature::read(query, now)?;
        let app = app_of_key(signature.key).ok_or(UNKNOWN_KEY)?;
        signature.verify_signed(method, path, secret(&app))?;
        Ok((app, signature))
    }

    /// The app key the request is signed for (`auth_key`).
    pub fn key(&self) -> &'q str {
        self.key
    }

    /// The body's MD5 and the signature, with the secret of the app of
    /// [`Signature::key`]. `path` is the request's path as sent (not
    /// percent-decoded).
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        secret: &str,
    ) -> Result<(), Refusal> {
        self.verify_signed(method, path, secret)?;
        self.verify_body(body)
    }

    /// The signature alone, with the secret of the app of
    /// [`Signature::key`]: it covers the method, the path and every
    /// parameter, `body_md5` included, so a server checks it before it
    /// reads the body and then the body with [`Signature::verify_body`].
    pub fn verify_signed(&self, method: &str, path: &str, secret: &str) -> Result<(), Refusal> {
        let query: Vec<String> = self
            .signed
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let to_sign = format!("{method}\n{path}\n{}", query.join("&"));
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return Err("the app secret cannot key HMAC-SHA256");
        };
        mac.update(to_sign.as_bytes());
        let Some(presented) = unhex(self.signature) else {
            return Err("auth_signature is not hex");
        };
        // Constant time: the answer's timing tells nothing about the secret.
        mac.verify_slice(&presented).map_err(|_| INVALID_SIGNATURE)
    }

    /// The body against the signed `body_md5` (required when there is a
    /// body).
    pub fn verify_body(&self, body: &[u8]) -> Result<(), Refusal> {
        if !body.is_empty() {
            let digest = hex(&Md5::digest(body));
            if self.body_md5 != Some(digest.as_str()) {
                return Err("body_md5 does not match the body");
            }
        }
        Ok(())
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of hex text (either case); `None` unless it is all hex pairs.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// What a channel query (`GET /channels`, `GET /channels/{channel}`) asks
/// for, from its query string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChannelQuery {
    /// `filter_by_prefix`, as first given.
    prefix: Option<String>,
    subscription_count: bool,
    user_count: bool,
}

impl ChannelQuery {
    /// From a raw (percent-encoded) query string.
    pub fn parse(query: Option<&str>) -> ChannelQuery {
        ChannelQuery::from_pairs(form_urlencoded::parse(query.unwrap_or_default().as_bytes()))
    }

    /// From a query's decoded parameters.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> ChannelQuery {
        let mut query = ChannelQuery::default();
        for (key, value) in pairs {
            match key.as_ref() {
                "filter_by_prefix" if query.prefix.is_none() => {
                    query.prefix = Some(value.as_ref().to_owned());
                }
                "info" => {
                    for attribute in value.as_ref().split(',') {
                        match attribute {
                            "subscription_count" => query.subscription_count = true,
                            "user_count" => query.user_count = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        query
    }

    /// Whether `user_count` is asked for: only then are presence members
    /// read.
    pub fn wants_user_count(&self) -> bool {
        self.user_count
    }

    /// Only channels whose names start with this (`""`: every channel).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or_default()
    }

    /// A channel's attributes as asked for: `subscription_count`, and
    /// `user_count` for a channel that counts users (presence).
    pub fn describe(&self, subscriptions: u64, users: Option<u64>) -> Map<String, Value> {
        let mut attributes = Map::new();
        if self.subscription_count {
            attributes.insert("subscription_count".into(), subscriptions.into());
        }
        if let (true, Some(users)) = (self.user_count, users) {
            attributes.insert("user_count".into(), users.into());
        }
        attributes
    }

    /// `GET /channels/{channel}`'s answer: the attributes asked for, and
    /// `occupied`.
    pub fn describe_channel(&self, subscriptions: u64, users: Option<u64>) -> Map<String, Value> {
        let mut answer = self.describe(subscriptions, users);
        answer.insert("occupied".into(), (subscriptions > 0).into());
        answer
    }
}

/// Why `GET /channels/{channel}/users` is a 400 for a channel that is not
/// a presence channel (as with Pusher).
pub const USERS_OF_PRESENCE_ONLY: &str = "users are only listed for presence channels";

/// `GET /channels/{channel}/users`' answer: `{"users": [{"id"}]}`.
pub fn users_body(members: &[crate::presence::Member]) -> Value {
    let users: Vec<Value> = members
        .iter()
        .map(|member| serde_json::json!({ "id": member.user_id }))
        .collect();
    serde_json::json!({ "users": users })
}

/// One event as Pusher's `POST /events` (and each `batch` entry) takes it.
#[derive(Debug, Deserialize)]
pub struct PusherEvent {
    pub name: String,
    pub data: Box<RawValue>,
    pub channel: Option<String>,
    pub channels: Option<Vec<String>>,
    pub socket_id: Option<String>,
    /// Attributes of its channels the answer carries (`subscription_count`,
    /// `user_count`), counted as the event is published.
    pub info: Option<String>,
}

impl PusherEvent {
    /// The channels this event's `info` asks about (not a user's inbox).
    fn info_channels(&self) -> impl Iterator<Item = &String> {
        self.info
            .iter()
            .flat_map(|_| self.channel.iter().chain(self.channels.iter().flatten()))
            .filter(|name| !name.starts_with(SERVER_TO_USER))
    }
}

/// The channels whose subscriptions a trigger's answer reports (events
/// with `info`), each once. The request's reach is checked first (as
/// [`messages`] does), so no more channels are ever counted than one
/// request may publish to.
pub fn counted_channels(events: &[PusherEvent], max_batch: usize) -> Result<Vec<String>, String> {
    check_reach(events, max_batch)?;
    let mut channels: Vec<String> = events
        .iter()
        .flat_map(PusherEvent::info_channels)
        .cloned()
        .collect();
    channels.sort_unstable();
    channels.dedup();
    Ok(channels)
}

/// Whether any event's `info` asks for `user_count` (the members of the
/// presence channels among [`counted_channels`] are read only then).
pub fn asks_user_count(events: &[PusherEvent]) -> bool {
    events.iter().any(|event| {
        event
            .info
            .as_deref()
            .is_some_and(|info| ChannelQuery::from_pairs([("info", info)]).wants_user_count())
    })
}

/// The answer to `events` (`batch: false`) or `batch_events`, given the
/// counts of [`counted_channels`]: `{}` when no event has `info`;
/// otherwise `{"channels": {name: attributes}}` for one event, and for a
/// batch `{"batch": [attributes of each event's channel, or {}]}`, as
/// Pusher answers (`user_count` for presence channels only).
pub fn trigger_answer(
    events: &[PusherEvent],
    batch: bool,
    counts: &[(String, ChannelInfo)],
) -> Value {
    if events.iter().all(|event| event.info.is_none()) {
        return Value::Object(Map::new());
    }
    let attributes = |event: &PusherEvent| -> Map<String, Value> {
        let query = ChannelQuery::from_pairs([("info", event.info.as_deref().unwrap_or_default())]);
        event
            .info_channels()
            .map(|name| {
                let info = counts
                    .iter()
                    .find(|(counted, _)| counted == name)
                    .map(|(_, info)| *info)
                    .unwrap_or_default();
                let attributes = query.describe(info.subscription_count, info.user_count);
                (name.clone(), Value::Object(attributes))
            })
            .collect()
    };
    if batch {
        let each = events
            .iter()
            .map(|event| {
                attributes(event)
                    .into_iter()
                    .next()
                    .map_or(Value::Object(Map::new()), |(_, value)| value)
            })
            .collect();
        serde_json::json!({ "batch": Value::Array(each) })
    } else {
        let channels = events.iter().flat_map(attributes).collect::<Map<_, _>>();
        serde_json::json!({ "channels": channels })
    }
}

/// `POST /batch_events`.
#[derive(Debug, Deserialize)]
pub struct PusherBatch {
    pub batch: Vec<PusherEvent>,
}

impl PusherBatch {
    /// The batch's events, if there are 1 to `max_batch` of them.
    pub fn into_events(self, max_batch: usize) -> Result<Vec<PusherEvent>, String> {
        if self.batch.is_empty() || self.batch.len() > max_batch {
            return Err(format!(
                "a batch holds 1 to {max_batch} events, got {}",
                self.batch.len()
            ));
        }
        Ok(self.batch)
    }
}

/// Where a Pusher event goes, in madx terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A channel's subscribers.
    Channel(String),
    /// A user's inbox (`#server-to-user-<user_id>`).
    User(String),
}

/// One madx message of a Pusher request, before limits and router.
#[derive(Debug)]
pub struct Message {
    pub target: Target,
    pub event: String,
    pub data: Box<RawValue>,
    /// The `socket_id` that must not get it.
    pub except: Option<String>,
}

impl PusherEvent {
    /// How many channels the event names: exactly one of `channel` and
    /// `channels`, the latter 1 to [`MAX_CHANNELS_PER_EVENT`] long.
    fn channel_count(&self) -> Result<usize, String> {
        match (&self.channel, &self.channels) {
            (Some(_), None) => Ok(1),
            (None, Some(channels)) if (1..=MAX_CHANNELS_PER_EVENT).contains(&channels.len()) => {
                Ok(channels.len())
            }
            (None, Some(_)) => Err(format!(
                "channels must list 1 to {MAX_CHANNELS_PER_EVENT} channels"
            )),
            _ => Err("give exactly one of channel and channels".to_owned()),
        }
    }

    /// One madx message per channel, as Pusher delivers one event per
    /// channel; the data as [`delivered_data`] gives it.
    pub fn into_messages(self) -> Result<Vec<Message>, String> {
        self.channel_count()?;
        let channels = match (self.channel, self.channels) {
            (Some(channel), _) => vec![channel],
            (None, channels) => channels.unwrap_or_default(),
        };
        let data = delivered_data(self.data);
        Ok(channels
            .into_iter()
            .map(|channel| {
                let target = match channel.strip_prefix(SERVER_TO_USER) {
                    Some(user_id) => Target::User(user_id.to_owned()),
                    None => Target::Channel(channel),
                };
                Message {
                    target,
                    event: self.name.clone(),
                    data: data.clone(),
                    except: self.socket_id.clone(),
                }
            })
            .collect())
    }
}

/// Every message of a request's events, in order. One request reaches at
/// most `max_batch` channels, or [`MAX_CHANNELS_PER_EVENT`] if that is more
/// (so one trigger may always name Pusher's maximum).
pub fn messages(events: Vec<PusherEvent>, max_batch: usize) -> Result<Vec<Message>, String> {
    check_reach(&events, max_batch)?;
    let mut messages = Vec::new();
    for event in events {
        messages.extend(event.into_messages()?);
    }
    Ok(messages)
}

/// Every event names its channels well, and all of them together at most
/// `max_batch` or [`MAX_CHANNELS_PER_EVENT`] channels.
fn check_reach(events: &[PusherEvent], max_batch: usize) -> Result<(), String> {
    let mut reach = 0;
    for event in events {
        reach += event.channel_count()?;
    }
    let max = max_batch.max(MAX_CHANNELS_PER_EVENT);
    if reach > max {
        return Err(format!("one request reaches at most {max} channels"));
    }
    Ok(())
}

/// The data a socket gets. Pusher's libraries send `data` as a string,
/// JSON-encoding anything else: a string holding JSON is delivered as that
/// JSON, any other string as a JSON string, and a non-string as given.
pub fn delivered_data(data: Box<RawValue>) -> Box<RawValue> {
    let Ok(text) = serde_json::from_str::<String>(data.get()) else {
        return data;
    };
    serde_json::from_str::<Box<RawValue>>(&text).unwrap_or(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_with_info_answers_its_channels_attributes() {
        let counted = |subscription_count, user_count| ChannelInfo {
            subscription_count,
            user_count,
        };
        let counts = [
            ("a".to_owned(), counted(2, None)),
            ("b".to_owned(), counted(1, None)),
            ("presence-p".to_owned(), counted(3, Some(2))),
        ];
        let plain = [event(r#"{"name": "e", "data": "{}", "channel": "a"}"#)];
        assert!(counted_channels(&plain, 10).unwrap().is_empty());
        assert_eq!(
            trigger_answer(&plain, false, &counts),
            serde_json::json!({})
        );

        let one = [event(
            r##"{"name": "e", "data": "{}", "channels": ["b", "a", "c", "#server-to-user-u"],
                 "info": "subscription_count"}"##,
        )];
        assert_eq!(counted_channels(&one, 10).unwrap(), ["a", "b", "c"]);
        assert_eq!(
            trigger_answer(&one, false, &counts),
            serde_json::json!({"channels": {
                "a": {"subscription_count": 2},
                "b": {"subscription_count": 1},
                "c": {"subscription_count": 0},
            }})
        );

        let batch = [
            event(r#"{"name": "e", "data": "{}", "channel": "a", "info": "subscription_count"}"#),
            event(r#"{"name": "e", "data": "{}", "channel": "b"}"#),
            event(r#"{"name": "e", "data": "{}", "channel": "b", "info": "user_count"}"#),
        ];
        assert_eq!(counted_channels(&batch, 10).unwrap(), ["a", "b"]);
        assert!(asks_user_count(&batch));
        assert!(!asks_user_count(&one));
        assert_eq!(
            trigger_answer(&batch, true, &counts),
            serde_json::json!({"batch": [{"subscription_count": 2}, {}, {}]})
        );

        // `user_count` is a presence channel's count of distinct users.
        let presence = [event(
            r#"{"name": "e", "data": "{}", "channels": ["presence-p", "a", "presence-q"],
                "info": "user_count,subscription_count"}"#,
        )];
        assert_eq!(
            trigger_answer(&presence, false, &counts),
            serde_json::json!({"channels": {
                "a": {"subscription_count": 2},
                "presence-p": {"subscription_count": 3, "user_count": 2},
                "presence-q": {"subscription_count": 0},
            }})
        );
    }

    #[test]
    fn a_channel_query_answers_the_attributes_asked_for() {
        let query = ChannelQuery::parse(Some(
            "filter_by_prefix=news%2E&info=subscription_count,user_count&filter_by_prefix=x",
        ));
        assert_eq!(query.prefix(), "news.");
        assert_eq!(
            Value::Object(query.describe(3, None)),
            serde_json::json!({"subscription_count": 3})
        );
        assert_eq!(
            Value::Object(query.describe(3, Some(2))),
            serde_json::json!({"subscription_count": 3, "user_count": 2})
        );
        let bare = ChannelQuery::parse(None);
        assert_eq!(bare.prefix(), "");
        assert!(bare.describe(3, Some(2)).is_empty());
        let unknown = ChannelQuery::parse(Some("info=members,subscription_count"));
        assert_eq!(
            Value::Object(unknown.describe(1, None)),
            serde_json::json!({"subscription_count": 1})
        );
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn data_strings_holding_json_are_delivered_as_json() {
        let cases = [
            (r#""{\"done\":true}""#, r#"{"done":true}"#),
            (r#""[1,2]""#, "[1,2]"),
            (r#""42""#, "42"),
            (r#""hello""#, r#""hello""#),
            (r#""""#, r#""""#),
            (r#"{"already":"json"}"#, r#"{"already":"json"}"#),
        ];
        for (given, delivered) in cases {
            assert_eq!(delivered_data(raw(given)).get(), delivered, "{given}");
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("ABff"), Some(vec![0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }

    /// A query signed as Pusher's libraries sign it, computed here from the
    /// definition rather than with [`Signature`].
    fn signed_query(secret: &str, method: &str, path: &str, params: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{method}\n{path}\n{params}").as_bytes());
        let signature = hex(&mac.finalize().into_bytes());
        format!("{params}&auth_signature={signature}")
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_request_line_is_checked_with_the_secret_of_the_app_of_its_key() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let params = format!("auth_key=k&auth_timestamp={now}&auth_version=1.0");
        let query = signed_query("s", "GET", "/apps/1/channels", &params);
        let apps = [("1", "k", "s"), ("2", "other", "t")];
        let check = |app_id: &str, path: &str| {
            Signature::check_request_line(
                Some(&query),
                "GET",
                path,
                |key| apps.iter().find(|app| app.1 == key && app.0 == app_id),
                |app| app.2,
            )
            .map(|(app, signature)| (app.0, signature.key()))
        };
        assert_eq!(check("1", "/apps/1/channels"), Ok(("1", "k")));
        // The key is not this app's: refused before any HMAC is computed.
        assert_eq!(check("2", "/apps/2/channels"), Err(UNKNOWN_KEY));
        assert_eq!(check("1", "/apps/1/events"), Err("invalid signature"));
        let unsigned = Signature::check_request_line(None, "GET", "/", |_| Some(()), |()| "s");
        assert!(unsigned.is_err());
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let body = br#"{"name":"e","channel":"c","data":"{}"}"#;
        let md5 = hex(&Md5::digest(body));
        let params = format!("auth_key=k&auth_timestamp={NOW}&auth_version=1.0&body_md5={md5}");
        let query = signed_query("s", "POST", "/apps/1/events", &params);
        let signature = Signature::read(Some(&query), NOW + 5).unwrap();
        assert_eq!(signature.key(), "k");
        assert_eq!(
            signature.verify("POST", "/apps/1/events", body, "s"),
            Ok(())
        );

        let wrong = [
            ("GET", "/apps/1/events", &body[..], "s", "invalid signature"),
            (
                "POST",
                "/apps/2/events",
                &body[..],
                "s",
                "invalid signature",
            ),
            (
                "POST",
                "/apps/1/events",
                &body[..],
                "t",
                "invalid signature",
            ),
            (
                "POST",
                "/apps/1/events",
                &b"{}"[..],
                "s",
                "body_md5 does not match the body",
            ),
        ];
        for (method, path, body, secret, why) in wrong {
            assert_eq!(signature.verify(method, path, body, secret), Err(why));
        }

        // In two steps, as a server checks before it reads the body: the
        // signature (which covers `body_md5`) holds on its own, and the
        // body is held to the digest it signed.
        assert_eq!(
            signature.verify_signed("POST", "/apps/1/events", "s"),
            Ok(())
        );
        assert_eq!(
            signature.verify_signed("POST", "/apps/1/events", "t"),
            Err("invalid signature")
        );
        assert_eq!(signature.verify_body(body), Ok(()));
        assert_eq!(
            signature.verify_body(b"{}"),
            Err("body_md5 does not match the body")
        );
    }

    #[test]
    fn keys_are_lowercased_and_sorted_before_signing() {
        // Sent out of order and in capitals; signed sorted, lowercased.
        let signed = format!("auth_key=k&auth_timestamp={NOW}&auth_version=1.0&info=x");
        let sent = format!("INFO=x&auth_version=1.0&auth_timestamp={NOW}&auth_key=k");
        let signature = signed_query("s", "GET", "/apps/1/channels", &signed);
        let signature = signature.rsplit('&').next().unwrap();
        let query = format!("{sent}&{signature}");
        let read = Signature::read(Some(&query), NOW).unwrap();
        assert_eq!(read.verify("GET", "/apps/1/channels", b"", "s"), Ok(()));
    }

    #[test]
    fn missing_old_or_malformed_auth_parameters_are_refused() {
        let at = |timestamp: u64| {
            format!("auth_key=k&auth_timestamp={timestamp}&auth_version=1.0&auth_signature=00")
        };
        let cases = [
            (
                None,
                "auth_key, auth_timestamp and auth_signature are required",
            ),
            (
                Some("auth_key=k&auth_timestamp=1"),
                "auth_key, auth_timestamp and auth_signature are required",
            ),
            (
                Some("auth_key=k&auth_timestamp=1&auth_signature=00&auth_version=2.0"),
                "auth_version must be 1.0",
            ),
            (
                Some("auth_key=k&auth_timestamp=soon&auth_signature=00&auth_version=1.0"),
                "auth_timestamp must be a unix time in seconds",
            ),
        ];
        for (query, why) in cases {
            assert_eq!(Signature::read(query, NOW).unwrap_err(), why, "{query:?}");
        }
        let stale = "auth_timestamp is more than 600 s away from the server's clock";
        for timestamp in [NOW - 601, NOW + 601] {
            assert_eq!(
                Signature::read(Some(&at(timestamp)), NOW).unwrap_err(),
                stale
            );
        }
        for timestamp in [NOW - 600, NOW + 600] {
            assert!(Signature::read(Some(&at(timestamp)), NOW).is_ok());
        }
        let query = at(NOW).replace("=00", "=0g");
        let not_hex = Signature::read(Some(&query), NOW).unwrap();
        assert_eq!(
            not_hex.verify("GET", "/", b"", "s"),
            Err("auth_signature is not hex")
        );
    }

    fn event(json: &str) -> PusherEvent {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn events_become_one_message_per_channel() {
        let messages = event(
            r##"{"name":"e","data":"{\"a\":1}","channels":["news","#server-to-user-ann"],"socket_id":"1.2"}"##,
        )
        .into_messages()
        .unwrap();
        let seen: Vec<_> = messages
            .iter()
            .map(|m| {
                (
                    &m.target,
                    m.event.as_str(),
                    m.data.get(),
                    m.except.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    &Target::Channel("news".into()),
                    "e",
                    r#"{"a":1}"#,
                    Some("1.2")
                ),
                (&Target::User("ann".into()), "e", r#"{"a":1}"#, Some("1.2")),
            ]
        );
    }

    #[test]
    fn events_name_one_to_a_hundred_channels() {
        let channels = |count: usize| {
            let names: Vec<String> = (0..count).map(|n| format!("\"c{n}\"")).collect();
            format!(
                r#"{{"name":"e","data":"1","channels":[{}]}}"#,
                names.join(",")
            )
        };
        assert_eq!(event(&channels(100)).into_messages().unwrap().len(), 100);
        for count in [0, 101] {
            assert_eq!(
                event(&channels(count)).into_messages().unwrap_err(),
                "channels must list 1 to 100 channels"
            );
        }
        for both_or_neither in [
            r#"{"name":"e","data":"1"}"#,
            r#"{"name":"e","data":"1","channel":"a","channels":["b"]}"#,
        ] {
            assert_eq!(
                event(both_or_neither).into_messages().unwrap_err(),
                "give exactly one of channel and channels"
            );
        }
    }

    #[test]
    fn a_request_reaches_at_most_max_batch_or_a_hundred_channels() {
        let events = |count: usize| -> Vec<PusherEvent> {
            (0..count)
                .map(|_| event(r#"{"name":"e","data":"1","channels":["a","b"]}"#))
                .collect()
        };
        assert_eq!(messages(events(50), 10).unwrap().len(), 100);
        assert_eq!(
            messages(events(51), 10).unwrap_err(),
            "one request reaches at most 100 channels"
        );
        assert_eq!(messages(events(100), 200).unwrap().len(), 200);
        assert_eq!(
            messages(events(101), 200).unwrap_err(),
            "one request reaches at most 200 channels"
        );
        // A trigger's `info` is answered only for a request within reach:
        // nothing is counted for one that will be refused.
        let asking = |count: usize| -> Vec<PusherEvent> {
            (0..count)
                .map(|index| {
                    event(&format!(
                        r#"{{"name":"e","data":"1","info":"subscription_count","channels":["a{index}","b{index}"]}}"#
                    ))
                })
                .collect()
        };
        assert_eq!(counted_channels(&asking(50), 10).unwrap().len(), 100);
        assert_eq!(
            counted_channels(&asking(51), 10).unwrap_err(),
            "one request reaches at most 100 channels"
        );
    }

    #[test]
    fn batches_hold_one_to_max_batch_events() {
        let batch = |count: usize| PusherBatch {
            batch: (0..count)
                .map(|_| event(r#"{"name":"e","data":"1","channel":"a"}"#))
                .collect(),
        };
        assert_eq!(batch(3).into_events(3).unwrap().len(), 3);
        assert_eq!(
            batch(0).into_events(3).unwrap_err(),
            "a batch holds 1 to 3 events, got 0"
        );
        assert_eq!(
            batch(4).into_events(3).unwrap_err(),
            "a batch holds 1 to 3 events, got 4"
        );
    }
}
