//! The `/v1` HTTP API's bodies, as a host and the edge take and answer
//! them, with the checks made before any plugin is asked: one target per
//! message, names and data within the limits, 1 to `max_batch` messages in
//! a batch, a token request within the contract's bounds.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broker::Target;
use crate::errors::{ErrorCode, at_index};
use crate::{presence, tokens};

/// A request refused by these checks: its documented code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn invalid(message: String) -> Refusal {
        Refusal {
            code: ErrorCode::InvalidRequest,
            message,
        }
    }

    /// The code, as the error body names it.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub user_id: Option<String>,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
    /// A number, so that `60.0` means 60: JSON does not tell it from `60`.
    pub ttl: Option<f64>,
    /// What presence channels show about the user (a JSON object).
    pub user_info: Option<Box<RawValue>>,
}

/// A token request within the contract's bounds, for the auth plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub user_id: Option<String>,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
    pub ttl_secs: Option<u32>,
    /// The `user_info` JSON object as given; kept beside the token by the
    /// host (or the edge), not by the auth plugin.
    pub user_info: Option<String>,
}

impl CreateToken {
    /// The ttl and the user id within the contract's bounds, whatever the
    /// plugin would allow.
    pub fn checked(self) -> Result<TokenRequest, Refusal> {
        let ttl_secs = tokens::ttl_secs(self.ttl).map_err(Refusal::invalid)?;
        tokens::check_user_id(self.user_id.as_deref()).map_err(Refusal::invalid)?;
        let user_info =
            presence::check_user_info(self.user_info.as_deref(), self.user_id.as_deref())
                .map_err(Refusal::invalid)?;
        Ok(TokenRequest {
            user_info,
            user_id: self.user_id,
            channels: self.channels,
            publish: self.publish,
            ttl_secs,
        })
    }
}

/// How clients compute codes, as the auth plugin announced it.
#[derive(Debug, Serialize)]
pub struct OtpParams {
    pub algorithm: String,
    pub digits: u8,
    pub period: u32,
}

/// The answer to `POST /v1/tokens` (201, `Cache-Control: no-store`).
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    pub access_id: String,
    pub secret_seed: String,
    pub otp: OtpParams,
    pub expires_in: u32,
    pub ws_url: String,
}

/// One message of `POST /v1/publish` or a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: Option<String>,
    pub user_id: Option<String>,
    pub access_id: Option<String>,
    pub event: String,
    pub data: Box<RawValue>,
    /// A connection (`welcome`'s `connection_id`) that must not get the
    /// message: the sender, who already knows.
    pub socket_id: Option<String>,
}

/// `POST /v1/publish/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub messages: Vec<PublishRequest>,
}

/// The answer to a publish (202).
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub id: String,
}

/// The answer to a batch (202), ids in the batch's order.
#[derive(Debug, Serialize)]
pub struct BatchAccepted {
    pub ids: Vec<String>,
}

/// The limits a message is checked against (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    pub max_publish_bytes: usize,
    pub max_name_bytes: usize,
}

/// A message with one target, within the limits, before the router.
#[derive(Debug)]
pub struct Message {
    pub target: Target,
    pub event: String,
    pub data: Box<RawValue>,
    pub except: Option<String>,
}

impl PublishRequest {
    /// Exactly one target, names and data within the limits. `index` is the
    /// message's place in a batch, which error messages name.
    pub fn check(self, limits: &MessageLimits, index: Option<usize>) -> Result<Message, Refusal> {
        let target = match (self.channel, self.user_id, self.access_id) {
            (Some(channel), None, None) => Target::Channel(channel),
            (None, Some(user_id), None) => Target::User(user_id),
            (None, None, Some(access_id)) => Target::Token(access_id),
            _ => {
                return Err(Refusal::invalid(at_index(
                    index,
                    "give exactly one of channel, user_id and access_id".to_owned(),
                )));
            }
        };
        Message {
            target,
            event: self.event,
            data: self.data,
            except: self.socket_id,
        }
        .within(limits, index)
    }
}

