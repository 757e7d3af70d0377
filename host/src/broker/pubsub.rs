//! One pub/sub connection of the cluster broker: plain channels on one
//! Redis, shard channels (`SSUBSCRIBE`) on a Redis Cluster, where each
//! channel is served by the shard that owns its slot, so a message crosses
//! only that shard.
//!
//! Either way the connection is all or nothing: when any part of it drops
//! (a shard's primary fails over, a slot moves away), it reports itself
//! lost, and the subscriber opens a fresh one, subscribes again and replays
//! the gap from the streams. The cluster client's own silent resubscription
//! is not relied on: it could not say what was missed meanwhile.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt as _;
use madx_wire::broker::Keys;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::redis::PUBSUB_TIMEOUT;
use crate::redis_link::{self, RedisLink};

/// Channels per (un)subscribe command.
const CHUNK: usize = 500;

/// Why a connection ended.
pub(super) struct Lost(pub String);

impl Lost {
    pub fn new(reason: impl Into<String>) -> Lost {
        Lost(reason.into())
    }
}

impl From<redis::RedisError> for Lost {
    fn from(error: redis::RedisError) -> Lost {
        Lost::new(error.to_string())
    }
}

/// A message received on a subscribed channel.
pub(super) struct Received {
    pub channel: String,
    pub payload: Vec<u8>,
}

pub(super) enum PubSub {
    Single {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    Cluster {
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Our own unsubscribes not confirmed yet, per channel: their
        /// confirmations arrive after the command returned, maybe after
        /// the channel was subscribed again, and are not a shard's doing.
        unconfirmed: HashMap<String, usize>,
    },
}

impl PubSub {
    pub async fn open(link: &RedisLink) -> Result<PubSub, Lost> {
        match link {
            RedisLink::Single { client, .. } => {
                let pubsub = timeout(PUBSUB_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| Lost::new("connect timed out"))?
                    .map_err(Lost::from)?;
                let (sink, stream) = pubsub.split();
                Ok(PubSub::Single { sink, stream })
            }
            RedisLink::Cluster(cluster) => {
                let (sender, pushes) = mpsc::unbounded_channel();
                let client = redis_link::cluster_client(cluster.seeds(), Some(sender))
                    .map_err(|error| Lost::new(error.to_string()))?;
                let connection = timeout(PUBSUB_TIMEOUT, client.get_async_connection())
                    .await
                    .map_err(|_| Lost::new("connect timed out"))?
                    .map_err(Lost::from)?;
                Ok(PubSub::Cluster {
                    connection,
                    pushes,
                    unconfirmed: HashMap::new(),
                })
            }
        }
    }

    pub async fn subscribe(&mut self, keys: &Keys, channels: &[String]) -> Result<(), Lost> {
        match self {
            PubSub::Single { sink, .. } => {
                for chunk in channels.chunks(CHUNK) {
                    bounded(sink.subscribe(chunk)).await?;
                }
            }
            PubSub::Cluster { connection, .. } => {
                for chunk in by_slot(keys, channels) {
                    bounded(connection.ssubscribe(chunk)).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn unsubscribe(&mut self, keys: &Keys, channels: &[String]) -> Result<(), Lost> {
        match self {
            PubSub::Single { sink, .. } => {
                for chunk in channels.chunks(CHUNK) {
                    bounded(sink.unsubscribe(chunk)).await?;
                }
            }
            PubSub::Cluster {
                connection,
                unconfirmed,
                ..
            } => {
                for chunk in by_slot(keys, channels) {
                    for channel in &chunk {
                        *unconfirmed.entry((*channel).clone()).or_default() += 1;
                    }
                    bounded(connection.sunsubscribe(chunk)).await?;
                }
            }
        }
        Ok(())
    }

    /// Is the connection still answering? (On a cluster: every primary.)
    pub async fn ping(&mut self) -> Result<(), Lost> {
        match self {
            PubSub::Single { sink, .. } => bounded(sink.ping::<Value>()).await.map(drop),
            PubSub::Cluster { connection, .. } => {
                bounded(redis::cmd("PING").query_async::<Value>(connection))
                    .await
                    .map(drop)
            }
        }
    }

    /// The next message; cancel-safe, for a `select!`. `subscribed` says
    /// whether a channel is meant to be subscribed (a shard that drops it
    /// by itself, as when its slot moves, loses the connection).
    pub async fn next(&mut self, subscribed: impl Fn(&str) -> bool) -> Result<Received, Lost> {
        match self {
            PubSub::Single { stream, .. } => {
                let message = stream
                    .next()
                    .await
                    .ok_or_else(|| Lost::new("connection closed"))?;
                Ok(Received {
                    channel: message.get_channel_name().to_owned(),
                    payload: message.get_payload_bytes().to_vec(),
                })
            }
            PubSub::Cluster {
                pushes,
                unconfirmed,
                ..
            } => loop {
                let push = pushes
                    .recv()
                    .await
                    .ok_or_else(|| Lost::new("connection closed"))?;
                match push.kind {
                    PushKind::SMessage => {
                        if let [channel, payload] = push.data.as_slice()
                            && let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload))
                        {
                            return Ok(Received {
                                channel: String::from_utf8_lossy(channel).into_owned(),
                                payload: payload.to_vec(),
                            });
                        }
                    }
                    PushKind::Disconnection => {
                        return Err(Lost::new("a shard connection closed"));
                    }
                    PushKind::SUnsubscribe => {
                        let Some(channel) = push.data.first().and_then(bytes) else {
                            continue;
                        };
                        let channel = String::from_utf8_lossy(channel).into_owned();
                        match unconfirmed.get_mut(&channel) {
                            Some(count) if *count > 1 => *count -= 1,
                            Some(_) => {
                                unconfirmed.remove(&channel);
                            }
                            None if subscribed(&channel) => {
                                return Err(Lost::new("a shard dropped a subscription"));
                            }
                            None => {}
                        }
                    }
                    _ => {}
                }
            },
        }
    }
}

/// Shard channels grouped so that one command names one slot: an app's live
/// channels share its slot ([`Keys::live`]), the control channel has the
/// deployment's.
fn by_slot<'a>(keys: &Keys, channels: &'a [String]) -> Vec<Vec<&'a String>> {
    let mut groups: BTreeMap<Option<String>, Vec<&String>> = BTreeMap::new();
    for channel in channels {
        let app = keys.parse_live(channel).map(|(app_id, _)| app_id);
        groups.entry(app).or_default().push(channel);
    }
    groups
        .into_values()
        .flat_map(|group| {
            group
                .chunks(CHUNK)
                .map(<[&String]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

async fn bounded<T>(future: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Lost> {
    timeout(PUBSUB_TIMEOUT, future)
        .await
        .map_err(|_| Lost::new("Redis did not answer in time"))?
        .map_err(Lost::from)
}
