//! A socket that sends `max_frame_errors` refused frames within
//! [`ERROR_WINDOW`] is closed (4102): a client stuck in a loop of bad
//! frames costs the node nothing for long.

use std::time::Duration;

use tokio::time::Instant;

/// The window in which `max_frame_errors` refused frames close the socket.
const ERROR_WINDOW: Duration = Duration::from_secs(10);

/// Refused frames in the current window.
pub(super) struct ErrorWindow {
    started: Instant,
    count: u32,
}

impl ErrorWindow {
    pub(super) fn new() -> Self {
        ErrorWindow::starting(Instant::now())
    }

    fn starting(started: Instant) -> Self {
        ErrorWindow { started, count: 0 }
    }

    /// Count one refused frame; `true` when the socket is over the limit.
    pub(super) fn record(&mut self, limit: u32) -> bool {
        self.record_at(Instant::now(), limit)
    }

    fn record_at(&mut self, now: Instant, limit: u32) -> bool {
        if now.duration_since(self.started) >= ERROR_WINDOW {
            *self = ErrorWindow::starting(now);
        }
        self.count += 1;
        self.count > limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_per_window() {
        let start = Instant::now();
        let mut window = ErrorWindow::starting(start);
        let within = start + ERROR_WINDOW / 2;
        for _ in 0..3 {
            assert!(!window.record_at(within, 3), "up to the limit is allowed");
        }
        assert!(window.record_at(within, 3), "one over the limit closes");
        // A new window forgets the old one's errors.
        let later = start + ERROR_WINDOW;
        assert!(!window.record_at(later, 1));
        assert!(window.record_at(later, 1));
    }
}
