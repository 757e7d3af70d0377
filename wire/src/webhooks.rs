//! Pusher's webhooks as a host sends them and a back-end checks them: the
//! event names, the body (`{"time_ms", "events": [...]}`) and its
//! signature, so existing Pusher webhook handlers verify ours unchanged
//! (see docs/webhooks.md).

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::pusher::{hex, unhex};

/// The header naming the app's key.
pub const KEY_HEADER: &str = "X-Pusher-Key";
/// The header with the lowercase hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "X-Pusher-Signature";

/// What a webhook can ask to be told about; the names are Pusher's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    ClientEvent,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::ChannelOccupied,
        EventKind::ChannelVacated,
        EventKind::MemberAdded,
        EventKind::MemberRemoved,
        EventKind::ClientEvent,
    ];

    /// The `name` of the event in a body, as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ChannelOccupied => "channel_occupied",
            EventKind::ChannelVacated => "channel_vacated",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::ClientEvent => "client_event",
        }
    }
}

/// One thing that happened, as a webhook reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ChannelOccupied {
        channel: String,
    },
    ChannelVacated {
        channel: String,
    },
    MemberAdded {
        channel: String,
        user_id: String,
    },
    MemberRemoved {
        channel: String,
        user_id: String,
    },
    ClientEvent {
        channel: String,
        event: String,
        /// The published `data` as JSON text; sent as a string, as Pusher
        /// does.
        data: String,
        /// The publishing connection's id.
        socket_id: String,
        /// The publishing token's user, when it has one.
        user_id: Option<String>,
    },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ChannelOccupied { .. } => EventKind::ChannelOccupied,
            Event::ChannelVacated { .. } => EventKind::ChannelVacated,
            Event::MemberAdded { .. } => EventKind::MemberAdded,
            Event::MemberRemoved { .. } => EventKind::MemberRemoved,
            Event::ClientEvent { .. } => EventKind::ClientEvent,
        }
    }

    /// The event's fields in the order a body writes them: `name`, then
    /// the others as Pusher's documentation lists them.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![("name", self.kind().name())];
        match self {
            Event::ChannelOccupied { channel } | Event::ChannelVacated { channel } => {
                fields.push(("channel", channel));
            }
            Event::MemberAdded { channel, user_id } | Event::MemberRemoved { channel, user_id } => {
                fields.extend([("channel", channel.as_str()), ("user_id", user_id)]);
            }
            Event::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user_id,
            } => {
                fields.extend([
                    ("channel", channel.as_str()),
                    ("event", event),
                    ("data", data),
                    ("socket_id", socket_id),
                ]);
                if let Some(user_id) = user_id {
                    fields.push(("user_id", user_id));
                }
            }
        }
        fields
    }

    /// The event's object in a body's `events`.
    pub fn to_json(&self) -> Value {
        let object: Map<String, Value> = self
            .fields()
            .into_iter()
            .map(|(field, value)| (field.to_owned(), Value::from(value)))
            .collect();
        Value::Object(object)
    }
}

/// The body of one webhook request: `{"time_ms":<unix ms>,"events":[...]}`,
/// fields in a fixed order whatever serde_json's map features. The
/// signature covers these exact bytes.
pub fn body(time_ms: u64, events: &[Event]) -> Vec<u8> {
    let mut body = format!("{{\"time_ms\":{time_ms},\"events\":[");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push('{');
        for (position, (field, value)) in event.fields().into_iter().enumerate() {
            if position > 0 {
                body.push(',');
            }
            // A JSON string's Display escapes it and cannot fail.
            body.push_str(&format!("\"{field}\":{}", Value::from(value)));
        }
        body.push('}');
    }
    body.push_str("]}");
    body.into_bytes()
}

/// `X-Pusher-Signature`: the lowercase hex HMAC-SHA256 of `body` with the
/// app's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    hex(&mac(secret, body).finalize().into_bytes())
}

/// Whether `presented` (hex, either case) is the signature of `body`,
/// compared in constant time: what a receiver checks.
pub fn verify(secret: &str, body: &[u8], presented: &str) -> bool {
    unhex(presented).is_some_and(|presented| mac(secret, body).verify_slice(&presented).is_ok())
}

fn mac(secret: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (longer ones are hashed first): the
    // hmac crate's `new_from_slice` always answers `Ok` for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_lowercase_hex() {
        // RFC 4231, test case 2.
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), expected);
        assert!(verify("Jefe", b"what do ya want for nothing?", expected));
        assert!(verify(
            "Jefe",
            b"what do ya want for nothing?",
            &expected.to_uppercase()
        ));
        assert!(!verify("Jefe", b"what do ya want for nothing!", expected));
        assert!(!verify("jefe", b"what do ya want for nothing?", expected));
        assert!(!verify("Jefe", b"what do ya want for nothing?", "zz"));
        assert!(!verify("Jefe", b"what do ya want for nothing?", ""));
    }

    #[test]
    fn a_body_is_pushers_with_its_known_signature() {
        let events = [
            Event::ChannelOccupied {
                channel: "news".into(),
            },
            Event::MemberAdded {
                channel: "presence-room".into(),
                user_id: "u1".into(),
            },
            Event::ClientEvent {
                channel: "chat".into(),
                event: "said".into(),
                data: r#"{"text":"hi"}"#.into(),
                socket_id: "1.2".into(),
                user_id: None,
            },
        ];
        let body = body(1_700_000_000_123, &events);
        let expected = concat!(
            r#"{"time_ms":1700000000123,"events":[{"name":"channel_occupied","channel":"news"},"#,
            r#"{"name":"member_added","channel":"presence-room","user_id":"u1"},"#,
            r#"{"name":"client_event","channel":"chat","event":"said","data":"{\"text\":\"hi\"}","socket_id":"1.2"}]}"#
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);
        // Computed independently: printf '%s' "$body" | openssl dgst -sha256 -hmac secret-1
        assert_eq!(signature("secret-1", &body), KNOWN_BODY_SIGNATURE);
    }

    const KNOWN_BODY_SIGNATURE: &str =
        "fa459846a87e1e2b704c025ab96badac3f024b11f4cb62e7f614fa5f1b0d195d";

    #[test]
    fn a_known_users_client_event_names_the_user() {
        let event = Event::ClientEvent {
            channel: "c".into(),
            event: "e".into(),
            data: "1".into(),
            socket_id: "3.4".into(),
            user_id: Some("alice".into()),
        };
        assert_eq!(event.kind(), EventKind::ClientEvent);
        assert_eq!(event.to_json()["user_id"], "alice");
        assert_eq!(event.to_json()["data"], "1");
    }

    #[test]
    fn event_names_are_pushers() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(
            names,
            [
                "channel_occupied",
                "channel_vacated",
                "member_added",
                "member_removed",
                "client_event"
            ]
        );
        for kind in EventKind::ALL {
            let parsed: EventKind =
                serde_json::from_value(Value::from(kind.name())).expect("a known name");
            assert_eq!(parsed, kind);
        }
        assert!(serde_json::from_value::<EventKind>(Value::from("nope")).is_err());
    }
}
