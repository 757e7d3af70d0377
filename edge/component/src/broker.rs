//! Publishing and revoking at the edge: the hosts' Redis broker, from the
//! outside. A publish runs the hosts' own script
//! (`wire/lua/publish.lua`) with the arguments a host passes, so
//! ids, history and live fan-out are exactly a host publish's; revokes and
//! terminations are announced on `<prefix>:control`, where every host
//! listens, as [`Control`] messages.

use madx_wire::broker::Keys;
use madx_wire::control::Control;
use madx_wire::presence::{self, Member};
use serde_json::value::RawValue;

use crate::platform::{Platform, Reply};

/// The script every host runs to publish.
const PUBLISH: &str = madx_wire::scripts::PUBLISH;
/// The script every host runs to read the channel directory.
const CHANNELS: &str = madx_wire::scripts::CHANNELS;
/// The script every host runs for presence members (read only here).
const MEMBERSHIP: &str = madx_wire::scripts::MEMBERSHIP;

/// Where a message goes (the router's answer).
pub use madx_wire::broker::Target;

/// One routed message.
#[derive(Debug)]
pub struct Outgoing {
    pub targets: Vec<Target>,
    pub event: String,
    pub data: Box<RawValue>,
    /// A connection id that must not get it (the sender).
    pub except: Option<String>,
}

impl Outgoing {
    /// The `message` frame after its id: the script puts the id in front.
    pub fn frame_tail(&self) -> String {
        madx_wire::broker::frame_tail(self.targets.first(), &self.event, &self.data)
    }
}

/// The deployment's broker keys in one Redis.
pub struct Broker<'a, P> {
    pub platform: &'a P,
    pub redis_url: &'a str,
    pub prefix: &'a str,
    pub per_stream: u64,
    pub ttl_secs: u64,
}

