//! With Redis, the deployment's channel and member decisions reach the
//! webhooks through one queue in Redis (`wire/lua/membership.lua` appends
//! each decision as it makes it), so they keep one order however many
//! nodes made them. One node at a time, the holder of a short lease
//! (`wire/lua/webhook_relay.lua`), moves them to its own senders; when it
//! dies, another takes the lease within [`LEASE`]. Client events do not
//! pass here: each is decided, and sent, by the node its socket is on.

use std::sync::Arc;
use std::time::Duration;

use madx_wire::broker::Keys;
use redis::Script;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;

use super::{Event, EventKind, Webhooks};
use crate::metrics::Metrics;
use crate::redis_link::{self, RedisLink};

/// How often queued decisions are moved to the senders (their delay).
const RELAY_EVERY: Duration = Duration::from_millis(100);
/// How long the relay lease holds without a renewal.
const LEASE: Duration = Duration::from_secs(3);
/// Decisions moved per app and round at most.
const TAKE: usize = 500;

/// The kinds of event that reach the webhooks through Redis.
const DECIDED: [EventKind; 4] = [
    EventKind::ChannelOccupied,
    EventKind::ChannelVacated,
    EventKind::MemberAdded,
    EventKind::MemberRemoved,
];

/// This node's part in relaying the deployment's decisions.
pub struct Relay {
    connection: RedisLink,
    script: Script,
    /// `<prefix>:` (`{<prefix>}:` on a cluster: one slot for the deployment).
    prefix: String,
    /// The deployment's names (what a script declares, on a cluster).
    keys: Keys,
    node: String,
    /// The apps with a webhook for any decided event.
    apps: Vec<String>,
    /// Decisions kept in Redis per app at most (the queue bound).
    bound: usize,
    webhooks: Arc<Webhooks>,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// Start relaying for the apps that want decided events; nothing runs
    /// when none does.
    pub fn start(
        connection: RedisLink,
        keys: &Keys,
        node: &str,
        app_ids: impl IntoIterator<Item = String>,
        bound: usize,
        webhooks: Arc<Webhooks>,
        metrics: Arc<Metrics>,
    ) {
        let apps: Vec<String> = app_ids
            .into_iter()
            .filter(|app| DECIDED.iter().any(|kind| webhooks.wants(app, *kind)))
            .collect();
        if apps.is_empty() {
            return;
        }
        let relay = Relay {
            connection,
            script: Script::new(madx_wire::scripts::WEBHOOK_RELAY),
            prefix: keys.deployment(),
            keys: keys.clone(),
            node: node.to_owned(),
            apps,
            bound,
            webhooks,
            metrics,
        };
        tokio::spawn(relay.run());
    }

    async fn run(self) {
        let mut every = tokio::time::interval(RELAY_EVERY);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(error) = self.relay().await {
                tracing::debug!("could not relay webhook decisions: {error}");
            }
        }
    }

    async fn relay(&self) -> redis::RedisResult<()> {
        let mut invocation = redis_link::invoke_with(&self.script, self.keys.deployment_keys());
        invocation
            .arg(&self.prefix)
            .arg(&self.node)
            .arg(LEASE.as_millis() as u64)
            .arg(TAKE)
            .arg(self.bound);
        for app in &self.apps {
            invocation.arg(app);
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let mut reply = reply.into_iter();
        while let (Some(app), Some(dropped), Some(count)) =
            (reply.next(), reply.next(), reply.next())
        {
            let dropped: u64 = dropped.parse().unwrap_or(0);
            if dropped > 0 {
                self.metrics.webhook_events_dropped(&app, dropped);
                tracing::warn!(
                    app,
                    dropped,
                    "webhook decisions dropped in Redis: its queue was full"
                );
            }
            for _ in 0..count.parse::<usize>().unwrap_or(0) {
                let Some(json) = reply.next() else { break };
                match decided_event(&json) {
                    Some(event) => self.webhooks.emit(&app, event),
                    None => tracing::warn!(app, json, "ignoring a malformed webhook decision"),
                }
            }
        }
        Ok(())
    }
}

/// A decision as `membership.lua` queued it (the webhook's own event JSON).
fn decided_event(json: &str) -> Option<Event> {
    #[derive(Deserialize)]
    struct Decided {
        name: String,
        channel: String,
        user_id: Option<String>,
    }
    let Decided {
        name,
        channel,
        user_id,
    } = serde_json::from_str(json).ok()?;
    match (name.as_str(), user_id) {
        ("channel_occupied", _) => Some(Event::ChannelOccupied { channel }),
        ("channel_vacated", _) => Some(Event::ChannelVacated { channel }),
        ("member_added", Some(user_id)) => Some(Event::MemberAdded { channel, user_id }),
        ("member_removed", Some(user_id)) => Some(Event::MemberRemoved { channel, user_id }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_as_the_script_writes_them() {
        assert_eq!(
            decided_event(r#"{"channel":"presence-a","name":"member_added","user_id":"ann"}"#),
            Some(Event::MemberAdded {
                channel: "presence-a".into(),
                user_id: "ann".into()
            })
        );
        assert_eq!(
            decided_event(r#"{"name":"channel_vacated","channel":"news"}"#),
            Some(Event::ChannelVacated {
                channel: "news".into()
            })
        );
        assert_eq!(
            decided_event(r#"{"name":"member_added","channel":"x"}"#),
            None
        );
        assert_eq!(decided_event("nope"), None);
    }
}
