//! A real `redis-server` for the tests that run several nodes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real `redis-server` on a free loopback port, stopped when dropped. It
/// keeps an append-only file (in a temporary directory), as a production
/// Redis holding tokens should, so a restart keeps them.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        // Ask the OS for a free port; retry if someone takes it first.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            if let Some(child) = spawn_redis(port, dir.path()) {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server did not start");
    }

    /// The URL the hosts get with `--store`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A client for looking at what was written.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }

    /// Stop the server (SIGTERM: it writes its file and exits, as in a
    /// rolling restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let terminated = Command::new("kill")
                .arg(child.id().to_string())
                .status()
                .is_ok_and(|status| status.success());
            if !terminated {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, from its file.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(self.port, self.dir.path());
        assert!(
            self.child.is_some(),
            "redis-server did not come back on port {}",
            self.port
        );
    }
}

/// Start `redis-server` on `port`; the child once it answers PING.
fn spawn_redis(port: u16, dir: &Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is missing: scripts/test installs it (apt-get install redis-server)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if redis_answers(port) && answered_by(port, &child) {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Is the Redis answering on `port` the process `child`? A port found free
/// can be taken by another test's server before ours binds it; ours then
/// exits, and the other one's PONG must not pass for it.
pub(crate) fn answered_by(port: u16, child: &Child) -> bool {
    redis_process_id(port) == Some(child.id())
}

/// The `process_id` that `INFO server` reports on `port`.
fn redis_process_id(port: u16) -> Option<u32> {
    use std::io::{BufRead, BufReader, Read};
    // A bulk string: `$<length>\r\n<text>\r\n`.
    let mut reply = BufReader::new(send_command(port, b"INFO server\r\n")?);
    let mut header = String::new();
    reply.read_line(&mut header).ok()?;
    let length: usize = header.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut text = vec![0; length];
    reply.read_exact(&mut text).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok())
}

/// Does a Redis on `port` answer PING (it does not while it loads its file)?
fn redis_answers(port: u16) -> bool {
    use std::io::Read;
    let mut reply = [0u8; 7];
    send_command(port, b"PING\r\n")
        .is_some_and(|mut stream| stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n")
}

/// A connection to the Redis on `port` that sent `command` (inline form)
/// and waits at most a second for each read of the answer.
fn send_command(port: u16, command: &[u8]) -> Option<std::net::TcpStream> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(command).ok()?;
    Some(stream)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another server took the port we found free: ours fails to bind it and
    /// exits, and the other one's PONG does not pass for ours.
    #[test]
    fn a_server_on_the_port_already_is_not_taken_for_ours() {
        let theirs = RedisServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(spawn_redis(theirs.port, dir.path()).is_none());
        let their_child = theirs.child.as_ref().expect("running");
        assert!(answered_by(theirs.port, their_child));
    }
}
