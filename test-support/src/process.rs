//! Servers that print `listening on <url>` as their first line: the
//! `madx-pusher` binary and the bench's floor server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A binary of the same build as the running test (`target/<profile>/`):
/// `cargo test --workspace` builds every member's binaries.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test does)",
        binary.display()
    );
    binary
}

/// `madx-pusher` under test: `MADX_PUSHER_BIN`, or the one of this build.
pub fn pusher_binary() -> PathBuf {
    std::env::var_os("MADX_PUSHER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| sibling_binary("madx-pusher"))
}

/// A server process; killed when dropped.
pub struct Listening {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from its first line.
    pub base: String,
}

impl Listening {
    /// Run `command` (its stdout is taken over), wait for the first line
    /// and keep draining the rest so the server never blocks on a full
    /// pipe. Start-up may compile components: a 12 MB JavaScript one takes
    /// 15-70 s on a loaded 2-core machine.
    pub fn start(mut command: Command) -> Listening {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let stdout = child.stdout.take().expect("stdout");
        let (lines, first_line) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        let line = match first_line.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("{command:?} did not start: {:?}", child.wait());
            }
        };
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_owned();
        Listening { child, base }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process vanishes without closing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.kill();
    }
}
