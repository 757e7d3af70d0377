//! Idle, slow and flooding connections against the real binary: what an
//! attacker holding sockets gets, and what an honest client still gets
//! (`/healthz` answers, a token is issued, a WebSocket is welcomed).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

const OPERATOR: &str = "operator-token-0123456789";

/// The server binary, optionally under a lowered descriptor limit (through
/// `prlimit`, which sets it and then runs the server in its place). Its log
/// (stderr) is kept for assertions.
struct Hostile {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Hostile {
    fn start(config: &str, nofile: Option<u64>) -> Hostile {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("pusher.toml");
        std::fs::write(
            &config_path,
            format!("listen = \"127.0.0.1:0\"\noperator_token = \"{OPERATOR}\"\n{config}"),
        )
        .expect("write config");
        let binary = env!("CARGO_BIN_EXE_madx-pusher");
        let mut command = match nofile {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("MADX_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn madx-pusher (prlimit is in util-linux)");

        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("server: {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (lines, first_line) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        let Ok(line) = first_line.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("madx-pusher did not start: {:?}", child.wait());
        };
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_owned();
        Hostile {
            child,
            base,
            log,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("host:port")
    }

    /// `GET /healthz` on a new connection; the status and how long it took.
    async fn healthz(&self) -> (u16, Duration) {
        let started = Instant::now();
        let status = fresh_client()
            .get(self.url("/healthz"))
            .send()
            .await
            .map(|response| response.status().as_u16())
            .unwrap_or_else(|error| panic!("GET /healthz: {error}"));
        (status, started.elapsed())
    }

    /// The value of one series of `GET /metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let text = fresh_client()
            .get(self.url("/metrics"))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn shed(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "madx_connections_shed_total{{reason=\"{reason}\"}}"
        ))
        .await
    }

