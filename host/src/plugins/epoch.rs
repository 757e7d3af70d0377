//! The engine's epoch clock: it advances every tick while plugin calls run,
//! so a running guest yields its worker thread and notices its deadline.
//! After the last call it ticks on for a short while, so a node under a
//! steady stream of short calls (connects, subscribes) does not park and
//! wake the thread between every two; then it sleeps without waking, so an
//! idle node, or one that only delivers messages, pays nothing for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::Engine;

/// How often the epoch advances: a running guest is interrupted this often
/// to give its worker thread back to the other tasks (sockets, other
/// calls), and to check its time budget. A runaway call therefore delays
/// the rest of the node by at most about one tick per turn.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Ticks without a call before the thread parks. Under a stream of short
/// calls most of them would otherwise find the thread parked, and each
/// would pay for waking it (a system call on a worker thread, and the
/// clock thread's own wake-up); the last 100 ms of ticking cost an idle
/// node nothing it notices.
const LINGER_TICKS: u32 = 100;

#[derive(Default)]
struct Shared {
    /// Plugin calls running now.
    running: AtomicUsize,
    /// The sandbox is gone: the thread ends.
    stopped: AtomicBool,
}

/// Owns the ticking thread; dropping it ends the thread.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
}

/// A plugin call in progress: the epoch ticks until it is dropped.
pub(super) struct Running<'a> {
    ticker: &'a EpochTicker,
}

impl EpochTicker {
    pub(super) fn start(engine: &Engine) -> anyhow::Result<EpochTicker> {
        let engine = engine.weak();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let mut idle_ticks = 0;
                while !state.stopped.load(Ordering::Acquire) {
                    if state.running.load(Ordering::Acquire) > 0 {
                        idle_ticks = 0;
                    } else if idle_ticks < LINGER_TICKS {
                        idle_ticks += 1;
                    } else {
                        // Woken by the next call (or the sandbox's end); a
                        // wake-up sent before this point is not lost. One
                        // sent while the clock still ticked wakes it at
                        // once, and it parks again: the count restarts
                        // only when a call is seen running.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("cannot start the epoch thread")?;
        Ok(EpochTicker {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Mark a call as running (waking the clock if it was the only one)
    /// for as long as the returned guard lives.
    pub(super) fn call_started(&self) -> Running<'_> {
        if self.shared.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Running { ticker: self }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.ticker.shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.thread.unpark();
    }
}
