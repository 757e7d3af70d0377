//! Presence and occupancy in a Redis shared by every node
//! (`wire/lua/membership.lua`), and the task that keeps this node's share
//! of it right: occupied/vacated in the order the hub saw them, a heartbeat
//! that also releases what dead nodes held, and a resync whenever Redis
//! and this node may disagree (a failed write, or this node was taken for
//! dead).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use madx_wire::broker::Keys;
use madx_wire::presence::{HEARTBEAT_MS, NODE_TIMEOUT_MS};
use redis::{RedisResult, Script, ScriptInvocation};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{Change, Deployment, MemberKey, Presence, Roster, WorkerOp};
use crate::redis_link::{self, RedisLink};

/// What a join did to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Joined {
    /// The user is a new member.
    Added,
    /// Already a member through another node.
    Present,
    /// Refused: the channel has its most members.
    Full,
}

/// One entry of what a node holds, as the script writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Entry {
    Member(String, String, String),
    Channel(String, String),
}

impl Entry {
    fn parse(text: &str) -> Option<Entry> {
        let parts: Vec<String> = serde_json::from_str(text).ok()?;
        match parts.as_slice() {
            [kind, app, channel, user] if kind == "m" => {
                Some(Entry::Member(app.clone(), channel.clone(), user.clone()))
            }
            [kind, app, channel] if kind == "o" => {
                Some(Entry::Channel(app.clone(), channel.clone()))
            }
            _ => None,
        }
    }
}

/// This node's handle on the deployment's members in Redis.
pub struct RedisMembership {
    connection: RedisLink,
    script: Script,
    /// `<prefix>:` (`{<prefix>}:` on a cluster: one slot for the deployment).
    prefix: String,
    /// The deployment's names (what a script declares, on a cluster).
    keys: Keys,
    node: String,
    /// A write failed: Redis may not match this node until a resync.
    out_of_sync: AtomicBool,
}

impl RedisMembership {
    pub fn new(connection: RedisLink, keys: &Keys, node: &str) -> RedisMembership {
        RedisMembership {
            connection,
            script: Script::new(madx_wire::scripts::MEMBERSHIP),
            prefix: keys.deployment(),
            keys: keys.clone(),
            node: node.to_owned(),
            out_of_sync: AtomicBool::new(true),
        }
    }

    pub(super) fn mark_out_of_sync(&self) {
        self.out_of_sync.store(true, Ordering::Relaxed);
    }

    fn invocation(&self, op: &str) -> ScriptInvocation<'_> {
        let mut invocation = self.prepare();
        invocation.arg(op).arg(&self.prefix).arg(&self.node);
        invocation
    }

    fn prepare(&self) -> ScriptInvocation<'_> {
        redis_link::invoke_with(&self.script, self.keys.deployment_keys())
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        invocation.invoke_async(&mut self.connection.clone()).await
    }

    /// This node now holds `key`'s user: the deployment's verdict and roster.
    pub(super) async fn join(
        &self,
        key: &MemberKey,
        info: &str,
        max: usize,
        connection_id: &str,
    ) -> RedisResult<(Joined, Roster)> {
        let mut invocation = self.invocation("join");
        invocation
            .arg(&key.app)
            .arg(&key.channel)
            .arg(&key.user)
            .arg(info)
            .arg(max)
            .arg("1")
            .arg(connection_id);
        let reply: Vec<String> = self.run(&invocation).await?;
        Ok(parse_roster(reply))
    }

    pub(super) async fn roster(&self, app: &str, channel: &str) -> RedisResult<Roster> {
        // The edge reads a roster with the same arguments.
        let mut invocation = self.prepare();
        for arg in madx_wire::presence::read_roster_args(&self.prefix, app, channel) {
            invocation.arg(arg);
        }
        let reply: Vec<String> = self.run(&invocation).await?;
        Ok(parse_roster(reply).1)
    }

    /// This node no longer holds the user: `true` when the deployment lost
    /// the member.
    pub(super) async fn leave(&self, app: &str, channel: &str, user: &str) -> RedisResult<bool> {
        let mut invocation = self.invocation("leave");
        invocation.arg(app).arg(channel).arg(user);
        let left: i64 = self.run(&invocation).await?;
        Ok(left == 1)
    }

    /// This node gained (`occupy`) or lost (`vacate`) a channel: `true`
    /// when the deployment did.
    async fn occupancy(&self, op: &str, app: &str, channel: &str) -> RedisResult<bool> {
        let mut invocation = self.invocation(op);
        invocation.arg(app).arg(channel);
        let changed: i64 = self.run(&invocation).await?;
        Ok(changed == 1)
    }

    /// Say this node is alive; whether Redis knew it, and what dead nodes
    /// held that the deployment lost.
    async fn beat(&self) -> RedisResult<(bool, Vec<Change>)> {
        let mut invocation = self.invocation("beat");
        invocation.arg(NODE_TIMEOUT_MS);
        let reply: Vec<String> = self.run(&invocation).await?;
        let known = reply.first().is_some_and(|flag| flag == "1");
        Ok((known, released(reply.get(1..).unwrap_or_default())))
    }

    pub(super) async fn retire(&self) -> RedisResult<Vec<Change>> {
        let reply: Vec<String> = self.run(&self.invocation("retire")).await?;
        Ok(released(&reply))
    }

    /// What Redis says this node holds.
    async fn held(&self) -> RedisResult<HashSet<Entry>> {
        let key = format!("{}node/{}/held", self.prefix, self.node);
        let entries: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(entries
            .iter()
            .filter_map(|entry| Entry::parse(entry))
            .collect())
    }
}

