//! One admitted socket, from welcome to close:
//!
//! - [`opening`]: registration, `welcome` and the inboxes' recovery;
//! - this module: the loop (queued messages, client frames, heartbeats,
//!   keeping the token alive) and closing with the right code;
//! - [`client_frames`]: answering `ping`, `subscribe`, `unsubscribe` and
//!   `publish`;
//! - [`live_filter`]: dropping live copies of what was already sent;
//! - [`error_window`]: closing a socket that sends too many bad frames;
//! - [`keepalive`]: the token's idle clock while the socket is open;
//! - [`closing`]: the close handshake, refusals and read violations.

mod client_frames;
mod closing;
mod error_window;
mod keepalive;
mod live_filter;
mod opening;

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use tokio::time::{Instant, sleep_until, timeout};

use super::frames::{FrameError, ServerFrame};
use super::{Admitted, CloseCode};
use crate::hub::Registration;
use crate::limits::SocketRate;
use crate::mailbox::{Delivery, Mail, Mailbox, SessionCommand};
use crate::plugins::bindings::Claims;
use crate::presence::Memberships;
use crate::state::{App, AppState};
use closing::{Violation, close, closing_message, read_violation};
use error_window::ErrorWindow;
use live_filter::LiveFilter;

pub(super) use closing::refuse;

/// How long a socket closed for an oversized message stays open, so the
/// client can read why before unread input resets the connection.
const UNREAD_INPUT_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// Why the session loop stopped.
enum Ending {
    /// The client closed or vanished: nothing more to send.
    ClientGone,
    /// The server closes with this code.
    Close(CloseCode, String),
}

impl Ending {
    /// The disconnect metric's `reason` label.
    fn reason(&self) -> &'static str {
        match self {
            Ending::ClientGone => "client",
            Ending::Close(code, _) => code.reason(),
        }
    }
}

/// An admitted socket, registered and welcomed: what its task keeps for
/// as long as it is open.
pub(super) struct Opened {
    session: Session,
    mailbox: Mailbox,
}

/// Register the socket, send `welcome` and recover its inboxes; `None`
/// when the socket was closed on the way.
pub(super) async fn open(
    socket: WebSocket,
    state: Arc<AppState>,
    admitted: Admitted,
) -> Option<Opened> {
    let (session, mailbox) = opening::open(socket, state, admitted).await?;
    Some(Opened { session, mailbox })
}

impl Opened {
    /// Serve the socket until it closes.
    ///
    /// An `async` block, not an `async fn`: an `async fn` keeps its
    /// by-value arguments twice in its future (as arguments and as the
    /// body's bindings), and this future lives as long as the socket.
    pub(super) fn serve(self) -> impl Future<Output = ()> + Send {
        let Opened {
            mut session,
            mailbox,
        } = self;
        async move {
            let ending = session.serve_until_ending(&mailbox).await;
            // Boxed: closing (the close handshake, leaving presence
            // channels) needs space an open socket should not carry.
            Box::pin(session.finish(mailbox, ending)).await;
        }
    }
}

/// The state of one admitted socket.
struct Session {
    socket: WebSocket,
    state: Arc<AppState>,
    app: Arc<App>,
    claims: Claims,
    registration: Registration,
    errors: ErrorWindow,
    live: LiveFilter,
    /// The socket's and its token's budgets for publishes and subscribes.
    frame_rate: SocketRate,
    /// The presence channels this socket made its user a member of (made
    /// at its first presence subscribe; left when the session ends).
    memberships: Option<Memberships>,
}

