//! What the HTTP APIs can ask about channels: is a channel occupied, by how
//! many subscriptions (and, for presence channels, by how many users), and
//! which channels are occupied.
//!
//! Both the native API and the Pusher-compatible API answer from here, so
//! they can never disagree. The figures are the deployment's: this node's
//! own sockets, live, plus what the other nodes reported to Redis (see
//! `broker/occupancy.rs`), at most about a second old. Members of presence
//! channels come from the deployment's presence (`presence/`), current.

pub use madx_wire::presence::ChannelInfo;

use crate::broker::BrokerError;
use crate::presence::Roster;
use crate::state::AppState;

/// The channel directory of one deployment.
pub struct Channels<'a> {
    state: &'a AppState,
    /// Whether presence channels' members are read (for `user_count`).
    counting_users: bool,
}

impl<'a> Channels<'a> {
    pub fn new(state: &'a AppState) -> Channels<'a> {
        Channels {
            state,
            counting_users: true,
        }
    }

    /// Read presence members only when `counting` (a Pusher query that
    /// does not ask for `user_count` costs no roster read): otherwise every
    /// `user_count` is `None`.
    pub fn counting_users(self, counting: bool) -> Channels<'a> {
        Channels {
            counting_users: counting,
            ..self
        }
    }

    /// One channel of an app; an unoccupied channel has zero counts.
    pub async fn info(&self, app_id: &str, channel: &str) -> Result<ChannelInfo, BrokerError> {
        Ok(ChannelInfo {
            subscription_count: self.subscription_count(app_id, channel).await?,
            user_count: self.user_count(app_id, channel).await?,
        })
    }

    /// A channel's subscriptions over the deployment.
    async fn subscription_count(&self, app_id: &str, channel: &str) -> Result<u64, BrokerError> {
        let here = self.state.hub.channel_subscribers(app_id, channel) as u64;
        let elsewhere = self
            .state
            .broker
            .remote_subscriptions(app_id, channel)
            .await?;
        Ok(here + elsewhere)
    }

    /// The members of a presence channel (`None` for other channels).
    pub async fn members(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<Option<Roster>, BrokerError> {
        if !self.state.presence.is_presence(channel) {
            return Ok(None);
        }
        let roster = self.state.presence.roster(app_id, channel).await;
        roster
            .map(Some)
            .map_err(|error| BrokerError::Unavailable(error.to_string()))
    }

    /// A presence channel's distinct members (`None` for other channels,
    /// and when not counting users).
    async fn user_count(&self, app_id: &str, channel: &str) -> Result<Option<u64>, BrokerError> {
        if !self.counting_users {
            return Ok(None);
        }
        let members = self.members(app_id, channel).await?;
        Ok(members.map(|roster| roster.count() as u64))
    }

    /// The occupied channels of an app whose names start with `prefix`,
    /// sorted by name.
    pub async fn occupied(
        &self,
        app_id: &str,
        prefix: &str,
    ) -> Result<Vec<(String, ChannelInfo)>, BrokerError> {
        let mut counts = self.state.broker.remote_occupied(app_id, prefix).await?;
        for (name, here) in self.state.hub.occupied_channels(app_id, prefix) {
            *counts.entry(name).or_default() += here as u64;
        }
        let mut occupied = Vec::with_capacity(counts.len());
        for (name, subscription_count) in counts {
            let info = ChannelInfo {
                subscription_count,
                user_count: self.user_count(app_id, &name).await?,
            };
            occupied.push((name, info));
        }
        Ok(occupied)
    }
}
