//! A session's inbox: queued messages and at most one close request, handed
//! from the hub (any thread, never waiting) to the session task.
//!
//! One small shared struct instead of two channels: an idle socket carries
//! no preallocated queue blocks (tokio's channels allocate their first
//! block of slots up front), and a close request overtakes queued messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use madx_wire::close::CloseCode;

/// Something the rest of the host asks a session to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Send an `error` frame with this code and close the socket with it.
    Close(CloseCode),
}

/// One message queued for a session: its id (so a session can drop a copy
/// it already sent) and the `message` frame shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: u64,
    pub frame: Utf8Bytes,
}

/// A drained queue keeps a buffer of at most this many slots: a burst (a
/// large channel's fan-out, a presence room's member events) would
/// otherwise leave its high-water buffer on every idle socket.
const IDLE_SLOTS: usize = 8;

#[derive(Default)]
struct Inbox {
    messages: VecDeque<Delivery>,
    command: Option<SessionCommand>,
    /// The session is gone: nothing more is accepted.
    closed: bool,
}

impl Inbox {
    fn pop_message(&mut self) -> Option<Delivery> {
        let next = self.messages.pop_front();
        if self.messages.is_empty() && self.messages.capacity() > IDLE_SLOTS {
            self.messages = VecDeque::new();
        }
        next
    }
}

#[derive(Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    /// The session task waiting for mail. A mailbox has one reader, so one
    /// waker slot does (a lock-free swap, where `Notify` would take a lock
    /// to keep a list of waiters on every wait and every wake-up).
    waiting: AtomicWaker,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Every critical section leaves the inbox consistent.
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the session reads next.
#[derive(Debug, PartialEq, Eq)]
pub enum Mail {
    Command(SessionCommand),
    Message(Delivery),
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `capacity` messages are already waiting: a slow consumer.
    Full,
    /// The session has ended.
    Closed,
}

/// The hub's end.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
    capacity: usize,
}

/// The session's end; dropping it refuses everything after.
pub struct Mailbox {
    shared: Arc<Shared>,
}

/// A mailbox holding at most `capacity` messages.
pub fn mailbox(capacity: usize) -> (Sender, Mailbox) {
    let shared = Arc::new(Shared::default());
    let sender = Sender {
        shared: shared.clone(),
        capacity: capacity.max(1),
    };
    (sender, Mailbox { shared })
}

impl Sender {
    pub fn send(&self, delivery: Delivery) -> Result<(), Refused> {
        {
            let mut inbox = self.shared.inbox();
            if inbox.closed {
                return Err(Refused::Closed);
            }
            if inbox.messages.len() >= self.capacity {
                return Err(Refused::Full);
            }
            inbox.messages.push_back(delivery);
        }
        self.shared.waiting.wake();
        Ok(())
    }

    /// Ask the session to do `command` before anything queued; the first
    /// request wins. `false` when the session has ended.
    pub fn command(&self, command: SessionCommand) -> bool {
        {
            let mut inbox = self.shared.inbox();
            if inbox.closed {
                return false;
            }
            inbox.command.get_or_insert(command);
        }
        self.shared.waiting.wake();
        true
    }
}

