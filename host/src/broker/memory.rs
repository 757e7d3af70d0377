//! The one-node broker: ids, bounded history and delivery in this process.
//!
//! Each message is serialized once; every recipient and every history
//! stream share the same bytes. Ids are assigned, stored and delivered under
//! one lock, so every session sees a stream's messages in id order, and a
//! session that recovers history while registering (same lock) sees no gap
//! and no duplicate between replay and live messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;

use super::{Attached, Outgoing, Recovery, message_frame};
use crate::config::HistoryConfig;
use crate::hub::{Hub, Target};

/// How often aged-out history is reclaimed in the background.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Stored {
    id: u64,
    at: Instant,
    frame: Utf8Bytes,
}

struct Stream {
    messages: VecDeque<Stored>,
    /// The highest id this stream no longer holds: recovery from an older
    /// id cannot be complete.
    dropped_max: u64,
}

struct AppHistory {
    last_id: u64,
    /// The highest id of any stream forgotten entirely (and, at start, the
    /// first id of this process: older ids are unknown here).
    forgotten_max: u64,
    streams: HashMap<Target, Stream>,
}

impl AppHistory {
    fn new(floor: u64) -> AppHistory {
        AppHistory {
            last_id: floor,
            forgotten_max: floor,
            streams: HashMap::new(),
        }
    }

    /// Strictly increasing within the app and, being at least the current
    /// time in microseconds, across restarts of the process.
    fn next_id(&mut self) -> u64 {
        self.last_id = (self.last_id + 1).max(unix_micros());
        self.last_id
    }

    /// Can a replay from `since` be complete for `target`?
    fn covers(&self, target: &Target, since: u64) -> bool {
        let floor = self
            .streams
            .get(target)
            .map_or(self.forgotten_max, |stream| stream.dropped_max);
        since >= floor
    }
}

struct State {
    apps: HashMap<String, AppHistory>,
    /// Every stored message in publish order, for the global budget.
    order: VecDeque<(String, Target, u64)>,
    total: usize,
}

/// Ids, history and delivery for every app on this node.
pub struct MemoryBroker {
    state: Mutex<State>,
    hub: Arc<Hub>,
    limits: HistoryConfig,
    /// Ids below this were handed out before this process started.
    start_floor: u64,
}

impl MemoryBroker {
    /// A broker delivering through `hub`; aged-out history is reclaimed in
    /// the background while it exists. Call from within a tokio runtime.
    pub fn start(hub: Arc<Hub>, limits: HistoryConfig) -> Arc<MemoryBroker> {
        let broker = Arc::new(MemoryBroker {
            state: Mutex::new(State {
                apps: HashMap::new(),
                order: VecDeque::new(),
                total: 0,
            }),
            hub,
            limits,
            start_floor: unix_micros(),
        });
        tokio::spawn(sweep_periodically(Arc::downgrade(&broker)));
        broker
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Assign an id, keep the message in each target's history and queue it
    /// for every session on this node that its targets reach. Returns the
    /// id and how many sessions it was queued for.
    pub fn publish(&self, app_id: &str, message: &Outgoing<'_>) -> (u64, usize) {
        let mut state = self.state();
        let floor = self.start_floor;
        let State { apps, order, total } = &mut *state;
        let app = apps
            .entry(app_id.to_owned())
            .or_insert_with(|| AppHistory::new(floor));
        let id = app.next_id();
        let frame = Utf8Bytes::from(message_frame(id, &message.frame_tail()));
        let targets = message.targets;

        let now = Instant::now();
        for target in targets {
            let forgotten = app.forgotten_max;
            let stream = app.streams.entry(target.clone()).or_insert_with(|| Stream {
                messages: VecDeque::new(),
                dropped_max: forgotten,
            });
            stream.messages.push_back(Stored {
                id,
                at: now,
                frame: frame.clone(),
            });
            *total += 1;
            if stream.messages.len() > self.limits.per_stream
                && let Some(dropped) = stream.messages.pop_front()
            {
                stream.dropped_max = stream.dropped_max.max(dropped.id);
                *total -= 1;
            }
            order.push_back((app_id.to_owned(), target.clone(), id));
        }
        self.enforce_total(&mut state);

        let delivered = self.hub.deliver(app_id, targets, id, &frame);
        (id, delivered)
    }

    /// Run `attach` (register a session or a subscription in the hub) and
    /// read what `streams` hold after `since`, atomically with respect to
    /// publishes: every message is either in the replay or delivered live
    /// after `attach`, never both, never neither.
    pub fn recover<R>(
        &self,
        app_id: &str,
        streams: &[Target],
        since: Option<u64>,
        attach: impl FnOnce() -> R,
    ) -> Attached<R> {
        let mut state = self.state();
        let attached = attach();
        let floor = self.start_floor;
        let app = state
            .apps
            .entry(app_id.to_owned())
            .or_insert_with(|| AppHistory::new(floor));
        let position = app.last_id;
        let recovery = since.map(|since| {
            let ttl = Duration::from_secs(self.limits.ttl_secs);
            let now = Instant::now();
            let mut messages: Vec<(u64, Utf8Bytes)> = Vec::new();
            let mut recovered = true;
            for target in streams {
                recovered &= app.covers(target, since);
                if let Some(stream) = app.streams.get(target) {
                    messages.extend(
                        stream
                            .messages
                            .iter()
                            .filter(|stored| {
                                stored.id > since && now.duration_since(stored.at) < ttl
                            })
                            .map(|stored| (stored.id, stored.frame.clone())),
                    );
                }
            }
            // Replay and live messages never overlap here.
            Recovery::merged(messages, recovered, 0)
        });
        Attached {
            attached,
            recovery,
            position,
        }
    }

    /// Drop the oldest messages over all apps until the total is in budget.
    fn enforce_total(&self, state: &mut State) {
        while state.total > self.limits.total {
            let Some((app_id, target, id)) = state.order.pop_front() else {
                break;
            };
            if drop_if_oldest(state, &app_id, &target, id) {
                state.total -= 1;
            }
        }
    }

    /// Reclaim messages older than the history ttl, and forget streams left
    /// empty, so history memory follows traffic and not the number of
    /// channels or users ever seen.
    fn sweep(&self) {
        let mut state = self.state();
        let ttl = Duration::from_secs(self.limits.ttl_secs);
        let now = Instant::now();
        let mut reclaimed = 0;
        for app in state.apps.values_mut() {
            let mut forgotten = app.forgotten_max;
            app.streams.retain(|_, stream| {
                while let Some(oldest) = stream.messages.front() {
                    if now.duration_since(oldest.at) < ttl {
                        break;
                    }
                    stream.dropped_max = stream.dropped_max.max(oldest.id);
                    stream.messages.pop_front();
                    reclaimed += 1;
                }
                if stream.messages.is_empty() {
                    forgotten = forgotten.max(stream.dropped_max);
                    false
                } else {
                    true
                }
            });
            app.forgotten_max = forgotten;
        }
        state.total -= reclaimed;
        // Entries of `order` whose message is gone, from the front.
        while let Some((app_id, target, id)) = state.order.front() {
            let live = state
                .apps
                .get(app_id)
                .and_then(|app| app.streams.get(target))
                .and_then(|stream| stream.messages.front())
                .is_some_and(|oldest| oldest.id <= *id);
            if live {
                break;
            }
            state.order.pop_front();
        }
    }

    /// Messages held over all streams.
    pub fn history_len(&self) -> usize {
        self.state().total
    }
}

/// Drop `id` from the front of its stream if it is still there.
fn drop_if_oldest(state: &mut State, app_id: &str, target: &Target, id: u64) -> bool {
    let Some(stream) = state
        .apps
        .get_mut(app_id)
        .and_then(|app| app.streams.get_mut(target))
    else {
        return false;
    };
    if stream
        .messages
        .front()
        .is_some_and(|oldest| oldest.id == id)
    {
        stream.messages.pop_front();
        stream.dropped_max = stream.dropped_max.max(id);
        true
    } else {
        false
    }
}

async fn sweep_periodically(broker: Weak<MemoryBroker>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        interval.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        broker.sweep();
    }
}

