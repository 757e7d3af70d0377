//! Tokens, codes, sockets and publishes, as real clients do them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use totp_rs::{Algorithm, Secret, TOTP};

pub type Ws = WebSocketStream<TcpStream>;

/// The server under test.
#[derive(Clone)]
pub struct Target {
    /// `http://host:port` of each node; sockets are spread over them,
    /// publishes go to the first.
    pub nodes: Vec<String>,
    pub key: String,
    pub secret: String,
    /// floor-server: tokens, upgrades and subscribes answered unchecked,
    /// one broadcast instead of channels.
    pub floor: bool,
    /// Publish through the Pusher HTTP API of this app id (signed
    /// `POST /apps/{id}/events`) instead of `POST /v1/publish`.
    pub pusher_app: Option<String>,
}

/// A token as the client holds it.
pub struct Token {
    pub access_id: String,
    pub seed: String,
    ws_url: String,
    /// The node it was issued by, and its sockets connect to.
    pub node: usize,
}

/// One node of the server under test.
struct Node {
    base: String,
    address: SocketAddr,
}

/// An open socket and the token it belongs to.
pub struct Opened {
    pub socket: Ws,
    pub access_id: String,
}

pub struct Client {
    target: Target,
    nodes: Vec<Node>,
    http: reqwest::Client,
    sources: u8,
    next_source: AtomicU32,
}

impl Client {
    pub fn new(target: Target, sources: u8) -> anyhow::Result<Client> {
        let mut nodes = Vec::new();
        for base in &target.nodes {
            let base = base.trim_end_matches('/').to_owned();
            let address: SocketAddr = base
                .strip_prefix("http://")
                .and_then(|authority| authority.parse().ok())
                .with_context(|| format!("nodes must be http://IP:PORT, got {base}"))?;
            nodes.push(Node { base, address });
        }
        if nodes.is_empty() {
            bail!("no node to test");
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Client {
            target,
            nodes,
            http: reqwest::Client::new(),
            sources: sources.clamp(1, 250),
            next_source: AtomicU32::new(0),
        })
    }

    pub async fn issue(&self, node: usize, channels: &[&str]) -> anyhow::Result<Token> {
        self.issue_claims(node, &json!({ "channels": channels }))
            .await
    }