/// `{status, count, user, info, ...}` from a join
/// (`madx_wire::presence::parse_roster`).
fn parse_roster(reply: Vec<String>) -> (Joined, Roster) {
    let (status, members) = madx_wire::presence::parse_roster(reply);
    let joined = match status.as_str() {
        "added" => Joined::Added,
        "full" => Joined::Full,
        _ => Joined::Present,
    };
    (joined, Roster { members })
}

/// `kind, app, channel, user` per released entry.
fn released(fields: &[String]) -> Vec<Change> {
    fields
        .chunks_exact(4)
        .map(|entry| {
            let (app, channel) = (entry[1].clone(), entry[2].clone());
            if entry[0] == "m" {
                Change::MemberRemoved {
                    app,
                    channel,
                    user_id: entry[3].clone(),
                }
            } else {
                Change::Vacated { app, channel }
            }
        })
        .collect()
}

/// The task behind [`Presence`]: occupied/vacated decisions in order, and
/// with Redis the heartbeat and resync.
pub(super) struct Worker {
    presence: Arc<Presence>,
    channels: mpsc::UnboundedReceiver<WorkerOp>,
    /// The channels this node holds, as the hub reported them.
    occupied: HashSet<(String, String)>,
}

impl Worker {
    pub(super) fn new(
        presence: Arc<Presence>,
        channels: mpsc::UnboundedReceiver<WorkerOp>,
    ) -> Worker {
        Worker {
            presence,
            channels,
            occupied: HashSet::new(),
        }
    }

