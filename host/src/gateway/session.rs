//! One admitted socket: welcome and inbox recovery, client frames, queued
//! messages, heartbeats, keeping the token alive, and closing with the
//! right code.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep_until, timeout};

use super::frames::{self, ClientFrame, FrameError, ServerFrame};
use super::publish_rate::SocketRate;
use super::{Admitted, CloseCode, Refusal};
use crate::broker::{Outgoing, Recovery, channel_label, frame_label};
use crate::hub::{Delivery, Full, Registration, SessionCommand, SessionSpec, Target};
use crate::mailbox::{Mail, Mailbox};
use crate::plugins::bindings::{AuthError, Claims, RouteError};
use crate::state::{App, AppState};

/// How long a closing socket waits for the client's close reply.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a socket closed for an oversized message stays open, so the
/// client can read why before unread input resets the connection.
const UNREAD_INPUT_LINGER: Duration = Duration::from_millis(500);
/// Never touch the token more often than this.
const MIN_KEEPALIVE: Duration = Duration::from_millis(200);
/// Never touch the token less often than this.
const MAX_KEEPALIVE: Duration = Duration::from_secs(300);
/// The window in which `max_frame_errors` refused frames close the socket.
const ERROR_WINDOW: Duration = Duration::from_secs(10);

/// Why the session loop stopped.
enum Ending {
    /// The client closed or vanished: nothing more to send.
    ClientGone,
    /// The server closes with this code.
    Close(CloseCode, String),
}

/// Send the refusal as an `error` frame and close with its code.
pub(super) async fn refuse(mut socket: WebSocket, refusal: Refusal) {
    tracing::info!(
        code = refusal.code.code(),
        reason = refusal.code.reason(),
        message = %refusal.message,
        "connection refused"
    );
    close(&mut socket, refusal.code, &refusal.message).await;
}

pub(super) async fn run(socket: WebSocket, state: Arc<AppState>, admitted: Admitted) {
    // Boxed: the opening steps (registration, recovery, welcome) need a lot
    // of state that is dead once the socket is open; inline, every open
    // socket's task would keep that space for its whole life.
    if let Some((session, mailbox)) = Box::pin(open(socket, state, admitted)).await {
        session.serve(mailbox).await;
    }
}

/// Register the session, send `welcome` and the recovered messages; the
/// session, ready to serve, unless the socket was refused or went away.
async fn open(
    socket: WebSocket,
    state: Arc<AppState>,
    admitted: Admitted,
) -> Option<(Session, Mailbox)> {
    let Admitted {
        app,
        claims,
        last_id,
    } = admitted;
    let limits = state.config.limits;
    let spec = SessionSpec {
        app_id: &app.id,
        access_id: &claims.access_id,
        user_id: claims.user_id.as_deref(),
        queue: limits.send_queue,
        max_per_token: limits.max_sockets_per_token,
        max_per_app: limits.max_sockets_per_app,
    };
    let mut inboxes = vec![Target::Token(claims.access_id.clone())];
    if let Some(user_id) = &claims.user_id {
        inboxes.push(Target::User(user_id.clone()));
    }
    // The broker registers and reads the inboxes' history so that nothing
    // falls between the replay and live messages.
    let attached = state
        .broker
        .attach(&app.id, &inboxes, last_id, || state.hub.register(spec))
        .await;
    let (registered, recovery, position) = match attached {
        Ok(attached) => (attached.attached, attached.recovery, attached.position),
        Err(error) => {
            state
                .metrics
                .connect(&app.id, CloseCode::Unavailable.reason());
            refuse(socket, Refusal::unavailable(error)).await;
            return None;
        }
    };
    let (registration, mailbox) = match registered {
        Ok(registered) => registered,
        Err(full) => {
            let message = match full {
                Full::Token => "this token has too many open sockets",
                Full::App => "this app has too many open sockets on this node",
            };
            state
                .metrics
                .connect(&app.id, CloseCode::OverCapacity.reason());
            refuse(socket, Refusal::new(CloseCode::OverCapacity, message)).await;
            return None;
        }
    };
    state.metrics.connect(&app.id, "accepted");

    let publish_rate = state.publish_rates.socket(&app.id, &claims.access_id);
    let mut session = Session {
        socket,
        state,
        app,
        claims,
        registration,
        errors: ErrorWindow::new(),
        live: LiveFilter::default(),
        publish_rate,
    };
    if let Some(recovery) = &recovery {
        for inbox in &inboxes {
            session.live.expect_overlap(recovery, channel_label(inbox));
        }
    }
    let welcome = ServerFrame::Welcome {
        connection_id: session.registration.connection_id(),
        access_id: &session.claims.access_id,
        heartbeat_s: session.state.config.heartbeat.as_secs(),
        last_id: position.to_string(),
        recovered: recovery.as_ref().map(|recovery| recovery.recovered),
    };
    let welcome = welcome.to_json();
    if session.send_text(welcome.into()).await.is_err() {
        return None;
    }
    for frame in recovery.map(|recovery| recovery.frames).unwrap_or_default() {
        if session.send_text(frame).await.is_err() {
            return None;
        }
    }
    tracing::debug!(app = %session.app.id, connection_id = session.registration.connection_id(), "session opened");
    Some((session, mailbox))
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
    publish_rate: SocketRate,
}

