//! One webhook's bounded, ordered queue: events wait here until the sender
//! takes them as a batch, and count as undelivered until that batch is
//! accepted.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Event;

/// A full queue logs its drops at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Queue {
    state: Mutex<State>,
    /// Wakes the sender when an event arrives (a permit is kept when the
    /// sender is busy, so no wake-up is lost).
    ready: Notify,
    /// Events that may wait, not counting the batch in flight.
    bound: usize,
    /// Bytes of event fields that may wait: client events carry up to a
    /// frame of data each, so a count alone would let a dead receiver's
    /// queue hold gigabytes.
    bound_bytes: usize,
}

struct State {
    /// Each event with its [`weight`].
    waiting: VecDeque<(Event, usize)>,
    waiting_bytes: usize,
    /// Events of the batch being sent (and retried).
    in_flight: usize,
    /// Drops not yet logged, and when they last were.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

/// What became of a pushed event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    Queued,
    /// The queue was full. `log` is how many drops to report now (this one
    /// included), when it is time to log them.
    Dropped {
        log: Option<u64>,
    },
}

impl Queue {
    pub(super) fn new(bound: usize, bound_bytes: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                waiting_bytes: 0,
                in_flight: 0,
                unlogged_drops: 0,
                last_drop_log: None,
            }),
            ready: Notify::new(),
            bound,
            bound_bytes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Append the event, or drop it when `bound` events or `bound_bytes`
    /// already wait (an event alone always fits): the new one goes, so what
    /// was queued keeps its order. Never blocks.
    pub(super) fn push(&self, event: Event) -> Pushed {
        let weight = weight(&event);
        let mut state = self.state();
        let over_bytes =
            !state.waiting.is_empty() && state.waiting_bytes + weight > self.bound_bytes;
        if state.waiting.len() >= self.bound || over_bytes {
            state.unlogged_drops += 1;
            let now = Instant::now();
            let due = state
                .last_drop_log
                .is_none_or(|last| now.duration_since(last) >= DROP_LOG_EVERY);
            if !due {
                return Pushed::Dropped { log: None };
            }
            state.last_drop_log = Some(now);
            let log = std::mem::take(&mut state.unlogged_drops);
            return Pushed::Dropped { log: Some(log) };
        }
        state.waiting.push_back((event, weight));
        state.waiting_bytes += weight;
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// The next batch: up to `max` of the oldest events and up to
    /// `max_bytes` of their fields (always at least one event), once there
    /// is at least one. They stay undelivered until [`Queue::delivered`].
    pub(super) async fn next_batch(&self, max: usize, max_bytes: usize) -> Vec<Event> {
        loop {
            {
                let mut state = self.state();
                if !state.waiting.is_empty() {
                    let mut bytes = 0;
                    let fitting = state
                        .waiting
                        .iter()
                        .take(max)
                        .take_while(|(_, weight)| {
                            bytes += weight;
                            bytes <= max_bytes
                        })
                        .count();
                    let take = fitting.max(1);
                    let (batch, weights): (Vec<Event>, Vec<usize>) =
                        state.waiting.drain(..take).unzip();
                    state.waiting_bytes -= weights.iter().sum::<usize>();
                    state.in_flight = batch.len();
                    return batch;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The batch in flight was accepted.
    pub(super) fn delivered(&self) {
        self.state().in_flight = 0;
    }

    /// Events waiting or in flight.
    pub(super) fn undelivered(&self) -> usize {
        let state = self.state();
        state.waiting.len() + state.in_flight
    }
}

/// What an event weighs against `bound_bytes`: the bytes of its fields,
/// which is what it holds beyond its fixed size.
fn weight(event: &Event) -> usize {
    event
        .fields()
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupied(n: usize) -> Event {
        Event::ChannelOccupied {
            channel: format!("c{n}"),
        }
    }

    #[tokio::test]
    async fn batches_keep_order_and_count_as_undelivered_until_accepted() {
        let queue = Queue::new(10, usize::MAX);
        for n in 0..5 {
            assert_eq!(queue.push(occupied(n)), Pushed::Queued);
        }
        assert_eq!(
            queue.next_batch(3, usize::MAX).await,
            [occupied(0), occupied(1), occupied(2)]
        );
        assert_eq!(queue.undelivered(), 5);
        queue.delivered();
        assert_eq!(queue.undelivered(), 2);
        assert_eq!(
            queue.next_batch(3, usize::MAX).await,
            [occupied(3), occupied(4)]
        );
        queue.delivered();
        assert_eq!(queue.undelivered(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_new_event_and_logs_drops_now_and_then() {
        let queue = Queue::new(2, usize::MAX);
        assert_eq!(queue.push(occupied(0)), Pushed::Queued);
        assert_eq!(queue.push(occupied(1)), Pushed::Queued);
        assert_eq!(queue.push(occupied(2)), Pushed::Dropped { log: Some(1) });
        assert_eq!(queue.push(occupied(3)), Pushed::Dropped { log: None });
        assert_eq!(queue.push(occupied(4)), Pushed::Dropped { log: None });
        // The batch in flight does not count against the bound.
        assert_eq!(queue.next_batch(1, usize::MAX).await, [occupied(0)]);
        assert_eq!(queue.push(occupied(5)), Pushed::Queued);
        assert_eq!(
            queue.next_batch(10, usize::MAX).await,
            [occupied(1), occupied(5)]
        );
    }

    fn client_event(data_bytes: usize) -> Event {
        Event::ClientEvent {
            channel: "c".into(),
            event: "e".into(),
            data: "x".repeat(data_bytes),
            socket_id: "1.1".into(),
            user_id: None,
        }
    }

    #[tokio::test]
    async fn the_bytes_waiting_are_bounded_too() {
        let big = client_event(60_000);
        let queue = Queue::new(100, 2 * weight(&big));
        assert_eq!(queue.push(big.clone()), Pushed::Queued);
        assert_eq!(queue.push(big.clone()), Pushed::Queued);
        assert!(matches!(queue.push(big.clone()), Pushed::Dropped { .. }));
        // While the bytes are used up, a small event is dropped as well,
        // though the count has room.
        assert!(matches!(queue.push(occupied(0)), Pushed::Dropped { .. }));
        // Taking a batch frees its bytes.
        assert_eq!(
            queue.next_batch(1, usize::MAX).await,
            std::slice::from_ref(&big)
        );
        assert_eq!(queue.push(occupied(1)), Pushed::Queued);
        // One event heavier than the whole bound still passes an empty queue.
        let tiny = Queue::new(100, 10);
        assert_eq!(tiny.push(client_event(1000)), Pushed::Queued);
        assert!(matches!(tiny.push(occupied(2)), Pushed::Dropped { .. }));
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_bytes_but_takes_at_least_one_event() {
        let big = client_event(60_000);
        let queue = Queue::new(100, usize::MAX);
        for _ in 0..3 {
            assert_eq!(queue.push(big.clone()), Pushed::Queued);
        }
        assert_eq!(queue.push(occupied(0)), Pushed::Queued);
        // Two big events fit 2.5 of them; the third waits for the next batch.
        let budget = weight(&big) * 5 / 2;
        assert_eq!(
            queue.next_batch(50, budget).await,
            [big.clone(), big.clone()]
        );
        queue.delivered();
        // An event over the budget on its own still goes, alone.
        assert_eq!(queue.next_batch(50, 10).await, [big]);
        queue.delivered();
        assert_eq!(queue.next_batch(50, budget).await, [occupied(0)]);
    }

    #[tokio::test]
    async fn the_sender_wakes_for_an_event_pushed_while_it_waits() {
        let queue = std::sync::Arc::new(Queue::new(2, usize::MAX));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next_batch(5, usize::MAX).await }
        });
        tokio::task::yield_now().await;
        queue.push(occupied(7));
        assert_eq!(waiting.await.unwrap(), [occupied(7)]);
    }
}
