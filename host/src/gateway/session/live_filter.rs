//! Live copies of messages a session already sent are dropped: a message
//! for several of a session's targets arrives once per target with Redis,
//! and after a recovery the first live messages may repeat the replay.

use crate::broker::{Recovery, frame_label};
use crate::mailbox::Delivery;

/// Drops live copies of messages this session already sent.
#[derive(Default)]
pub(super) struct LiveFilter {
    /// The newest live message sent. Live messages reach a session in id
    /// order, so one at or below it is a copy (a message for several
    /// targets arrives once per target with Redis).
    last_sent: u64,
    /// After a recovery: live messages of these streams (by frame label) up
    /// to this id were already in the replay.
    overlap: Option<(u64, Vec<String>)>,
}

impl LiveFilter {
    pub(super) fn admits(&mut self, delivery: &Delivery) -> bool {
        // Not a message: a presence event, which has no id to resume from.
        if delivery.id == 0 {
            return true;
        }
        if delivery.id <= self.last_sent {
            return false;
        }
        if let Some((up_to, labels)) = &self.overlap {
            if delivery.id <= *up_to {
                let replayed = frame_label(delivery.frame.as_str())
                    .is_some_and(|label| labels.contains(&label));
                if replayed {
                    return false;
                }
            } else {
                // Everything from here on is newer than any replay.
                self.overlap = None;
            }
        }
        self.last_sent = delivery.id;
        true
    }

    pub(super) fn expect_overlap(&mut self, recovery: &Recovery, label: &str) {
        if recovery.live_after == 0 {
            return;
        }
        let (up_to, labels) = self.overlap.get_or_insert_with(|| (0, Vec::new()));
        *up_to = (*up_to).max(recovery.live_after);
        labels.push(label.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: u64, channel: &str) -> Delivery {
        let frame = format!(
            r#"{{"type":"message","id":"{id}","channel":"{channel}","event":"e","data":1}}"#
        );
        Delivery {
            id,
            frame: frame.into(),
        }
    }

    fn recovery(live_after: u64) -> Recovery {
        Recovery {
            frames: Vec::new(),
            recovered: true,
            live_after,
        }
    }

    #[test]
    fn copies_and_older_messages_are_dropped() {
        let mut live = LiveFilter::default();
        assert!(live.admits(&delivery(5, "news")));
        // The same message for a second target, and anything older.
        assert!(!live.admits(&delivery(5, "#user")));
        assert!(!live.admits(&delivery(4, "news")));
        assert!(live.admits(&delivery(6, "news")));
    }

    #[test]
    fn what_the_replay_held_is_dropped_until_newer_messages_arrive() {
        let mut live = LiveFilter::default();
        live.expect_overlap(&recovery(10), "news");
        // Replayed already: a live copy of a recovered stream up to id 10.
        assert!(!live.admits(&delivery(8, "news")));
        // Another stream's message in that range was not in the replay.
        assert!(live.admits(&delivery(9, "sport")));
        // Past the overlap, every stream is live again.
        assert!(live.admits(&delivery(11, "news")));
        assert!(live.overlap.is_none());
    }

    #[test]
    fn a_recovery_without_overlap_changes_nothing() {
        let mut live = LiveFilter::default();
        live.expect_overlap(&recovery(0), "news");
        assert!(live.overlap.is_none());
        assert!(live.admits(&delivery(1, "news")));
    }
}