impl Message {
    /// Names and data within the limits; `index` as in
    /// [`PublishRequest::check`]. Pusher's events take this check too.
    pub fn within(self, limits: &MessageLimits, index: Option<usize>) -> Result<Message, Refusal> {
        let at = |message: String| at_index(index, message);
        let name = match &self.target {
            Target::Channel(name) | Target::User(name) | Target::Token(name) => name,
        };
        // A user id's limit is the contract's, not a tunable: every user a
        // token was issued for must stay reachable.
        let name_limit = match &self.target {
            Target::User(_) => tokens::MAX_USER_ID_BYTES,
            Target::Channel(_) | Target::Token(_) => limits.max_name_bytes,
        };
        for (field, value, limit) in [
            ("target", name, name_limit),
            ("event", &self.event, limits.max_name_bytes),
        ] {
            if value.is_empty() || value.len() > limit {
                return Err(Refusal::invalid(at(format!(
                    "{field} must be 1 to {limit} bytes long"
                ))));
            }
        }
        if let Some(socket_id) = &self.except {
            tokens::validate_socket_id(socket_id)
                .map_err(|message| Refusal::invalid(at(message)))?;
        }
        if self.data.get().len() > limits.max_publish_bytes {
            return Err(Refusal {
                code: ErrorCode::PayloadTooLarge,
                message: at(format!(
                    "data is over the limit of {} bytes",
                    limits.max_publish_bytes
                )),
            });
        }
        Ok(self)
    }
}

impl BatchRequest {
    /// The batch's messages, if there are 1 to `max_batch` of them.
    pub fn into_messages(self, max_batch: usize) -> Result<Vec<PublishRequest>, Refusal> {
        if self.messages.is_empty() || self.messages.len() > max_batch {
            return Err(Refusal::invalid(format!(
                "a batch holds 1 to {max_batch} messages, got {}",
                self.messages.len()
            )));
        }
        Ok(self.messages)
    }
}

/// The refusal of a message the router sent nowhere.
pub fn routed_nowhere(index: Option<usize>) -> Refusal {
    Refusal::invalid(at_index(
        index,
        "the router sent this message nowhere".to_owned(),
    ))
}

/// `GET /v1/channels?prefix=`: the `prefix` of a raw (percent-encoded)
/// query, as first given; `""` (every channel) without one.
pub fn channels_prefix(query: Option<&str>) -> String {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "prefix")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MessageLimits = MessageLimits {
        max_publish_bytes: 8,
        max_name_bytes: 5,
    };

    fn request(json: &str) -> PublishRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_message_names_one_target_within_the_limits() {
        let message = request(r#"{"user_id":"u","event":"e","data":[1]}"#)
            .check(&LIMITS, None)
            .unwrap();
        assert_eq!(message.target, Target::User("u".into()));
        for (json, code, text) in [
            (
                r#"{"event":"e","data":1}"#,
                ErrorCode::InvalidRequest,
                "messages[1]: give exactly one",
            ),
            (
                r#"{"channel":"abcdef","event":"e","data":1}"#,
                ErrorCode::InvalidRequest,
                "messages[1]: target must be 1 to 5",
            ),
            (
                r#"{"channel":"c","event":"e","data":1,"socket_id":"x"}"#,
                ErrorCode::InvalidRequest,
                "messages[1]: socket_id",
            ),
            (
                r#"{"channel":"c","event":"e","data":"123456789"}"#,
                ErrorCode::PayloadTooLarge,
                "messages[1]: data is over",
            ),
        ] {
            let refusal = request(json).check(&LIMITS, Some(1)).unwrap_err();
            assert_eq!(refusal.code, code, "{json}");
            assert!(
                refusal.message.starts_with(text),
                "{json}: {}",
                refusal.message
            );
        }
        // A user id's limit is the contract's, not max_name_bytes.
        let long_user = format!(
            r#"{{"user_id":"{}","event":"e","data":1}}"#,
            "u".repeat(200)
        );
        assert!(request(&long_user).check(&LIMITS, None).is_ok());
    }

    #[test]
    fn batches_hold_one_to_max_messages() {
        let batch = |n: usize| BatchRequest {
            messages: (0..n)
                .map(|_| request(r#"{"channel":"c","event":"e","data":1}"#))
                .collect(),
        };
        assert_eq!(batch(2).into_messages(2).unwrap().len(), 2);
        assert!(batch(0).into_messages(2).is_err());
        assert!(batch(3).into_messages(2).is_err());
    }

    #[test]
    fn token_requests_keep_the_contracts_bounds() {
        let body: CreateToken = serde_json::from_str(r#"{"user_id":"u","ttl":60.0}"#).unwrap();
        assert_eq!(body.checked().unwrap().ttl_secs, Some(60));
        let body: CreateToken = serde_json::from_str(r#"{"ttl":7201}"#).unwrap();
        assert_eq!(body.checked().unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn the_channels_prefix_is_decoded_once() {
        assert_eq!(channels_prefix(None), "");
        assert_eq!(
            channels_prefix(Some("a=1&prefix=presence%2D&prefix=x")),
            "presence-"
        );
        assert_eq!(channels_prefix(Some("prefix=")), "");
    }
}
