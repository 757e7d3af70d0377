//! The cluster broker: ids and history in Redis, fan-out through Redis
//! pub/sub, so every node of a deployment behaves as one service.
//!
//! A publish is one Lua script (`wire/lua/publish.lua`): it assigns the app's
//! next id, appends the frame to each target's stream (bounded by count and
//! age) and `PUBLISH`es it on the target's live channel. Every node,
//! including the publishing one, delivers from its subscription, so each
//! local session gets a message once. A node subscribes to a live channel
//! only while it has a session for that channel, user or token (the hub
//! reports those changes in order), so Redis traffic follows interest.
//!
//! Recovery subscribes first, then reads history (`wire/lua/recover.lua`): a
//! message published in between is both replayed and delivered live, and
//! the session drops the live copy (`Recovery::live_after`). When the
//! pub/sub connection drops, the node keeps its sockets, reconnects with
//! back-off, subscribes again and replays from history what its sessions
//! missed meanwhile.
//!
//! Each node also reports its channel counts, for the channel queries
//! (`occupancy.rs`).
//!
//! On a Redis Cluster the same runs per app: an app's ids, streams, live
//! channels and channel directory share the app's slot (`Keys`), so a
//! publish stays one atomic script, ids stay strictly increasing per app
//! and recovery stays exact; live channels are shard channels, so a
//! message crosses only the shard that owns its app (`pubsub.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
// The edge publishes these too: one type, one JSON.
use madx_wire::broker::Keys;
use madx_wire::control::Control;
use redis::Script;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{MissedTickBehavior, timeout};

use super::occupancy::{self, Query, Reporter};
use super::pubsub::{Lost, PubSub, Received};
use super::{
    Attached, BrokerError, Outgoing, Published, Recovery, memory::unix_micros, message_id,
};
use crate::config::HistoryConfig;
use crate::hub::{Hub, Interest, Target};
use crate::metrics::Metrics;
use crate::redis_link::{self, RedisLink};
use madx_wire::close::CloseCode;

/// How long a session waits for its subscription to reach Redis.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Budget of one pub/sub connection attempt, subscribe or ping.
pub(super) const PUBSUB_TIMEOUT: Duration = Duration::from_secs(2);
/// A silent Redis is noticed within about this long.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(1);
/// Reconnection back-off bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Streams per pipelined history read.
const CHUNK: usize = 500;
/// Clock slack when replaying after a reconnect without a known last id.
const BACKFILL_SLACK_MICROS: u64 = 5_000_000;

/// What the subscriber task is asked to do.
enum Command {
    /// A live channel gained its first local session.
    Subscribe(String),
    /// A live channel lost its last local session.
    Unsubscribe(String),
    /// Answer once every earlier command reached Redis.
    Sync(oneshot::Sender<()>),
}

/// `XRANGE`'s reply: entries of (stream id, field/value pairs).
type StreamEntries = Vec<(String, Vec<(String, String)>)>;

/// Ids, history and fan-out in a Redis shared by every node.
pub struct RedisBroker {
    connection: RedisLink,
    keys: Keys,
    limits: HistoryConfig,
    publish: Script,
    recover: Script,
    /// Reads the channel directory (`occupancy.rs`).
    channels: Script,
    /// This node's tag, under which it reports its occupancy.
    node: String,
    commands: mpsc::UnboundedSender<Command>,
    /// Is the pub/sub connection up (and subscribed)?
    connected: watch::Receiver<bool>,
}