pub(super) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn publish(broker: &MemoryBroker, app: &str, targets: &[Target]) -> u64 {
        let data = RawValue::from_string("{\"n\":1}".into()).unwrap();
        let message = Outgoing {
            targets,
            event: "e",
            data: &data,
        };
        broker.publish(app, &message).0
    }

    fn limits(per_stream: usize, total: usize) -> HistoryConfig {
        HistoryConfig {
            per_stream,
            ttl_secs: 600,
            total,
        }
    }

    fn ids(recovery: &Recovery) -> Vec<u64> {
        recovery
            .frames
            .iter()
            .map(|frame| {
                let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
                value["id"].as_str().unwrap().parse().unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn ids_increase_and_replay_is_exact() {
        let broker = MemoryBroker::start(Hub::new(), limits(10, 100));
        let news = [Target::Channel("news".into())];
        let first = publish(&broker, "app", &news);
        let second = publish(&broker, "app", &news);
        let third = publish(&broker, "app", &news);
        assert!(first < second && second < third);

        let recovery = broker.recover("app", &news, Some(first), || ()).recovery;
        let recovery = recovery.unwrap();
        assert!(recovery.recovered);
        assert_eq!(ids(&recovery), vec![second, third]);
    }

    #[tokio::test]
    async fn recovery_says_false_when_history_no_longer_reaches_back() {
        let broker = MemoryBroker::start(Hub::new(), limits(2, 100));
        let news = [Target::Channel("news".into())];
        let first = publish(&broker, "app", &news);
        let kept: Vec<u64> = (0..2).map(|_| publish(&broker, "app", &news)).collect();
        let recovery = broker
            .recover("app", &news, Some(first - 1), || ())
            .recovery;
        let recovery = recovery.unwrap();
        assert!(!recovery.recovered);
        assert_eq!(ids(&recovery), kept);
        // From the first message on, nothing is missing.
        let attached = broker.recover("app", &news, Some(first), || ());
        assert!(attached.recovery.unwrap().recovered);
        assert_eq!(attached.position, kept[1], "the newest id");
    }

    #[tokio::test]
    async fn the_global_budget_bounds_all_streams() {
        let broker = MemoryBroker::start(Hub::new(), limits(100, 5));
        for user in 0..20 {
            publish(&broker, "app", &[Target::User(format!("u{user}"))]);
        }
        assert_eq!(broker.history_len(), 5);
        // An id from before the process: nothing can be promised.
        let recovery = broker
            .recover("app", &[Target::User("u0".into())], Some(1), || ())
            .recovery;
        assert!(!recovery.unwrap().recovered);
    }

    #[tokio::test]
    async fn apps_have_their_own_streams() {
        let broker = MemoryBroker::start(Hub::new(), limits(10, 100));
        let news = [Target::Channel("news".into())];
        let id = publish(&broker, "a", &news);
        let attached = broker.recover("b", &news, Some(id - 1), || ());
        assert!(attached.recovery.unwrap().frames.is_empty());
        // An app without messages resumes from the process start.
        let fresh = broker.recover("c", &news, None, || ());
        assert!(fresh.recovery.is_none());
        let resumed = broker.recover("c", &news, Some(fresh.position), || ());
        assert!(resumed.recovery.unwrap().recovered);
    }
}
