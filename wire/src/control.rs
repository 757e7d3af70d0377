//! The control messages of a deployment: published as JSON on
//! `<prefix>:control` in the shared Redis (by a host or the edge), acted on
//! by every host.

use serde::{Deserialize, Serialize};

/// A control message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Close the token's sockets with 4010.
    Revoke { app: String, access_id: String },
    /// Close the user's sockets with 4009.
    Terminate { app: String, user_id: String },
    /// A user became a member of a presence channel (on the whole
    /// deployment): tell the channel's subscribers. Sent by
    /// `lua/membership.lua`; `user_info` is JSON text, empty for none.
    MemberAdded {
        app: String,
        channel: String,
        user_id: String,
        #[serde(default)]
        user_info: String,
        /// The joining connection, which `subscribed` already told (empty
        /// for none).
        #[serde(default)]
        except: String,
    },
    /// A user's last socket left a presence channel, or its node died.
    MemberRemoved {
        app: String,
        channel: String,
        user_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON on the wire: hosts of an older build read it too.
    #[test]
    fn controls_serialize_as_the_hosts_always_did() {
        let cases = [
            (
                Control::Revoke {
                    app: "alpha".into(),
                    access_id: "abc".into(),
                },
                r#"{"revoke":{"app":"alpha","access_id":"abc"}}"#,
            ),
            (
                Control::Terminate {
                    app: "alpha".into(),
                    user_id: "ann".into(),
                },
                r#"{"terminate":{"app":"alpha","user_id":"ann"}}"#,
            ),
        ];
        for (control, json) in cases {
            assert_eq!(serde_json::to_string(&control).unwrap(), json);
            assert_eq!(serde_json::from_str::<Control>(json).unwrap(), control);
        }
    }

    /// As `lua/membership.lua` writes them with cjson (keys in any order,
    /// `/` escaped).
    #[test]
    fn member_controls_read_as_the_script_writes_them() {
        let added = r#"{"member_added":{"user_info":"{\"a\":\"x\/y\"}","channel":"presence-a","except":"1.2","app":"alpha","user_id":"ann"}}"#;
        assert_eq!(
            serde_json::from_str::<Control>(added).unwrap(),
            Control::MemberAdded {
                app: "alpha".into(),
                channel: "presence-a".into(),
                user_id: "ann".into(),
                user_info: r#"{"a":"x/y"}"#.into(),
                except: "1.2".into(),
            }
        );
        let removed =
            r#"{"member_removed":{"app":"alpha","user_id":"ann","channel":"presence-a"}}"#;
        assert!(matches!(
            serde_json::from_str::<Control>(removed).unwrap(),
            Control::MemberRemoved { .. }
        ));
    }
}