impl<P: Platform> Broker<'_, P> {
    /// Publish `messages` in order, atomically (one script run); their ids.
    pub fn publish(&self, app_id: &str, messages: &[Outgoing]) -> Result<Vec<u64>, String> {
        let mut args: Vec<Vec<u8>> = vec![
            PUBLISH.into(),
            b"0".to_vec(),
            Keys::new(self.prefix).app(app_id).into_bytes(),
            self.per_stream.to_string().into_bytes(),
            self.ttl_secs.saturating_mul(1000).to_string().into_bytes(),
            messages.len().to_string().into_bytes(),
        ];
        for message in messages {
            // The script appends to each stream once per message.
            let mut streams: Vec<String> =
                message.targets.iter().map(Target::stream_name).collect();
            streams.sort_unstable();
            streams.dedup();
            args.push(streams.len().to_string().into_bytes());
            args.push(message.frame_tail().into_bytes());
            args.push(message.except.as_deref().unwrap_or_default().into());
            args.extend(streams.into_iter().map(String::into_bytes));
        }
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply = self
            .platform
            .redis(self.redis_url, "EVAL", &args)
            .map_err(|error| format!("redis: {error}"))?;
        let ids: Vec<u64> = reply
            .iter()
            .map(|value| match value {
                Reply::Bytes(id) => std::str::from_utf8(id)
                    .ok()
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| format!("bad id {value:?} from Redis")),
                other => Err(format!("bad id {other:?} from Redis")),
            })
            .collect::<Result<_, _>>()?;
        if ids.len() != messages.len() {
            return Err(format!(
                "Redis returned {} ids for {} messages",
                ids.len(),
                messages.len()
            ));
        }
        Ok(ids)
    }

    /// Keep a token's `user_info` where the hosts read it, for as long as
    /// the token lives (the hosts' keep-alive touches both).
    pub fn keep_user_info(
        &self,
        app_id: &str,
        access_id: &str,
        info: &str,
        ttl_secs: u32,
    ) -> Result<(), String> {
        let key = self.user_info_key(app_id, access_id);
        let ttl_ms = (u64::from(ttl_secs.max(1)) * 1000).to_string();
        let args: [&[u8]; 4] = [key.as_bytes(), info.as_bytes(), b"PX", ttl_ms.as_bytes()];
        self.platform
            .redis(self.redis_url, "SET", &args)
            .map(|_| ())
            .map_err(|error| format!("redis: {error}"))
    }

    /// Drop a revoked token's `user_info` (it would expire anyway).
    pub fn forget_user_info(&self, app_id: &str, access_id: &str) {
        let key = self.user_info_key(app_id, access_id);
        if let Err(error) = self
            .platform
            .redis(self.redis_url, "DEL", &[key.as_bytes()])
        {
            eprintln!("madx-edge: could not delete a revoked token's user_info: {error}");
        }
    }

    fn user_info_key(&self, app_id: &str, access_id: &str) -> String {
        format!(
            "{}{}",
            madx_wire::store::redis_key_prefix(self.prefix),
            madx_wire::presence::user_info_key(app_id, access_id)
        )
    }

    /// Tell every host to close the token's sockets with 4010. Best effort,
    /// as on a host: the token is already gone from the store, so sockets
    /// elsewhere close at their next keep-alive touch anyway.
    pub fn announce_revoke(&self, app_id: &str, access_id: &str) {
        self.announce(&Control::Revoke {
            app: app_id.to_owned(),
            access_id: access_id.to_owned(),
        });
    }

    /// Tell every host to close the user's sockets with 4009 (Pusher's
    /// `terminate_connections`). Best effort, as on a host.
    pub fn announce_terminate(&self, app_id: &str, user_id: &str) {
        self.announce(&Control::Terminate {
            app: app_id.to_owned(),
            user_id: user_id.to_owned(),
        });
    }

    /// Subscriptions to `channel` on every host (the hosts' channel
    /// directory; the edge holds no sockets).
    pub fn subscriptions(&self, app_id: &str, channel: &str) -> Result<u64, String> {
        let reply = self.read_channels(app_id, "channel", channel)?;
        match reply.as_slice() {
            [Reply::Int(count)] => u64::try_from(*count).map_err(|_| format!("bad count {count}")),
            other => Err(format!("bad channel count {other:?} from Redis")),
        }
    }

    /// The occupied channels on every host whose names start with
    /// `prefix`, with their subscription counts, sorted by name.
    pub fn occupied(&self, app_id: &str, prefix: &str) -> Result<Vec<(String, u64)>, String> {
        let reply = self.read_channels(app_id, "prefix", prefix)?;
        let mut channels = Vec::with_capacity(reply.len() / 2);
        for pair in reply.chunks(2) {
            match pair {
                [Reply::Bytes(name), Reply::Int(count)] => channels.push((
                    String::from_utf8(name.clone())
                        .map_err(|_| "a channel name that is not UTF-8".to_owned())?,
                    u64::try_from(*count).map_err(|_| format!("bad count {count}"))?,
                )),
                other => return Err(format!("bad channel entry {other:?} from Redis")),
            }
        }
        channels.sort_unstable();
        Ok(channels)
    }

    /// Run the hosts' channel directory script; no node is left out.
    fn read_channels(&self, app_id: &str, mode: &str, name: &str) -> Result<Vec<Reply>, String> {
        let app = Keys::new(self.prefix).app(app_id);
        let args: [&[u8]; 6] = [
            CHANNELS.as_bytes(),
            b"0",
            app.as_bytes(),
            b"",
            mode.as_bytes(),
            name.as_bytes(),
        ];
        self.platform
            .redis(self.redis_url, "EVAL", &args)
            .map_err(|error| format!("redis: {error}"))
    }

    /// The members of a presence channel over the deployment, by user id:
    /// the hosts' membership script, reading only (op `join`, hold `"0"`).
    pub fn members(&self, app_id: &str, channel: &str) -> Result<Vec<Member>, String> {
        let key_prefix = madx_wire::store::redis_key_prefix(self.prefix);
        let argv = presence::read_roster_args(&key_prefix, app_id, channel);
        let mut args: Vec<&[u8]> = vec![MEMBERSHIP.as_bytes(), b"0"];
        args.extend(argv.iter().map(|arg| arg.as_bytes()));
        let reply = self
            .platform
            .redis(self.redis_url, "EVAL", &args)
            .map_err(|error| format!("redis: {error}"))?;
        let fields = reply
            .into_iter()
            .map(|value| match value {
                Reply::Bytes(bytes) => String::from_utf8(bytes)
                    .map_err(|_| "a member that is not UTF-8 from Redis".to_owned()),
                Reply::Int(number) => Ok(number.to_string()),
                other => Err(format!("bad roster entry {other:?} from Redis")),
            })
            .collect::<Result<Vec<String>, String>>()?;
        match presence::parse_roster(fields) {
            (status, members) if status == "present" => Ok(members),
            (status, _) => Err(format!("bad roster reply {status:?} from Redis")),
        }
    }

    fn announce(&self, control: &Control) {
        // Serializing strings cannot fail.
        let payload = serde_json::to_string(control).unwrap_or_default();
        let channel = Keys::new(self.prefix).control();
        let args: [&[u8]; 2] = [channel.as_bytes(), payload.as_bytes()];
        if let Err(error) = self.platform.redis(self.redis_url, "PUBLISH", &args) {
            eprintln!("madx-edge: could not announce {control:?}: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakePlatform;

    fn message(targets: Vec<Target>) -> Outgoing {
        Outgoing {
            targets,
            event: "done".into(),
            data: RawValue::from_string(r#"{"a": [1, "x"]}"#.into()).unwrap(),
            except: None,
        }
    }

    #[test]
    fn frames_are_the_hosts() {
        assert_eq!(
            message(vec![Target::User("u".into())]).frame_tail(),
            r##""channel":"#user","event":"done","data":{"a": [1, "x"]}}"##
        );
        assert_eq!(
            message(vec![Target::Channel("news".into())]).frame_tail(),
            r#""channel":"news","event":"done","data":{"a": [1, "x"]}}"#
        );
    }

    #[test]
    fn the_script_gets_the_hosts_arguments() {
        let platform = FakePlatform::with_variables(&[]);
        platform.reply(vec![
            Reply::Bytes(b"17".to_vec()),
            Reply::Bytes(b"18".to_vec()),
        ]);
        let broker = Broker {
            platform: &platform,
            redis_url: "redis://r",
            prefix: "madx",
            per_stream: 100,
            ttl_secs: 600,
        };
        let ids = broker
            .publish(
                "alpha",
                &[
                    message(vec![Target::Token("t".into()), Target::Token("t".into())]),
                    message(vec![Target::Channel("c".into())]),
                ],
            )
            .unwrap();
        assert_eq!(ids, [17, 18]);
        let command = &platform.commands()[0];
        assert!(command.starts_with("EVAL -- Publish messages"), "{command}");
        // Per message: target count, frame tail, no excluded connection
        // (empty), streams.
        assert!(
            command.ends_with(
                r##" 0 madx:app/alpha/ 100 600000 2 1 "channel":"#token","event":"done","data":{"a": [1, "x"]}}  token/t 1 "channel":"c","event":"done","data":{"a": [1, "x"]}}  channel/c"##
            ),
            "{command}"
        );
    }

    #[test]
    fn a_roster_is_read_with_the_hosts_script_holding_nothing() {
        let platform = FakePlatform::with_variables(&[]);
        platform.reply(vec![
            Reply::Bytes(b"present".to_vec()),
            Reply::Int(2),
            Reply::Bytes(b"bob".to_vec()),
            Reply::Bytes(Vec::new()),
            Reply::Bytes(b"ann".to_vec()),
            Reply::Bytes(br#"{"name":"Ann"}"#.to_vec()),
        ]);
        let broker = Broker {
            platform: &platform,
            redis_url: "redis://r",
            prefix: "p",
            per_stream: 100,
            ttl_secs: 600,
        };
        let members = broker.members("alpha", "presence-room").unwrap();
        assert_eq!(
            members,
            [
                Member::new("ann".into(), r#"{"name":"Ann"}"#.into()),
                Member::new("bob".into(), String::new()),
            ]
        );
        let command = &platform.commands()[0];
        assert!(command.starts_with("EVAL -- Presence members"), "{command}");
        // op, prefix, no node, app, channel, no user or info, no cap, hold
        // "0" (read only), no connection.
        assert!(
            command.ends_with(" 0 join p:  alpha presence-room   0 0 "),
            "{command}"
        );

        // A reply that is not a roster is an error, not an empty channel.
        platform.reply(vec![Reply::Status("OK".into())]);
        assert!(broker.members("alpha", "presence-room").is_err());
        platform.reply(Vec::new());
        assert!(broker.members("alpha", "presence-room").is_err());
        assert!(
            broker.members("alpha", "presence-room").is_err(),
            "no Redis"
        );
    }

    #[test]
    fn revokes_and_terminations_are_announced_on_the_control_channel() {
        let platform = FakePlatform::with_variables(&[]);
        platform.reply(vec![Reply::Int(2)]);
        let broker = Broker {
            platform: &platform,
            redis_url: "redis://r",
            prefix: "p",
            per_stream: 100,
            ttl_secs: 600,
        };
        broker.announce_revoke("alpha", "abc");
        platform.reply(vec![Reply::Int(2)]);
        broker.announce_terminate("alpha", "ann");
        assert_eq!(
            platform.commands(),
            [
                r#"PUBLISH p:control {"revoke":{"app":"alpha","access_id":"abc"}}"#,
                r#"PUBLISH p:control {"terminate":{"app":"alpha","user_id":"ann"}}"#,
            ]
        );
    }
}
