//! This node's open sessions, indexed by token, so that a revoke (or a
//! shutdown) can reach every socket it concerns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::gateway::CloseCode;

/// Something the rest of the host asks a session to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Send an `error` frame with this code and close the socket with it.
    Close(CloseCode),
}

/// One app's token, as the hub indexes sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    app_id: String,
    access_id: String,
}

type Sessions = HashMap<TokenKey, HashMap<u64, mpsc::UnboundedSender<SessionCommand>>>;

/// The sessions of this node.
///
/// A std `Mutex` is right here: the lock guards plain map updates and never
/// spans an await.
pub struct Hub {
    sessions: Mutex<Sessions>,
    next_serial: AtomicU64,
    /// Random per process, so connection ids from different nodes or
    /// restarts do not collide.
    node_tag: String,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        let mut tag = [0u8; 4];
        // Without OS randomness the ids are still unique within the process.
        let _ = getrandom::fill(&mut tag);
        Arc::new(Hub {
            sessions: Mutex::new(HashMap::new()),
            next_serial: AtomicU64::new(1),
            node_tag: tag.iter().map(|byte| format!("{byte:02x}")).collect(),
        })
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // Every critical section is a single map update, so a poisoned map
        // is still consistent.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add a session of `access_id`; it stays registered until the returned
    /// registration is dropped.
    pub fn register(
        self: &Arc<Self>,
        app_id: &str,
        access_id: &str,
    ) -> (Registration, mpsc::UnboundedReceiver<SessionCommand>) {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let key = TokenKey {
            app_id: app_id.to_owned(),
            access_id: access_id.to_owned(),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        self.sessions()
            .entry(key.clone())
            .or_default()
            .insert(serial, sender);
        let registration = Registration {
            hub: Arc::clone(self),
            key,
            serial,
            connection_id: format!("{}.{serial}", self.node_tag),
        };
        (registration, receiver)
    }

    /// Ask every session of a token to close; returns how many were asked.
    pub fn close_token(&self, app_id: &str, access_id: &str, code: CloseCode) -> usize {
        let key = TokenKey {
            app_id: app_id.to_owned(),
            access_id: access_id.to_owned(),
        };
        let sessions = self.sessions();
        let Some(token_sessions) = sessions.get(&key) else {
            return 0;
        };
        token_sessions
            .values()
            .filter(|sender| sender.send(SessionCommand::Close(code)).is_ok())
            .count()
    }

    /// Ask every session on this node to close (shutdown).
    pub fn close_all(&self, code: CloseCode) -> usize {
        self.sessions()
            .values()
            .flat_map(|token_sessions| token_sessions.values())
            .filter(|sender| sender.send(SessionCommand::Close(code)).is_ok())
            .count()
    }

    /// Open sessions on this node.
    pub fn session_count(&self) -> usize {
        self.sessions().values().map(HashMap::len).sum()
    }
}

/// A session's place in the hub; dropping it removes the session.
pub struct Registration {
    hub: Arc<Hub>,
    key: TokenKey,
    serial: u64,
    connection_id: String,
}

impl Registration {
    /// The id announced to the client in `welcome`.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions();
        if let Some(token_sessions) = sessions.get_mut(&self.key) {
            token_sessions.remove(&self.serial);
            if token_sessions.is_empty() {
                sessions.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reaches_only_the_tokens_sessions_and_drop_unregisters() {
        let hub = Hub::new();
        let (first, mut first_commands) = hub.register("app", "token-a");
        let (_second, mut second_commands) = hub.register("app", "token-a");
        let (_other, mut other_commands) = hub.register("other-app", "token-a");
        assert_ne!(first.connection_id(), _second.connection_id());
        assert_eq!(hub.session_count(), 3);

        assert_eq!(
            hub.close_token("app", "token-a", CloseCode::TokenRevoked),
            2
        );
        assert_eq!(
            first_commands.try_recv(),
            Ok(SessionCommand::Close(CloseCode::TokenRevoked))
        );
        assert!(second_commands.try_recv().is_ok());
        assert!(other_commands.try_recv().is_err());

        drop(first);
        assert_eq!(hub.session_count(), 2);
        assert_eq!(hub.close_all(CloseCode::GoingAway), 2);
    }
}
