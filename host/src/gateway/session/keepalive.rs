//! An open socket keeps its token alive: the token's idle clock restarts
//! well within the idle timeout (not on every frame: no store write per
//! frame), so the token outlives the socket by a full timeout.

use std::sync::Arc;
use std::time::Duration;

use super::super::CloseCode;
use crate::plugins::bindings::{AuthError, Claims};
use crate::state::AppState;

/// Never touch the token more often than this.
const MIN_KEEPALIVE: Duration = Duration::from_millis(200);
/// Never touch the token less often than this.
const MAX_KEEPALIVE: Duration = Duration::from_secs(300);

/// How often a socket restarts its token's idle clock: a third of the idle
/// timeout, within [`MIN_KEEPALIVE`] and [`MAX_KEEPALIVE`].
pub(super) fn interval(idle_timeout_secs: u32) -> Duration {
    (Duration::from_secs(u64::from(idle_timeout_secs)) / 3).clamp(MIN_KEEPALIVE, MAX_KEEPALIVE)
}

/// Restart the token's idle clock; `Some(code)` when the socket must close
/// because the token is gone. A plugin or store failure keeps the socket:
/// the next tick tries again.
pub(super) async fn touch_token(
    state: &AppState,
    app_id: &str,
    claims: &Claims,
) -> Option<CloseCode> {
    let access_id = &claims.access_id;
    match state.plugins().auth.touch(app_id, access_id).await {
        Ok(Ok(())) => {
            if claims.user_id.is_some() {
                touch_user_info(state, app_id, access_id, claims.idle_timeout_secs).await;
            }
            None
        }
        Ok(Err(AuthError::TokenInvalid)) => Some(CloseCode::TokenRevoked),
        Ok(Err(error)) => {
            tracing::warn!(app_id, ?error, "could not keep a token alive");
            None
        }
        // Already logged by the plugin runtime.
        Err(_) => None,
    }
}

/// After a connect spent a code (which restarted the token's idle clock),
/// restart its `user_info`'s too, whatever becomes of the socket; in the
/// background, as the welcome need not wait for a store round trip.
pub(super) fn touch_user_info_after_connect(state: &Arc<AppState>, app_id: &str, claims: &Claims) {
    if claims.user_id.is_none() {
        return;
    }
    let (state, app_id) = (Arc::clone(state), app_id.to_owned());
    let (access_id, idle_timeout_secs) = (claims.access_id.clone(), claims.idle_timeout_secs);
    tokio::spawn(async move {
        touch_user_info(&state, &app_id, &access_id, idle_timeout_secs).await;
    });
}

/// The token's `user_info` (kept by the host beside the token) lives as
/// long as the token: its clock restarts with the token's.
async fn touch_user_info(state: &AppState, app_id: &str, access_id: &str, idle_timeout_secs: u32) {
    let key = crate::presence::user_info_store_key(app_id, access_id);
    let ttl = Duration::from_secs(u64::from(idle_timeout_secs));
    if let Err(error) = state.store.touch(&key, ttl).await {
        tracing::debug!(app_id, "could not keep a token's user_info alive: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_of_the_idle_timeout_within_bounds() {
        assert_eq!(interval(60), Duration::from_secs(20));
        assert_eq!(interval(7200), MAX_KEEPALIVE);
        assert_eq!(interval(0), MIN_KEEPALIVE);
    }
}