impl RedisBroker {
    /// Start the subscriber task and return the hub it delivers to, wired
    /// so that the hub's interest changes become (un)subscriptions.
    pub fn start(
        connection: RedisLink,
        prefix: &str,
        limits: HistoryConfig,
        metrics: Arc<Metrics>,
    ) -> (Arc<Hub>, Arc<RedisBroker>) {
        let keys = connection.keys(prefix);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let observer_keys = keys.clone();
        let observer_commands = commands.clone();
        let hub = Hub::observed(Box::new(move |interest| {
            // The task outlives the hub; a send can only fail at shutdown.
            let _ = observer_commands.send(match interest {
                Interest::Gained(app_id, target) => {
                    Command::Subscribe(observer_keys.live(app_id, target))
                }
                Interest::Lost(app_id, target) => {
                    Command::Unsubscribe(observer_keys.live(app_id, target))
                }
            });
        }));
        let (connected_tx, connected) = watch::channel(false);
        let subscriber = Subscriber {
            connection: connection.clone(),
            control: keys.control(),
            keys: keys.clone(),
            hub: hub.clone(),
            metrics,
            commands: commands_rx,
            connected: connected_tx,
            wanted: HashSet::new(),
            subscribed: HashSet::new(),
            waiting: Vec::new(),
            last_seen: HashMap::new(),
        };
        tokio::spawn(subscriber.run());
        let reporter = Reporter::new(connection.clone(), keys.clone(), hub.clone());
        tokio::spawn(reporter.run());
        let broker = Arc::new(RedisBroker {
            connection,
            keys,
            limits,
            publish: Script::new(madx_wire::scripts::PUBLISH),
            recover: Script::new(madx_wire::scripts::RECOVER),
            channels: Script::new(madx_wire::scripts::CHANNELS),
            node: hub.node_tag().to_owned(),
            commands,
            connected,
        });
        (hub, broker)
    }

    pub fn is_ready(&self) -> Result<(), BrokerError> {
        if *self.connected.borrow() {
            Ok(())
        } else {
            Err(BrokerError::Unavailable(
                "Redis is unreachable from this node".to_owned(),
            ))
        }
    }

