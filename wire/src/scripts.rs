//! The Redis scripts of the deployment's broker and of the plugins' Redis
//! store, which hosts and the edge run with the same arguments: one copy,
//! so both write the same keys.
//! Each script's header says its arguments and the keys it touches.

/// Assign ids, append to history and announce on the live channels.
pub const PUBLISH: &str = include_str!("../lua/publish.lua");
/// Read what streams hold after a message id (a resume).
pub const RECOVER: &str = include_str!("../lua/recover.lua");
/// A node's report of its channel counts to the channel directory.
pub const OCCUPANCY: &str = include_str!("../lua/occupancy.lua");
/// Read the channel directory: counts summed over the live nodes.
pub const CHANNELS: &str = include_str!("../lua/channels.lua");
/// Presence members and deployment-wide channel occupancy, per node, with
/// node heartbeats that release what a dead node held.
pub const MEMBERSHIP: &str = include_str!("../lua/membership.lua");
/// One node at a time takes the deployment's queued webhook decisions.
pub const WEBHOOK_RELAY: &str = include_str!("../lua/webhook_relay.lua");
/// The plugins' store: `increment` (a counter that starts to expire when
/// created).
pub const INCREMENT: &str = include_str!("../lua/increment.lua");
/// The plugins' store: `decrement` (a counter at 0 is removed).
pub const DECREMENT: &str = include_str!("../lua/decrement.lua");
