//! Publishing: message ids, bounded history for recovery, and hand-off to
//! the sessions through the [`Hub`].
//!
//! [`MemoryBroker`] serves one node from this process's memory;
//! [`RedisBroker`] keeps ids and history in Redis and fans every message out
//! to every node through Redis pub/sub. Both keep the contract's promises:
//! ids strictly increase per app, and a session that recovers sees every
//! message after its id once, replay first, then live.

mod journal;
mod memory;
mod occupancy;
mod pubsub;
mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use madx_wire::broker::{message_frame, message_id};
use madx_wire::close::CloseCode;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use memory::MemoryBroker;
pub use redis::RedisBroker;

use crate::hub::{Hub, Target};

/// One message to publish.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Where the router sent it (at least one).
    pub targets: &'a [Target],
    pub event: &'a str,
    pub data: &'a RawValue,
    /// A connection id that must not get it (Pusher's `socket_id`: the
    /// sender, who already knows).
    pub except: Option<&'a str>,
}

impl Outgoing<'_> {
    /// Everything of the `message` frame after its id: the id is assigned
    /// where the message is stored (in Redis, by a script), the rest is
    /// serialized once here.
    fn frame_tail(&self) -> String {
        madx_wire::broker::frame_tail(self.targets.first(), self.event, self.data)
    }
}

/// The `channel` field of a `message` frame (a full parse; only needed
/// while a session filters a recovery's overlap).
pub fn frame_label(frame: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Label {
        channel: String,
    }
    serde_json::from_str::<Label>(frame)
        .ok()
        .map(|label| label.channel)
}

/// What a recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// `message` frames newer than the requested id, oldest first.
    pub frames: Vec<Utf8Bytes>,
    /// `false` when history no longer reaches back to the requested id.
    pub recovered: bool,
    /// Live messages of the recovered streams up to this id were already
    /// in the replay (0: replay and live never overlap).
    pub live_after: u64,
}

impl Recovery {
    /// The replay of messages read from several streams: in id order, each
    /// once (a message for several targets is in each of their streams).
    fn merged(mut messages: Vec<(u64, Utf8Bytes)>, recovered: bool, live_after: u64) -> Recovery {
        messages.sort_by_key(|(id, _)| *id);
        messages.dedup_by_key(|(id, _)| *id);
        Recovery {
            frames: messages.into_iter().map(|(_, frame)| frame).collect(),
            recovered,
            live_after,
        }
    }
}

/// What [`Broker::attach`] did.
#[derive(Debug)]
pub struct Attached<R> {
    /// What the attach closure returned.
    pub attached: R,
    /// The replay, when a recovery was asked for.
    pub recovery: Option<Recovery>,
    /// The app's newest id when the attachment went live: every later
    /// message reaches it (live, or by recovering from this id).
    pub position: u64,
}

/// A message accepted for delivery: stored, and handed to the sessions it
/// reaches after the publish is answered (each node counts its own
/// deliveries as it hands them out).
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub id: u64,
}

/// How far ahead of this node's clock a resume position may be. Ids are
/// publish times in microseconds (or one more than the previous id), so no
/// node whose clock is within this of ours can have issued a larger one.
pub const MAX_POSITION_AHEAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Is `id` a position a client may resume from (`last_id`, `since`)? Ids
/// far in the future (`u64::MAX`, say) are refused the same way on every
/// backend, instead of each backend failing on them in its own way.
pub fn check_position(id: u64) -> Result<(), String> {
    let ahead = u64::try_from(MAX_POSITION_AHEAD.as_micros()).unwrap_or(u64::MAX);
    if id > memory::unix_micros().saturating_add(ahead) {
        return Err(format!(
            "{id} is not a message id of this service yet (ids are publish times in microseconds)"
        ));
    }
    Ok(())
}

/// Why the broker cannot take a request now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    Unavailable(String),
    /// The file store's disk has no space for the message.
    #[error("{0}")]
    Full(String),
}

/// The broker this node runs.
pub enum Broker {
    Memory(Arc<MemoryBroker>),
    Redis(Arc<RedisBroker>),
}

