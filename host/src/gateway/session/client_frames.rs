//! The client's frames: `ping`, `subscribe` (router, cap, recovery with
//! `since`), `unsubscribe` and `publish` (rate, size, router, broker).

use serde_json::value::RawValue;

use super::super::frames::{self, ClientFrame, FrameError, ServerFrame};
use super::{Ending, Session};
use crate::broker::Outgoing;
use crate::hub::Target;
use crate::limits::Frame;
use crate::plugins::bindings::RouteError;
use crate::presence::{JoinError, Joining, Member, Memberships, Roster};
use crate::webhooks::{Event, EventKind};

impl Session {
    /// Answer one text frame. `Err` ends the session.
    pub(super) async fn handle_text(&mut self, text: &str) -> Result<(), Ending> {
        let frame = match frames::parse(text) {
            Ok(frame) => frame,
            Err(unparsable) => {
                return self
                    .refuse_frame(
                        unparsable.error,
                        &unparsable.message,
                        unparsable.frame.as_deref(),
                        None,
                    )
                    .await;
            }
        };
        match frame {
            ClientFrame::Ping => self.reply(&ServerFrame::Pong).await,
            ClientFrame::Subscribe { channel, since } => {
                self.subscribe(&channel, since.map(|id| id.0)).await
            }
            ClientFrame::Unsubscribe { channel } => {
                // The member leaves before the channel may be vacated.
                if let Some(memberships) = &mut self.memberships {
                    memberships.leave(&channel).await;
                }
                // A message answered before this frame arrived may still be
                // queued for hand-off: it reaches this socket first.
                self.state.broker.hand_off_queued();
                self.state.hub.unsubscribe(&self.registration, &channel);
                self.reply(&ServerFrame::Unsubscribed { channel: &channel })
                    .await
            }
            ClientFrame::Publish {
                channel,
                event,
                data,
            } => self.publish(&channel, &event, &data).await,
        }
    }

    async fn subscribe(&mut self, channel: &str, since: Option<u64>) -> Result<(), Ending> {
        let frame = Some("subscribe");
        if let Some(Err(message)) = since.map(crate::broker::check_position) {
            return self
                .refuse_frame(FrameError::InvalidFrame, &message, frame, Some(channel))
                .await;
        }
        let limit = self.state.config.limits.max_subscriptions_per_socket;
        if self.state.hub.subscription_count(&self.registration) >= limit {
            let message = format!("at most {limit} subscriptions per socket");
            return self
                .refuse_frame(
                    FrameError::TooManySubscriptions,
                    &message,
                    frame,
                    Some(channel),
                )
                .await;
        }
        // The budgets come before the router is asked, so toggling a
        // subscription costs no plugin call, no store round trip and no
        // webhook past them.
        if !self.frame_rate.allow(Frame::Subscribe) {
            let limits = &self.state.config.limits;
            let message = format!(
                "at most {} subscribes per second per socket and {} per token; slow down",
                limits.client_subscribe_per_sec, limits.token_subscribe_per_sec
            );
            return self
                .refuse_frame(FrameError::RateLimited, &message, frame, Some(channel))
                .await;
        }
        let presence = self.state.presence.is_presence(channel);
        // A presence subscribe makes the server publish (member_added to
        // the room, a webhook): it counts as a publish, so toggling a
        // subscription cannot flood a room.
        if presence && !self.frame_rate.allow(Frame::Publish) {
            let limits = &self.state.config.limits;
            let message = format!(
                "presence subscribes count as publishes: at most {} per second per socket and {} per token; slow down",
                limits.client_publish_per_sec, limits.token_publish_per_sec
            );
            return self
                .refuse_frame(FrameError::RateLimited, &message, frame, Some(channel))
                .await;
        }
        let verdict = self
            .state
            .plugins()
            .router
            .authorize_subscribe(&self.app.id, &self.claims, channel)
            .await;
        if let Some((error, message)) = route_refusal(verdict) {
            return self
                .refuse_frame(error, &message, frame, Some(channel))
                .await;
        }
        if presence && self.claims.user_id.is_none() {
            return self
                .refuse_frame(FrameError::Forbidden, NEEDS_USER, frame, Some(channel))
                .await;
        }

        let streams = [Target::Channel(channel.to_owned())];
        let attached = self
            .state
            .broker
            .attach(&self.app.id, &streams, since, || {
                self.state.hub.subscribe(&self.registration, channel)
            })
            .await;
        let (recovery, position) = match attached {
            Ok(attached) => (attached.recovery, attached.position),
            Err(error) => {
                self.state.hub.unsubscribe(&self.registration, channel);
                tracing::warn!(%error, "store unavailable");
                return self
                    .refuse_frame(
                        FrameError::Unavailable,
                        madx_wire::store::UNAVAILABLE,
                        frame,
                        Some(channel),
                    )
                    .await;
            }
        };
        let roster = if presence {
            match self.join_presence(channel).await {
                Ok(roster) => Some(roster),
                Err(refusal) => {
                    self.state.hub.unsubscribe(&self.registration, channel);
                    let (error, message) = refusal;
                    return self
                        .refuse_frame(error, &message, frame, Some(channel))
                        .await;
                }
            }
        } else {
            None
        };
        if let Some(recovery) = &recovery {
            self.live.expect_overlap(recovery, channel);
        }
        let subscribed = ServerFrame::Subscribed {
            channel,
            last_id: position.to_string(),
            recovered: recovery.as_ref().map(|recovery| recovery.recovered),
            members: roster
                .as_ref()
                .map(|roster| roster.members.iter().map(Member::view).collect()),
        };
        self.reply(&subscribed).await?;
        for frame in recovery.map(|recovery| recovery.frames).unwrap_or_default() {
            self.send_text(frame)
                .await
                .map_err(|_| Ending::ClientGone)?;
        }
        Ok(())
    }