impl Session {
    /// The loop: queued messages, client frames and timers, until one of
    /// them ends the session.
    async fn serve_until_ending(&mut self, mailbox: &Mailbox) -> Ending {
        let heartbeat = self.state.config.heartbeat;
        // An open socket keeps its token alive: touch it well within the
        // idle timeout (no store write per frame), so the token outlives
        // the socket by a full timeout.
        let keepalive_every = keepalive::interval(self.claims.idle_timeout_secs);
        // One timer for both duties, set to the nearer deadline: every
        // wake-up of the loop polls each branch, so fewer is cheaper.
        let mut next_ping = Instant::now() + heartbeat;
        let mut next_keepalive = Instant::now() + keepalive_every;
        let timer = sleep_until(next_ping.min(next_keepalive));
        tokio::pin!(timer);
        let mut last_heard = Instant::now();

        loop {
            // Biased: commands (close) first, then queued messages, then
            // client frames, so a message accepted before a client frame
            // arrives is sent before that frame is answered.
            tokio::select! {
                biased;
                mail = mailbox.next() => match mail {
                    Mail::Command(SessionCommand::Close(code)) => {
                        break Ending::Close(code, closing_message(code))
                    }
                    Mail::Message(delivery) => match self.send_live(delivery).await {
                    Ok(()) => {}
                    Err(SendError::Stalled) => break Ending::Close(
                        CloseCode::SlowConsumer,
                        closing_message(CloseCode::SlowConsumer),
                    ),
                    Err(SendError::Gone) => break Ending::ClientGone,
                    },
                },
                incoming = self.socket.recv() => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => match read_violation(&error) {
                            Some(Violation::TooBig) => {
                                let limit = self.state.config.limits.max_frame_bytes;
                                break Ending::Close(
                                    CloseCode::MessageTooBig,
                                    format!("messages are at most {limit} bytes"),
                                );
                            }
                            Some(Violation::NotUtf8) => break Ending::Close(
                                CloseCode::InvalidUtf8,
                                "text messages must be UTF-8".to_owned(),
                            ),
                            None => break Ending::ClientGone,
                        },
                        None => break Ending::ClientGone,
                    };
                    last_heard = Instant::now();
                    let outcome = match message {
                        // Boxed: plugin calls make this future large, and an
                        // idle session should not carry that space inline.
                        Message::Text(text) => Box::pin(self.handle_text(text.as_str())).await,
                        Message::Binary(_) => {
                            Box::pin(self.refuse_frame(FrameError::BadFrame, "frames are JSON text", None, None))
                                .await
                        }
                        Message::Close(_) => Err(Ending::ClientGone),
                        // Pings are answered by the WebSocket layer; pongs
                        // only prove liveness.
                        Message::Ping(_) | Message::Pong(_) => Ok(()),
                    };
                    if let Err(ending) = outcome {
                        break ending;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= next_ping {
                        next_ping = now + heartbeat;
                        if last_heard.elapsed() >= heartbeat * 2 {
                            break Ending::Close(
                                CloseCode::HeartbeatTimeout,
                                format!("nothing heard for {} s", (heartbeat * 2).as_secs()),
                            );
                        }
                        match self.send(Message::Ping(Default::default())).await {
                            Ok(()) => {}
                            Err(SendError::Stalled) => break Ending::Close(
                                CloseCode::HeartbeatTimeout,
                                "the peer stopped reading".to_owned(),
                            ),
                            Err(SendError::Gone) => break Ending::ClientGone,
                        }
                    }
                    if now >= next_keepalive {
                        next_keepalive = now + keepalive_every;
                        let (state, app, claims) = (&self.state, &self.app, &self.claims);
                        if let Some(code) = Box::pin(keepalive::touch_token(state, &app.id, claims)).await {
                            break Ending::Close(code, closing_message(code));
                        }
                    }
                    timer.as_mut().reset(next_ping.min(next_keepalive));
                }
            }
        }
    }

    /// Count the ending, close the socket with its code, leave presence
    /// and restart the token's idle clock.
    async fn finish(mut self, mailbox: Mailbox, ending: Ending) {
        self.state.metrics.disconnect(&self.app.id, ending.reason());
        let revoked = matches!(&ending, Ending::Close(CloseCode::TokenRevoked, _));
        if let Ending::Close(code, message) = ending {
            if code == CloseCode::GoingAway {
                // Hand over what was already accepted for this socket,
                // including what is still queued for hand-off.
                self.state.broker.hand_off_queued();
                while let Some(delivery) = mailbox.try_next_message() {
                    if self.send_live(delivery).await.is_err() {
                        break;
                    }
                }
            }
            tracing::info!(app = %self.app.id, code = code.code(), reason = code.reason(), "closing socket");
            close(&mut self.socket, code, &message).await;
            if code == CloseCode::MessageTooBig {
                // The rest of the oversized message is still unread;
                // dropping the socket now would reset the connection and
                // could discard our close frame before the client reads it.
                tokio::time::sleep(UNREAD_INPUT_LINGER).await;
            }
        }
        let Session {
            state,
            app,
            claims,
            registration,
            memberships,
            ..
        } = self;
        // Members leave before the session's channels may be vacated.
        if let Some(mut memberships) = memberships {
            memberships.leave_all().await;
        }
        drop(registration);
        // The moment a socket closes counts as activity: the token lives a
        // full idle timeout from here.
        if !revoked {
            Box::pin(keepalive::touch_token(&state, &app.id, &claims)).await;
        }
        tracing::debug!(app = %app.id, "session closed");
    }

    /// Send an `error` frame for a refused client frame; too many of them
    /// in a short time close the socket.
    async fn refuse_frame(
        &mut self,
        error: FrameError,
        message: &str,
        frame: Option<&str>,
        channel: Option<&str>,
    ) -> Result<(), Ending> {
        let reply = ServerFrame::Error {
            code: error.code(),
            reason: error.reason(),
            message,
            frame,
            channel,
        };
        self.reply(&reply).await?;
        if self
            .errors
            .record(self.state.config.limits.max_frame_errors)
        {
            return Err(Ending::Close(
                CloseCode::TooManyErrors,
                "too many refused frames".to_owned(),
            ));
        }
        Ok(())
    }

    async fn reply(&mut self, frame: &ServerFrame<'_>) -> Result<(), Ending> {
        self.send_text(frame.to_json().into())
            .await
            .map_err(|_| Ending::ClientGone)
    }

    /// Send a live message unless the session already sent it.
    async fn send_live(&mut self, delivery: Delivery) -> Result<(), SendError> {
        if self.live.admits(&delivery) {
            self.send_text(delivery.frame).await
        } else {
            Ok(())
        }
    }

    /// Send one text frame. A peer that takes no bytes for two heartbeat
    /// intervals is stalled: waiting longer would hold this session (and
    /// its close) hostage.
    async fn send_text(&mut self, text: Utf8Bytes) -> Result<(), SendError> {
        self.send(Message::Text(text)).await
    }

    async fn send(&mut self, message: Message) -> Result<(), SendError> {
        let patience = self.state.config.heartbeat * 2;
        match timeout(patience, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendError::Gone),
            Err(_) => Err(SendError::Stalled),
        }
    }
}

/// Why a frame could not be sent.
enum SendError {
    /// The connection is gone.
    Gone,
    /// The peer stopped reading.
    Stalled,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `serve` returns, read from its type alone.
    fn size_of_returned<A, F>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open socket's task holds this future for as long as the
    /// socket lives; an idle socket costs about 5.8 KiB in all (of a 6 KiB
    /// budget, docs/benchmarks.md). Steps that need more space (opening,
    /// plugin calls, closing) are boxed; one that slips inline into the
    /// loop shows up here first (the opening steps once doubled it).
    #[test]
    fn an_open_sockets_task_stays_small() {
        let serving = size_of_returned(Opened::serve);
        assert!(serving <= 2048, "an open socket's task is {serving} bytes");
    }

    #[test]
    fn an_ending_is_counted_by_who_closed_and_why() {
        assert_eq!(Ending::ClientGone.reason(), "client");
        let slow = Ending::Close(CloseCode::SlowConsumer, String::new());
        assert_eq!(slow.reason(), "slow_consumer");
    }
}
