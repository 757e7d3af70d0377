//! The one-node broker: ids, bounded history and delivery in this process.
//!
//! Each message is serialized once; every recipient and every history
//! stream share the same bytes. Ids are assigned and messages stored under
//! one lock. A message for a few sessions is handed to them there and then;
//! one for many ([`INLINE_HAND_OFF_MAX`]) is queued and handed off after
//! the publish is answered, so a large channel's fan-out is not on the
//! publisher's path. Hand-offs never overlap and follow id order (nothing
//! is handed off inline while the queue holds anything), so every session
//! sees a stream's messages in id order. A session that recovers history
//! while registering takes the same lock and hands off everything queued
//! before it registers, so it sees no gap and no duplicate between replay
//! and live messages.
//!
//! The queue is bounded by the deliveries it holds
//! ([`HAND_OFF_BACKLOG_MAX`]): past it, a publish waits for room before it
//! is numbered, so a flood of large fan-outs slows its publishers down
//! rather than growing memory and the time a connect waits for what is
//! queued ahead of it. (A message queued while a batch is handed off counts
//! as one delivery until the next batch weighs it, so the bound can be
//! passed by what is published during one batch, and by one request's
//! messages.) The task hands off in
//! batches ([`HAND_OFF_BATCH`]) and lets other tasks run between them.
//!
//! History is bounded per stream (count), by age, over all streams (count),
//! and by bytes per app and over all apps. Whatever drops a message from a
//! stream raises that stream's `dropped_max`, so a recovery from an older id
//! says `recovered: false`.
//!
//! With the `file:` store a [`Journal`] keeps the same history on disk: a
//! message is written there before anyone sees it, and a restarted broker
//! reads it back through the same bounds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::journal::{self, Journal, Loaded};
use super::{Attached, BrokerError, Outgoing, Recovery, message_frame};
use crate::config::HistoryConfig;
use crate::data_dir::{DataDir, DiskError};
use crate::hub::{Hub, Target};
use crate::metrics::Metrics;

/// A message for at most this many sessions of this node is handed to
/// them before the publish is answered (a few pushes, and the answer then
/// means "queued for every socket"); one for more is handed off after the
/// answer, as every message is with Redis.
pub const INLINE_HAND_OFF_MAX: usize = 64;
/// Deliveries (a message times the sessions it reaches) the hand-off
/// queue holds before publishers wait for room: tens of milliseconds of
/// hand-off, the most a connect or subscribe waits for what is ahead of it.
pub const HAND_OFF_BACKLOG_MAX: usize = 100_000;
/// Deliveries the hand-off task makes before it lets other tasks run.
const HAND_OFF_BATCH: usize = 16_384;

/// How often aged-out history is reclaimed in the background.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes charged per kept message besides its frame: its [`Held`] record
/// in the app's B-tree and the shared buffer's header.
pub const MESSAGE_OVERHEAD: usize = 160;
/// Bytes charged per stream a message is kept in, besides the target's
/// name: its [`Stored`] entry (with deque slack) and the target's copy.
pub const ENTRY_OVERHEAD: usize = 160;

struct Stored {
    id: u64,
    frame: Utf8Bytes,
}

struct Stream {
    messages: VecDeque<Stored>,
    /// The highest id this stream no longer holds: recovery from an older
    /// id cannot be complete.
    dropped_max: u64,
}

/// A message that at least one stream of its app still holds.
struct Held {
    /// Publish order over all apps: the global budgets drop the lowest.
    seq: u64,
    at: Instant,
    /// What it counts against the byte budgets.
    bytes: usize,
    /// Streams still holding it; at 0 it is forgotten.
    holders: usize,
    targets: Box<[Target]>,
}

struct AppHistory {
    last_id: u64,
    /// The highest id of any stream forgotten entirely (and, at start, the
    /// first id of this process: older ids are unknown here).
    forgotten_max: u64,
    streams: HashMap<Target, Stream>,
    /// Every message some stream holds, by id (publish order).
    held: BTreeMap<u64, Held>,
    /// Bytes charged for `held`.
    bytes: usize,
    /// Messages no stream holds any more, not yet deleted from the
    /// journal.
    forgotten: Vec<u64>,
    /// The highest id deleted so far (the journal's floor for the app).
    deleted_max: u64,
    /// The highest id this process found when it started: ids between it
    /// and the start may have been handed out and lost (a power loss
    /// within the fsync window, a restored backup), so a recovery from one
    /// of them cannot be known complete.
    known_until: u64,
}

impl AppHistory {
    fn new(floor: u64) -> AppHistory {
        AppHistory {
            last_id: floor,
            forgotten_max: floor,
            streams: HashMap::new(),
            held: BTreeMap::new(),
            bytes: 0,
            forgotten: Vec::new(),
            deleted_max: floor,
            known_until: floor,
        }
    }