    /// Make this socket's user a member of a presence channel; the
    /// channel's members, or the refusal's frame error and message.
    async fn join_presence(&mut self, channel: &str) -> Result<Roster, (FrameError, String)> {
        let Some(user_id) = self.claims.user_id.as_deref() else {
            return Err((FrameError::Forbidden, NEEDS_USER.to_owned()));
        };
        let memberships = self.memberships.get_or_insert_with(|| {
            Memberships::new(self.state.presence.clone(), &self.app.id, user_id)
        });
        let joining = Joining {
            connection_id: self.registration.connection_id(),
            access_id: &self.claims.access_id,
        };
        memberships
            .join(channel, joining)
            .await
            .map_err(|error| match error {
                JoinError::Full(_) => (FrameError::PresenceFull, error.to_string()),
                JoinError::Unavailable(detail) => {
                    tracing::warn!(%detail, "presence unavailable");
                    (
                        FrameError::Unavailable,
                        madx_wire::store::UNAVAILABLE.to_owned(),
                    )
                }
            })
    }

    async fn publish(&mut self, channel: &str, event: &str, data: &RawValue) -> Result<(), Ending> {
        // First, so a flood costs no plugin call and no store write.
        if !self.frame_rate.allow(Frame::Publish) {
            let limits = &self.state.config.limits;
            let message = format!(
                "at most {} publishes per second per socket and {} per token; slow down",
                limits.client_publish_per_sec, limits.token_publish_per_sec
            );
            return self
                .refuse_publish(FrameError::RateLimited, &message, Some(channel))
                .await;
        }
        let limit = self.state.config.limits.max_publish_bytes;
        if data.get().len() > limit {
            let message = format!("data is at most {limit} bytes");
            return self
                .refuse_publish(FrameError::PayloadTooLarge, &message, Some(channel))
                .await;
        }
        let verdict = self
            .state
            .plugins()
            .router
            .authorize_publish(&self.app.id, &self.claims, channel, event)
            .await;
        let publication = match verdict {
            Ok(Ok(publication)) => publication,
            other => {
                let (error, message) = route_refusal(other.map(|verdict| verdict.map(|_| ())))
                    .unwrap_or((FrameError::Unavailable, String::new()));
                return self.refuse_publish(error, &message, Some(channel)).await;
            }
        };
        let targets = [Target::Channel(publication.channel)];
        let message = Outgoing {
            targets: &targets,
            event: &publication.event,
            data,
            except: None,
        };
        match self.state.broker.publish(&self.app.id, &[message]).await {
            Ok(_) => {
                // Handed out now, not after an answer as for the HTTP API:
                // the echo of an accepted publish must reach this socket
                // before the reply to its next frame (a refusal, say).
                self.state.broker.hand_off_queued();
                self.state.metrics.published(&self.app.id, "socket");
                self.report_client_event(&targets, &publication.event, data);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "store unavailable");
                self.refuse_publish(
                    FrameError::Unavailable,
                    madx_wire::store::UNAVAILABLE,
                    Some(channel),
                )
                .await
            }
        }
    }

    /// Tell the app's `client_event` webhooks of a published client
    /// message, with the channel and event the router let through.
    fn report_client_event(&self, targets: &[Target], event: &str, data: &RawValue) {
        let webhooks = &self.state.webhooks;
        let [Target::Channel(channel)] = targets else {
            return;
        };
        if !webhooks.wants(&self.app.id, EventKind::ClientEvent) {
            return;
        }
        webhooks.emit(
            &self.app.id,
            Event::ClientEvent {
                channel: channel.clone(),
                event: event.to_owned(),
                data: data.get().to_owned(),
                socket_id: self.registration.connection_id().to_owned(),
                user_id: self.claims.user_id.clone(),
            },
        );
    }

    /// Refuse a `publish` frame, counting it by reason.
    async fn refuse_publish(
        &mut self,
        error: FrameError,
        message: &str,
        channel: Option<&str>,
    ) -> Result<(), Ending> {
        self.state
            .metrics
            .publish_refused(&self.app.id, error.reason());
        self.refuse_frame(error, message, Some("publish"), channel)
            .await
    }
}