impl Mailbox {
    /// The next command or message, waiting for one. Cancel-safe: nothing
    /// is taken out unless it is returned.
    pub async fn next(&self) -> Mail {
        std::future::poll_fn(|context| {
            // Registered before looking: mail queued after the look wakes
            // this task, mail queued before it is found.
            self.shared.waiting.register(context.waker());
            match self.try_next() {
                Some(mail) => Poll::Ready(mail),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next command or message, if one is waiting.
    pub fn try_next(&self) -> Option<Mail> {
        let mut inbox = self.shared.inbox();
        if let Some(command) = inbox.command.take() {
            return Some(Mail::Command(command));
        }
        inbox.pop_message().map(Mail::Message)
    }

    /// The next queued message, leaving any command in place (for handing
    /// over what was accepted before closing).
    pub fn try_next_message(&self) -> Option<Delivery> {
        self.shared.inbox().pop_message()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut inbox = self.shared.inbox();
        inbox.closed = true;
        inbox.messages.clear();
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Utf8Bytes;

    use super::*;
    use madx_wire::close::CloseCode;

    fn delivery(id: u64) -> Delivery {
        Delivery {
            id,
            frame: Utf8Bytes::from("m"),
        }
    }

    #[tokio::test]
    async fn commands_overtake_messages_and_capacity_is_kept() {
        let (sender, mailbox) = mailbox(2);
        sender.send(delivery(1)).unwrap();
        sender.send(delivery(2)).unwrap();
        assert_eq!(sender.send(delivery(3)), Err(Refused::Full));
        assert!(sender.command(SessionCommand::Close(CloseCode::SlowConsumer)));
        assert!(sender.command(SessionCommand::Close(CloseCode::TokenRevoked)));
        assert_eq!(
            mailbox.next().await,
            Mail::Command(SessionCommand::Close(CloseCode::SlowConsumer))
        );
        assert_eq!(mailbox.next().await, Mail::Message(delivery(1)));
        assert_eq!(mailbox.try_next_message(), Some(delivery(2)));
        assert_eq!(mailbox.try_next(), None);
    }

    #[test]
    fn a_drained_burst_leaves_no_big_buffer_behind() {
        let (sender, mailbox) = mailbox(1024);
        for id in 0..100 {
            sender.send(delivery(id)).unwrap();
        }
        while mailbox.try_next().is_some() {}
        assert!(mailbox.shared.inbox().messages.capacity() <= IDLE_SLOTS);
        // A short queue keeps its buffer: no allocation per message.
        sender.send(delivery(1)).unwrap();
        sender.send(delivery(2)).unwrap();
        let capacity = mailbox.shared.inbox().messages.capacity();
        while mailbox.try_next().is_some() {}
        assert_eq!(mailbox.shared.inbox().messages.capacity(), capacity);
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_and_a_gone_one_refuses() {
        let (sender, mailbox) = mailbox(4);
        let waiting = tokio::spawn(async move {
            let mail = mailbox.next().await;
            drop(mailbox);
            mail
        });
        tokio::task::yield_now().await;
        sender.send(delivery(7)).unwrap();
        assert_eq!(waiting.await.unwrap(), Mail::Message(delivery(7)));
        assert_eq!(sender.send(delivery(8)), Err(Refused::Closed));
        assert!(!sender.command(SessionCommand::Close(CloseCode::GoingAway)));
    }

    /// Senders on other threads race the reader's look into the inbox and
    /// its going to sleep: a lost wake-up would leave mail unread (the
    /// reader would wait out the timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mail_from_other_threads_always_wakes_the_waiting_reader() {
        const THREADS: u64 = 4;
        const EACH: u64 = 5_000;
        let (sender, mailbox) = mailbox((THREADS * EACH) as usize);
        let reader = tokio::spawn(async move {
            let mut ids = Vec::new();
            while ids.len() < (THREADS * EACH) as usize {
                let wait = std::time::Duration::from_secs(10);
                match tokio::time::timeout(wait, mailbox.next()).await {
                    Ok(Mail::Message(delivery)) => ids.push(delivery.id),
                    Ok(Mail::Command(command)) => panic!("no command was sent: {command:?}"),
                    Err(_) => panic!("mail was queued but the reader was not woken"),
                }
            }
            ids
        });
        let senders: Vec<_> = (0..THREADS)
            .map(|thread| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        sender.send(delivery(thread * EACH + n)).unwrap();
                        if n % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        let mut ids = reader.await.unwrap();
        ids.sort_unstable();
        assert_eq!(ids, (0..THREADS * EACH).collect::<Vec<_>>());
    }
}