    pub async fn publish(
        &self,
        app_id: &str,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<Published>, BrokerError> {
        let streams = messages
            .iter()
            .flat_map(|message| message.targets.iter().map(Target::stream_name));
        let declared = self.keys.history_keys(app_id, streams);
        let mut invocation = redis_link::invoke_with(&self.publish, declared);
        invocation
            .arg(self.keys.app(app_id))
            .arg(self.limits.per_stream)
            .arg(self.limits.ttl_secs.saturating_mul(1000))
            .arg(messages.len());
        for message in messages {
            // The script appends to each stream once per message.
            let mut streams: Vec<String> =
                message.targets.iter().map(Target::stream_name).collect();
            streams.sort_unstable();
            streams.dedup();
            invocation
                .arg(streams.len())
                .arg(message.frame_tail())
                .arg(message.except.unwrap_or_default());
            for stream in streams {
                invocation.arg(stream);
            }
        }
        let ids: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map(|id| Published { id })
                    .map_err(|_| BrokerError::Unavailable(format!("bad id {id:?} from Redis")))
            })
            .collect()
    }

    pub async fn attach<R>(
        &self,
        app_id: &str,
        streams: &[Target],
        since: Option<u64>,
        attach: impl FnOnce() -> R,
    ) -> Result<Attached<R>, BrokerError> {
        let attached = attach();
        // Live from here on: the subscription for what was just attached
        // (or an earlier one for the same stream) is in place.
        self.sync().await?;
        // Without a recovery, the script only reads the app's position.
        let streams = if since.is_some() { streams } else { &[] };
        let declared = self
            .keys
            .history_keys(app_id, streams.iter().map(Target::stream_name));
        let mut invocation = redis_link::invoke_with(&self.recover, declared);
        invocation
            .arg(self.keys.app(app_id))
            .arg(since.unwrap_or(0))
            .arg(self.limits.ttl_secs.saturating_mul(1000));
        for stream in streams {
            invocation.arg(stream.stream_name());
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        let mut reply = reply.into_iter();
        let recovered = reply.next().is_some_and(|flag| flag == "1");
        let position = reply
            .next()
            .and_then(|last| last.parse().ok())
            .ok_or_else(|| BrokerError::Unavailable("no position from Redis".to_owned()))?;
        let recovery = since.map(|_| {
            let messages = reply
                .filter_map(|frame| Some((message_id(&frame)?, Utf8Bytes::from(frame))))
                .collect();
            Recovery::merged(messages, recovered, position)
        });
        Ok(Attached {
            attached,
            recovery,
            position,
        })
    }

    /// Wait until every (un)subscription asked for so far reached Redis.
    async fn sync(&self) -> Result<(), BrokerError> {
        let (done, wait) = oneshot::channel();
        let down = || BrokerError::Unavailable("Redis pub/sub is not connected".to_owned());
        self.commands
            .send(Command::Sync(done))
            .map_err(|_| down())?;
        match timeout(SUBSCRIBE_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(down()),
        }
    }

    /// The subscriptions to `channel` on every other node.
    pub async fn remote_subscriptions(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<u64, BrokerError> {
        let counts = occupancy::read(
            &self.connection,
            &self.channels,
            &self.keys,
            app_id,
            &self.node,
            Query::Channel(channel),
        )
        .await
        .map_err(unavailable)?;
        Ok(counts.into_values().sum())
    }

    /// The occupied channels on every other node whose names start with
    /// `prefix`, with their subscription counts.
    pub async fn remote_occupied(
        &self,
        app_id: &str,
        prefix: &str,
    ) -> Result<BTreeMap<String, u64>, BrokerError> {
        occupancy::read(
            &self.connection,
            &self.channels,
            &self.keys,
            app_id,
            &self.node,
            Query::Prefix(prefix),
        )
        .await
        .map_err(unavailable)
    }

    /// Tell every node (this one included) to close the token's sockets.
    pub async fn announce_revoke(&self, app_id: &str, access_id: &str) {
        let control = Control::Revoke {
            app: app_id.to_owned(),
            access_id: access_id.to_owned(),
        };
        self.announce(app_id, control).await;
    }

    /// Tell every node (this one included) to close the user's sockets.
    pub async fn announce_terminate(&self, app_id: &str, user_id: &str) {
        let control = Control::Terminate {
            app: app_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        self.announce(app_id, control).await;
    }

    async fn announce(&self, app_id: &str, control: Control) {
        let Ok(payload) = serde_json::to_string(&control) else {
            return;
        };
        // On a cluster the control channel is a shard channel too.
        let command = if self.keys.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let sent: Result<u64, _> = redis::cmd(command)
            .arg(self.keys.control())
            .arg(payload)
            .query_async(&mut self.connection.clone())
            .await;
        if let Err(error) = sent {
            // A revoked token is already gone from the store: its sockets
            // elsewhere close at their next keep-alive touch.
            tracing::warn!(
                app = app_id,
                ?control,
                "could not announce to the other nodes: {error}"
            );
        }
    }
}

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {error}"))
}

/// The task that owns the pub/sub connection: applies (un)subscriptions in
/// order, delivers messages to the hub, and reconnects when Redis goes away.
struct Subscriber {
    /// Where pub/sub connections are opened, and history read after a
    /// reconnect.
    connection: RedisLink,
    keys: Keys,
    /// The control channel's name (revokes, terminations, member events).
    control: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    commands: mpsc::UnboundedReceiver<Command>,
    connected: watch::Sender<bool>,
    /// Live channels with local sessions.
    wanted: HashSet<String>,
    /// Live channels subscribed on the current connection.
    subscribed: HashSet<String>,
    /// Syncs to answer once connected.
    waiting: Vec<oneshot::Sender<()>>,
    /// The newest id delivered per app, to replay from after a reconnect.
    last_seen: HashMap<String, u64>,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut first = true;
        // Messages older than this may have been missed while disconnected.
        let mut lost_at: Option<u64> = None;
        loop {
            let reason = match self.connect(lost_at).await {
                Ok(mut pubsub) => {
                    if first || lost_at.is_some() {
                        tracing::info!("Redis pub/sub connected");
                    }
                    first = false;
                    backoff = MIN_BACKOFF;
                    self.connected.send_replace(true);
                    self.answer_waiting();
                    let Lost(reason) = self.serve(&mut pubsub).await;
                    reason
                }
                Err(Lost(reason)) => reason,
            };
            if *self.connected.borrow() || first {
                tracing::warn!("Redis pub/sub unavailable ({reason}); open sockets stay, retrying");
            }
            first = false;
            self.connected.send_replace(false);
            self.subscribed.clear();
            lost_at.get_or_insert_with(unix_micros);
            // Keep taking commands while waiting, so the wanted set is
            // current when the connection returns.
            let wake = tokio::time::sleep(backoff);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = &mut wake => break,
                    command = self.commands.recv() => match command {
                        Some(command) => self.note(command),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if self.commands.is_closed() {
                return;
            }
        }
    }

    /// Open the pub/sub connection, subscribe to what is wanted and, after
    /// an outage, deliver what was published meanwhile.
    async fn connect(&mut self, lost_at: Option<u64>) -> Result<PubSub, Lost> {
        let mut pubsub = PubSub::open(&self.connection).await?;
        let mut channels: Vec<String> = self.wanted.iter().cloned().collect();
        channels.push(self.control.clone());
        pubsub.subscribe(&self.keys, &channels).await?;
        self.subscribed = self.wanted.clone();
        if let Some(lost_at) = lost_at {
            self.backfill(lost_at).await?;
        }
        Ok(pubsub)
    }

    /// Deliver, in id order, what the wanted streams got after the newest
    /// id this node delivered (sessions drop copies they already have).
    async fn backfill(&mut self, lost_at: u64) -> Result<(), Lost> {
        let fallback = lost_at.saturating_sub(BACKFILL_SLACK_MICROS);
        let mut streams: Vec<(String, Target)> = self
            .subscribed
            .iter()
            .filter_map(|live| self.keys.parse_live(live))
            .collect();
        // One pipeline reads one app's streams: on a cluster they share
        // the app's slot, and a pipeline goes to one shard.
        streams.sort_unstable();
        let mut found: Vec<(u64, String, Target, String)> = Vec::new();
        let per_app = streams.chunk_by(|(one, _), (other, _)| one == other);
        for chunk in per_app.flat_map(|app| app.chunks(CHUNK)) {
            let mut pipe = redis::pipe();
            for (app_id, target) in chunk {
                let since = self.last_seen.get(app_id).copied().unwrap_or(fallback);
                let key = self.keys.history(app_id, target);
                pipe.cmd("XRANGE")
                    .arg(key)
                    .arg(format!("({since}"))
                    .arg("+");
            }
            let replies: Vec<StreamEntries> = timeout(
                PUBSUB_TIMEOUT,
                pipe.query_async(&mut self.connection.clone()),
            )
            .await
            .map_err(|_| Lost::new("history read timed out"))?
            .map_err(Lost::from)?;
            for ((app_id, target), entries) in chunk.iter().zip(replies) {
                for (_, fields) in entries {
                    for (_, frame) in fields {
                        if let Some(id) = message_id(&frame) {
                            found.push((id, app_id.clone(), target.clone(), frame));
                        }
                    }
                }
            }
        }
        found.sort_by_key(|(id, ..)| *id);
        let replayed = found.len();
        for (id, app_id, target, frame) in found {
            // History keeps no exclusions: after an outage the sender gets
            // its own message too.
            self.deliver(&app_id, target, None, id, frame);
        }
        if replayed > 0 {
            tracing::info!(
                replayed,
                "replayed messages published while Redis pub/sub was down"
            );
        }
        Ok(())
    }

    /// Deliver messages and apply commands until the connection is lost.
    async fn serve(&mut self, pubsub: &mut PubSub) -> Lost {
        let mut ping = tokio::time::interval(PUBSUB_PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        return Lost::new("shutting down");
                    };
                    self.note(command);
                    // Apply everything queued in one round trip.
                    while let Ok(command) = self.commands.try_recv() {
                        self.note(command);
                    }
                    if let Err(lost) = self.apply(pubsub).await {
                        return lost;
                    }
                    self.answer_waiting();
                }
                message = pubsub.next(|channel| {
                    channel == self.control || self.subscribed.contains(channel)
                }) => match message {
                    Ok(message) => self.handle(&message),
                    Err(lost) => return lost,
                },
                _ = ping.tick() => {
                    if let Err(lost) = pubsub.ping().await {
                        return lost;
                    }
                }
            }
        }
    }

    /// Record a command; Redis is brought in line by [`Self::apply`].
    fn note(&mut self, command: Command) {
        match command {
            Command::Subscribe(channel) => {
                self.wanted.insert(channel);
            }
            Command::Unsubscribe(channel) => {
                self.wanted.remove(&channel);
            }
            Command::Sync(done) => {
                // Drop syncs nobody waits for any more (bounded while down).
                self.waiting.retain(|waiting| !waiting.is_closed());
                self.waiting.push(done);
            }
        }
    }

    /// Subscribe and unsubscribe so the connection matches `wanted`.
    async fn apply(&mut self, pubsub: &mut PubSub) -> Result<(), Lost> {
        let add: Vec<String> = self.wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<String> = self.subscribed.difference(&self.wanted).cloned().collect();
        pubsub.subscribe(&self.keys, &add).await?;
        // Forgotten before the shard confirms, so the confirmation is not
        // taken for a shard dropping a subscription by itself.
        for channel in &remove {
            self.subscribed.remove(channel);
        }
        pubsub.unsubscribe(&self.keys, &remove).await?;
        self.subscribed.extend(add);
        Ok(())
    }

    fn answer_waiting(&mut self) {
        for done in self.waiting.drain(..) {
            let _ = done.send(());
        }
    }

    fn handle(&mut self, message: &Received) {
        let channel = message.channel.as_str();
        let Ok(payload) = std::str::from_utf8(&message.payload) else {
            return;
        };
        if channel == self.control {
            match serde_json::from_str(payload) {
                Ok(Control::Revoke { app, access_id }) => {
                    self.hub
                        .close_token(&app, &access_id, CloseCode::TokenRevoked);
                }
                Ok(Control::Terminate { app, user_id }) => {
                    self.hub.close_user(&app, &user_id, CloseCode::Terminated);
                }
                Ok(Control::MemberAdded {
                    app,
                    channel,
                    user_id,
                    user_info,
                    except,
                }) => {
                    let frame = crate::presence::member_added_frame(&channel, &user_id, &user_info);
                    let except = (!except.is_empty()).then_some(except.as_str());
                    self.deliver_event(&app, channel, except, frame);
                }
                Ok(Control::MemberRemoved {
                    app,
                    channel,
                    user_id,
                }) => {
                    let frame = crate::presence::member_removed_frame(&channel, &user_id);
                    self.deliver_event(&app, channel, None, frame);
                }
                Err(error) => tracing::warn!("ignoring a bad control message: {error}"),
            }
            return;
        }
        let Some((app_id, target)) = self.keys.parse_live(channel) else {
            return;
        };
        // `<connection id> <frame>` when the publish excluded a connection.
        let (except, frame) = match payload.split_once(' ') {
            Some((except, frame)) if !payload.starts_with('{') => (Some(except), frame),
            _ => (None, payload),
        };
        let Some(id) = message_id(frame) else {
            tracing::warn!(channel, "ignoring a message without an id");
            return;
        };
        self.deliver(&app_id, target, except, id, frame.to_owned());
    }

    /// A presence event for a channel's subscribers: no id, no history.
    fn deliver_event(&self, app_id: &str, channel: String, except: Option<&str>, frame: String) {
        let target = [Target::Channel(channel)];
        self.hub
            .deliver(app_id, &target, except, 0, &Utf8Bytes::from(frame));
    }

    fn deliver(
        &mut self,
        app_id: &str,
        target: Target,
        except: Option<&str>,
        id: u64,
        frame: String,
    ) {
        let delivered = self
            .hub
            .deliver(app_id, &[target], except, id, &Utf8Bytes::from(frame));
        self.metrics.delivered(app_id, delivered);
        let seen = self.last_seen.entry(app_id.to_owned()).or_default();
        *seen = (*seen).max(id);
    }
}
