//! Presence channels (who is online in a channel) and the deployment's
//! occupied/vacated decisions.
//!
//! A member is a token's `user_id` in a channel whose name starts with the
//! presence prefix. This node counts its own sockets per member; the first
//! one joins the member to the deployment, the last one leaves. The
//! deployment is this process on one node ([`Deployment::Local`]), or the
//! shared Redis (`redis.rs`), which counts how many nodes hold each member
//! and each channel, so "added"/"removed" and "occupied"/"vacated" are each
//! decided once, whichever node they happen on. Member changes go to the
//! channel's subscribers as `member_added`/`member_removed` frames, and
//! every decision to the [`Change`] listener (the webhooks).

mod redis;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::PresenceConfig;
use crate::hub::{Hub, Target};
use crate::metrics::Metrics;
use crate::store::StoreBackend;

pub use self::redis::RedisMembership;

/// Locks over this node's member counts: joins of different members do
/// not wait on each other, and one member's joins and leaves reach the
/// deployment in order.
const SHARDS: usize = 64;

/// A decision about the whole deployment, made once (the webhooks' events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Occupied {
        app: String,
        channel: String,
    },
    Vacated {
        app: String,
        channel: String,
    },
    MemberAdded {
        app: String,
        channel: String,
        user_id: String,
    },
    MemberRemoved {
        app: String,
        channel: String,
        user_id: String,
    },
}

/// Told of every [`Change`]; must not block.
pub type ChangeListener = Box<dyn Fn(Change) + Send + Sync>;

/// A presence channel's members, as `subscribed` and the APIs show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    pub members: Vec<Member>,
}

impl Roster {
    pub fn count(&self) -> usize {
        self.members.len()
    }
}

/// One member, and how it is written in frames and API answers: the
/// edge reads the same rosters (`madx_wire::presence`).
pub use madx_wire::presence::{Member, MemberView};

/// The socket joining a presence channel.
#[derive(Debug, Clone, Copy)]
pub struct Joining<'a> {
    pub connection_id: &'a str,
    /// Its token, whose `user_info` the member shows.
    pub access_id: &'a str,
}

/// Why a socket could not join a presence channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("this presence channel has its {0} members")]
    Full(usize),
    #[error("{0}")]
    Unavailable(String),
}