    /// Wait until the shed counter for `reason` reaches `at_least`.
    async fn wait_shed(&self, reason: &str, at_least: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let shed = self.shed(reason).await;
            if shed >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{reason}: {shed} connections shed, expected at least {at_least}"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// A token issued over a new connection.
    async fn token(&self) -> Token {
        let response = fresh_client()
            .post(self.url("/v1/tokens"))
            .basic_auth(ALPHA.0, Some(ALPHA.1))
            .json(&json!({"user_id": "honest"}))
            .send()
            .await
            .expect("POST /v1/tokens");
        assert_eq!(response.status(), 201, "token request refused");
        Token::from_response(&response.json().await.expect("token JSON"))
    }

    fn log_lines(&self, containing: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(containing))
            .count()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that opens a new connection for every request, as a new
/// visitor would.
fn fresh_client() -> reqwest::Client {
    let _ = http(); // installs the TLS provider
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .build()
        .expect("http client")
}

/// Hold an idle connection (send nothing); when the server closes it,
/// open another after `pause`. Until `stop`.
async fn idle_attacker(
    addr: SocketAddr,
    opened: Arc<AtomicU64>,
    pause: Duration,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            opened.fetch_add(1, Ordering::SeqCst);
            let mut byte = [0u8; 1];
            tokio::select! {
                _ = stream.read(&mut byte) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
        tokio::select! {
            () = sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Has the server closed `stream`? Waits up to `within` for an end of file
/// (or a reset); false when the connection is still open then.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 256];
    match timeout(within, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(read)) => panic!(
            "unexpected bytes from the server: {:?}",
            String::from_utf8_lossy(&buffer[..read])
        ),
        Err(_) => false,
    }
}

/// One HTTP/1.1 response read from a raw connection; its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("response in time")
            .expect("read response");
        assert!(read > 0, "closed before a response");
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("content-length");
    while received.len() < head_end + length {
        let read = timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("body in time")
            .expect("read body");
        assert!(read > 0, "closed in the body");
        received.extend_from_slice(&buffer[..read]);
    }
    head.lines().next().unwrap_or_default().to_owned()
}

/// A Pusher publish is read only once its signature holds: a request
/// without one is refused on its headers, before the server waits for (or
/// holds) a body of up to the batch limit.
#[tokio::test]
async fn an_unsigned_pusher_publish_is_refused_before_its_body_is_read() {
    let server = Hostile::start(TWO_APPS, None);
    let now = unix_now();
    // No signature at all; and the right key, a current timestamp and a
    // wrong signature (refused by the HMAC itself).
    let wrongly_signed =
        format!("?auth_key=alpha-key&auth_timestamp={now}&auth_version=1.0&auth_signature=00");
    for query in ["", wrongly_signed.as_str()] {
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        let head = format!(
            "POST /apps/alpha/batch_events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        // No more of the body comes: the answer must not wait for it.
        let status = timeout(Duration::from_secs(5), read_response(&mut stream))
            .await
            .expect("answered without the body");
        assert!(status.contains(" 401 "), "{query:?}: {status}");
    }
}

/// A request head over 64 KiB (an endless header) is answered 431, not
/// buffered: hyper's own default would hold about 400 KiB per connection.
#[tokio::test]
async fn an_oversized_request_head_is_431() {
    let server = Hostile::start(TWO_APPS, None);
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    // The server may answer (and stop reading) before it has all of it.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let ended = timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the connection was kept open");
    let answer = String::from_utf8_lossy(&answer);
    // 431, unless the reset for the unread rest of the head overtook it.
    let reset = matches!(&ended, Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(
        answer.starts_with("HTTP/1.1 431") || (answer.is_empty() && reset),
        "{ended:?}: {answer}"
    );
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Issue 12, defect 2: 1,100 idle connections against 1,024 descriptors
/// made `/healthz` time out for everyone. Here more idle connections than
/// the descriptor limit allows keep coming back, and honest clients are
/// still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_beyond_the_descriptor_limit_leaves_honest_clients_served() {
    const NOFILE: u64 = 256;
    const ATTACKERS: u64 = NOFILE + 64;
    // Long header deadline: the limits, not the timeout, must save the day.
    let server = Hostile::start(
        &format!("{TWO_APPS}\n[http]\nheader_timeout_secs = 300\nidle_timeout_secs = 300\n"),
        Some(NOFILE),
    );
    let mut before = Vec::new();
    for _ in 0..10 {
        let (status, took) = server.healthz().await;
        assert_eq!(status, 200);
        before.push(took);
    }

    let (stop, stopped) = watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            tokio::spawn(idle_attacker(
                server.addr(),
                opened.clone(),
                Duration::from_millis(250),
                stopped.clone(),
            ))
        })
        .collect();
    // Every attacker got a connection at least once, so the server has seen
    // more than its descriptor limit, and has had to shed.
    let deadline = Instant::now() + PATIENCE * 2;
    while opened.load(Ordering::SeqCst) < ATTACKERS {
        assert!(
            Instant::now() < deadline,
            "only {} of {ATTACKERS} idle connections opened",
            opened.load(Ordering::SeqCst)
        );
        sleep(Duration::from_millis(50)).await;
    }
    server.wait_shed("connection_limit", 1.0).await;
    // And the shed ones came back: the flood is under way.
    while opened.load(Ordering::SeqCst) < 2 * ATTACKERS {
        assert!(
            Instant::now() < deadline,
            "only {} idle connections opened",
            opened.load(Ordering::SeqCst)
        );
        sleep(Duration::from_millis(50)).await;
    }

    // Honest clients during the flood.
    let mut during = Vec::new();
    for _ in 0..20 {
        let (status, took) = server.healthz().await;
        assert_eq!(status, 200, "/healthz during the idle flood");
        during.push(took);
    }
    let token = server.token().await;
    away_from_step_edge(30, 3).await;
    let (mut socket, welcome) = connect(&token.url_with(&token.code(0))).await.welcomed();
    assert_eq!(welcome["access_id"], token.access_id.as_str());
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.expect("pong")["type"], "pong");

    let shed = server.shed("connection_limit").await;
    let total = opened.load(Ordering::SeqCst);
    eprintln!(
        "idle flood ({ATTACKERS} attackers re-connecting, {total} connections opened, {shed} shed \
         for connection_limit, descriptor limit {NOFILE}): /healthz median {:?} max {:?} over {} \
         requests; before the flood median {:?}",
        median(during.clone()),
        during.iter().max().copied().unwrap_or_default(),
        during.len(),
        median(before),
    );
    assert!(
        shed >= 1.0 && total > NOFILE,
        "{total} idle connections, {shed} shed"
    );

    // The WebSocket is not shed while the flood goes on.
    sleep(Duration::from_millis(500)).await;
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.expect("pong")["type"], "pong");

    // Shedding was logged, in summary lines rather than one per connection.
    let deadline = Instant::now() + PATIENCE;
    while server.log_lines("connections shed under pressure") == 0 {
        assert!(
            Instant::now() < deadline,
            "no log line about shed connections"
        );
        sleep(Duration::from_millis(200)).await;
    }
    let lines = server.log_lines("connections shed under pressure");
    assert!(
        (lines as f64) < shed / 10.0,
        "{lines} log lines for {shed} shed connections"
    );

