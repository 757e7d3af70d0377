//! What a plugin writes to stdout and stderr, logged through the host.
//!
//! A guest's standard streams go into one small per-call buffer (both
//! streams, in the order written); when the call ends the host logs each
//! line with the component's name, the app and the call. A Rust guest's
//! panic message is written to stderr before it traps, so it reaches the
//! log too, next to the failure it explains. Lines are rate-limited per
//! component, and a call keeps at most [`CALL_OUTPUT_BYTES`]: a chatty or
//! hostile plugin cannot flood the log or the host's memory.

use std::io;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Output kept from one call; what is written beyond it is dropped.
pub const CALL_OUTPUT_BYTES: usize = 8 * 1024;
/// Log lines one component may emit per second, on average...
const LINES_PER_SECOND: NonZeroU32 = NonZeroU32::new(20).unwrap();
/// ...with bursts up to this many.
const LINES_BURST: NonZeroU32 = NonZeroU32::new(100).unwrap();
/// The longest line logged; longer lines are cut.
const MAX_LINE_CHARS: usize = 1024;

/// One call's captured output: stdout and stderr share it.
#[derive(Clone, Default)]
pub struct CallOutput {
    buffer: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl CallOutput {
    fn captured(&self) -> MutexGuard<'_, Captured> {
        // Appending cannot leave the buffer inconsistent.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lines written so far (empty lines skipped), and whether output
    /// was dropped for lack of room.
    pub fn take_lines(&self) -> (Vec<String>, bool) {
        let captured = std::mem::take(&mut *self.captured());
        let text = String::from_utf8_lossy(&captured.bytes);
        let lines = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
            .map(|line| line.chars().take(MAX_LINE_CHARS).collect())
            .collect();
        (lines, captured.truncated)
    }
}

impl IsTerminal for CallOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CallOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CallOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut captured = self.captured();
        let room = CALL_OUTPUT_BYTES.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.truncated |= kept < bytes.len();
        // Report everything as written: a guest whose write failed might
        // panic (Rust's `eprintln!` does), turning a chatty plugin into a
        // failing one.
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Logs the output of one component's calls, within its rate limit.
pub struct PluginLog {
    lines: DefaultDirectRateLimiter,
}

impl Default for PluginLog {
    fn default() -> Self {
        let quota = Quota::per_second(LINES_PER_SECOND).allow_burst(LINES_BURST);
        PluginLog {
            lines: RateLimiter::direct(quota),
        }
    }
}

impl PluginLog {
    /// Log what a call wrote; returns how many lines were dropped (over
    /// the rate limit, or beyond the call's buffer, counted as one).
    pub fn emit(&self, component: &str, app: &str, call: &str, output: &CallOutput) -> u64 {
        let (lines, truncated) = output.take_lines();
        let mut dropped = u64::from(truncated);
        for line in lines {
            if self.lines.check().is_ok() {
                tracing::info!(target: "madx_pusher::plugin", component, app, call, "{line}");
            } else {
                dropped += 1;
            }
        }
        if truncated {
            tracing::warn!(
                target: "madx_pusher::plugin",
                component,
                app,
                call,
                "output beyond {CALL_OUTPUT_BYTES} bytes dropped"
            );
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_are_kept_in_order_and_the_rest_is_dropped() {
        let output = CallOutput::default();
        let mut stdout = Box::into_pin(output.async_stream());
        let mut stderr = Box::into_pin(output.async_stream());
        stdout.write_all(b"first\n\nsecond").await.unwrap();
        stderr.write_all(b" line\r\npanicked at x\n").await.unwrap();
        assert_eq!(
            output.take_lines(),
            (
                vec![
                    "first".to_owned(),
                    "second line".to_owned(),
                    "panicked at x".to_owned()
                ],
                false
            )
        );

        let flood = vec![b'x'; CALL_OUTPUT_BYTES + 10];
        assert_eq!(stdout.write(&flood).await.unwrap(), flood.len());
        let (lines, truncated) = output.take_lines();
        assert!(truncated);
        assert_eq!(lines, vec!["x".repeat(MAX_LINE_CHARS)]);
        assert_eq!(output.take_lines(), (Vec::new(), false));
    }

    #[test]
    fn a_component_is_rate_limited() {
        let log = PluginLog::default();
        let output = CallOutput::default();
        let text = "line\n".repeat(LINES_BURST.get() as usize + 5);
        output.captured().bytes.extend_from_slice(text.as_bytes());
        assert_eq!(log.emit("c", "app", "verify", &output), 5);
    }
}
