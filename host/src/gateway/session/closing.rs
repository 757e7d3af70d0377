//! Closing a socket: an `error` frame, then the close frame with the same
//! code, within a bounded time; and the reads that are answered with a
//! close code rather than a dropped connection.

use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::timeout;

use super::super::frames::ServerFrame;
use super::super::{CloseCode, Refusal};

/// How long a closing socket waits for the client's close reply.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Refusals logged one by one, at most this many a second...
const REFUSAL_LINES_PER_SECOND: NonZeroU32 = NonZeroU32::new(20).unwrap();
/// ...with bursts up to this many.
const REFUSAL_LINES_BURST: NonZeroU32 = NonZeroU32::new(100).unwrap();

/// The refusals' log lines, within a rate: a flood of refused connects
/// (anyone can send one) must not flood the log, and so the disk. Every
/// refusal is still counted in `madx_connects_total{outcome}`.
struct RefusalLog<C: Clock = DefaultClock> {
    lines: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    unlogged: AtomicU64,
}

impl<C: Clock> RefusalLog<C> {
    fn new(per_second: NonZeroU32, burst: NonZeroU32, clock: C) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        RefusalLog {
            lines: RateLimiter::direct_with_clock(quota, clock),
            unlogged: AtomicU64::new(0),
        }
    }

    /// `Some(refusals left unlogged since the last line)` when this one may
    /// be logged.
    fn admit(&self) -> Option<u64> {
        if self.lines.check().is_ok() {
            Some(self.unlogged.swap(0, Ordering::Relaxed))
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

static REFUSAL_LOG: LazyLock<RefusalLog> = LazyLock::new(|| {
    RefusalLog::new(
        REFUSAL_LINES_PER_SECOND,
        REFUSAL_LINES_BURST,
        DefaultClock::default(),
    )
});

/// Send the refusal as an `error` frame and close with its code. The
/// server's own failures (store, broker, plugin) are always logged; what
/// clients cause, within [`REFUSAL_LOG`]'s rate.
pub(in crate::gateway) async fn refuse(mut socket: WebSocket, refusal: Refusal) {
    let servers_fault = matches!(
        refusal.code,
        CloseCode::Unavailable | CloseCode::PluginFailure
    );
    let logged = if servers_fault {
        Some(0)
    } else {
        REFUSAL_LOG.admit()
    };
    if let Some(unlogged) = logged {
        tracing::info!(
            code = refusal.code.code(),
            reason = refusal.code.reason(),
            message = %refusal.message,
            unlogged_before = unlogged,
            "connection refused"
        );
    }
    close(&mut socket, refusal.code, &refusal.message).await;
}

/// Did reading fail because the client sent more than the size limit?
/// A read that failed because of what the client sent, and is answered
/// with a close code rather than a dropped connection.
pub(super) enum Violation {
    TooBig,
    NotUtf8,
}

pub(super) fn read_violation(error: &axum::Error) -> Option<Violation> {
    let cause = std::error::Error::source(error)?;
    match cause.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some(Violation::TooBig),
        tungstenite::Error::Utf8(_) => Some(Violation::NotUtf8),
        _ => None,
    }
}

pub(super) fn closing_message(code: CloseCode) -> String {
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
pub(super) async fn close(socket: &mut WebSocket, code: CloseCode, message: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_log_rate_are_counted_into_the_next_line() {
        let clock = governor::clock::FakeRelativeClock::default();
        let log = RefusalLog::new(NonZeroU32::MIN, NonZeroU32::new(3).unwrap(), clock.clone());
        for _ in 0..3 {
            assert_eq!(log.admit(), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(log.admit(), None);
        }
        // A second later the next line says how many went unlogged.
        clock.advance(Duration::from_secs(1));
        assert_eq!(log.admit(), Some(5));
        assert_eq!(log.admit(), None);
    }

    #[test]
    fn closes_that_ask_the_client_to_act_say_how() {
        assert!(closing_message(CloseCode::TokenRevoked).contains("fetch a new one"));
        for resumable in [CloseCode::GoingAway, CloseCode::SlowConsumer] {
            assert!(closing_message(resumable).contains("reconnect with last_id"));
        }
        assert_eq!(closing_message(CloseCode::Terminated), "closing");
    }
}
