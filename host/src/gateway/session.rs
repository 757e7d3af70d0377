//! One admitted socket: welcome, frames, heartbeats, keeping the token
//! alive, and closing with the right code.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use super::frames::{self, ClientFrame, ServerFrame};
use super::{Admitted, CloseCode, Refusal};
use crate::hub::SessionCommand;
use crate::plugins::bindings::AuthError;
use crate::state::AppState;

/// How long a closing socket waits for the client's close reply.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a socket closed for an oversized message stays open, so the
/// client can read why before unread input resets the connection.
const UNREAD_INPUT_LINGER: Duration = Duration::from_millis(500);
/// Never touch the token more often than this.
const MIN_KEEPALIVE: Duration = Duration::from_millis(200);
/// Never touch the token less often than this.
const MAX_KEEPALIVE: Duration = Duration::from_secs(300);

/// Why the session loop stopped.
enum Ending {
    /// The client closed or vanished: nothing more to send.
    ClientGone,
    /// The server closes with this code.
    Close(CloseCode, String),
}

/// Send the refusal as an `error` frame and close with its code.
pub(super) async fn refuse(mut socket: WebSocket, refusal: Refusal) {
    tracing::debug!(code = refusal.code.code(), message = %refusal.message, "connection refused");
    close(&mut socket, refusal.code, &refusal.message).await;
}

pub(super) async fn run(mut socket: WebSocket, state: Arc<AppState>, admitted: Admitted) {
    let Admitted { app, claims } = admitted;
    let (registration, mut commands) = state.hub.register(&app.id, &claims.access_id);
    let heartbeat = state.config.heartbeat;
    let welcome = ServerFrame::Welcome {
        connection_id: registration.connection_id(),
        access_id: &claims.access_id,
        heartbeat_s: heartbeat.as_secs(),
    };
    if send(&mut socket, &welcome).await.is_err() {
        return;
    }
    tracing::debug!(app = %app.id, connection_id = registration.connection_id(), "session opened");

    // An open socket keeps its token alive: touch it well within the idle
    // timeout, so the token outlives the socket by a full timeout.
    let keepalive_every = (Duration::from_secs(u64::from(claims.idle_timeout_secs)) / 3)
        .clamp(MIN_KEEPALIVE, MAX_KEEPALIVE);
    let mut keepalive = interval_at(Instant::now() + keepalive_every, keepalive_every);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pings = interval_at(Instant::now() + heartbeat, heartbeat);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    let ending = loop {
        tokio::select! {
            incoming = socket.recv() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(error)) if is_message_too_big(&error) => {
                        break Ending::Close(
                            CloseCode::MessageTooBig,
                            format!("messages are at most {} bytes", state.config.limits.max_frame_bytes),
                        );
                    }
                    _ => break Ending::ClientGone,
                };
                last_heard = Instant::now();
                let reply = match message {
                    Message::Text(text) => answer(text.as_str()),
                    Message::Binary(_) => Some(frame_error(
                        frames::FrameError::BadFrame,
                        "frames are JSON text",
                        None,
                    )),
                    Message::Close(_) => break Ending::ClientGone,
                    // Pings are answered by the WebSocket layer; pongs only
                    // prove liveness.
                    Message::Ping(_) | Message::Pong(_) => None,
                };
                if let Some(reply) = reply
                    && socket.send(Message::Text(reply.into())).await.is_err()
                {
                    break Ending::ClientGone;
                }
            }
            Some(command) = commands.recv() => match command {
                SessionCommand::Close(code) => break Ending::Close(code, closing_message(code)),
            },
            _ = pings.tick() => {
                if last_heard.elapsed() >= heartbeat * 2 {
                    break Ending::Close(
                        CloseCode::HeartbeatTimeout,
                        format!("nothing heard for {} s", (heartbeat * 2).as_secs()),
                    );
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break Ending::ClientGone;
                }
            }
            _ = keepalive.tick() => {
                if let Some(code) = keep_token_alive(&state, &app.id, &claims.access_id).await {
                    break Ending::Close(code, closing_message(code));
                }
            }
        }
    };

    let revoked = matches!(&ending, Ending::Close(CloseCode::TokenRevoked, _));
    if let Ending::Close(code, message) = ending {
        close(&mut socket, code, &message).await;
        if code == CloseCode::MessageTooBig {
            // The rest of the oversized message is still unread; dropping
            // the socket now would reset the connection and could discard
            // our close frame before the client reads it.
            tokio::time::sleep(UNREAD_INPUT_LINGER).await;
        }
    }
    drop(registration);
    // The moment a socket closes counts as activity: the token lives a full
    // idle timeout from here.
    if !revoked {
        keep_token_alive(&state, &app.id, &claims.access_id).await;
    }
    tracing::debug!(app = %app.id, "session closed");
}

/// Restart the token's idle clock; `Some(code)` when the socket must close
/// because the token is gone. A plugin or store failure keeps the socket:
/// the next tick tries again.
async fn keep_token_alive(state: &AppState, app_id: &str, access_id: &str) -> Option<CloseCode> {
    match state.plugins.auth.touch(app_id, access_id).await {
        Ok(Ok(())) => None,
        Ok(Err(AuthError::TokenInvalid)) => Some(CloseCode::TokenRevoked),
        Ok(Err(error)) => {
            tracing::warn!(app_id, ?error, "could not keep a token alive");
            None
        }
        // Already logged by the plugin runtime.
        Err(_) => None,
    }
}

/// Did reading fail because the client sent more than the size limit?
fn is_message_too_big(error: &axum::Error) -> bool {
    let cause = std::error::Error::source(error);
    matches!(
        cause.and_then(|cause| cause.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// The reply to one text frame, if it needs one.
fn answer(text: &str) -> Option<String> {
    match frames::parse(text) {
        Ok(ClientFrame::Ping) => Some(ServerFrame::Pong.to_json()),
        Err((error, message, frame)) => Some(frame_error(error, &message, frame.as_deref())),
    }
}

fn frame_error(error: frames::FrameError, message: &str, frame: Option<&str>) -> String {
    ServerFrame::Error {
        code: error.code(),
        reason: error.reason(),
        message,
        frame,
    }
    .to_json()
}

fn closing_message(code: CloseCode) -> String {
    match code {
        CloseCode::TokenRevoked => "the token was revoked; fetch a new one",
        CloseCode::GoingAway => "the server is going away; reconnect with last_id",
        _ => "closing",
    }
    .to_owned()
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame<'_>) -> Result<(), axum::Error> {
    socket.send(Message::Text(frame.to_json().into())).await
}

/// Send an `error` frame, then a close frame with the same code, and wait
/// briefly for the client's close reply so the handshake ends cleanly.
async fn close(socket: &mut WebSocket, code: CloseCode, message: &str) {
    let error = ServerFrame::Error {
        code: code.code(),
        reason: code.reason(),
        message,
        frame: None,
    };
    if send(socket, &error).await.is_err() {
        return;
    }
    let frame = CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