    /// A token with these claims (`POST /v1/tokens` body: `user_id`,
    /// `user_info`, `channels`, `publish`...).
    pub async fn issue_claims(&self, node: usize, claims: &Value) -> anyhow::Result<Token> {
        let response = self
            .http
            .post(format!("{}/v1/tokens", self.nodes[node].base))
            .basic_auth(&self.target.key, Some(&self.target.secret))
            .json(claims)
            .send()
            .await?;
        if response.status() != 201 {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("token request answered {status}: {body}");
        }
        let body: Value = response.json().await?;
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("token response without {name}"))
        };
        Ok(Token {
            access_id: field("access_id")?,
            seed: field("secret_seed")?,
            ws_url: field("ws_url")?,
            node,
        })
    }

    pub async fn issue_many(
        &self,
        count: usize,
        concurrency: usize,
        channel: Option<&str>,
    ) -> anyhow::Result<Vec<Token>> {
        let channels: Vec<&str> = channel.into_iter().collect();
        stream::iter(0..count)
            .map(|n| self.issue(n % self.nodes.len(), &channels))
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// TCP from the next loopback source address, then the WebSocket
    /// handshake, with small buffers so the load generator fits many.
    async fn dial(&self, node: usize, url: &str) -> anyhow::Result<Ws> {
        let index = self.next_source.fetch_add(1, Ordering::Relaxed) % u32::from(self.sources);
        let source = Ipv4Addr::new(127, 0, 0, 2 + index as u8);
        let socket = TcpSocket::new_v4()?;
        defer_port_choice(&socket)?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = socket.connect(self.nodes[node].address).await?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = client_async_with_config(url, stream, Some(config)).await?;
        Ok(ws)
    }

    /// The app's key and secret.
    pub fn key(&self) -> &str {
        &self.target.key
    }

    pub fn secret(&self) -> &str {
        &self.target.secret
    }

    /// The number of nodes sockets are spread over.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// `GET path` on the first node with the app's Basic auth, as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.nodes[0].base))
            .basic_auth(&self.target.key, Some(&self.target.secret))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET {path} answered {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// Connect with a fresh code and wait for `welcome`; the handshake time.
    pub async fn open(&self, token: &Token) -> anyhow::Result<(Ws, u64)> {
        let started = Instant::now();
        let ws = self
            .open_with(token, &current_code(&token.seed, 0)?, None)
            .await?;
        Ok((ws, started.elapsed().as_micros() as u64))
    }

    /// Connect with `code` (and `last_id`, to recover the inboxes) and wait
    /// for `welcome`.
    pub async fn open_with(
        &self,
        token: &Token,
        code: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<Ws> {
        let mut url = format!("{}&access_id={}&otp={code}", token.ws_url, token.access_id);
        if let Some(last_id) = last_id {
            url.push_str(&format!("&last_id={last_id}"));
        }
        let mut ws = self.dial(token.node, &url).await?;
        let welcome = next_text(&mut ws).await?;
        if !welcome.contains("\"welcome\"") {
            bail!("refused: {welcome}");
        }
        Ok(ws)
    }

    pub async fn connect_tokens(
        &self,
        tokens: Vec<Token>,
        concurrency: usize,
    ) -> anyhow::Result<(Vec<Opened>, Vec<u64>)> {
        let results: Vec<anyhow::Result<(Opened, u64)>> = stream::iter(tokens)
            .map(|token| async move {
                let (socket, latency) = self.open(&token).await?;
                Ok((
                    Opened {
                        socket,
                        access_id: token.access_id,
                    },
                    latency,
                ))
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut opened = Vec::with_capacity(results.len());
        let mut latencies = Vec::with_capacity(results.len());
        for result in results {
            let (socket, latency) = result?;
            opened.push(socket);
            latencies.push(latency);
        }
        Ok((opened, latencies))
    }

    /// A client's whole way in, `count` times: a token for `channel`, the
    /// upgrade with a fresh code, and the subscribe; each with its time.
    /// The floor answers the same three requests without checking them.
    pub async fn join_many(
        &self,
        count: usize,
        concurrency: usize,
        channel: &str,
    ) -> anyhow::Result<(Vec<Opened>, Vec<u64>)> {
        let results: Vec<anyhow::Result<(Opened, u64)>> = stream::iter(0..count)
            .map(|n| async move {
                let started = Instant::now();
                let token = self.issue(n % self.nodes.len(), &[channel]).await?;
                let (mut socket, _) = self.open(&token).await?;
                subscribe(&mut socket, channel, None).await?;
                let opened = Opened {
                    socket,
                    access_id: token.access_id,
                };
                Ok((opened, started.elapsed().as_micros() as u64))
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|pairs| pairs.into_iter().unzip())
    }

    /// `count` sockets, subscribed to `channel` when given.
    pub async fn open_many(
        &self,
        count: usize,
        concurrency: usize,
        channel: Option<&str>,
    ) -> anyhow::Result<Vec<Opened>> {
        if self.target.floor {
            let url = format!("ws://{}/ws", self.nodes[0].address);
            return stream::iter(0..count)
                .map(|n| {
                    let url = url.clone();
                    async move {
                        Ok(Opened {
                            socket: self.dial(0, &url).await?,
                            access_id: n.to_string(),
                        })
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .collect::<Vec<anyhow::Result<Opened>>>()
                .await
                .into_iter()
                .collect();
        }
        let tokens = self.issue_many(count, concurrency, channel).await?;
        let (mut opened, _) = self.connect_tokens(tokens, concurrency).await?;
        if let Some(channel) = channel {
            for socket in &mut opened {
                subscribe(&mut socket.socket, channel, None).await?;
            }
        }
        Ok(opened)
    }

    /// Publish message `n`, stamped with the send time (and `padding`
    /// bytes of filler), to the bench channel or to one token's inbox.
    pub async fn publish(
        &self,
        n: u64,
        to_access_id: Option<&str>,
        padding: usize,
    ) -> anyhow::Result<()> {
        let mut data = json!({ "t": now_micros(), "n": n });
        if padding > 0 {
            data["pad"] = json!("x".repeat(padding));
        }
        let response = if self.target.floor {
            let frame = json!({"type": "message", "id": n.to_string(), "channel": "bench", "event": "tick", "data": data});
            self.http
                .post(format!("{}/publish", self.nodes[0].base))
                .body(frame.to_string())
                .send()
                .await?
        } else if let Some(app_id) = &self.target.pusher_app {
            if to_access_id.is_some() {
                bail!("the Pusher API has no token inboxes; use a channel scenario");
            }
            // Pusher's data is a string; one holding JSON arrives as JSON.
            let body =
                json!({"name": "tick", "channel": "bench", "data": data.to_string()}).to_string();
            let path = format!("/apps/{app_id}/events");
            let query = pusher_signed_query(&self.target.key, &self.target.secret, &path, &body)?;
            self.http
                .post(format!("{}{path}?{query}", self.nodes[0].base))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?
        } else {
            let body = match to_access_id {
                Some(access_id) => json!({"access_id": access_id, "event": "tick", "data": data}),
                None => json!({"channel": "bench", "event": "tick", "data": data}),
            };
            self.http
                .post(format!("{}/v1/publish", self.nodes[0].base))
                .basic_auth(&self.target.key, Some(&self.target.secret))
                .json(&body)
                .send()
                .await?
        };
        if !response.status().is_success() {
            bail!("publish answered {}", response.status());
        }
        Ok(())
    }

    /// `POST /v1/publish/batch` of `messages` (request bodies of
    /// `/v1/publish`), to the first node.
    pub async fn publish_batch(&self, messages: Vec<Value>) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/publish/batch", self.nodes[0].base))
            .basic_auth(&self.target.key, Some(&self.target.secret))
            .json(&json!({ "messages": messages }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("publish batch answered {}", response.status());
        }
        Ok(())
    }
}

/// The query string of a Pusher-signed `POST path` with `body`, as the
/// Pusher server libraries build it: HMAC-SHA256 of
/// `POST\npath\nsorted query` with the app secret.
fn pusher_signed_query(key: &str, secret: &str, path: &str, body: &str) -> anyhow::Result<String> {
    use hmac::{KeyInit as _, Mac as _};
    use md5::Digest as _;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let body_md5 = hex(md5::Md5::digest(body.as_bytes()).as_slice());
    // Already in sorted key order.
    let query =
        format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(format!("POST\n{path}\n{query}").as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    Ok(format!("{query}&auth_signature={signature}"))
}

/// Bind the source address only and let `connect` pick the port
/// (`IP_BIND_ADDRESS_NO_PORT`). Ports of closed sockets wait in TIME_WAIT
/// for a minute, and `bind` counts them as taken: after a few
/// 10,000-socket runs its search for a free port grows slow, and the
/// generator, not the server, sets the connect rate. `connect` only needs
/// the whole address pair to be free and may reuse a waiting one.
fn defer_port_choice(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, an option that takes an int, and
    // the int's address and size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Subscribe (recovering after `since` when given) and wait for the
/// `subscribed` answer, which it returns.
pub async fn subscribe(ws: &mut Ws, channel: &str, since: Option<&str>) -> anyhow::Result<String> {
    let mut frame = json!({"type": "subscribe", "channel": channel});
    if let Some(since) = since {
        frame["since"] = json!(since);
    }
    ws.send(Message::Text(frame.to_string().into())).await?;
    let answer = next_text(ws).await?;
    if !answer.contains("\"subscribed\"") {
        bail!("subscribe refused: {answer}");
    }
    Ok(answer)
}

pub async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("closed"),
        }
    }
}

/// The code of the time step `steps` away from now (the server accepts
/// -1, 0 and +1, each once).
pub fn current_code(seed: &str, steps: i64) -> anyhow::Result<String> {
    let secret = Secret::Encoded(seed.to_owned())
        .to_bytes()
        .map_err(|_| anyhow!("the secret seed is not base32"))?;
    let totp = TOTP::new_unchecked(Algorithm::SHA1, 6, 0, 30, secret);
    let now = (now_micros() / 1_000_000) as i64;
    Ok(totp.generate((now + steps * 30).max(0) as u64))
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// The send time stamped into a message (`"t":<micros>`), without parsing
/// the whole frame: the load generator shares the cores with the server.
fn stamp(text: &str) -> Option<u64> {
    let start = text.find("\"t\":")? + 4;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[derive(Default)]
struct Tally {
    received: u64,
    latencies_us: Vec<u64>,
    closed_code: Option<u16>,
}

/// Every socket read by its own task.
pub struct Receivers {
    tallies: Vec<Arc<Mutex<Tally>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub struct Outcome {
    pub received: u64,
    pub latencies_us: Vec<u64>,
    /// Sockets closed with 4202 (slow consumer).
    pub closed_slow: u64,
    /// Messages those sockets did not get (they would recover them with
    /// `last_id`): counted apart from loss.
    pub missed_by_closed: u64,
}

pub fn receive_all(opened: Vec<Opened>) -> Receivers {
    let mut tallies = Vec::with_capacity(opened.len());
    let mut tasks = Vec::with_capacity(opened.len());
    for Opened { mut socket, .. } in opened {
        let tally = Arc::new(Mutex::new(Tally::default()));
        tallies.push(tally.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(message) = socket.next().await {
                let Ok(mut tally) = tally.lock() else { return };
                match message {
                    Ok(Message::Text(text)) => {
                        if let Some(sent) = stamp(text.as_str()) {
                            tally.received += 1;
                            tally.latencies_us.push(now_micros().saturating_sub(sent));
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        tally.closed_code = frame.map(|frame| u16::from(frame.code));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    Receivers { tallies, tasks }
}

impl Receivers {
    /// Stop reading and add up; `expected_per_socket` tells what a socket
    /// closed as a slow consumer missed.
    pub async fn finish(self, expected_per_socket: u64) -> Outcome {
        for task in &self.tasks {
            task.abort();
        }
        let mut outcome = Outcome {
            received: 0,
            latencies_us: Vec::new(),
            closed_slow: 0,
            missed_by_closed: 0,
        };
        for tally in self.tallies {
            let Ok(mut tally) = tally.lock() else {
                continue;
            };
            outcome.received += tally.received;
            outcome.latencies_us.append(&mut tally.latencies_us);
            if tally.closed_code == Some(4202) {
                outcome.closed_slow += 1;
                outcome.missed_by_closed += expected_per_socket.saturating_sub(tally.received);
            }
        }
        outcome
    }
}