/// What this node holds of one member.
struct Held {
    sockets: usize,
    /// As the deployment was told (JSON text, empty for none).
    info: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MemberKey {
    app: String,
    channel: String,
    user: String,
}

/// The deployment's members and occupied channels.
enum Deployment {
    /// One node: members per (app, channel), user -> user info.
    Local(Mutex<HashMap<(String, String), BTreeMap<String, String>>>),
    /// Several nodes on one Redis.
    Redis(RedisMembership),
}

/// This node's presence: its members and the deployment's view of them.
pub struct Presence {
    config: PresenceConfig,
    /// This node's sockets per member, and the member's user info.
    shards: Vec<tokio::sync::Mutex<HashMap<MemberKey, Held>>>,
    hasher: RandomState,
    deployment: Deployment,
    hub: Arc<Hub>,
    store: StoreBackend,
    metrics: Arc<Metrics>,
    listener: OnceLock<ChangeListener>,
    /// The task that decides occupied/vacated in order (and with Redis,
    /// beats and resyncs).
    worker: mpsc::UnboundedSender<WorkerOp>,
}

/// What the worker task is asked to do, in order.
enum WorkerOp {
    /// This node gained (`true`) or lost a channel's first/last session.
    Channel(String, String, bool),
    /// Answer once everything before is done.
    Sync(oneshot::Sender<()>),
}

impl Presence {
    /// Presence for one node (`redis` is `None`) or a Redis deployment;
    /// watches the hub's channels for occupied/vacated.
    pub fn start(
        config: PresenceConfig,
        hub: Arc<Hub>,
        store: StoreBackend,
        metrics: Arc<Metrics>,
        redis: Option<RedisMembership>,
    ) -> Arc<Presence> {
        let deployment = match redis {
            Some(redis) => Deployment::Redis(redis),
            None => Deployment::Local(Mutex::new(HashMap::new())),
        };
        let (worker, worker_ops) = mpsc::unbounded_channel();
        let presence = Arc::new(Presence {
            worker,
            config,
            shards: (0..SHARDS)
                .map(|_| tokio::sync::Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
            deployment,
            hub: hub.clone(),
            store,
            metrics,
            listener: OnceLock::new(),
        });
        let channels = presence.worker.clone();
        let watched = hub.watch_channels(Box::new(move |app, channel, gained| {
            // The task outlives the hub; a send only fails at shutdown.
            let _ = channels.send(WorkerOp::Channel(
                app.to_owned(),
                channel.to_owned(),
                gained,
            ));
        }));
        if watched.is_err() {
            tracing::error!("the hub's channels are already watched; no occupied/vacated events");
        }
        tokio::spawn(redis::Worker::new(Arc::clone(&presence), worker_ops).run());
        presence
    }

    /// Wait until the worker has decided every channel change the hub
    /// reported so far: a member joins a channel only after the channel
    /// is occupied, so the webhooks tell them in that order.
    async fn settle_channels(&self) {
        let (done, settled) = oneshot::channel();
        if self.worker.send(WorkerOp::Sync(done)).is_ok() {
            let _ = settled.await;
        }
    }

    /// Have `listener` told of every decision from now on.
    pub fn listen(&self, listener: ChangeListener) {
        if self.listener.set(listener).is_err() {
            tracing::error!("presence already has a listener");
        }
    }

    fn tell(&self, change: Change) {
        tracing::debug!(?change, "deployment changed");
        if let Some(listener) = self.listener.get() {
            listener(change);
        }
    }

    /// Is `channel` a presence channel?
    pub fn is_presence(&self, channel: &str) -> bool {
        madx_wire::presence::is_presence(channel, &self.config.channel_prefix)
    }

    fn shard(&self, key: &MemberKey) -> &tokio::sync::Mutex<HashMap<MemberKey, Held>> {
        let index = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[index]
    }

    /// One more socket of `user` in a presence channel: connection
    /// `joining`, holding token `access_id`. Its user's first socket on
    /// this node makes the user a member, which the channel's other
    /// subscribers are told. Returns the members, this one included.
    pub async fn join(
        &self,
        app: &str,
        channel: &str,
        user: &str,
        joining: Joining<'_>,
    ) -> Result<Roster, JoinError> {
        let key = MemberKey {
            app: app.to_owned(),
            channel: channel.to_owned(),
            user: user.to_owned(),
        };
        // Before the shard's lock: the worker's resync takes every lock.
        self.settle_channels().await;
        let mut here = self.shard(&key).lock().await;
        if here.contains_key(&key) {
            // Counted only once the answer is sure: a failed subscribe
            // leaves nothing behind.
            let roster = self.roster(app, channel).await?;
            if let Some(held) = here.get_mut(&key) {
                held.sockets += 1;
            }
            return Ok(roster);
        }
        let info = self.user_info(app, joining.access_id).await;
        let (added, roster) = self
            .join_deployment(&key, &info, joining.connection_id)
            .await?;
        if added {
            self.tell(Change::MemberAdded {
                app: app.to_owned(),
                channel: channel.to_owned(),
                user_id: user.to_owned(),
            });
        }
        self.metrics.presence_members.inc();
        here.insert(key, Held { sockets: 1, info });
        Ok(roster)
    }

    /// One socket of `user` less in a presence channel; its last on this
    /// node leaves (the user stays a member while another node has one).
    pub async fn leave(&self, app: &str, channel: &str, user: &str) {
        let key = MemberKey {
            app: app.to_owned(),
            channel: channel.to_owned(),
            user: user.to_owned(),
        };
        let mut here = self.shard(&key).lock().await;
        match here.get_mut(&key) {
            None => return,
            Some(held) if held.sockets > 1 => {
                held.sockets -= 1;
                return;
            }
            Some(_) => {}
        }
        here.remove(&key);
        self.metrics.presence_members.dec();
        let removed = match &self.deployment {
            Deployment::Local(members) => {
                let removed = {
                    let mut members = lock(members);
                    let place = (key.app, key.channel);
                    let removed = members
                        .get_mut(&place)
                        .is_some_and(|users| users.remove(user).is_some());
                    if members.get(&place).is_some_and(BTreeMap::is_empty) {
                        members.remove(&place);
                    }
                    removed
                };
                if removed {
                    self.deliver(app, channel, None, &member_removed_frame(channel, user));
                }
                removed
            }
            Deployment::Redis(redis) => match redis.leave(app, channel, user).await {
                Ok(removed) => removed,
                Err(error) => {
                    // The next heartbeat brings Redis in line.
                    redis.mark_out_of_sync();
                    tracing::warn!("could not leave a presence channel in Redis: {error}");
                    false
                }
            },
        };
        if removed {
            self.tell(Change::MemberRemoved {
                app: app.to_owned(),
                channel: channel.to_owned(),
                user_id: user.to_owned(),
            });
        }
    }

    /// The members of a presence channel, over the deployment.
    pub async fn roster(&self, app: &str, channel: &str) -> Result<Roster, JoinError> {
        match &self.deployment {
            Deployment::Local(members) => Ok(local_roster(
                lock(members).get(&(app.to_owned(), channel.to_owned())),
            )),
            Deployment::Redis(redis) => redis
                .roster(app, channel)
                .await
                .map_err(|error| JoinError::Unavailable(error.to_string())),
        }
    }

    async fn join_deployment(
        &self,
        key: &MemberKey,
        info: &str,
        connection_id: &str,
    ) -> Result<(bool, Roster), JoinError> {
        let max = self.config.max_members;
        match &self.deployment {
            Deployment::Local(members) => {
                let mut members = lock(members);
                let users = members
                    .entry((key.app.clone(), key.channel.clone()))
                    .or_default();
                let added = !users.contains_key(&key.user);
                if added && users.len() >= max {
                    if users.is_empty() {
                        members.remove(&(key.app.clone(), key.channel.clone()));
                    }
                    return Err(JoinError::Full(max));
                }
                users.insert(key.user.clone(), info.to_owned());
                let roster = local_roster(Some(users));
                drop(members);
                if added {
                    let frame = member_added_frame(&key.channel, &key.user, info);
                    self.deliver(&key.app, &key.channel, Some(connection_id), &frame);
                }
                Ok((added, roster))
            }
            Deployment::Redis(redis) => {
                let (joined, roster) = redis
                    .join(key, info, max, connection_id)
                    .await
                    .map_err(|error| JoinError::Unavailable(error.to_string()))?;
                match joined {
                    redis::Joined::Full => Err(JoinError::Full(max)),
                    redis::Joined::Added => Ok((true, roster)),
                    redis::Joined::Present => Ok((false, roster)),
                }
            }
        }
    }

    /// The `user_info` kept beside the token (JSON text, empty for none).
    async fn user_info(&self, app: &str, access_id: &str) -> String {
        let key = user_info_store_key(app, access_id);
        match self.store.get(&key).await {
            Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
            Ok(None) => String::new(),
            Err(error) => {
                tracing::warn!("could not read a token's user_info: {error}");
                String::new()
            }
        }
    }

    /// Hand a member frame to this node's subscribers of the channel.
    fn deliver(&self, app: &str, channel: &str, except: Option<&str>, frame: &str) {
        let target = [Target::Channel(channel.to_owned())];
        self.hub
            .deliver(app, &target, except, 0, &Utf8Bytes::from(frame.to_owned()));
    }

    /// Lock every member count (to bring Redis in line with them).
    async fn lock_all(&self) -> Vec<tokio::sync::MutexGuard<'_, HashMap<MemberKey, Held>>> {
        let mut guards = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            guards.push(shard.lock().await);
        }
        guards
    }

