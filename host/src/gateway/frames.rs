//! The JSON frames of the WebSocket protocol (see docs/protocol.md).

use serde::{Deserialize, Serialize};

/// Error-frame codes that answer one client frame without closing the
/// socket (4300-4399).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not a JSON object with a string `type`, or not a text frame.
    BadFrame,
    /// A `type` this server does not know.
    UnknownType,
}

impl FrameError {
    pub fn code(self) -> u16 {
        match self {
            FrameError::BadFrame => 4300,
            FrameError::UnknownType => 4301,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            FrameError::BadFrame => "bad_frame",
            FrameError::UnknownType => "unknown_type",
        }
    }
}

/// Frames the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        connection_id: &'a str,
        access_id: &'a str,
        heartbeat_s: u64,
    },
    Pong,
    Error {
        code: u16,
        reason: &'a str,
        message: &'a str,
        /// The `type` of the client frame this error answers, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        frame: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs to a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

/// What a client frame turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Ping,
}

/// Just enough of a frame to dispatch on its `type`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

/// Parse a text frame; on error, the code, a message, and the frame's type
/// when it had one.
pub fn parse(text: &str) -> Result<ClientFrame, (FrameError, String, Option<String>)> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|_| {
        (
            FrameError::BadFrame,
            "a frame is a JSON object with a string \"type\"".to_owned(),
            None,
        )
    })?;
    match envelope.kind.as_str() {
        "ping" => Ok(ClientFrame::Ping),
        other => Err((
            FrameError::UnknownType,
            format!("unknown frame type {other:?}"),
            Some(envelope.kind.chars().take(64).collect()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_by_type() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert!(matches!(
            parse(r#"{"type":"dance"}"#),
            Err((FrameError::UnknownType, _, Some(kind))) if kind == "dance"
        ));
        assert!(matches!(
            parse("not json"),
            Err((FrameError::BadFrame, _, None))
        ));
        assert!(matches!(
            parse(r#"{"kind":"ping"}"#),
            Err((FrameError::BadFrame, _, None))
        ));
    }

    #[test]
    fn error_frames_name_what_they_answer() {
        let frame = ServerFrame::Error {
            code: 4301,
            reason: "unknown_type",
            message: "m",
            frame: Some("dance"),
        };
        let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["frame"], "dance");
        assert_eq!(json["code"], 4301);
    }
}
