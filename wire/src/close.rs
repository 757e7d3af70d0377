//! Close codes: why a socket was refused or dropped, and what the client
//! should do about it (docs/protocol.md). The ranges follow the Pusher protocol, which client
//! libraries already understand: 4000-4099 do not retry the same connection
//! string, 4100-4199 back off then reconnect, 4200-4299 reconnect now.

/// Why the server closes (or refuses) a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// Missing or malformed connection parameters.
    BadRequest,
    /// `last_id` is not a message id, or one no node could have issued yet.
    InvalidLastId,
    /// The one-time code does not match.
    OtpInvalid,
    /// The one-time code was already used.
    OtpReused,
    /// Unknown, idle-expired or revoked token.
    TokenInvalid,
    /// The token was revoked while the socket was open.
    TokenRevoked,
    /// The app ended the user's connections (Pusher's
    /// `terminate_connections`); the token stays valid.
    Terminated,
    /// Too many wrong codes for this access id.
    RateLimited,
    /// The node cannot take this socket now (too many sockets for the app
    /// or the token).
    OverCapacity,
    /// The socket sent too many refused frames in a short time.
    TooManyErrors,
    /// The node is shutting down.
    GoingAway,
    /// Nothing heard from the client for two heartbeat intervals.
    HeartbeatTimeout,
    /// The client does not read fast enough.
    SlowConsumer,
    /// A plugin trapped, timed out or gave an unusable answer.
    PluginFailure,
    /// The store behind the plugins is unreachable.
    Unavailable,
    /// An incoming message is over `limits.max_frame_bytes`.
    MessageTooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
}

impl CloseCode {
    /// The numeric WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::BadRequest => 4001,
            CloseCode::InvalidLastId => 4005,
            CloseCode::OtpInvalid => 4002,
            CloseCode::OtpReused => 4003,
            CloseCode::TokenInvalid => 4004,
            CloseCode::TokenRevoked => 4010,
            CloseCode::Terminated => 4009,
            CloseCode::RateLimited => 4100,
            CloseCode::OverCapacity => 4101,
            CloseCode::TooManyErrors => 4102,
            CloseCode::GoingAway => 4200,
            CloseCode::HeartbeatTimeout => 4201,
            CloseCode::SlowConsumer => 4202,
            CloseCode::PluginFailure | CloseCode::Unavailable => 1011,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InvalidUtf8 => 1007,
        }
    }

    /// The machine-readable reason, sent in the `error` frame and as the
    /// close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::BadRequest => "bad_request",
            CloseCode::InvalidLastId => "invalid_last_id",
            CloseCode::OtpInvalid => "otp_invalid",
            CloseCode::OtpReused => "otp_reused",
            CloseCode::TokenInvalid => "token_invalid",
            CloseCode::TokenRevoked => "token_revoked",
            CloseCode::Terminated => "terminated",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::OverCapacity => "over_capacity",
            CloseCode::TooManyErrors => "too_many_errors",
            CloseCode::GoingAway => "going_away",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::PluginFailure => "plugin_failure",
            CloseCode::Unavailable => "unavailable",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InvalidUtf8 => "invalid_utf8",
        }
    }
}
