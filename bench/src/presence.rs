//! Presence on connect and subscribe: against one server, N full
//! handshakes each followed by a `subscribe` to a plain channel, then N
//! more to presence channels (each socket a distinct member with a small
//! `user_info`). The difference between the two phases is what presence
//! costs: host CPU per connect + subscribe, and host memory per member.
//!
//! Sockets are spread over rooms of `room_size` (`bench-plain-<i / size>`,
//! `presence-bench-<i / size>`), so a presence subscribe pays for a roster
//! of at most `room_size` and a `member_added` to at most `room_size - 1`
//! others, as in a real room of that size; the plain phase uses rooms of
//! the same size, so only presence differs. Every socket of both phases
//! (and of an unmeasured warm-up before them) stays open, and is read,
//! until the end, so neither phase reuses memory the other freed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Client, Token, Ws};
use crate::host;
use crate::stats::Percentiles;

/// How long a socket may wait for its `subscribed` (or `error`) answer.
const PATIENCE: Duration = Duration::from_secs(30);
/// After the last answer: let the last `member_added` fan-outs finish
/// before CPU and memory are read.
const SETTLE: Duration = Duration::from_secs(1);

pub struct Settings {
    pub sockets: usize,
    /// Plain sockets opened (and kept open) before the measured phases.
    pub warmup: usize,
    pub room_size: usize,
    pub concurrency: usize,
    pub presence_first: bool,
    pub host_pids: Vec<u32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Unmeasured sockets first, so that neither measured phase pays for
    /// the server's first allocations (token store, channel maps, Wasm
    /// instance pool) alone.
    Warmup,
    Plain,
    Presence,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Warmup => "warm-up",
            Kind::Plain => "plain",
            Kind::Presence => "presence",
        }
    }

    /// The channel names of this kind start with this.
    fn prefix(self) -> &'static str {
        match self {
            Kind::Warmup => "bench-warmup-",
            Kind::Plain => "bench-plain-",
            Kind::Presence => "presence-bench-",
        }
    }

    /// Both kinds have a distinct `user_id` per socket (so both register a
    /// user inbox); presence tokens add a small `user_info`.
    fn claims(self, index: usize) -> Value {
        let channels = [format!("{}*", self.prefix())];
        match self {
            Kind::Warmup | Kind::Plain => json!({
                "user_id": format!("{}user-{index}", self.prefix()),
                "channels": channels,
            }),
            Kind::Presence => json!({
                "user_id": format!("bench-member-{index}"),
                "user_info": {"name": format!("Bench member {index}"), "n": index},
                "channels": channels,
            }),
        }
    }
}

/// How one socket's connect + subscribe ended.
enum Joined {
    Subscribed {
        socket: Box<Ws>,
        latency_us: u64,
    },
    /// An `error` frame answered the subscribe (4309 `presence_full`...).
    Refused(u64),
    /// No answer within `PATIENCE`, or the socket closed before one.
    Lost(String),
    /// The handshake itself failed.
    Failed(String),
}

/// Counted by the tasks that keep reading the open sockets.
#[derive(Default)]
struct Readers {
    member_frames: AtomicU64,
    closed: AtomicU64,
}