    pub(super) async fn run(mut self) {
        let presence = Arc::clone(&self.presence);
        let Deployment::Redis(redis) = &presence.deployment else {
            // One node: the hub's view is the deployment's.
            while let Some(op) = self.channels.recv().await {
                match op {
                    WorkerOp::Channel(app, channel, gained) => presence.tell(if gained {
                        Change::Occupied { app, channel }
                    } else {
                        Change::Vacated { app, channel }
                    }),
                    WorkerOp::Sync(done) => {
                        let _ = done.send(());
                    }
                }
            }
            return;
        };
        let mut beat = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                op = self.channels.recv() => match op {
                    Some(WorkerOp::Channel(app, channel, gained)) => {
                        self.occupancy(redis, app, channel, gained).await;
                    }
                    Some(WorkerOp::Sync(done)) => {
                        let _ = done.send(());
                    }
                    None => return,
                },
                _ = beat.tick() => self.beat(redis).await,
            }
        }
    }

    async fn occupancy(
        &mut self,
        redis: &RedisMembership,
        app: String,
        channel: String,
        gained: bool,
    ) {
        let op = if gained { "occupy" } else { "vacate" };
        match redis.occupancy(op, &app, &channel).await {
            Ok(true) if gained => self.presence.tell(Change::Occupied {
                app: app.clone(),
                channel: channel.clone(),
            }),
            Ok(true) => self.presence.tell(Change::Vacated {
                app: app.clone(),
                channel: channel.clone(),
            }),
            Ok(false) => {}
            Err(error) => {
                redis.mark_out_of_sync();
                tracing::warn!("could not record channel occupancy in Redis: {error}");
            }
        }
        if gained {
            self.occupied.insert((app, channel));
        } else {
            self.occupied.remove(&(app, channel));
        }
    }

    async fn beat(&mut self, redis: &RedisMembership) {
        let known = match redis.beat().await {
            Ok((known, released)) => {
                for change in released {
                    self.presence.tell(change);
                }
                known
            }
            Err(error) => {
                tracing::debug!("presence heartbeat failed: {error}");
                redis.mark_out_of_sync();
                return;
            }
        };
        let stale = !known || redis.out_of_sync.swap(false, Ordering::Relaxed);
        if stale && let Err(error) = self.resync(redis).await {
            redis.mark_out_of_sync();
            tracing::warn!("could not bring presence in Redis in line: {error}");
        }
    }

    /// Make what Redis says this node holds match what it holds.
    async fn resync(&mut self, redis: &RedisMembership) -> RedisResult<()> {
        let presence = Arc::clone(&self.presence);
        // No member joins or leaves meanwhile.
        let members = presence.lock_all().await;
        let held = redis.held().await?;
        let mut wanted: HashSet<Entry> = HashSet::new();
        for shard in &members {
            for (key, member) in shard.iter() {
                let entry = Entry::Member(key.app.clone(), key.channel.clone(), key.user.clone());
                if !held.contains(&entry) {
                    let max = presence.config.max_members;
                    // Over the cap now: the member stays in this node's
                    // sockets, but Redis has no room for it.
                    if let (Joined::Added, _) = redis.join(key, &member.info, max, "").await? {
                        presence.tell(Change::MemberAdded {
                            app: key.app.clone(),
                            channel: key.channel.clone(),
                            user_id: key.user.clone(),
                        });
                    }
                }
                wanted.insert(entry);
            }
        }
        for (app, channel) in &self.occupied {
            let entry = Entry::Channel(app.clone(), channel.clone());
            if !held.contains(&entry) && redis.occupancy("occupy", app, channel).await? {
                presence.tell(Change::Occupied {
                    app: app.clone(),
                    channel: channel.clone(),
                });
            }
            wanted.insert(entry);
        }
        for entry in held.difference(&wanted) {
            match entry {
                Entry::Member(app, channel, user) => {
                    if redis.leave(app, channel, user).await? {
                        presence.tell(Change::MemberRemoved {
                            app: app.clone(),
                            channel: channel.clone(),
                            user_id: user.clone(),
                        });
                    }
                }
                Entry::Channel(app, channel) => {
                    if redis.occupancy("vacate", app, channel).await? {
                        presence.tell(Change::Vacated {
                            app: app.clone(),
                            channel: channel.clone(),
                        });
                    }
                }
            }
        }
        drop(members);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_entries_parse_as_the_script_writes_them() {
        assert_eq!(
            Entry::parse(r#"["m","shop","presence-a","ann"]"#),
            Some(Entry::Member(
                "shop".into(),
                "presence-a".into(),
                "ann".into()
            ))
        );
        assert_eq!(
            Entry::parse(r#"["o","shop","news"]"#),
            Some(Entry::Channel("shop".into(), "news".into()))
        );
        assert_eq!(Entry::parse(r#"["x"]"#), None);
        assert_eq!(Entry::parse("not json"), None);
    }

    #[test]
    fn a_roster_reply_lists_members_by_user() {
        let reply = ["added", "2", "bob", "", "ann", r#"{"n":1}"#]
            .map(String::from)
            .to_vec();
        let (joined, roster) = parse_roster(reply);
        assert_eq!(joined, Joined::Added);
        assert_eq!(roster.members[0].user_id, "ann");
        assert_eq!(roster.members[0].user_info.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(roster.members[1].user_info, None);
    }

    #[test]
    fn released_entries_become_removals_and_vacancies() {
        let fields = ["m", "shop", "presence-a", "ann", "o", "shop", "news", ""].map(String::from);
        assert_eq!(
            released(&fields),
            vec![
                Change::MemberRemoved {
                    app: "shop".into(),
                    channel: "presence-a".into(),
                    user_id: "ann".into()
                },
                Change::Vacated {
                    app: "shop".into(),
                    channel: "news".into()
                },
            ]
        );
    }
}
