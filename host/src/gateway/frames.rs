//! The JSON frames of the WebSocket protocol (see docs/protocol.md).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Error-frame codes that answer one client frame without closing the
/// socket (4300-4399).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not a JSON object with a string `type`, or not a text frame.
    BadFrame,
    /// A `type` this server does not know.
    UnknownType,
    /// A known `type` with missing or malformed fields.
    InvalidFrame,
    /// The router refused: the token does not allow it.
    Forbidden,
    /// The channel name breaks the naming rules.
    InvalidChannel,
    /// The socket is subscribed to `max_subscriptions_per_socket` channels.
    TooManySubscriptions,
    /// A client publish's `data` is over `max_publish_bytes`.
    PayloadTooLarge,
    /// The router plugin failed; try again later.
    Unavailable,
    /// A client publish over the socket's or the token's rate.
    RateLimited,
    /// A presence channel that has its most members refused a new one.
    PresenceFull,
}

impl FrameError {
    pub fn code(self) -> u16 {
        match self {
            FrameError::BadFrame => 4300,
            FrameError::UnknownType => 4301,
            FrameError::InvalidFrame => 4302,
            FrameError::Forbidden => 4303,
            FrameError::InvalidChannel => 4304,
            FrameError::TooManySubscriptions => 4305,
            FrameError::PayloadTooLarge => 4306,
            FrameError::Unavailable => 4307,
            FrameError::RateLimited => 4308,
            FrameError::PresenceFull => 4309,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            FrameError::BadFrame => "bad_frame",
            FrameError::UnknownType => "unknown_type",
            FrameError::InvalidFrame => "invalid_frame",
            FrameError::Forbidden => "forbidden",
            FrameError::InvalidChannel => "invalid_channel",
            FrameError::TooManySubscriptions => "too_many_subscriptions",
            FrameError::PayloadTooLarge => "payload_too_large",
            FrameError::Unavailable => "unavailable",
            FrameError::RateLimited => "rate_limited",
            FrameError::PresenceFull => "presence_full",
        }
    }
}

/// Frames the server sends (`message` frames are built by the broker).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        connection_id: &'a str,
        access_id: &'a str,
        heartbeat_s: u64,
        /// The app's newest message id when the socket went live: a client
        /// that has received nothing yet resumes from here.
        last_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Subscribed {
        channel: &'a str,
        /// As in `welcome`, for this subscription.
        last_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// A presence channel's members, this socket's user included.
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<Vec<crate::presence::MemberView<'a>>>,
    },
    Unsubscribed {
        channel: &'a str,
    },
    Pong,
    Error {
        code: u16,
        reason: &'a str,
        message: &'a str,
        /// The `type` of the client frame this error answers, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        frame: Option<&'a str>,
        /// The channel the refused frame named, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs to a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

/// A client frame, parsed.
#[derive(Debug)]
pub enum ClientFrame {
    Ping,
    Subscribe {
        channel: String,
        /// Replay what the channel got after this message id.
        since: Option<MessageId>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        event: String,
        data: Box<RawValue>,
    },
}

// One struct per frame type, parsed after dispatching on `type` (serde's
// tagged enums cannot carry a `RawValue`, which keeps `data` as sent).
#[derive(Deserialize)]
struct SubscribeFrame {
    channel: String,
    #[serde(default)]
    since: Option<MessageId>,
}

#[derive(Deserialize)]
struct UnsubscribeFrame {
    channel: String,
}

#[derive(Deserialize)]
struct PublishFrame {
    channel: String,
    event: String,
    data: Box<RawValue>,
}

/// A message id as clients send it: a decimal string (numbers accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId(pub u64);

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(id) => Ok(MessageId(id)),
            Raw::Text(text) => text
                .parse()
                .map(MessageId)
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a message id"))),
        }
    }
}

/// Why a text frame could not be parsed: the code, a message, and the
/// frame's type when it had one.
#[derive(Debug)]
pub struct Unparsable {
    pub error: FrameError,
    pub message: String,
    pub frame: Option<String>,
}

/// Just enough of a frame to dispatch on its `type`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

pub fn parse(text: &str) -> Result<ClientFrame, Unparsable> {
    let bad_frame = || Unparsable {
        error: FrameError::BadFrame,
        message: "a frame is a JSON object with a string \"type\"".to_owned(),
        frame: None,
    };
    if !madx_wire::json::opens_object(text.as_bytes()) {
        return Err(bad_frame());
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|_| bad_frame())?;
    let kind: String = envelope.kind.chars().take(64).collect();
    let malformed = |error: serde_json::Error| Unparsable {
        error: FrameError::InvalidFrame,
        message: format!("malformed {kind} frame: {error}"),
        frame: Some(kind.clone()),
    };
    match envelope.kind.as_str() {
        "ping" => Ok(ClientFrame::Ping),
        "subscribe" => {
            let frame: SubscribeFrame = serde_json::from_str(text).map_err(malformed)?;
            Ok(ClientFrame::Subscribe {
                channel: frame.channel,
                since: frame.since,
            })
        }
        "unsubscribe" => {
            let frame: UnsubscribeFrame = serde_json::from_str(text).map_err(malformed)?;
            Ok(ClientFrame::Unsubscribe {
                channel: frame.channel,
            })
        }
        "publish" => {
            let frame: PublishFrame = serde_json::from_str(text).map_err(malformed)?;
            Ok(ClientFrame::Publish {
                channel: frame.channel,
                event: frame.event,
                data: frame.data,
            })
        }
        _ => Err(Unparsable {
            error: FrameError::UnknownType,
            message: format!("unknown frame type {kind:?}"),
            frame: Some(kind),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> FrameError {
        parse(text).unwrap_err().error
    }

    #[test]
    fn frames_parse_by_type() {
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping)));
        assert!(matches!(
            parse(r#"{"type":"subscribe","channel":"news","since":"42"}"#),
            Ok(ClientFrame::Subscribe {
                since: Some(MessageId(42)),
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"publish","channel":"c","event":"e","data":{"a":[1]}}"#),
            Ok(ClientFrame::Publish { data, .. }) if data.get() == r#"{"a":[1]}"#
        ));
        assert_eq!(error_of(r#"{"type":"dance"}"#), FrameError::UnknownType);
        assert_eq!(error_of("not json"), FrameError::BadFrame);
        assert_eq!(error_of(r#"{"kind":"ping"}"#), FrameError::BadFrame);
        assert_eq!(error_of(r#"["ping"]"#), FrameError::BadFrame);
        assert_eq!(
            error_of(r#"{"type":"subscribe"}"#),
            FrameError::InvalidFrame
        );
        assert_eq!(
            error_of(r#"{"type":"subscribe","channel":"c","since":"x"}"#),
            FrameError::InvalidFrame
        );
        assert_eq!(
            error_of(r#"{"type":"publish","channel":"c","event":"e"}"#),
            FrameError::InvalidFrame
        );
    }

    #[test]
    fn error_frames_name_what_they_answer() {
        let frame = ServerFrame::Error {
            code: 4303,
            reason: "forbidden",
            message: "m",
            frame: Some("subscribe"),
            channel: Some("news"),
        };
        let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["frame"], "subscribe");
        assert_eq!(json["channel"], "news");
        assert_eq!(json["code"], 4303);
    }
}
