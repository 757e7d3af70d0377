//! How a node reaches the deployment's Redis: one server, or a Redis
//! Cluster (Valkey speaks the same). The store, the broker, presence and the
//! webhook relay take a [`RedisLink`] for commands and scripts and the
//! deployment's [`Keys`] for names, so they run unchanged on both; only
//! pub/sub differs (plain channels on one server, shard channels on a
//! cluster: `broker/pubsub.rs`).
//!
//! On a cluster the client discovers the slots from the seed nodes and
//! follows `MOVED`/`ASK` redirections and failovers by itself; a script is
//! sent to its slot by the keys it declares ([`Keys::history_keys`] and
//! the like).

use std::sync::Arc;
use std::time::Duration;

use madx_wire::broker::Keys;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use tokio::sync::OnceCell;

// Budgets of one connection attempt and of one command: a request fails
// with 503 rather than hang while Redis is unreachable.

/// How long opening a connection to one Redis server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A cheap handle to the deployment's Redis (clones share connections).
#[derive(Clone)]
pub enum RedisLink {
    /// One server: a multiplexed connection that reconnects by itself.
    Single {
        client: Box<redis::Client>,
        connection: ConnectionManager,
    },
    Cluster(Arc<ClusterLink>),
}

/// A Redis Cluster: the seed nodes (pub/sub opens its own clients on
/// them), the client for commands, and its connection opened on first use
/// (so a node starts, not ready, while the cluster is down).
pub struct ClusterLink {
    seeds: Vec<String>,
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl RedisLink {
    /// A link to one server; nothing is connected yet.
    pub fn single(url: &str) -> anyhow::Result<RedisLink> {
        let client = redis::Client::open(url)
            .map_err(|error| anyhow::anyhow!("invalid store URL: {error}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|error| anyhow::anyhow!("cannot set up Redis: {error}"))?;
        Ok(RedisLink::Single {
            client: Box::new(client),
            connection,
        })
    }

    /// A link to a cluster through its seed nodes (`redis://host:port`
    /// URLs); nothing is connected yet.
    pub fn cluster(seeds: Vec<String>) -> anyhow::Result<RedisLink> {
        // Built here so a typo fails at start-up, not at first use.
        let client = cluster_client(&seeds, None)?;
        Ok(RedisLink::Cluster(Arc::new(ClusterLink {
            seeds,
            client,
            connection: OnceCell::new(),
        })))
    }

    /// The names this link's deployment uses under `prefix`.
    pub fn keys(&self, prefix: &str) -> Keys {
        match self {
            RedisLink::Single { .. } => Keys::new(prefix),
            RedisLink::Cluster(_) => Keys::cluster(prefix),
        }
    }
}

impl ClusterLink {
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The shared connection, opened now if it is not yet.
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// An invocation of `script` declaring `keys` (a cluster's, from [`Keys`];
/// `None` on one Redis, where nothing is declared).
pub fn invoke_with(script: &Script, keys: Option<Vec<String>>) -> ScriptInvocation<'_> {
    let mut invocation = script.prepare_invoke();
    for key in keys.into_iter().flatten() {
        invocation.key(key);
    }
    invocation
}

/// A cluster client over `seeds`; with `pushes`, a RESP3 client whose
/// pub/sub messages and disconnections go there.
pub fn cluster_client(
    seeds: &[String],
    pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> anyhow::Result<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(2);
    if let Some(pushes) = pushes {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes);
    }
    builder
        .build()
        .map_err(|error| anyhow::anyhow!("invalid Redis Cluster seeds: {error}"))
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisLink::Single { connection, .. } => connection.req_packed_command(cmd),
            RedisLink::Cluster(cluster) => {
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisLink::Single { connection, .. } => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            RedisLink::Cluster(cluster) => Box::pin(async move {
                cluster
                    .connection()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisLink::Single { connection, .. } => connection.get_db(),
            RedisLink::Cluster(_) => 0,
        }
    }
}