    /// Strictly increasing within the app and, being at least the current
    /// time in microseconds, across restarts of the process.
    fn next_id(&mut self) -> u64 {
        self.last_id = (self.last_id + 1).max(unix_micros());
        self.last_id
    }

    /// Can a replay from `since` be complete for `target`? Not from an
    /// id between what was known at start and the start (`started`).
    fn covers(&self, target: &Target, since: u64, started: u64) -> bool {
        let floor = self
            .streams
            .get(target)
            .map_or(self.forgotten_max, |stream| stream.dropped_max);
        let unknown = since > self.known_until && since < started;
        since >= floor && !unknown
    }

    /// One stream let go of message `id`; forget the message when no
    /// stream holds it any more.
    fn release(&mut self, id: u64, totals: &mut Totals) {
        let Some(held) = self.held.get_mut(&id) else {
            return;
        };
        held.holders = held.holders.saturating_sub(1);
        if held.holders == 0 {
            let bytes = held.bytes;
            self.held.remove(&id);
            self.bytes -= bytes;
            totals.bytes -= bytes;
            self.forgotten.push(id);
        }
    }

    /// Drop the app's oldest message from every stream holding it; `false`
    /// when the app holds nothing.
    fn drop_oldest(&mut self, totals: &mut Totals) -> bool {
        let Some((id, held)) = self.held.pop_first() else {
            return false;
        };
        for target in &held.targets {
            let Some(stream) = self.streams.get_mut(target) else {
                continue;
            };
            // The app's oldest message is the oldest of each stream that
            // still holds it.
            if stream
                .messages
                .front()
                .is_some_and(|oldest| oldest.id == id)
            {
                stream.messages.pop_front();
                stream.dropped_max = stream.dropped_max.max(id);
                totals.entries -= 1;
            }
        }
        self.bytes -= held.bytes;
        totals.bytes -= held.bytes;
        self.forgotten.push(id);
        true
    }

    /// Drop the messages older than `ttl`.
    fn drop_aged(&mut self, ttl: Duration, now: Instant, totals: &mut Totals) {
        while self
            .held
            .first_key_value()
            .is_some_and(|(_, oldest)| now.duration_since(oldest.at) >= ttl)
        {
            self.drop_oldest(totals);
        }
    }

    /// When the oldest message was published, if any.
    fn oldest_seq(&self) -> u64 {
        self.held
            .first_key_value()
            .map_or(u64::MAX, |(_, held)| held.seq)
    }
}

/// Counters over all apps.
#[derive(Default)]
struct Totals {
    /// Stream entries (a message kept in two streams counts twice).
    entries: usize,
    bytes: usize,
    next_seq: u64,
}

struct State {
    apps: HashMap<String, AppHistory>,
    totals: Totals,
}

/// Ids, history and delivery for every app on this node.
pub struct MemoryBroker {
    state: Mutex<State>,
    hub: Arc<Hub>,
    handoff: Handoff,
    /// [`INLINE_HAND_OFF_MAX`], lower in tests.
    inline_max: usize,
    /// [`HAND_OFF_BACKLOG_MAX`], lower in tests.
    backlog_max: usize,
    metrics: Arc<Metrics>,
    limits: HistoryConfig,
    /// Ids below this were handed out before this process started (or,
    /// with a journal, before the store directory was made).
    start_floor: u64,
    /// When this process started, in microseconds (ids from before it that
    /// it does not know may be lost).
    started: u64,
    journal: Option<Journal>,
}

/// Messages numbered and kept, not yet handed to this node's sessions.
struct Handoff {
    /// In id order: pushed under the state lock.
    queue: Mutex<Backlog>,
    /// Held while a batch is handed out, so batches never overlap (each
    /// session gets messages in queue order) and a recovery can wait for
    /// the one in flight.
    handing: Mutex<()>,
    /// Wakes the task that hands off (see [`hand_off_when_woken`]).
    wake: Arc<Notify>,
    /// Wakes publishers waiting for room after a batch is handed off.
    drained: Notify,
}

#[derive(Default)]
struct Backlog {
    messages: VecDeque<Queued>,
    /// What the queued messages weigh (see [`Queued::weight`]).
    deliveries: usize,
    /// Queued messages not weighed yet.
    unweighed: usize,
}

impl Backlog {
    fn push(&mut self, message: Queued) {
        self.deliveries += message.weight();
        self.unweighed += usize::from(message.reach.is_none());
        self.messages.push_back(message);
    }

    fn pop(&mut self) -> Option<Queued> {
        let message = self.messages.pop_front()?;
        self.deliveries -= message.weight();
        self.unweighed -= usize::from(message.reach.is_none());
        Some(message)
    }

