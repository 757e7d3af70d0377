//! What the channel queries of both APIs read at the edge, as the hosts'
//! `channels.rs` does: subscription counts from the channel directory the
//! hosts report to Redis once a second (`wire/lua/channels.lua`; the edge
//! holds no sockets), members of presence channels from the deployment's
//! presence in Redis (`wire/lua/membership.lua`), current.

use madx_wire::presence::{self, Member};

use crate::api;
use madx_wire::presence::ChannelInfo;

use crate::broker::Broker;
use crate::config::EdgeConfig;
use crate::platform::Platform;

/// The deployment's channels, seen from the edge.
pub struct Channels<'a, P> {
    broker: Broker<'a, P>,
    presence_prefix: &'a str,
    /// Whether presence channels' members are read (for `user_count`).
    counting_users: bool,
}

impl<'a, P: Platform> Channels<'a, P> {
    pub fn new(platform: &'a P, config: &'a EdgeConfig) -> Channels<'a, P> {
        Channels {
            broker: api::broker(platform, config),
            presence_prefix: &config.presence_prefix,
            counting_users: true,
        }
    }

    /// Read presence members only when `counting` (a Pusher query that
    /// does not ask for `user_count` costs no roster read): otherwise every
    /// `user_count` is `None`.
    pub fn counting_users(self, counting: bool) -> Channels<'a, P> {
        Channels {
            counting_users: counting,
            ..self
        }
    }

    /// One channel of an app; an unoccupied channel has zero counts.
    pub fn info(&self, app_id: &str, channel: &str) -> Result<ChannelInfo, String> {
        Ok(ChannelInfo {
            subscription_count: self.broker.subscriptions(app_id, channel)?,
            user_count: self.user_count(app_id, channel)?,
        })
    }

    /// The members of a presence channel (`None` for other channels).
    pub fn members(&self, app_id: &str, channel: &str) -> Result<Option<Vec<Member>>, String> {
        if !presence::is_presence(channel, self.presence_prefix) {
            return Ok(None);
        }
        self.broker.members(app_id, channel).map(Some)
    }

    /// A presence channel's distinct members (`None` for other channels,
    /// and when not counting users).
    fn user_count(&self, app_id: &str, channel: &str) -> Result<Option<u64>, String> {
        if !self.counting_users {
            return Ok(None);
        }
        let members = self.members(app_id, channel)?;
        Ok(members.map(|members| members.len() as u64))
    }

    /// The occupied channels of an app whose names start with `prefix`,
    /// sorted by name.
    pub fn occupied(
        &self,
        app_id: &str,
        prefix: &str,
    ) -> Result<Vec<(String, ChannelInfo)>, String> {
        self.broker
            .occupied(app_id, prefix)?
            .into_iter()
            .map(|(name, subscription_count)| {
                let user_count = self.user_count(app_id, &name)?;
                let info = ChannelInfo {
                    subscription_count,
                    user_count,
                };
                Ok((name, info))
            })
            .collect()
    }

    /// The presence prefix, as errors name it.
    pub fn presence_prefix(&self) -> &str {
        self.presence_prefix
    }
}
