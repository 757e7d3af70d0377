//! This node's open sessions: who is connected, with which token and user,
//! subscribed to which channels. The hub hands each published frame to the
//! sessions it concerns (by channel, user or token) without waiting on any
//! of them: a session whose queue is full is told to close as a slow
//! consumer, and the others carry on.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use madx_wire::close::CloseCode;

use crate::mailbox::{self, Delivery, Mailbox, Refused, SessionCommand};

/// A stream this node started or stopped caring about: the first session
/// of a token, user or channel arrived, or the last one left. The Redis
/// broker subscribes to exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest<'a> {
    Gained(&'a str, &'a Target),
    Lost(&'a str, &'a Target),
}

/// Told of every [`Interest`] change, in order, under the hub's lock.
pub type InterestObserver = Box<dyn Fn(Interest<'_>) + Send + Sync>;

/// Told, under the hub's lock and in order, when a channel gains its first
/// session on this node (`true`) or loses its last (`false`): the
/// deployment-wide occupied/vacated decisions start here.
pub type ChannelWatcher = Box<dyn Fn(&str, &str, bool) + Send + Sync>;

/// Where a message goes within one app (the deployment's one definition).
pub use madx_wire::broker::Target;

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The token already has `max_sockets_per_token` sockets here.
    TokenFull,
    /// The app already has `max_sockets_per_app` sockets here.
    AppFull,
    /// The token was revoked after its code was checked: the revocation
    /// closed the token's sockets before this one was registered.
    Revoked,
}

/// How long this node remembers a revoked access id, to refuse a socket
/// whose code was checked before the revocation and that registers after
/// it (longer than any connect takes between the two).
const REVOKED_REMEMBERED: Duration = Duration::from_secs(60);

struct SessionEntry {
    access_id: String,
    user_id: Option<String>,
    channels: HashSet<String>,
    mailbox: mailbox::Sender,
    /// Already told to close as a slow consumer.
    cut_off: bool,
}

/// The sessions under one key of an index, in serial order. Serials count
/// up as sockets open, so a fan-out walks the sessions (their mailboxes,
/// tasks and sockets) in the order they were allocated; a hash set's
/// random order costs a cache miss at nearly every step of a large
/// channel's fan-out (docs/benchmarks.md: 13 % of the CPU per delivery at
/// 10,000 sockets).
type Serials = BTreeSet<u64>;

/// One app's sessions and their indexes.
#[derive(Default)]
struct AppSessions {
    sessions: HashMap<u64, SessionEntry>,
    by_token: HashMap<String, Serials>,
    by_user: HashMap<String, Serials>,
    by_channel: HashMap<String, Serials>,
    /// Access ids revoked within [`REVOKED_REMEMBERED`], and when.
    revoked: HashMap<String, Instant>,
}

impl AppSessions {
    fn index(&self, target: &Target) -> Option<&Serials> {
        match target {
            Target::Channel(name) => self.by_channel.get(name),
            Target::User(id) => self.by_user.get(id),
            Target::Token(id) => self.by_token.get(id),
        }
    }
}

/// Add `serial` under `key`; `true` when the key is new to the index.
fn index(index: &mut HashMap<String, Serials>, key: &str, serial: u64) -> bool {
    match index.get_mut(key) {
        Some(serials) => {
            serials.insert(serial);
            false
        }
        None => {
            index.insert(key.to_owned(), Serials::from([serial]));
            true
        }
    }
}

/// Remove `serial` from under `key`; `true` when the key left the index.
fn unindex(index: &mut HashMap<String, Serials>, key: &str, serial: u64) -> bool {
    let Some(serials) = index.get_mut(key) else {
        return false;
    };
    serials.remove(&serial);
    if serials.is_empty() {
        index.remove(key);
        true
    } else {
        false
    }
}

/// The sessions of this node.
///
/// A std `Mutex` is right here: the lock guards map updates and
/// non-blocking `try_send`s, and never spans an await.
pub struct Hub {
    apps: Mutex<HashMap<String, AppSessions>>,
    next_serial: AtomicU64,
    /// Random per process, so connection ids from different nodes or
    /// restarts do not collide: a connection id is `<node_tag>.<serial>`,
    /// both decimal, the form Pusher's libraries accept as a `socket_id`.
    node_tag: String,
    observer: Option<InterestObserver>,
    channel_watcher: OnceLock<ChannelWatcher>,
}