struct Phase {
    report: Value,
    rss_per_socket: Option<f64>,
    cpu_per_join_us: Option<f64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn run(client: &Arc<Client>, settings: &Settings) -> anyhow::Result<Value> {
    let room_size = settings.room_size.max(1);
    let order = if settings.presence_first {
        [Kind::Presence, Kind::Plain]
    } else {
        [Kind::Plain, Kind::Presence]
    };
    let warmup = if settings.warmup > 0 {
        let warmup_settings = Settings {
            sockets: settings.warmup,
            warmup: 0,
            room_size,
            concurrency: settings.concurrency,
            presence_first: false,
            host_pids: settings.host_pids.clone(),
        };
        Some(phase(client, &warmup_settings, Kind::Warmup).await?)
    } else {
        None
    };
    let mut phases = Vec::new();
    for kind in order {
        phases.push((kind, phase(client, settings, kind).await?));
    }
    let find = |wanted: Kind| {
        phases
            .iter()
            .find(|(kind, _)| *kind == wanted)
            .map(|(_, phase)| phase)
    };
    let (Some(plain), Some(presence)) = (find(Kind::Plain), find(Kind::Presence)) else {
        anyhow::bail!("a phase is missing");
    };
    // What a member costs over a plain subscriber of the same room size.
    let rss_per_member = plain
        .rss_per_socket
        .zip(presence.rss_per_socket)
        .map(|(plain, presence)| presence - plain);
    let cpu_extra = plain
        .cpu_per_join_us
        .zip(presence.cpu_per_join_us)
        .map(|(plain, presence)| presence - plain);
    let report = json!({
        "scenario": "presence", "sockets": settings.sockets, "room_size": room_size,
        "warmup_sockets": settings.warmup,
        "order": order.map(Kind::name),
        "plain": plain.report, "presence": presence.report,
        "host_rss_per_member_bytes": rss_per_member,
        "host_cpu_presence_extra_per_join_us": cpu_extra,
    });
    eprintln!(
        "presence: a member costs {} more host RSS and {} more host CPU per connect + subscribe than a plain subscriber (rooms of {room_size})",
        rss_per_member.map_or("n/a (no --host-pid)".to_owned(), |bytes| format!(
            "{:.2} KiB",
            bytes / 1024.0
        )),
        cpu_extra.map_or("n/a".to_owned(), |us| format!("{us:.1} µs")),
    );
    for phase in phases.into_iter().map(|(_, phase)| phase).chain(warmup) {
        for reader in phase.readers {
            reader.abort();
        }
    }
    Ok(report)
}

async fn phase(client: &Arc<Client>, settings: &Settings, kind: Kind) -> anyhow::Result<Phase> {
    let sockets = settings.sockets;
    let room_size = settings.room_size.max(1);
    let concurrency = settings.concurrency.max(1);
    let pids = &settings.host_pids;
    let nodes = client.node_count();

    let rss_start = host::rss_bytes(pids);
    // In index order: a token's index names its room.
    let tokens: Vec<Token> = stream::iter(0..sockets)
        .map(|index| {
            let claims = kind.claims(index);
            async move { client.issue_claims(index % nodes, &claims).await }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let rss_tokens = host::rss_bytes(pids);

    let cpu_before = host::cpu_seconds(pids);
    let started = Instant::now();
    let outcomes: Vec<Joined> = stream::iter(tokens.into_iter().enumerate())
        .map(|(index, token)| {
            let channel = format!("{}{}", kind.prefix(), index / room_size);
            async move { join(client, &token, &channel).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let counters = Arc::new(Readers::default());
    let mut readers = Vec::new();
    let mut latencies = Vec::new();
    let mut refusals: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut lost, mut failed) = (0u64, 0u64);
    for outcome in outcomes {
        match outcome {
            Joined::Subscribed { socket, latency_us } => {
                latencies.push(latency_us);
                readers.push(tokio::spawn(keep_reading(*socket, counters.clone())));
            }
            Joined::Refused(code) => *refusals.entry(code).or_default() += 1,
            Joined::Lost(why) => {
                lost += 1;
                if lost == 1 {
                    eprintln!("presence ({}): a subscribe answer lost: {why}", kind.name());
                }
            }
            Joined::Failed(why) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("presence ({}): a connect failed: {why}", kind.name());
                }
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let cpu = host::cpu_seconds(pids)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let rss_sockets = host::rss_bytes(pids);

    let subscribed = latencies.len() as u64;
    let refused: u64 = refusals.values().sum();
    // What the server itself counts in these channels.
    let server_count = server_count(client, kind).await;
    let per = |from: Option<u64>, to: Option<u64>, count: u64| {
        from.zip(to)
            .map(|(from, to)| to.saturating_sub(from) as f64 / count.max(1) as f64)
    };
    // Sockets refused or lost were closed: per socket that stayed open.
    let rss_per_socket = per(rss_tokens, rss_sockets, subscribed);
    let cpu_per_join_us = cpu.map(|seconds| seconds * 1e6 / subscribed.max(1) as f64);
    let rate = subscribed as f64 / elapsed.as_secs_f64();
    let latency = Percentiles::of(latencies);
    let report = json!({
        "sockets": sockets, "subscribed": subscribed, "refused": refused,
        "refusals_by_code": refusals.iter().map(|(code, n)| (code.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "lost_answers": lost, "failed_connects": failed,
        "server_count": server_count.as_ref().ok(),
        "joins_per_sec": rate,
        "join_p50_ms": latency.p50_ms(), "join_p99_ms": latency.p99_ms(),
        "host_cpu_per_join_us": cpu_per_join_us,
        "host_rss_per_token_bytes": per(rss_start, rss_tokens, sockets as u64),
        "host_rss_per_socket_bytes": rss_per_socket,
        "member_frames_read": counters.member_frames.load(Ordering::Relaxed),
        "closed_while_open": counters.closed.load(Ordering::Relaxed),
    });
    eprintln!(
        "presence ({}): {subscribed}/{sockets} connect + subscribe in {:.2} s = {rate:.0}/s; p50 {:.2} ms, p99 {:.2} ms; {refused} refused, {lost} answers lost, {failed} connects failed; server counts {}; host CPU {} and RSS {} per socket",
        kind.name(),
        elapsed.as_secs_f64(),
        latency.p50_ms(),
        latency.p99_ms(),
        match &server_count {
            Ok(count) => count.to_string(),
            Err(error) => format!("n/a ({error:#})"),
        },
        cpu_per_join_us.map_or("n/a".to_owned(), |us| format!("{us:.1} µs")),
        rss_per_socket.map_or("n/a".to_owned(), |bytes| format!(
            "{:.2} KiB",
            bytes / 1024.0
        )),
    );
    if refusals.contains_key(&4309) {
        eprintln!(
            "presence: 4309 presence_full: raise the server's [presence] max_members to at least --room-size ({room_size})"
        );
    }
    Ok(Phase {
        report,
        rss_per_socket,
        cpu_per_join_us,
        readers,
    })
}

/// A full handshake (fresh code, `welcome`), then `subscribe` and its
/// answer; member frames that arrive first are skipped.
async fn join(client: &Client, token: &Token, channel: &str) -> Joined {
    let started = Instant::now();
    let mut socket = match client.open(token).await {
        Ok((socket, _)) => socket,
        Err(error) => return Joined::Failed(format!("{error:#}")),
    };
    let frame = json!({"type": "subscribe", "channel": channel});
    if let Err(error) = socket.send(Message::Text(frame.to_string().into())).await {
        return Joined::Lost(format!("sending subscribe: {error}"));
    }
    match timeout(PATIENCE, answer(&mut socket)).await {
        Ok(Ok(None)) => Joined::Subscribed {
            socket: Box::new(socket),
            latency_us: started.elapsed().as_micros() as u64,
        },
        Ok(Ok(Some(code))) => Joined::Refused(code),
        Ok(Err(error)) => Joined::Lost(format!("{error:#}")),
        Err(_) => Joined::Lost(format!("no answer within {PATIENCE:?}")),
    }
}

/// `None` for `subscribed`, the code of an `error` frame.
async fn answer(socket: &mut Ws) -> anyhow::Result<Option<u64>> {
    loop {
        let text = client::next_text(socket).await?;
        let frame: Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("subscribed") => return Ok(None),
            Some("error") => return Ok(Some(frame["code"].as_u64().unwrap_or(0))),
            _ => continue,
        }
    }
}

/// Read a subscribed socket until the end (answering pings, taking the
/// `member_added` of later members), as a real client does.
async fn keep_reading(mut socket: Ws, counters: Arc<Readers>) {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => {
                if text.as_str().contains("\"member_") {
                    counters.member_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    counters.closed.fetch_add(1, Ordering::Relaxed);
}

/// Subscriptions (plain) or members (presence) the server counts over the
/// bench channels of `kind` (`GET /v1/channels?prefix=`).
async fn server_count(client: &Client, kind: Kind) -> anyhow::Result<u64> {
    let body = client
        .get_json(&format!("/v1/channels?prefix={}", kind.prefix()))
        .await?;
    let field = match kind {
        Kind::Warmup | Kind::Plain => "subscription_count",
        Kind::Presence => "user_count",
    };
    let channels = body["channels"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no channels in {body}"))?;
    Ok(channels
        .values()
        .filter_map(|channel| channel[field].as_u64())
        .sum())
}