/// Why a token without a user cannot subscribe to a presence channel.
const NEEDS_USER: &str = "a presence channel needs a token with a user_id";

/// The error frame for a router decision that is not a plain yes.
fn route_refusal(
    verdict: Result<Result<(), RouteError>, crate::plugins::PluginFailure>,
) -> Option<(FrameError, String)> {
    match verdict {
        Ok(Ok(())) => None,
        Ok(Err(RouteError::Forbidden(message))) => Some((FrameError::Forbidden, message)),
        Ok(Err(RouteError::InvalidChannel(message))) => Some((FrameError::InvalidChannel, message)),
        Ok(Err(RouteError::Invalid(message))) => Some((FrameError::InvalidFrame, message)),
        Err(_) => Some((
            FrameError::Unavailable,
            "the router failed; try again later".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::PluginFailure;

    #[test]
    fn router_refusals_become_frame_errors() {
        assert_eq!(route_refusal(Ok(Ok(()))), None);
        let refused = |error| route_refusal(Ok(Err(error))).map(|(code, _)| code);
        assert_eq!(
            refused(RouteError::Forbidden("no".into())),
            Some(FrameError::Forbidden)
        );
        assert_eq!(
            refused(RouteError::InvalidChannel("no".into())),
            Some(FrameError::InvalidChannel)
        );
        assert_eq!(
            refused(RouteError::Invalid("no".into())),
            Some(FrameError::InvalidFrame)
        );
        let failure = PluginFailure {
            component: "router".into(),
            call: "authorize-subscribe",
            reason: "trap".into(),
        };
        let (code, message) = route_refusal(Err(failure)).unwrap();
        assert_eq!(code, FrameError::Unavailable);
        assert!(!message.contains("trap"), "the detail stays in the log");
    }
}