/// What a new session needs to know about itself.
pub struct SessionSpec<'a> {
    pub app_id: &'a str,
    pub access_id: &'a str,
    pub user_id: Option<&'a str>,
    pub queue: usize,
    pub max_per_token: usize,
    pub max_per_app: usize,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Hub::build(None)
    }

    /// A hub that tells `observer` which streams have local sessions.
    pub fn observed(observer: InterestObserver) -> Arc<Hub> {
        Hub::build(Some(observer))
    }

    fn build(observer: Option<InterestObserver>) -> Arc<Hub> {
        let mut tag = [0u8; 4];
        // Without OS randomness the ids are still unique within the process.
        let _ = getrandom::fill(&mut tag);
        Arc::new(Hub {
            apps: Mutex::new(HashMap::new()),
            next_serial: AtomicU64::new(1),
            node_tag: u32::from_le_bytes(tag).to_string(),
            observer,
            channel_watcher: OnceLock::new(),
        })
    }

    /// Have `watcher` told of every channel this node gains or loses from
    /// now on; a second watcher is refused (returned).
    pub fn watch_channels(&self, watcher: ChannelWatcher) -> Result<(), ChannelWatcher> {
        self.channel_watcher.set(watcher)
    }

    fn tell_channel(&self, app_id: &str, channel: &str, gained: bool) {
        if let Some(watcher) = self.channel_watcher.get() {
            watcher(app_id, channel, gained);
        }
    }

    /// Tell the observer, if any, that `app_id` has its first session for
    /// a stream; the target is only built when someone listens.
    fn tell_gained(&self, app_id: &str, target: impl FnOnce() -> Target) {
        if let Some(observer) = &self.observer {
            observer(Interest::Gained(app_id, &target()));
        }
    }

    /// Tell the observer, if any, that `app_id` lost its last session for a
    /// stream.
    fn tell_lost(&self, app_id: &str, target: impl FnOnce() -> Target) {
        if let Some(observer) = &self.observer {
            observer(Interest::Lost(app_id, &target()));
        }
    }

    fn apps(&self) -> MutexGuard<'_, HashMap<String, AppSessions>> {
        // Every critical section leaves the maps consistent, so a poisoned
        // lock is still safe to use.
        self.apps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add a session, receiving its token's and user's inboxes; it stays
    /// registered until the returned registration is dropped.
    pub fn register(
        self: &Arc<Self>,
        spec: SessionSpec<'_>,
    ) -> Result<(Registration, Mailbox), NotAdmitted> {
        let mut apps = self.apps();
        let app = apps.entry(spec.app_id.to_owned()).or_default();
        if app
            .revoked
            .get(spec.access_id)
            .is_some_and(|revoked| revoked.elapsed() < REVOKED_REMEMBERED)
        {
            return Err(NotAdmitted::Revoked);
        }
        if app.sessions.len() >= spec.max_per_app {
            return Err(NotAdmitted::AppFull);
        }
        let token_sessions = app.by_token.get(spec.access_id).map_or(0, Serials::len);
        if token_sessions >= spec.max_per_token {
            return Err(NotAdmitted::TokenFull);
        }

        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let (sender, mailbox) = mailbox::mailbox(spec.queue);
        app.sessions.insert(
            serial,
            SessionEntry {
                access_id: spec.access_id.to_owned(),
                user_id: spec.user_id.map(str::to_owned),
                channels: HashSet::new(),
                mailbox: sender,
                cut_off: false,
            },
        );
        if index(&mut app.by_token, spec.access_id, serial) {
            self.tell_gained(spec.app_id, || Target::Token(spec.access_id.to_owned()));
        }
        if let Some(user_id) = spec.user_id
            && index(&mut app.by_user, user_id, serial)
        {
            self.tell_gained(spec.app_id, || Target::User(user_id.to_owned()));
        }
        let registration = Registration {
            hub: Arc::clone(self),
            app_id: spec.app_id.to_owned(),
            serial,
            connection_id: format!("{}.{serial}", self.node_tag),
        };
        Ok((registration, mailbox))
    }

    /// Add `channel` to a session's subscriptions; `false` when it was
    /// already there.
    pub fn subscribe(&self, registration: &Registration, channel: &str) -> bool {
        let mut apps = self.apps();
        let Some(app) = apps.get_mut(&registration.app_id) else {
            return false;
        };
        let Some(session) = app.sessions.get_mut(&registration.serial) else {
            return false;
        };
        if !session.channels.insert(channel.to_owned()) {
            return false;
        }
        if index(&mut app.by_channel, channel, registration.serial) {
            self.tell_gained(&registration.app_id, || Target::Channel(channel.to_owned()));
            self.tell_channel(&registration.app_id, channel, true);
        }
        true
    }

    /// Remove `channel` from a session's subscriptions; `false` when it was
    /// not there.
    pub fn unsubscribe(&self, registration: &Registration, channel: &str) -> bool {
        let mut apps = self.apps();
        let Some(app) = apps.get_mut(&registration.app_id) else {
            return false;
        };
        let removed = app
            .sessions
            .get_mut(&registration.serial)
            .is_some_and(|session| session.channels.remove(channel));
        if removed && unindex(&mut app.by_channel, channel, registration.serial) {
            self.tell_lost(&registration.app_id, || Target::Channel(channel.to_owned()));
            self.tell_channel(&registration.app_id, channel, false);
        }
        removed
    }

    /// Channels a session is subscribed to.
    pub fn subscription_count(&self, registration: &Registration) -> usize {
        self.apps()
            .get(&registration.app_id)
            .and_then(|app| app.sessions.get(&registration.serial))
            .map_or(0, |session| session.channels.len())
    }

    /// The serial of one of this node's connection ids.
    fn local_serial(&self, connection_id: &str) -> Option<u64> {
        let (node, serial) = connection_id.split_once('.')?;
        if node != self.node_tag {
            return None;
        }
        serial.parse().ok()
    }

    /// How many sessions of `app_id` here `targets` reach, counting a
    /// session once per target it is reached by (an upper bound: cheap to
    /// count, and what a hand-off of the message costs at most).
    pub fn reach(&self, app_id: &str, targets: &[Target]) -> usize {
        let apps = self.apps();
        let Some(app) = apps.get(app_id) else {
            return 0;
        };
        targets
            .iter()
            .filter_map(|target| app.index(target))
            .map(Serials::len)
            .sum()
    }

    /// Queue message `id` for every session reached by any of `targets`
    /// (each session once), except the connection `except` (the sender a
    /// Pusher `socket_id` names). Never waits: a session with a full queue
    /// is told to close as a slow consumer. Returns how many sessions got it.
    pub fn deliver(
        &self,
        app_id: &str,
        targets: &[Target],
        except: Option<&str>,
        id: u64,
        frame: &Utf8Bytes,
    ) -> usize {
        let excluded = except.and_then(|connection_id| self.local_serial(connection_id));
        let mut apps = self.apps();
        let Some(app) = apps.get_mut(app_id) else {
            return 0;
        };
        let mut recipients: Vec<u64> = Vec::new();
        for target in targets {
            if let Some(serials) = app.index(target) {
                recipients.extend(serials);
            }
        }
        // Several targets: each session once, still in serial order.
        if targets.len() > 1 {
            recipients.sort_unstable();
            recipients.dedup();
        }
        let mut delivered = 0;
        for serial in recipients {
            if Some(serial) == excluded {
                continue;
            }
            let Some(session) = app.sessions.get_mut(&serial) else {
                continue;
            };
            if session.cut_off {
                continue;
            }
            let delivery = Delivery {
                id,
                frame: frame.clone(),
            };
            match session.mailbox.send(delivery) {
                Ok(()) => delivered += 1,
                Err(Refused::Full) => {
                    session.cut_off = true;
                    session
                        .mailbox
                        .command(SessionCommand::Close(CloseCode::SlowConsumer));
                }
                // The session is ending; its registration goes with it.
                Err(Refused::Closed) => {}
            }
        }
        delivered
    }

    /// Ask every session of a revoked token to close, and refuse the
    /// token's sockets that register from now on (a connect whose code was
    /// checked before the revocation); returns how many were asked.
    pub fn close_token(&self, app_id: &str, access_id: &str, code: CloseCode) -> usize {
        let mut apps = self.apps();
        let app = apps.entry(app_id.to_owned()).or_default();
        let now = Instant::now();
        app.revoked
            .retain(|_, revoked| now.duration_since(*revoked) < REVOKED_REMEMBERED);
        app.revoked.insert(access_id.to_owned(), now);
        let Some(serials) = app.by_token.get(access_id) else {
            return 0;
        };
        serials
            .iter()
            .filter_map(|serial| app.sessions.get(serial))
            .filter(|session| session.mailbox.command(SessionCommand::Close(code)))
            .count()
    }

    /// Ask every session of a user to close; returns how many were asked.
    pub fn close_user(&self, app_id: &str, user_id: &str, code: CloseCode) -> usize {
        let apps = self.apps();
        let Some(app) = apps.get(app_id) else {
            return 0;
        };
        let Some(serials) = app.by_user.get(user_id) else {
            return 0;
        };
        serials
            .iter()
            .filter_map(|serial| app.sessions.get(serial))
            .filter(|session| session.mailbox.command(SessionCommand::Close(code)))
            .count()
    }

    /// Sessions of this node subscribed to a channel.
    pub fn channel_subscribers(&self, app_id: &str, channel: &str) -> usize {
        self.apps()
            .get(app_id)
            .and_then(|app| app.by_channel.get(channel))
            .map_or(0, Serials::len)
    }

    /// The channels with at least one session on this node whose names
    /// start with `prefix`, each with its session count, sorted by name.
    pub fn occupied_channels(&self, app_id: &str, prefix: &str) -> Vec<(String, usize)> {
        let apps = self.apps();
        let Some(app) = apps.get(app_id) else {
            return Vec::new();
        };
        let mut channels: Vec<(String, usize)> = app
            .by_channel
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, serials)| (name.clone(), serials.len()))
            .collect();
        channels.sort_unstable();
        channels
    }

    /// Every app's occupied channels on this node, each with its session
    /// count: what this node reports to the deployment's channel directory.
    pub fn channel_occupancy(&self) -> HashMap<String, HashMap<String, usize>> {
        self.apps()
            .iter()
            .filter(|(_, app)| !app.by_channel.is_empty())
            .map(|(app_id, app)| {
                let counts = app
                    .by_channel
                    .iter()
                    .map(|(name, serials)| (name.clone(), serials.len()))
                    .collect();
                (app_id.clone(), counts)
            })
            .collect()
    }

    /// This node's part of every connection id it hands out.
    pub fn node_tag(&self) -> &str {
        &self.node_tag
    }

    /// Ask every session on this node to close (shutdown).
    pub fn close_all(&self, code: CloseCode) -> usize {
        self.apps()
            .values()
            .flat_map(|app| app.sessions.values())
            .filter(|session| session.mailbox.command(SessionCommand::Close(code)))
            .count()
    }

    /// Open sessions on this node.
    pub fn session_count(&self) -> usize {
        self.apps().values().map(|app| app.sessions.len()).sum()
    }

    /// Open sessions per app on this node.
    pub fn sessions_per_app(&self) -> Vec<(String, usize)> {
        self.apps()
            .iter()
            .map(|(app_id, app)| (app_id.clone(), app.sessions.len()))
            .collect()
    }

    fn remove(&self, app_id: &str, serial: u64) {
        let mut apps = self.apps();
        let Some(app) = apps.get_mut(app_id) else {
            return;
        };
        let Some(session) = app.sessions.remove(&serial) else {
            return;
        };
        if unindex(&mut app.by_token, &session.access_id, serial) {
            self.tell_lost(app_id, || Target::Token(session.access_id));
        }
        if let Some(user_id) = session.user_id
            && unindex(&mut app.by_user, &user_id, serial)
        {
            self.tell_lost(app_id, || Target::User(user_id));
        }
        for channel in session.channels {
            if unindex(&mut app.by_channel, &channel, serial) {
                self.tell_channel(app_id, &channel, false);
                self.tell_lost(app_id, || Target::Channel(channel));
            }
        }
    }
}

