//! The deployment's channel directory in Redis mode: which channels are
//! occupied, by how many subscriptions, summed over every node.
//!
//! Each node reports its own counts per app (`wire/lua/occupancy.lua`) once a
//! second, rewriting them only when they changed, and a report expires
//! unless refreshed, so a node that dies drops out within
//! [`REPORT_TTL`]. A query (`wire/lua/channels.lua`) sums the other nodes'
//! reports, and the asking node adds its own live counts: a node always
//! sees its own sockets at once, other nodes' within about a second.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use madx_wire::broker::Keys;
use redis::Script;
use tokio::time::MissedTickBehavior;

use crate::hub::Hub;
use crate::redis_link::{self, RedisLink};

/// How often a node reports its occupancy.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long a report holds without a refresh: a few missed reports are
/// forgiven, a dead node is forgotten.
const REPORT_TTL: Duration = Duration::from_secs(5);

/// One app's channel counts on one node.
type Counts = HashMap<String, usize>;

/// The task that keeps this node's reports current.
pub(super) struct Reporter {
    pub connection: RedisLink,
    pub keys: Keys,
    pub hub: Arc<Hub>,
    /// What Redis holds for this node, per app, as far as this node knows.
    reported: HashMap<String, Counts>,
    script: Script,
}

impl Reporter {
    pub fn new(connection: RedisLink, keys: Keys, hub: Arc<Hub>) -> Reporter {
        Reporter {
            connection,
            keys,
            hub,
            reported: HashMap::new(),
            script: Script::new(madx_wire::scripts::OCCUPANCY),
        }
    }

    pub async fn run(mut self) {
        let mut every = tokio::time::interval(REPORT_EVERY);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(error) = self.report().await {
                // Rewrite everything once Redis answers again: a report may
                // have expired meanwhile.
                self.reported.clear();
                tracing::debug!("could not report channel occupancy: {error}");
            }
        }
    }

    async fn report(&mut self) -> Result<(), redis::RedisError> {
        let mut current = self.hub.channel_occupancy();
        let apps: HashSet<String> = current
            .keys()
            .chain(self.reported.keys())
            .cloned()
            .collect();
        for app_id in apps {
            let counts = current.remove(&app_id).unwrap_or_default();
            let unchanged = self.reported.get(&app_id) == Some(&counts);
            let declared = self.keys.occupancy_keys(&app_id, self.hub.node_tag());
            let mut invocation = redis_link::invoke_with(&self.script, declared);
            invocation
                .arg(self.keys.app(&app_id))
                .arg(self.hub.node_tag())
                .arg(REPORT_TTL.as_millis() as u64)
                .arg(if unchanged { "refresh" } else { "replace" });
            if !unchanged {
                for (channel, count) in &counts {
                    invocation.arg(channel).arg(count);
                }
            }
            let _: i64 = invocation
                .invoke_async(&mut self.connection.clone())
                .await?;
            if counts.is_empty() {
                self.reported.remove(&app_id);
            } else {
                self.reported.insert(app_id, counts);
            }
        }
        Ok(())
    }
}

/// What a channel query asks of the other nodes' reports.
pub(super) enum Query<'a> {
    /// One channel's subscription count.
    Channel(&'a str),
    /// Every occupied channel whose name starts with this.
    Prefix(&'a str),
}

/// Sum the reports of every node but `skip_node` for one app.
pub(super) async fn read(
    connection: &RedisLink,
    script: &Script,
    keys: &Keys,
    app_id: &str,
    skip_node: &str,
    query: Query<'_>,
) -> Result<BTreeMap<String, u64>, redis::RedisError> {
    let (mode, name) = match query {
        Query::Channel(name) => ("channel", name),
        Query::Prefix(prefix) => ("prefix", prefix),
    };
    let mut invocation = redis_link::invoke_with(script, keys.directory_keys(app_id));
    invocation
        .arg(keys.app(app_id))
        .arg(skip_node)
        .arg(mode)
        .arg(name);
    let mut connection = connection.clone();
    if let Query::Channel(channel) = query {
        let (count,): (u64,) = invocation.invoke_async(&mut connection).await?;
        return Ok(BTreeMap::from([(channel.to_owned(), count)]));
    }
    let pairs: Vec<(String, u64)> = invocation.invoke_async(&mut connection).await?;
    Ok(pairs.into_iter().collect())
}
