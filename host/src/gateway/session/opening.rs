//! Opening a session: register it in the hub (within the socket caps),
//! send `welcome` and replay the inboxes after `last_id`, so that nothing
//! falls between the replay and live messages.

use std::sync::Arc;

use axum::extract::ws::WebSocket;

use super::super::frames::ServerFrame;
use super::super::{Admitted, CloseCode, Refusal};
use super::{ErrorWindow, LiveFilter, Session, refuse};
use crate::hub::{NotAdmitted, SessionSpec, Target};
use crate::mailbox::Mailbox;
use crate::state::AppState;

/// Register the session, send `welcome` and the recovered messages; the
/// session, ready to serve, unless the socket was refused or went away.
pub(super) async fn open(
    socket: WebSocket,
    state: Arc<AppState>,
    admitted: Admitted,
) -> Option<(Session, Mailbox)> {
    let Admitted {
        app,
        claims,
        last_id,
    } = admitted;
    super::keepalive::touch_user_info_after_connect(&state, &app.id, &claims);
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
        Err(not_admitted) => {
            let (code, message) = refusal_for(not_admitted);
            state.metrics.connect(&app.id, code.reason());
            refuse(socket, Refusal::new(code, message)).await;
            return None;
        }
    };
    state.metrics.connect(&app.id, "accepted");

    let frame_rate = state.frame_rates.socket(&app.id, &claims.access_id);
    let mut session = Session {
        socket,
        state,
        app,
        claims,
        registration,
        errors: ErrorWindow::new(),
        live: LiveFilter::default(),
        frame_rate,
        memberships: None,
    };
    if let Some(recovery) = &recovery {
        for inbox in &inboxes {
            session.live.expect_overlap(recovery, inbox.label());
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

/// The close code and message for a socket the hub did not admit: over
/// one of the caps (4101), or its token revoked while it connected (4010).
fn refusal_for(not_admitted: NotAdmitted) -> (CloseCode, &'static str) {
    match not_admitted {
        NotAdmitted::TokenFull => (
            CloseCode::OverCapacity,
            "this token has too many open sockets",
        ),
        NotAdmitted::AppFull => (
            CloseCode::OverCapacity,
            "this app has too many open sockets on this node",
        ),
        NotAdmitted::Revoked => (CloseCode::TokenRevoked, "this token was revoked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_why() {
        assert_eq!(
            refusal_for(NotAdmitted::TokenFull).0,
            CloseCode::OverCapacity
        );
        assert!(refusal_for(NotAdmitted::TokenFull).1.contains("token"));
        assert!(refusal_for(NotAdmitted::AppFull).1.contains("app"));
        assert_eq!(refusal_for(NotAdmitted::Revoked).0, CloseCode::TokenRevoked);
    }
}