    /// Count the sessions each message queued during a hand-off reaches
    /// (the hub was busy then: counting would have made its publisher wait).
    fn weigh(&mut self, hub: &Hub) {
        if self.unweighed == 0 {
            return;
        }
        for message in &mut self.messages {
            if message.reach.is_none() {
                let reach = hub.reach(&message.app_id, &message.targets);
                self.deliveries = self.deliveries - message.weight() + reach.max(1);
                message.reach = Some(reach);
            }
        }
        self.unweighed = 0;
    }
}

struct Queued {
    app_id: Arc<str>,
    targets: Box<[Target]>,
    /// A connection that does not get it (the Pusher `socket_id`).
    except: Option<Box<str>>,
    id: u64,
    frame: Utf8Bytes,
    /// The sessions it reaches (see [`Hub::reach`]); `None` until weighed,
    /// when it was queued while a batch was being handed off.
    reach: Option<usize>,
}

impl Queued {
    /// What it counts against the backlog: its reach, at least one.
    fn weight(&self) -> usize {
        self.reach.unwrap_or(1).max(1)
    }
}

/// Every critical section here leaves its data consistent, so a panic
/// elsewhere while one was held leaves nothing half-done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lock if it is free; poisoning is ignored as in [`lock`], so a past
/// panic never turns the inline hand-off off for good.
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// What keeping `frame` in `targets` counts against the byte budgets.
fn charge(frame: &str, targets: &[Target]) -> usize {
    targets
        .iter()
        .fold(frame.len() + MESSAGE_OVERHEAD, |sum, target| {
            sum + ENTRY_OVERHEAD + target_name(target).len()
        })
}

fn target_name(target: &Target) -> &str {
    match target {
        Target::Channel(name) | Target::User(name) | Target::Token(name) => name,
    }
}

impl MemoryBroker {
    /// A broker delivering through `hub`; aged-out history is reclaimed in
    /// the background while it exists. Call from within a tokio runtime.
    pub fn start(hub: Arc<Hub>, limits: HistoryConfig, metrics: Arc<Metrics>) -> Arc<MemoryBroker> {
        let broker = MemoryBroker::new(hub, limits, metrics, unix_micros(), None);
        MemoryBroker::run(broker)
    }

    /// A broker whose history and ids live on in `dir`: what it held
    /// before the last stop is read back first, through today's bounds.
    pub fn start_durable(
        hub: Arc<Hub>,
        limits: HistoryConfig,
        metrics: Arc<Metrics>,
        dir: Arc<DataDir>,
    ) -> anyhow::Result<Arc<MemoryBroker>> {
        let journal = Journal::new(dir);
        let loaded = journal.load()?;
        let broker = MemoryBroker::new(hub, limits, metrics, loaded.born, Some(journal));
        broker.reload(loaded);
        Ok(MemoryBroker::run(broker))
    }

    /// Start the background tasks: the sweep and the hand-off.
    fn run(broker: MemoryBroker) -> Arc<MemoryBroker> {
        let wake = broker.handoff.wake.clone();
        let broker = Arc::new(broker);
        tokio::spawn(sweep_periodically(Arc::downgrade(&broker)));
        tokio::spawn(hand_off_when_woken(Arc::downgrade(&broker), wake));
        broker
    }

    fn new(
        hub: Arc<Hub>,
        limits: HistoryConfig,
        metrics: Arc<Metrics>,
        start_floor: u64,
        journal: Option<Journal>,
    ) -> MemoryBroker {
        MemoryBroker {
            state: Mutex::new(State {
                apps: HashMap::new(),
                totals: Totals::default(),
            }),
            hub,
            handoff: Handoff {
                queue: Mutex::new(Backlog::default()),
                handing: Mutex::new(()),
                wake: Arc::new(Notify::new()),
                drained: Notify::new(),
            },
            inline_max: INLINE_HAND_OFF_MAX,
            backlog_max: HAND_OFF_BACKLOG_MAX,
            metrics,
            limits,
            start_floor,
            // In memory, everything before the start is unknown anyway.
            started: if journal.is_some() {
                unix_micros()
            } else {
                start_floor
            },
            journal,
        }
    }

