//! What the HTTP APIs can ask about channels: is a channel occupied, by how
//! many subscriptions (and, for presence channels, by how many users), and
//! which channels are occupied.
//!
//! Both the native API and the Pusher-compatible API answer from here, so
//! they can never disagree. Today the figures are this node's own (the
//! hub's indexes); a deployment-wide view replaces the body of these
//! functions, not their callers.

use crate::state::AppState;

/// One channel as the APIs report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    /// Open subscriptions (a socket subscribed to the channel counts once).
    pub subscription_count: u64,
    /// Distinct members, for a presence channel; `None` for other channels.
    pub user_count: Option<u64>,
}

impl ChannelInfo {
    pub fn occupied(&self) -> bool {
        self.subscription_count > 0
    }
}

/// The channel directory of one deployment.
pub struct Channels<'a> {
    state: &'a AppState,
}

impl<'a> Channels<'a> {
    pub fn new(state: &'a AppState) -> Channels<'a> {
        Channels { state }
    }

    /// One channel of an app; an unoccupied channel has zero counts.
    pub async fn info(&self, app_id: &str, channel: &str) -> ChannelInfo {
        ChannelInfo {
            subscription_count: self.state.hub.channel_subscribers(app_id, channel) as u64,
            user_count: None,
        }
    }

    /// The occupied channels of an app whose names start with `prefix`,
    /// sorted by name.
    pub async fn occupied(&self, app_id: &str, prefix: &str) -> Vec<(String, ChannelInfo)> {
        self.state
            .hub
            .occupied_channels(app_id, prefix)
            .into_iter()
            .map(|(name, count)| {
                let info = ChannelInfo {
                    subscription_count: count as u64,
                    user_count: None,
                };
                (name, info)
            })
            .collect()
    }
}
