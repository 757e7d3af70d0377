//! WebSocket clients of the gateway: connect (welcomed or refused with a
//! close code), frames in and out, and reading up to a sentinel.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::PATIENCE;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a connection attempt led to.
pub enum Connected {
    Welcome { socket: Box<Socket>, welcome: Value },
    Refused { code: u16, error: Value },
}

impl Connected {
    /// The socket and welcome frame; panics on refusal.
    pub fn welcomed(self) -> (Socket, Value) {
        match self {
            Connected::Welcome { socket, welcome } => (*socket, welcome),
            Connected::Refused { code, error } => panic!("refused with {code}: {error}"),
        }
    }

    /// The close code and error frame; panics when welcomed.
    pub fn refused(self) -> (u16, Value) {
        match self {
            Connected::Refused { code, error } => (code, error),
            Connected::Welcome { welcome, .. } => panic!("unexpectedly welcomed: {welcome}"),
        }
    }
}

/// Open a WebSocket and read until a welcome or a close.
pub async fn connect(url: &str) -> Connected {
    let (mut socket, _) = tokio::time::timeout(PATIENCE, connect_async(url))
        .await
        .expect("connect timed out")
        .expect("WebSocket upgrade");
    let first = next_json(&mut socket).await.expect("a first frame");
    if first["type"] == "welcome" {
        return Connected::Welcome {
            socket: Box::new(socket),
            welcome: first,
        };
    }
    assert_eq!(first["type"], "error", "unexpected first frame {first}");
    let code = closed_with(&mut socket).await;
    assert_eq!(
        first["code"].as_u64(),
        Some(u64::from(code)),
        "error frame {first} vs close {code}"
    );
    Connected::Refused { code, error: first }
}

/// The next JSON text frame, or `None` when the socket closes first.
pub async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no frame in time")?;
        match message.ok()? {
            Message::Text(text) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON frame"));
            }
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Read until the close frame and return its code (after an optional
/// `error` frame with the same code).
pub async fn closed_with(socket: &mut Socket) -> u16 {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                assert_eq!(
                    frame["type"], "error",
                    "unexpected frame before close: {frame}"
                );
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("socket failed before closing: {error}"),
        }
    }
}

pub async fn send_json(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("send frame");
}

/// Every `message` frame up to and including the one with event
/// `sentinel`. Asserting on what arrived before a later sentinel makes
/// "did not receive" checks able to fail.
pub async fn messages_until(socket: &mut Socket, sentinel: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let frame = next_json(socket)
            .await
            .expect("socket closed before the sentinel");
        if frame["type"] != "message" {
            continue;
        }
        let done = frame["event"] == sentinel;
        messages.push(frame);
        if done {
            return messages;
        }
    }
}

/// Read until the close frame, skipping everything else; the close code.
pub async fn close_code_skipping_messages(socket: &mut Socket) -> Option<u16> {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no close in time")?;
        match message {
            Ok(Message::Close(frame)) => return frame.map(|frame| u16::from(frame.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}
