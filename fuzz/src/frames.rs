//! The client frames a session parses from each text frame.

use madx_pusher::gateway::frames::{self, ClientFrame, FrameError};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A text frame, as the session parses it. Invariants: an accepted frame is
/// the JSON object it was sent as (same type, fields and data) and
/// re-serialises to a frame that parses the same; a refused one carries one
/// of the parser's codes and, past the envelope, the (bounded) type it had.
pub fn client_frame(data: &[u8]) {
    // WebSocket text frames are UTF-8; anything else never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // serde_json's `Value` refuses numbers beyond f64 that the frame parser
    // only skips over: the fields are compared when it can read the frame.
    let value: Option<Value> = serde_json::from_str(text).ok();
    match frames::parse(text) {
        Ok(frame) => {
            assert!(starts_as_object(text.as_bytes()), "accepted {text:?}");
            if let Some(value) = &value {
                check_fields(&frame, value);
            }
            let again = frames::parse(&to_json(&frame))
                .unwrap_or_else(|error| panic!("re-serialised frame refused: {error:?}"));
            assert_eq!(format!("{frame:?}"), format!("{again:?}"));
        }
        Err(refused) => {
            match refused.error {
                FrameError::BadFrame => assert!(refused.frame.is_none()),
                FrameError::UnknownType | FrameError::InvalidFrame => {
                    let kind = refused.frame.as_deref().expect("the type is named");
                    assert!(kind.chars().count() <= 64, "type not bounded: {kind:?}");
                    assert!(
                        starts_as_object(text.as_bytes()),
                        "read a type from {text:?}"
                    );
                    if let Some(value) = &value {
                        let sent = value
                            .get("type")
                            .and_then(Value::as_str)
                            .expect("only an object with a string type gets past the envelope");
                        assert!(sent.starts_with(kind));
                    }
                }
                other => panic!("the parser answered {other:?}"),
            }
            assert!((4300..=4302).contains(&refused.error.code()));
        }
    }
}

/// Does this JSON text hold an object (rather than an array or a scalar)?
pub(crate) fn starts_as_object(text: &[u8]) -> bool {
    let json_whitespace = |byte: &u8| b" \t\n\r".contains(byte);
    text.iter().find(|byte| !json_whitespace(byte)) == Some(&b'{')
}

/// An accepted frame holds what the JSON object says.
fn check_fields(frame: &ClientFrame, value: &Value) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("accepted a frame that is not a JSON object: {value}"));
    assert_eq!(
        object.get("type").and_then(Value::as_str),
        Some(kind(frame))
    );
    let field = |name: &str| object.get(name).unwrap_or(&Value::Null);
    match frame {
        ClientFrame::Ping => {}
        ClientFrame::Subscribe { channel, since } => {
            assert_eq!(field("channel").as_str(), Some(channel.as_str()));
            let expected = match field("since") {
                Value::Null => None,
                Value::Number(number) => number.as_u64(),
                Value::String(text) => text.parse().ok(),
                other => panic!("accepted since = {other}"),
            };
            assert_eq!(since.map(|id| id.0), expected);
        }
        ClientFrame::Unsubscribe { channel } => {
            assert_eq!(field("channel").as_str(), Some(channel.as_str()));
        }
        ClientFrame::Publish {
            channel,
            event,
            data,
        } => {
            assert_eq!(field("channel").as_str(), Some(channel.as_str()));
            assert_eq!(field("event").as_str(), Some(event.as_str()));
            let sent: Value =
                serde_json::from_str(data.get()).expect("data is the JSON it was sent as");
            assert_eq!(&sent, field("data"));
        }
    }
}

fn kind(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Ping => "ping",
        ClientFrame::Subscribe { .. } => "subscribe",
        ClientFrame::Unsubscribe { .. } => "unsubscribe",
        ClientFrame::Publish { .. } => "publish",
    }
}

/// A frame as a client would send it.
fn to_json(frame: &ClientFrame) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    }
    let mut out = Frame {
        kind: kind(frame),
        channel: None,
        since: None,
        event: None,
        data: None,
    };
    match frame {
        ClientFrame::Ping => {}
        ClientFrame::Subscribe { channel, since } => {
            out.channel = Some(channel);
            out.since = since.map(|id| id.0.to_string());
        }
        ClientFrame::Unsubscribe { channel } => out.channel = Some(channel),
        ClientFrame::Publish {
            channel,
            event,
            data,
        } => {
            out.channel = Some(channel);
            out.event = Some(event);
            out.data = Some(data);
        }
    }
    serde_json::to_string(&out).expect("plain strings serialise")
}