    /// Release what this node holds in Redis (a clean shutdown).
    pub async fn retire(&self) {
        if let Deployment::Redis(redis) = &self.deployment {
            match redis.retire().await {
                Ok(released) => {
                    for change in released {
                        self.tell(change);
                    }
                }
                Err(error) => tracing::warn!(
                    "could not release this node's members; they leave when its heartbeat expires: {error}"
                ),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn local_roster(users: Option<&BTreeMap<String, String>>) -> Roster {
    Roster {
        members: users
            .into_iter()
            .flatten()
            .map(|(user, info)| Member::new(user.clone(), info.clone()))
            .collect(),
    }
}

/// Where the host keeps a token's `user_info` (the contract's key).
pub use madx_wire::presence::user_info_key as user_info_store_key;

/// `{"type":"member_added","channel","user_id","user_info"?}`.
pub fn member_added_frame(channel: &str, user_id: &str, user_info: &str) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        channel: &'a str,
        #[serde(flatten)]
        member: MemberView<'a>,
    }
    let member = Member::new(user_id.to_owned(), user_info.to_owned());
    let frame = Frame {
        r#type: "member_added",
        channel,
        member: member.view(),
    };
    serde_json::to_string(&frame).unwrap_or_default()
}

/// `{"type":"member_removed","channel","user_id"}`.
pub fn member_removed_frame(channel: &str, user_id: &str) -> String {
    serde_json::json!({"type": "member_removed", "channel": channel, "user_id": user_id})
        .to_string()
}

/// Leaves a session's presence channels when the session ends, however it
/// ends.
pub struct Memberships {
    presence: Arc<Presence>,
    app: String,
    user: String,
    channels: HashSet<String>,
}

impl Memberships {
    pub fn new(presence: Arc<Presence>, app: &str, user: &str) -> Memberships {
        Memberships {
            presence,
            app: app.to_owned(),
            user: user.to_owned(),
            channels: HashSet::new(),
        }
    }

    /// Join `channel`; the roster on success.
    pub async fn join(&mut self, channel: &str, joining: Joining<'_>) -> Result<Roster, JoinError> {
        if self.channels.contains(channel) {
            return self.presence.roster(&self.app, channel).await;
        }
        let roster = self
            .presence
            .join(&self.app, channel, &self.user, joining)
            .await?;
        self.channels.insert(channel.to_owned());
        Ok(roster)
    }

    pub async fn leave(&mut self, channel: &str) {
        if self.channels.remove(channel) {
            self.presence.leave(&self.app, channel, &self.user).await;
        }
    }

    /// Leave every channel now (a session that ends in order: its members
    /// leave before its channels are vacated).
    pub async fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.channels) {
            self.presence.leave(&self.app, &channel, &self.user).await;
        }
    }
}

impl Drop for Memberships {
    fn drop(&mut self) {
        if self.channels.is_empty() {
            return;
        }
        let channels = std::mem::take(&mut self.channels);
        let presence = Arc::clone(&self.presence);
        let (app, user) = (self.app.clone(), self.user.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for channel in channels {
                    presence.leave(&app, &channel, &user).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_frames_carry_the_user_info_as_json() {
        assert_eq!(
            member_added_frame("presence-a", "ann", r#"{"name":"Ann"}"#),
            r#"{"type":"member_added","channel":"presence-a","user_id":"ann","user_info":{"name":"Ann"}}"#
        );
        assert_eq!(
            member_added_frame("presence-a", "bob", ""),
            r#"{"type":"member_added","channel":"presence-a","user_id":"bob"}"#
        );
        let removed: serde_json::Value =
            serde_json::from_str(&member_removed_frame("presence-a", "bob")).unwrap();
        assert_eq!(
            removed,
            serde_json::json!({"type": "member_removed", "channel": "presence-a", "user_id": "bob"})
        );
    }
}
