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
}