impl Session {
    async fn serve(mut self, mailbox: Mailbox) {
        let heartbeat = self.state.config.heartbeat;
        // An open socket keeps its token alive: touch it well within the
        // idle timeout (no store write per frame), so the token outlives
        // the socket by a full timeout.
        let keepalive_every = (Duration::from_secs(u64::from(self.claims.idle_timeout_secs)) / 3)
            .clamp(MIN_KEEPALIVE, MAX_KEEPALIVE);
        // One timer for both duties, set to the nearer deadline: every
        // wake-up of the loop polls each branch, so fewer is cheaper.
        let mut next_ping = Instant::now() + heartbeat;
        let mut next_keepalive = Instant::now() + keepalive_every;
        let timer = sleep_until(next_ping.min(next_keepalive));
        tokio::pin!(timer);
        let mut last_heard = Instant::now();

        let ending = loop {
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
                            self.refuse_frame(FrameError::BadFrame, "frames are JSON text", None, None)
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
                        let (state, app, access_id) = (&self.state, &self.app, &self.claims.access_id);
                        if let Some(code) = Box::pin(keep_token_alive(state, &app.id, access_id)).await {
                            break Ending::Close(code, closing_message(code));
                        }
                    }
                    timer.as_mut().reset(next_ping.min(next_keepalive));
                }
            }
        };

        let reason = match &ending {
            Ending::ClientGone => "client",
            Ending::Close(code, _) => code.reason(),
        };
        self.state.metrics.disconnect(&self.app.id, reason);
        let revoked = matches!(&ending, Ending::Close(CloseCode::TokenRevoked, _));
        if let Ending::Close(code, message) = ending {
            if code == CloseCode::GoingAway {
                // Hand over what was already accepted for this socket.
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
            ..
        } = self;
        drop(registration);
        // The moment a socket closes counts as activity: the token lives a
        // full idle timeout from here.
        if !revoked {
            Box::pin(keep_token_alive(&state, &app.id, &claims.access_id)).await;
        }
        tracing::debug!(app = %app.id, "session closed");
    }

    /// Answer one text frame. `Err` ends the session.
    async fn handle_text(&mut self, text: &str) -> Result<(), Ending> {
        let frame = match frames::parse(text) {
            Ok(frame) => frame,
            Err(unparsable) => {
                return self
                    .refuse_frame(
                        unparsable.error,
                        &unparsable.message,
                        unparsable.frame.as_deref(),
                        None,
                    )
                    .await;
            }
        };
        match frame {
            ClientFrame::Ping => self.reply(&ServerFrame::Pong).await,
            ClientFrame::Subscribe { channel, since } => {
                self.subscribe(&channel, since.map(|id| id.0)).await
            }
            ClientFrame::Unsubscribe { channel } => {
                self.state.hub.unsubscribe(&self.registration, &channel);
                self.reply(&ServerFrame::Unsubscribed { channel: &channel })
                    .await
            }
            ClientFrame::Publish {
                channel,
                event,
                data,
            } => self.publish(&channel, &event, &data).await,
        }
    }

    async fn subscribe(&mut self, channel: &str, since: Option<u64>) -> Result<(), Ending> {
        let frame = Some("subscribe");
        if let Some(Err(message)) = since.map(crate::broker::check_position) {
            return self
                .refuse_frame(FrameError::InvalidFrame, &message, frame, Some(channel))
                .await;
        }
        let limit = self.state.config.limits.max_subscriptions_per_socket;
        if self.state.hub.subscription_count(&self.registration) >= limit {
            let message = format!("at most {limit} subscriptions per socket");
            return self
                .refuse_frame(
                    FrameError::TooManySubscriptions,
                    &message,
                    frame,
                    Some(channel),
                )
                .await;
        }
        let verdict = self
            .state
            .plugins()
            .router
            .authorize_subscribe(&self.app.id, &self.claims, channel)
            .await;
        if let Some((error, message)) = route_refusal(verdict) {
            return self
                .refuse_frame(error, &message, frame, Some(channel))
                .await;
        }

        let streams = [Target::Channel(channel.to_owned())];
        let attached = self
            .state
            .broker
            .attach(&self.app.id, &streams, since, || {
                self.state.hub.subscribe(&self.registration, channel)
            })
            .await;
        let (recovery, position) = match attached {
            Ok(attached) => (attached.recovery, attached.position),
            Err(error) => {
                self.state.hub.unsubscribe(&self.registration, channel);
                tracing::warn!(%error, "store unavailable");
                return self
                    .refuse_frame(
                        FrameError::Unavailable,
                        crate::api::STORE_UNAVAILABLE,
                        frame,
                        Some(channel),
                    )
                    .await;
            }
        };
        if let Some(recovery) = &recovery {
            self.live.expect_overlap(recovery, channel);
        }
        let subscribed = ServerFrame::Subscribed {
            channel,
            last_id: position.to_string(),
            recovered: recovery.as_ref().map(|recovery| recovery.recovered),
        };
        self.reply(&subscribed).await?;
        for frame in recovery.map(|recovery| recovery.frames).unwrap_or_default() {
            self.send_text(frame)
                .await
                .map_err(|_| Ending::ClientGone)?;
        }
        Ok(())
    }

    async fn publish(&mut self, channel: &str, event: &str, data: &RawValue) -> Result<(), Ending> {
        // First, so a flood costs no plugin call and no store write.
        if !self.publish_rate.allow() {
            let limits = &self.state.config.limits;
            let message = format!(
                "at most {} publishes per second per socket and {} per token; slow down",
                limits.client_publish_per_sec, limits.token_publish_per_sec
            );
            return self
                .refuse_publish(FrameError::RateLimited, &message, Some(channel))
                .await;
        }
        let limit = self.state.config.limits.max_publish_bytes;
        if data.get().len() > limit {
            let message = format!("data is at most {limit} bytes");
            return self
                .refuse_publish(FrameError::PayloadTooLarge, &message, Some(channel))
                .await;
        }
        let verdict = self
            .state
            .plugins()
            .router
            .authorize_publish(&self.app.id, &self.claims, channel, event)
            .await;
        let publication = match verdict {
            Ok(Ok(publication)) => publication,
            other => {
                let (error, message) = route_refusal(other.map(|verdict| verdict.map(|_| ())))
                    .unwrap_or((FrameError::Unavailable, String::new()));
                return self.refuse_publish(error, &message, Some(channel)).await;
            }
        };
        let targets = [Target::Channel(publication.channel)];
        let message = Outgoing {
            targets: &targets,
            event: &publication.event,
            data,
            except: None,
        };
        match self.state.broker.publish(&self.app.id, &[message]).await {
            Ok(published) => {
                let delivered = published.iter().map(|published| published.delivered).sum();
                self.state
                    .metrics
                    .published(&self.app.id, "socket", delivered);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "store unavailable");
                self.refuse_publish(
                    FrameError::Unavailable,
                    crate::api::STORE_UNAVAILABLE,
                    Some(channel),
                )
                .await
            }
        }
    }

    /// Refuse a `publish` frame, counting it by reason.
    async fn refuse_publish(
        &mut self,
        error: FrameError,
        message: &str,
        channel: Option<&str>,
    ) -> Result<(), Ending> {
        self.state
            .metrics
            .publish_refused(&self.app.id, error.reason());
        self.refuse_frame(error, message, Some("publish"), channel)
            .await
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

/// Drops live copies of messages this session already sent.
#[derive(Default)]
struct LiveFilter {
    /// The newest live message sent. Live messages reach a session in id
    /// order, so one at or below it is a copy (a message for several
    /// targets arrives once per target with Redis).
    last_sent: u64,
    /// After a recovery: live messages of these streams (by frame label) up
    /// to this id were already in the replay.
    overlap: Option<(u64, Vec<String>)>,
}

impl LiveFilter {
    fn admits(&mut self, delivery: &Delivery) -> bool {
        if delivery.id <= self.last_sent {
            return false;
        }
        if let Some((up_to, labels)) = &self.overlap {
            if delivery.id <= *up_to {
                let replayed = frame_label(delivery.frame.as_str())
                    .is_some_and(|label| labels.contains(&label));
                if replayed {
                    return false;
                }
            } else {
                // Everything from here on is newer than any replay.
                self.overlap = None;
            }
        }
        self.last_sent = delivery.id;
        true
    }

    fn expect_overlap(&mut self, recovery: &Recovery, label: &str) {
        if recovery.live_after == 0 {
            return;
        }
        let (up_to, labels) = self.overlap.get_or_insert_with(|| (0, Vec::new()));
        *up_to = (*up_to).max(recovery.live_after);
        labels.push(label.to_owned());
    }
}

/// Refused frames in the current window.
struct ErrorWindow {
    started: Instant,
    count: u32,
}

impl ErrorWindow {
    fn new() -> Self {
        ErrorWindow {
            started: Instant::now(),
            count: 0,
        }
    }

    /// Count one refused frame; `true` when the socket is over the limit.
    fn record(&mut self, limit: u32) -> bool {
        if self.started.elapsed() >= ERROR_WINDOW {
            *self = ErrorWindow::new();
        }
        self.count += 1;
        self.count > limit
    }
}

/// The error frame for a router decision that is not a plain yes.
fn route_refusal(
    verdict: Result<Result<(), RouteError>, crate::plugins::PluginFailure>,
) -> Option<(FrameError, String)> {
    match verdict {
        Ok(Ok(())) => None,
        Ok(Err(RouteError::Forbidden(message))) => Some((FrameError::Forbidden, message)),
        Ok(Err(RouteError::InvalidChannel(message))) => Some((FrameError::InvalidChannel, message)),
        Ok(Err(RouteError::Invalid(message))) => Some((FrameError::InvalidFrame, message)),
        Err(_) => Some((
            FrameError::Unavailable,
            "the router failed; try again later".to_owned(),
        )),
    }
}

/// Restart the token's idle clock; `Some(code)` when the socket must close
/// because the token is gone. A plugin or store failure keeps the socket:
/// the next tick tries again.
async fn keep_token_alive(state: &AppState, app_id: &str, access_id: &str) -> Option<CloseCode> {
    match state.plugins().auth.touch(app_id, access_id).await {
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
/// A read that failed because of what the client sent, and is answered
/// with a close code rather than a dropped connection.
enum Violation {
    TooBig,
    NotUtf8,
}

fn read_violation(error: &axum::Error) -> Option<Violation> {
    let cause = std::error::Error::source(error)?;
    match cause.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some(Violation::TooBig),
        tungstenite::Error::Utf8(_) => Some(Violation::NotUtf8),
        _ => None,
    }
}

fn closing_message(code: CloseCode) -> String {
    match code {
        CloseCode::TokenRevoked => "the token was revoked; fetch a new one",
        CloseCode::GoingAway => "the server is going away; reconnect with last_id",
        CloseCode::SlowConsumer => {
            "messages arrived faster than this socket read them; reconnect with last_id"
        }
        _ => "closing",
    }
    .to_owned()
}

/// Send an `error` frame, then a close frame with the same code, and wait
/// briefly for the client's close reply so the handshake ends cleanly. All
/// of it within a bounded time: a peer that stopped reading cannot hold the
/// session open.
async fn close(socket: &mut WebSocket, code: CloseCode, message: &str) {
    let _ = timeout(
        CLOSE_HANDSHAKE_TIMEOUT,
        close_handshake(socket, code, message),
    )
    .await;
}

async fn close_handshake(socket: &mut WebSocket, code: CloseCode, message: &str) {
    let error = ServerFrame::Error {
        code: code.code(),
        reason: code.reason(),
        message,
        frame: None,
        channel: None,
    };
    if socket
        .send(Message::Text(error.to_json().into()))
        .await
        .is_err()
    {
        return;
    }
    let frame = CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    while let Some(Ok(_)) = socket.recv().await {}
}