impl Broker {
    /// Publish `messages` in order; all of them are stored (and get ids) or
    /// none is.
    pub async fn publish(
        &self,
        app_id: &str,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<Published>, BrokerError> {
        match self {
            Broker::Memory(broker) => {
                broker.wait_for_room().await;
                Ok(broker
                    .publish(app_id, messages)?
                    .into_iter()
                    .map(|id| Published { id })
                    .collect())
            }
            // Boxed: the Redis round trip's state is large, and the callers'
            // futures (a session's, kept for the socket's lifetime) should
            // not carry it inline.
            Broker::Redis(broker) => Box::pin(broker.publish(app_id, messages)).await,
        }
    }

    /// Hand what this node accepted, and has not handed out yet, to its
    /// sessions now (before they are closed at shutdown). With Redis,
    /// messages reach the node's sessions from Redis: nothing waits here.
    pub fn hand_off_queued(&self) {
        if let Broker::Memory(broker) = self {
            broker.hand_off_queued();
        }
    }

    /// Run `attach` (register a session or a subscription in the hub) and
    /// read what `streams` hold after `since`, so that every message is
    /// either in the replay or delivered live after `attach` (a live copy of
    /// a replayed message is marked by [`Recovery::live_after`]).
    pub async fn attach<R>(
        &self,
        app_id: &str,
        streams: &[Target],
        since: Option<u64>,
        attach: impl FnOnce() -> R,
    ) -> Result<Attached<R>, BrokerError> {
        match self {
            Broker::Memory(broker) => Ok(broker.recover(app_id, streams, since, attach)),
            Broker::Redis(broker) => Box::pin(broker.attach(app_id, streams, since, attach)).await,
        }
    }

    /// Close every socket of a revoked token, on every node.
    pub async fn close_token(&self, hub: &Hub, app_id: &str, access_id: &str) -> usize {
        let closed = hub.close_token(app_id, access_id, CloseCode::TokenRevoked);
        if let Broker::Redis(broker) = self {
            broker.announce_revoke(app_id, access_id).await;
        }
        closed
    }

    /// Close every socket of a user (`terminate_connections`), on every
    /// node; returns how many of this node's sockets were asked to close.
    pub async fn close_user(&self, hub: &Hub, app_id: &str, user_id: &str) -> usize {
        let closed = hub.close_user(app_id, user_id, CloseCode::Terminated);
        if let Broker::Redis(broker) = self {
            broker.announce_terminate(app_id, user_id).await;
        }
        closed
    }

    /// Subscriptions to `channel` on the deployment's other nodes (none
    /// for one node).
    pub async fn remote_subscriptions(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<u64, BrokerError> {
        match self {
            Broker::Memory(_) => Ok(0),
            Broker::Redis(broker) => broker.remote_subscriptions(app_id, channel).await,
        }
    }

    /// The occupied channels on the deployment's other nodes whose names
    /// start with `prefix`, with their subscription counts.
    pub async fn remote_occupied(
        &self,
        app_id: &str,
        prefix: &str,
    ) -> Result<BTreeMap<String, u64>, BrokerError> {
        match self {
            Broker::Memory(_) => Ok(BTreeMap::new()),
            Broker::Redis(broker) => broker.remote_occupied(app_id, prefix).await,
        }
    }

    /// Can new work be taken? Always for one node; with Redis, while this
    /// node's pub/sub connection is up.
    pub fn is_ready(&self) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(broker) => broker.is_ready(),
        }
    }

    /// Messages held in this process's history (none with Redis).
    pub fn history_len(&self) -> usize {
        match self {
            Broker::Memory(broker) => broker.history_len(),
            Broker::Redis(_) => 0,
        }
    }

    /// Deliveries this node accepted and has not handed to its sessions
    /// yet (none with Redis, which hands each message to every node).
    pub fn hand_off_backlog(&self) -> usize {
        match self {
            Broker::Memory(broker) => broker.hand_off_backlog(),
            Broker::Redis(_) => 0,
        }
    }

    /// Bytes of history held in this process, as the budgets count them
    /// (none with Redis).
    pub fn history_bytes(&self) -> usize {
        match self {
            Broker::Memory(broker) => broker.history_bytes(),
            Broker::Redis(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_id() {
        let data = RawValue::from_string(r#"{"a":[1,"x"]}"#.into()).unwrap();
        let targets = [Target::User("u".into())];
        let message = Outgoing {
            targets: &targets,
            event: "done",
            data: &data,
            except: None,
        };
        let frame = message_frame(17, &message.frame_tail());
        assert_eq!(
            frame,
            r##"{"type":"message","id":"17","channel":"#user","event":"done","data":{"a":[1,"x"]}}"##
        );
        assert_eq!(message_id(&frame), Some(17));
        assert_eq!(frame_label(&frame).as_deref(), Some("#user"));
        assert_eq!(message_id("{}"), None);
    }
}