/// A session's place in the hub; dropping it removes the session and its
/// subscriptions.
pub struct Registration {
    hub: Arc<Hub>,
    app_id: String,
    serial: u64,
    connection_id: String,
}

impl Registration {
    /// The id announced to the client in `welcome`.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.remove(&self.app_id, self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mail;

    fn spec<'a>(app_id: &'a str, access_id: &'a str, user_id: Option<&'a str>) -> SessionSpec<'a> {
        SessionSpec {
            app_id,
            access_id,
            user_id,
            queue: 2,
            max_per_token: 2,
            max_per_app: 10,
        }
    }

    #[test]
    fn channel_counts_and_user_closes_follow_the_sessions() {
        let hub = Hub::new();
        let (first, first_mail) = hub.register(spec("app", "t1", Some("alice"))).unwrap();
        let (second, second_mail) = hub.register(spec("app", "t2", Some("alice"))).unwrap();
        let (bob, bob_mail) = hub.register(spec("app", "t3", Some("bob"))).unwrap();
        hub.subscribe(&first, "news");
        hub.subscribe(&second, "news");
        hub.subscribe(&bob, "sport");
        assert_eq!(hub.channel_subscribers("app", "news"), 2);
        assert_eq!(hub.channel_subscribers("other", "news"), 0);
        assert_eq!(
            hub.occupied_channels("app", ""),
            vec![("news".to_owned(), 2), ("sport".to_owned(), 1)]
        );
        assert_eq!(
            hub.occupied_channels("app", "sp"),
            vec![("sport".to_owned(), 1)]
        );

        assert_eq!(hub.close_user("app", "alice", CloseCode::TokenRevoked), 2);
        for mail in [&first_mail, &second_mail] {
            assert_eq!(
                mail.try_next().unwrap(),
                Mail::Command(SessionCommand::Close(CloseCode::TokenRevoked))
            );
        }
        assert!(bob_mail.try_next().is_none());
        drop(second);
        assert_eq!(hub.channel_subscribers("app", "news"), 1);
    }

    #[test]
    fn frames_reach_the_targeted_sessions_once() {
        let hub = Hub::new();
        let (alice, alice_mail) = hub.register(spec("app", "t1", Some("alice"))).unwrap();
        let (_bob, bob_mail) = hub.register(spec("app", "t2", Some("bob"))).unwrap();
        let (_other, other_mail) = hub.register(spec("other", "t1", Some("alice"))).unwrap();
        assert!(hub.subscribe(&alice, "news"));
        assert!(!hub.subscribe(&alice, "news"));

        let frame = Utf8Bytes::from("x");
        let both = [Target::User("alice".into()), Target::Channel("news".into())];
        assert_eq!(hub.deliver("app", &both, None, 7, &frame), 1);
        assert_eq!(
            alice_mail.try_next().unwrap(),
            Mail::Message(Delivery {
                id: 7,
                frame: frame.clone()
            })
        );
        assert!(alice_mail.try_next().is_none(), "delivered once");
        assert!(bob_mail.try_next().is_none());
        assert!(other_mail.try_next().is_none(), "apps do not mix");

        assert!(hub.unsubscribe(&alice, "news"));
        assert_eq!(
            hub.deliver("app", &[Target::Channel("news".into())], None, 8, &frame),
            0
        );
    }

    #[test]
    fn the_excluded_connection_alone_misses_the_message() {
        let hub = Hub::new();
        let (sender, sender_mail) = hub.register(spec("app", "t1", None)).unwrap();
        let (other, other_mail) = hub.register(spec("app", "t2", None)).unwrap();
        hub.subscribe(&sender, "news");
        hub.subscribe(&other, "news");
        let news = [Target::Channel("news".into())];
        let frame = Utf8Bytes::from("x");

        // Pusher's socket id form: `<digits>.<digits>`.
        let (node, serial) = sender.connection_id().split_once('.').unwrap();
        assert!(node.parse::<u32>().is_ok() && serial.parse::<u64>().is_ok());

        assert_eq!(
            hub.deliver("app", &news, Some(sender.connection_id()), 1, &frame),
            1
        );
        assert!(sender_mail.try_next().is_none());
        assert!(other_mail.try_next().is_some());

        // Another node's id (or garbage) excludes nobody here.
        let elsewhere = format!("{}1.{serial}", node);
        for except in [elsewhere.as_str(), "garbage", "1.x"] {
            assert_eq!(hub.deliver("app", &news, Some(except), 2, &frame), 2);
            assert!(sender_mail.try_next().is_some());
            assert!(other_mail.try_next().is_some());
        }
    }

    #[test]
    fn a_full_queue_cuts_off_only_that_session() {
        let hub = Hub::new();
        let (_slow, slow_mail) = hub.register(spec("app", "t1", None)).unwrap();
        let (_fast, fast_mail) = hub.register(spec("app", "t2", None)).unwrap();
        let targets = [Target::Token("t1".into()), Target::Token("t2".into())];
        for id in 0..3 {
            hub.deliver("app", &targets, None, id, &Utf8Bytes::from("m"));
            let _ = fast_mail.try_next();
        }
        assert_eq!(
            slow_mail.try_next(),
            Some(Mail::Command(SessionCommand::Close(
                CloseCode::SlowConsumer
            )))
        );
        assert!(fast_mail.try_next().is_none());
    }

    #[test]
    fn caps_per_token_and_per_app_and_cleanup_on_drop() {
        let hub = Hub::new();
        let (first, _a) = hub.register(spec("app", "t1", None)).unwrap();
        let (_second, _b) = hub.register(spec("app", "t1", None)).unwrap();
        assert!(matches!(
            hub.register(spec("app", "t1", None)),
            Err(NotAdmitted::TokenFull)
        ));
        drop(first);
        let (_third, _c) = hub.register(spec("app", "t1", None)).unwrap();
        assert_eq!(hub.session_count(), 2);

        let mut tight = spec("small", "t", None);
        tight.max_per_app = 0;
        assert!(matches!(hub.register(tight), Err(NotAdmitted::AppFull)));
    }

    #[test]
    fn a_revoked_tokens_socket_that_registers_late_is_refused() {
        let hub = Hub::new();
        // Its code was checked before the revocation; it registers after.
        assert_eq!(hub.close_token("app", "t1", CloseCode::TokenRevoked), 0);
        assert!(matches!(
            hub.register(spec("app", "t1", None)),
            Err(NotAdmitted::Revoked)
        ));
        // Other tokens, and the same id in another app, are not affected.
        assert!(hub.register(spec("app", "t2", None)).is_ok());
        assert!(hub.register(spec("other", "t1", None)).is_ok());
    }

    #[test]
    fn the_observer_hears_when_a_stream_gains_its_first_and_loses_its_last_session() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        let hub = Hub::observed(Box::new(move |interest| {
            let entry = match interest {
                Interest::Gained(app, target) => format!("+{app} {target:?}"),
                Interest::Lost(app, target) => format!("-{app} {target:?}"),
            };
            log.lock().unwrap().push(entry);
        }));
        let (first, _a) = hub.register(spec("app", "t1", Some("u"))).unwrap();
        let (second, _b) = hub.register(spec("app", "t2", Some("u"))).unwrap();
        hub.subscribe(&first, "news");
        hub.subscribe(&second, "news");
        hub.unsubscribe(&first, "news");
        drop(first);
        drop(second);
        assert_eq!(
            *heard.lock().unwrap(),
            [
                "+app Token(\"t1\")",
                "+app User(\"u\")",
                "+app Token(\"t2\")",
                "+app Channel(\"news\")",
                "-app Token(\"t1\")",
                "-app Token(\"t2\")",
                "-app User(\"u\")",
                "-app Channel(\"news\")",
            ]
        );
    }

    #[test]
    fn close_reaches_only_the_tokens_sessions() {
        let hub = Hub::new();
        let (_one, one) = hub.register(spec("app", "t1", None)).unwrap();
        let (_two, two) = hub.register(spec("app", "t2", None)).unwrap();
        assert_eq!(hub.close_token("app", "t1", CloseCode::TokenRevoked), 1);
        assert_eq!(
            one.try_next(),
            Some(Mail::Command(SessionCommand::Close(
                CloseCode::TokenRevoked
            )))
        );
        assert!(two.try_next().is_none());
        assert_eq!(hub.close_all(CloseCode::GoingAway), 2);
    }
}