    /// Put what the journal held back into memory, oldest first, as if
    /// published again but delivered to no one.
    fn reload(&self, loaded: Loaded) {
        let mut state = self.state();
        let ttl = Duration::from_secs(self.limits.ttl_secs);
        let (now, now_micros) = (Instant::now(), unix_micros());
        for (app, floor) in &loaded.floors {
            let floor = (*floor).max(self.start_floor);
            state.apps.insert(app.clone(), AppHistory::new(floor));
        }
        let count = loaded.messages.len();
        for message in loaded.messages {
            // Ids are publish times in microseconds: the message's age.
            let age = Duration::from_micros(now_micros.saturating_sub(message.id));
            let at = now.checked_sub(age).unwrap_or(now);
            let floor = self.start_floor;
            let app = state
                .apps
                .entry(message.app.clone())
                .or_insert_with(|| AppHistory::new(floor));
            app.last_id = app.last_id.max(message.id);
            let frame = Utf8Bytes::from(message.frame);
            self.keep(
                &mut state,
                &message.app,
                message.id,
                frame,
                message.streams,
                at,
            );
        }
        let State { apps, totals } = &mut *state;
        for app in apps.values_mut() {
            app.known_until = app.last_id;
            app.drop_aged(ttl, now, totals);
        }
        tracing::info!(
            messages = count,
            kept = state.totals.entries,
            "history read back from the store"
        );
        self.forget_dropped(&mut state);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Assign ids to `messages`, keep each in its targets' histories (with
    /// a journal, all of them on disk first, or none) and hand it to the
    /// sessions on this node that its targets reach: now if they are few,
    /// else after this returns. Returns each id.
    pub fn publish(
        &self,
        app_id: &str,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<u64>, BrokerError> {
        let (published, queued) = self.number_keep_and_hand_off(app_id, messages)?;
        if queued {
            self.handoff.wake.notify_one();
        }
        Ok(published)
    }

    /// [`MemoryBroker::publish`] under the state lock; `true` when anything
    /// was queued.
    fn number_keep_and_hand_off(
        &self,
        app_id: &str,
        messages: &[Outgoing<'_>],
    ) -> Result<(Vec<u64>, bool), BrokerError> {
        let mut state = self.state();
        let floor = self.start_floor;
        let app = state
            .apps
            .entry(app_id.to_owned())
            .or_insert_with(|| AppHistory::new(floor));
        let prepared: Vec<(u64, Utf8Bytes, Vec<Target>)> = messages
            .iter()
            .map(|message| {
                let id = app.next_id();
                let frame = Utf8Bytes::from(message_frame(id, &message.frame_tail()));
                // Each stream keeps a message once.
                let mut streams = message.targets.to_vec();
                streams.sort_unstable();
                streams.dedup();
                (id, frame, streams)
            })
            .collect();
        if let Some(journal) = &self.journal {
            let entries: Vec<journal::Entry<'_>> = prepared
                .iter()
                .map(|(id, frame, streams)| journal::Entry {
                    id: *id,
                    streams,
                    frame: frame.as_str(),
                })
                .collect();
            journal
                .write(app_id, &entries)
                .map_err(|error| match error {
                    DiskError::Full(reason) => BrokerError::Full(reason),
                    DiskError::Failed(reason) => BrokerError::Unavailable(reason),
                })?;
        }
        let now = Instant::now();
        let app_id_shared: Arc<str> = Arc::from(app_id);
        let mut published = Vec::with_capacity(messages.len());
        // Handing off here would overtake a batch in flight: only when none is.
        let handing = try_lock(&self.handoff.handing);
        let mut queue = lock(&self.handoff.queue);
        for (message, (id, frame, streams)) in messages.iter().zip(prepared) {
            self.keep(&mut state, app_id, id, frame.clone(), streams, now);
            published.push(id);
            // While a batch is handed off the hub is busy: the message is
            // queued anyway, and weighed before the next batch.
            let reach = handing
                .is_some()
                .then(|| self.hub.reach(app_id, message.targets));
            let inline =
                queue.messages.is_empty() && reach.is_some_and(|reach| reach <= self.inline_max);
            if inline {
                let delivered =
                    self.hub
                        .deliver(app_id, message.targets, message.except, id, &frame);
                self.metrics.delivered(app_id, delivered);
            } else {
                queue.push(Queued {
                    app_id: app_id_shared.clone(),
                    targets: message.targets.into(),
                    except: message.except.map(Box::from),
                    id,
                    frame,
                    reach,
                });
            }
        }
        let queued = !queue.messages.is_empty();
        drop(queue);
        drop(handing);
        self.forget_dropped(&mut state);
        Ok((published, queued))
    }

    /// Wait while the hand-off queue holds more than its bound, so that
    /// a flood of large fan-outs holds its publishers back, not the node.
    pub async fn wait_for_room(&self) {
        loop {
            let drained = self.handoff.drained.notified();
            let mut drained = std::pin::pin!(drained);
            // Registered before the check: a batch handed off in between
            // still wakes it.
            drained.as_mut().enable();
            if lock(&self.handoff.queue).deliveries < self.backlog_max {
                return;
            }
            self.handoff.wake.notify_one();
            drained.await;
        }
    }

    /// Hand every queued message to the sessions it reaches on this node,
    /// in id order, counting the deliveries.
    pub fn hand_off_queued(&self) {
        self.hand_off_some(usize::MAX);
    }

    /// Hand queued messages off, oldest first, until about `budget`
    /// deliveries are made or none is left; `true` when some are left.
    fn hand_off_some(&self, budget: usize) -> bool {
        let _handing = lock(&self.handoff.handing);
        let (batch, more) = {
            let mut queue = lock(&self.handoff.queue);
            queue.weigh(&self.hub);
            let mut batch = Vec::new();
            let mut deliveries = 0usize;
            while deliveries < budget {
                let Some(message) = queue.pop() else {
                    break;
                };
                deliveries = deliveries.saturating_add(message.weight());
                batch.push(message);
            }
            (batch, !queue.messages.is_empty())
        };
        for message in batch {
            let delivered = self.hub.deliver(
                &message.app_id,
                &message.targets,
                message.except.as_deref(),
                message.id,
                &message.frame,
            );
            self.metrics.delivered(&message.app_id, delivered);
        }
        self.handoff.drained.notify_waiters();
        more
    }

    /// Deliveries queued and not yet handed off (see [`Backlog`]).
    pub fn hand_off_backlog(&self) -> usize {
        lock(&self.handoff.queue).deliveries
    }

    /// Keep message `id` of `app_id` in each of `streams`, then apply the
    /// bounds.
    fn keep(
        &self,
        state: &mut State,
        app_id: &str,
        id: u64,
        frame: Utf8Bytes,
        streams: Vec<Target>,
        at: Instant,
    ) {
        let floor = self.start_floor;
        let State { apps, totals } = &mut *state;
        let app = apps
            .entry(app_id.to_owned())
            .or_insert_with(|| AppHistory::new(floor));
        let bytes = charge(frame.as_str(), &streams);
        totals.next_seq += 1;
        for target in &streams {
            let forgotten = app.forgotten_max;
            let stream = app.streams.entry(target.clone()).or_insert_with(|| Stream {
                messages: VecDeque::new(),
                dropped_max: forgotten,
            });
            stream.messages.push_back(Stored {
                id,
                frame: frame.clone(),
            });
            totals.entries += 1;
            if stream.messages.len() > self.limits.per_stream
                && let Some(dropped) = stream.messages.pop_front()
            {
                stream.dropped_max = stream.dropped_max.max(dropped.id);
                totals.entries -= 1;
                app.release(dropped.id, totals);
            }
        }
        app.held.insert(
            id,
            Held {
                seq: totals.next_seq,
                at,
                bytes,
                holders: streams.len(),
                targets: streams.into_boxed_slice(),
            },
        );
        app.bytes += bytes;
        totals.bytes += bytes;
        while app.bytes > self.limits.max_bytes_per_app && app.drop_oldest(totals) {}
        self.enforce_totals(state);
    }

    /// Delete from the journal what the bounds let go of (without one,
    /// just forget the list).
    fn forget_dropped(&self, state: &mut State) {
        let mut dropped = BTreeMap::new();
        let mut floors = BTreeMap::new();
        for (name, app) in &mut state.apps {
            if app.forgotten.is_empty() {
                continue;
            }
            let ids = std::mem::take(&mut app.forgotten);
            app.deleted_max = ids.iter().copied().fold(app.deleted_max, u64::max);
            floors.insert(name.clone(), app.deleted_max);
            dropped.insert(name.clone(), ids);
        }
        let Some(journal) = &self.journal else {
            return;
        };
        if !journal.forget(&dropped, &floors) {
            // Tried again with the next batch (a floor on disk lower than
            // in memory is only more careful).
            for (name, ids) in dropped {
                if let Some(app) = state.apps.get_mut(&name) {
                    app.forgotten.extend(ids);
                }
            }
        }
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
        // What was published before this point is in the replay: it must
        // reach the hub before the session does, or the session would also
        // get it live. (No publish can queue more while the state is held.)
        self.hand_off_queued();
        let attached = attach();
        let floor = self.start_floor;
        let ttl = Duration::from_secs(self.limits.ttl_secs);
        let State { apps, totals } = &mut *state;
        let app = apps
            .entry(app_id.to_owned())
            .or_insert_with(|| AppHistory::new(floor));
        // What aged out since the last sweep is dropped (and marked) first.
        app.drop_aged(ttl, Instant::now(), totals);
        let position = app.last_id;
        let recovery = since.map(|since| {
            let mut messages: Vec<(u64, Utf8Bytes)> = Vec::new();
            let mut recovered = true;
            for target in streams {
                recovered &= app.covers(target, since, self.started);
                if let Some(stream) = app.streams.get(target) {
                    messages.extend(
                        stream
                            .messages
                            .iter()
                            .filter(|stored| stored.id > since)
                            .map(|stored| (stored.id, stored.frame.clone())),
                    );
                }
            }
            // Replay and live messages never overlap here.
            Recovery::merged(messages, recovered, 0)
        });
        self.forget_dropped(&mut state);
        Attached {
            attached,
            recovery,
            position,
        }
    }

    /// Drop the oldest messages over all apps until the totals are within
    /// the global budgets.
    fn enforce_totals(&self, state: &mut State) {
        let State { apps, totals } = state;
        while totals.entries > self.limits.total || totals.bytes > self.limits.max_bytes {
            // Apps are few (configured): a scan finds the oldest.
            let oldest = apps.values_mut().min_by_key(|app| app.oldest_seq());
            if !oldest.is_some_and(|app| app.drop_oldest(totals)) {
                break;
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
        let State { apps, totals } = &mut *state;
        for app in apps.values_mut() {
            app.drop_aged(ttl, now, totals);
            let mut forgotten = app.forgotten_max;
            app.streams.retain(|_, stream| {
                if stream.messages.is_empty() {
                    forgotten = forgotten.max(stream.dropped_max);
                    false
                } else {
                    true
                }
            });
            app.forgotten_max = forgotten;
        }
        self.forget_dropped(&mut state);
    }

    /// Stream entries held over all streams.
    pub fn history_len(&self) -> usize {
        self.state().totals.entries
    }

    /// Bytes charged for history over all apps.
    pub fn history_bytes(&self) -> usize {
        self.state().totals.bytes
    }
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        // The hand-off task ends once it finds the broker gone.
        self.handoff.wake.notify_one();
    }
}

/// Hand off what publishes queued, each time one wakes it, a batch at a
/// time: a large backlog does not hold a worker thread for all of it.
async fn hand_off_when_woken(broker: Weak<MemoryBroker>, wake: Arc<Notify>) {
    loop {
        // A wake-up sent while no one waits is kept for the next wait.
        wake.notified().await;
        loop {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            if !broker.hand_off_some(HAND_OFF_BATCH) {
                break;
            }
            drop(broker);
            tokio::task::yield_now().await;
        }
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
            except: None,
        };
        broker.publish(app, &[message]).unwrap()[0]
    }

    fn limits(per_stream: usize, total: usize) -> HistoryConfig {
        HistoryConfig {
            per_stream,
            ttl_secs: 600,
            total,
            max_bytes: usize::MAX,
            max_bytes_per_app: usize::MAX,
        }
    }

    fn budgets(max_bytes: usize, max_bytes_per_app: usize) -> HistoryConfig {
        HistoryConfig {
            max_bytes,
            max_bytes_per_app,
            ..limits(1_000, 1_000_000)
        }
    }

    /// What one message of [`publish`] to one channel of this name costs.
    fn cost(channel: &str) -> usize {
        cost_of(Target::Channel(channel.into()))
    }

    fn cost_of(target: Target) -> usize {
        let data = RawValue::from_string("{\"n\":1}".into()).unwrap();
        let targets = [target];
        let message = Outgoing {
            targets: &targets,
            event: "e",
            data: &data,
            except: None,
        };
        let frame = message_frame(unix_micros(), &message.frame_tail());
        charge(&frame, &targets)
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
        let broker = MemoryBroker::start(Hub::new(), limits(10, 100), Arc::new(Metrics::new()));
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

    /// A session of `app` subscribed to `news`, attached through the
    /// broker as the gateway does; its mailbox, and the replay after
    /// `since`.
    fn subscriber(
        broker: &MemoryBroker,
        hub: &Arc<Hub>,
        access_id: &str,
        since: Option<u64>,
    ) -> (crate::hub::Registration, crate::mailbox::Mailbox, Vec<u64>) {
        let news = [Target::Channel("news".into())];
        let attached = broker.recover("app", &news, since, || {
            let spec = crate::hub::SessionSpec {
                app_id: "app",
                access_id,
                user_id: None,
                queue: 100,
                max_per_token: 1,
                max_per_app: 10,
            };
            let (registration, mailbox) = hub.register(spec).unwrap();
            assert!(hub.subscribe(&registration, "news"));
            (registration, mailbox)
        });
        let replayed = attached.recovery.as_ref().map(ids).unwrap_or_default();
        let (registration, mailbox) = attached.attached;
        (registration, mailbox, replayed)
    }

    fn queued_ids(mailbox: &crate::mailbox::Mailbox) -> Vec<u64> {
        std::iter::from_fn(|| mailbox.try_next_message())
            .map(|delivery| delivery.id)
            .collect()
    }

    /// A broker that hands off inline only to at most `inline_max` sessions.
    fn broker_handing_inline_at_most(hub: &Arc<Hub>, inline_max: usize) -> Arc<MemoryBroker> {
        broker_with_backlog(hub, inline_max, HAND_OFF_BACKLOG_MAX)
    }

    /// ... whose publishers wait while `backlog_max` deliveries are queued.
    fn broker_with_backlog(
        hub: &Arc<Hub>,
        inline_max: usize,
        backlog_max: usize,
    ) -> Arc<MemoryBroker> {
        let metrics = Arc::new(Metrics::new());
        let mut broker = MemoryBroker::new(hub.clone(), limits(100, 1_000), metrics, 1, None);
        broker.inline_max = inline_max;
        broker.backlog_max = backlog_max;
        MemoryBroker::run(broker)
    }

    /// The queue is handed off a batch at a time, oldest first; a message
    /// weighs the sessions it reaches (one that reaches none, one), and one
    /// queued while a batch is handed off is weighed before the next batch.
    #[tokio::test]
    async fn queued_messages_are_handed_off_in_batches_in_id_order() {
        let hub = Hub::new();
        let broker = broker_handing_inline_at_most(&hub, 0);
        let news = [Target::Channel("news".into())];
        let (_a, a_mail, _) = subscriber(&broker, &hub, "t1", None);
        let (_b, b_mail, _) = subscriber(&broker, &hub, "t2", None);
        let ids: Vec<u64> = (0..3).map(|_| publish(&broker, "app", &news)).collect();
        publish(&broker, "app", &[Target::Channel("quiet".into())]);
        assert_eq!(broker.hand_off_backlog(), 3 * 2 + 1);

        assert!(broker.hand_off_some(4), "two of four handed off");
        for mail in [&a_mail, &b_mail] {
            assert_eq!(queued_ids(mail), ids[..2]);
        }
        assert_eq!(broker.hand_off_backlog(), 2 + 1);

        let batch_in_flight = lock(&broker.handoff.handing);
        let during = publish(&broker, "app", &news);
        drop(batch_in_flight);
        assert_eq!(broker.hand_off_backlog(), 2 + 1 + 1, "not weighed yet");
        assert!(broker.hand_off_some(1), "one message");
        assert_eq!(queued_ids(&a_mail), ids[2..]);
        assert_eq!(broker.hand_off_backlog(), 1 + 2, "weighed");

        assert!(!broker.hand_off_some(usize::MAX), "the rest");
        assert_eq!(queued_ids(&a_mail), [during]);
        assert_eq!(broker.hand_off_backlog(), 0);
    }

    /// Past the backlog bound a publish waits until the hand-off made room,
    /// and is numbered only then.
    #[tokio::test]
    async fn a_publish_past_the_backlog_bound_waits_for_the_hand_off() {
        let hub = Hub::new();
        let broker = broker_with_backlog(&hub, 0, 2);
        let news = [Target::Channel("news".into())];
        let (_a, a_mail, _) = subscriber(&broker, &hub, "t1", None);
        let (_b, b_mail, _) = subscriber(&broker, &hub, "t2", None);
        let node = crate::broker::Broker::Memory(broker.clone());
        let data = RawValue::from_string("{\"n\":1}".into()).unwrap();
        let message = Outgoing {
            targets: &news,
            event: "e",
            data: &data,
            except: None,
        };

        let first = node.publish("app", &[message]).await.unwrap()[0].id;
        assert_eq!(broker.hand_off_backlog(), 2, "two sessions: the bound");
        let second = node.publish("app", &[message]).await.unwrap()[0].id;
        // This runtime has one thread: the hand-off task ran only while the
        // second publish waited, and handed off the first alone.
        for mail in [&a_mail, &b_mail] {
            assert_eq!(queued_ids(mail), [first]);
        }
        assert_eq!(broker.hand_off_backlog(), 2);
        tokio::task::yield_now().await;
        for mail in [&a_mail, &b_mail] {
            assert_eq!(queued_ids(mail), [second]);
        }
    }

    /// A message for few sessions reaches them before publish returns; one
    /// for many is handed off after, in id order, and nothing overtakes it;
    /// a session attaching in between gets each message once, from the
    /// replay or live, never both.
    #[tokio::test]
    async fn large_fan_outs_are_handed_off_after_the_answer_in_id_order() {
        let hub = Hub::new();
        let broker = broker_handing_inline_at_most(&hub, 1);
        let news = [Target::Channel("news".into())];
        let (_early, early_mail, _) = subscriber(&broker, &hub, "t1", None);
        let inline = publish(&broker, "app", &news);
        assert_eq!(
            queued_ids(&early_mail),
            [inline],
            "one session: handed off inline"
        );

        let (_late, late_mail, _) = subscriber(&broker, &hub, "t2", None);
        let position = broker.recover("app", &news, None, || ()).position;
        let queued = publish(&broker, "app", &news);
        // Few recipients, but a message is queued ahead: it waits its turn.
        let behind = publish(&broker, "app", &[Target::Token("t1".into())]);
        // This test's runtime has one thread: the hand-off task has not run.
        assert_eq!(
            queued_ids(&early_mail),
            Vec::<u64>::new(),
            "handed off inline"
        );

        // Attaching hands off what is queued first: replayed to the new
        // session, live only to the others.
        let (_third, third_mail, replayed) = subscriber(&broker, &hub, "t3", Some(position));
        assert_eq!(replayed, [queued]);
        let after = publish(&broker, "app", &news);
        tokio::task::yield_now().await;
        assert_eq!(queued_ids(&early_mail), [queued, behind, after]);
        assert_eq!(queued_ids(&late_mail), [queued, after]);
        assert_eq!(queued_ids(&third_mail), [after]);

        // Shutdown's hand-off, without the task.
        let last = publish(&broker, "app", &news);
        broker.hand_off_queued();
        for mail in [&early_mail, &late_mail, &third_mail] {
            assert_eq!(queued_ids(mail), [last]);
        }
        tokio::task::yield_now().await;
        assert_eq!(
            queued_ids(&early_mail),
            Vec::<u64>::new(),
            "handed off twice"
        );
    }

    #[tokio::test]
    async fn recovery_says_false_when_history_no_longer_reaches_back() {
        let broker = MemoryBroker::start(Hub::new(), limits(2, 100), Arc::new(Metrics::new()));
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
        let broker = MemoryBroker::start(Hub::new(), limits(100, 5), Arc::new(Metrics::new()));
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
        let broker = MemoryBroker::start(Hub::new(), limits(10, 100), Arc::new(Metrics::new()));
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

    #[tokio::test]
    async fn the_byte_budgets_drop_the_oldest_and_mark_it() {
        let one = cost("c");
        // Room for 10 messages per app, 15 over all apps.
        let broker = MemoryBroker::start(
            Hub::new(),
            budgets(15 * one + 5, 10 * one + 5),
            Arc::new(Metrics::new()),
        );
        let c = [Target::Channel("c".into())];
        let sent: Vec<u64> = (0..30).map(|_| publish(&broker, "a", &c)).collect();
        assert_eq!(broker.history_len(), 10);
        assert!(broker.history_bytes() <= 10 * one + 5);
        // From an id whose successor was dropped: not recovered.
        let recovery = broker.recover("a", &c, Some(sent[5]), || ()).recovery;
        let recovery = recovery.unwrap();
        assert!(!recovery.recovered);
        assert_eq!(ids(&recovery), sent[20..]);
        // From the last dropped id on, the replay is exact.
        let recovery = broker.recover("a", &c, Some(sent[19]), || ()).recovery;
        let recovery = recovery.unwrap();
        assert!(recovery.recovered);
        assert_eq!(ids(&recovery), sent[20..]);

        // Another app gets its own 10 until the global budget takes the
        // oldest messages of any app.
        let b_sent: Vec<u64> = (0..8).map(|_| publish(&broker, "b", &c)).collect();
        assert_eq!(broker.history_len(), 15);
        assert!(broker.history_bytes() <= 15 * one + 5);
        let a = broker.recover("a", &c, Some(sent[19]), || ()).recovery;
        let a = a.unwrap();
        assert!(!a.recovered);
        assert_eq!(ids(&a), sent[23..]);
        let b = broker.recover("b", &c, Some(b_sent[0] - 1), || ()).recovery;
        assert_eq!(ids(&b.unwrap()), b_sent);
    }

    #[tokio::test]
    async fn a_message_in_several_streams_is_charged_once() {
        let broker = MemoryBroker::start(Hub::new(), limits(1, 1_000), Arc::new(Metrics::new()));
        let both = [Target::Channel("x".into()), Target::User("u".into())];
        publish(&broker, "a", &both);
        let after_one = broker.history_bytes();
        assert!(after_one < 2 * cost("x"), "{after_one}");
        // A newer message pushes it out of "x" only: still kept for "u".
        let newer = publish(&broker, "a", &[Target::Channel("x".into())]);
        assert_eq!(broker.history_len(), 2);
        assert_eq!(broker.history_bytes(), after_one + cost("x"));
        // Out of "u" too: forgotten.
        publish(&broker, "a", &[Target::User("u".into())]);
        assert_eq!(broker.history_len(), 2);
        let x = broker.recover("a", &[Target::Channel("x".into())], Some(newer - 1), || ());
        assert_eq!(ids(&x.recovery.unwrap()), vec![newer]);
        assert_eq!(
            broker.history_bytes(),
            cost("x") + cost_of(Target::User("u".into()))
        );
    }

    #[tokio::test]
    async fn aged_out_history_returns_its_bytes() {
        let broker = MemoryBroker::start(
            Hub::new(),
            HistoryConfig {
                ttl_secs: 0,
                ..limits(10, 100)
            },
            Arc::new(Metrics::new()),
        );
        let c = [Target::Channel("c".into())];
        let id = publish(&broker, "a", &c);
        broker.sweep();
        assert_eq!((broker.history_len(), broker.history_bytes()), (0, 0));
        let recovery = broker.recover("a", &c, Some(id - 1), || ()).recovery;
        assert!(!recovery.unwrap().recovered);
    }
}