    let _ = stop.send(true);
    for attacker in attackers {
        let _ = attacker.await;
    }
}

/// Headers trickled one byte per 200 ms are cut at the header deadline
/// (1 s here), and so is a connection that sends nothing.
#[tokio::test]
async fn slowloris_and_silent_connections_are_cut_at_the_header_deadline() {
    let server = Hostile::start(
        &format!("{TWO_APPS}\n[http]\nheader_timeout_secs = 1\nidle_timeout_secs = 1\n"),
        None,
    );
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();

    let mut slow = TcpStream::connect(server.addr()).await.unwrap();
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 150));
    let mut sent = 0;
    let mut buffer = [0u8; 256];
    let cut = loop {
        if sent == request.len() {
            break false;
        }
        if slow.write_all(&request[sent..=sent]).await.is_err() {
            break true;
        }
        sent += 1;
        match timeout(Duration::from_millis(200), slow.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(read)) => panic!(
                "an incomplete request was answered: {:?}",
                String::from_utf8_lossy(&buffer[..read])
            ),
            Err(_) => {}
        }
    };
    assert!(
        cut,
        "trickling headers kept the connection for all {sent} bytes"
    );
    // Trickling did not extend the deadline: the cut came long before the
    // end of the trickle (about 5 bytes in with a 1 s deadline).
    assert!(
        sent < request.len() / 2,
        "cut only after {sent} of {} bytes",
        request.len()
    );
    assert!(
        closed_within(&mut silent, PATIENCE).await,
        "a silent connection stayed open"
    );
    server.wait_shed("header_timeout", 2.0).await;
    assert_eq!(server.healthz().await.0, 200);
}

/// A keep-alive connection serves several requests, then is closed once
/// idle for `idle_timeout`.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Hostile::start(
        &format!("{TWO_APPS}\n[http]\nheader_timeout_secs = 5\nidle_timeout_secs = 1\n"),
        None,
    );
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    for _ in 0..2 {
        stream.write_all(GET_HEALTHZ).await.unwrap();
        assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    }
    assert!(
        closed_within(&mut stream, PATIENCE).await,
        "an idle keep-alive connection stayed open"
    );
    server.wait_shed("idle_timeout", 1.0).await;
}

/// An upgraded WebSocket is not an HTTP connection any more: idle for
/// longer than the header and idle deadlines, it stays open and answered,
/// while an idle HTTP connection opened next to it is closed.
#[tokio::test]
async fn an_idle_websocket_outlives_the_http_deadlines() {
    let server = Hostile::start(
        &format!("{TWO_APPS}\n[http]\nheader_timeout_secs = 1\nidle_timeout_secs = 1\n"),
        None,
    );
    let token = server.token().await;
    away_from_step_edge(30, 8).await;
    let (mut socket, _) = connect(&token.url_with(&token.code(0))).await.welcomed();
    let mut http_idle = TcpStream::connect(server.addr()).await.unwrap();
    http_idle.write_all(GET_HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut http_idle).await, "HTTP/1.1 200 OK");

    // The HTTP connection is closed by its idle deadline...
    assert!(
        closed_within(&mut http_idle, PATIENCE).await,
        "an idle keep-alive connection stayed open"
    );
    // ...and the socket, silent for as long and then some, still answers.
    sleep(Duration::from_secs(2)).await;
    send_json(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut socket).await.expect("pong")["type"], "pong");
    assert!(server.shed("idle_timeout").await >= 1.0);
}

/// Beyond `max_pending_connections`, the oldest connection without a
/// request is shed and the newest kept; honest clients get in.
#[tokio::test]
async fn beyond_the_pending_cap_the_oldest_idle_connection_is_shed() {
    let server = Hostile::start(
        &format!("{TWO_APPS}\n[http]\nheader_timeout_secs = 300\nmax_pending_connections = 16\n"),
        None,
    );
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    // Every request below opens a connection too, which pushes out one
    // more of the oldest: few are made, so the newest idle ones remain.
    let oldest = idle.first_mut().expect("a connection");
    assert!(
        closed_within(oldest, PATIENCE).await,
        "the oldest idle connection stayed"
    );
    assert_eq!(server.healthz().await.0, 200);
    let newest = idle.last_mut().expect("a connection");
    assert!(
        !closed_within(newest, Duration::from_millis(300)).await,
        "the newest idle connection was shed"
    );
    assert!(server.shed("pending_limit").await >= 24.0);
}
