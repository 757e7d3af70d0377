//! madx-bench: load for madx-pusher (and for the bare-transport floor), over
//! real WebSockets on loopback. Each scenario prints one JSON line and a
//! human summary. See docs/benchmarks.md.

mod client;
mod host;
mod overload;
mod presence;
mod stats;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use serde_json::json;

use client::{Client, Target};
use stats::Percentiles;

#[derive(Parser)]
#[command(name = "madx-bench", about = "Load generator for madx-pusher")]
struct Cli {
    /// Base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    target: String,
    /// More nodes of the same deployment (Redis mode): sockets are spread
    /// over the target and these; publishes go to the target.
    #[arg(long = "also", global = true)]
    also: Vec<String>,
    /// App key and secret (HTTP Basic) of the server under test.
    #[arg(long, default_value = "demo-key", global = true)]
    key: String,
    #[arg(long, default_value = "demo-secret", global = true)]
    secret: String,
    /// The server's process ids (one per node), to read their memory and
    /// CPU from /proc; figures are summed over them.
    #[arg(long = "host-pid", global = true)]
    host_pids: Vec<u32>,
    /// Loopback source addresses (127.0.0.2...) to spread sockets over.
    #[arg(long, default_value_t = 8, global = true)]
    sources: u8,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64, global = true)]
    concurrency: usize,
    /// Talk to floor-server (nothing checked, no channels) instead of
    /// madx-pusher.
    #[arg(long, global = true)]
    floor: bool,
    /// Publish through the Pusher HTTP API (signed `POST /apps/{id}/events`)
    /// of this app id instead of `POST /v1/publish`.
    #[arg(long, global = true)]
    pusher_app: Option<String>,
    /// A word put into the JSON line as `label` (which build or store ran).
    #[arg(long, global = true)]
    label: Option<String>,
    /// Which round of a repeated comparison this is, put into the JSON
    /// line as `round` (`bench/summarize.py` pairs runs by it).
    #[arg(long, global = true)]
    round: Option<u32>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Ramp to N idle sockets; host RSS per socket.
    Idle {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        /// Keep the sockets open this long after the ramp (memory is read
        /// at the end), e.g. so that several generators overlap.
        #[arg(long, default_value_t = 2)]
        hold_secs: u64,
    },
    /// Full one-time-TOTP handshakes per second, with latency; tokens are
    /// issued before the clock starts.
    Connect {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        /// Time a client's whole way in instead, per socket: the token
        /// request, the upgrade with a fresh code and one subscribe.
        #[arg(long)]
        with_token_and_subscribe: bool,
    },
    /// One channel, N subscribers, publishes at a fixed rate.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Publishes outrun the stalled subscribers: they are cut off (4202)
    /// and recover with last_id / since; counts what is lost (must be 0).
    Overload {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Subscribers that stop reading for --stall-ms after subscribing.
        #[arg(long, default_value_t = 10)]
        stalled: usize,
        #[arg(long, default_value_t = 4000)]
        stall_ms: u64,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Filler bytes per message, so a stalled reader fills its buffers.
        #[arg(long, default_value_t = 16384)]
        padding: usize,
    },
    /// Presence on connect and subscribe: N handshakes + subscribe to
    /// plain channels, then N to presence channels (one member each), on
    /// the same server; CPU per connect + subscribe, RSS per member.
    Presence {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        /// Sockets per channel (`presence-bench-<i / room-size>`): at most
        /// the server's `[presence] max_members` (100 by default).
        #[arg(long, default_value_t = 100)]
        room_size: usize,
        /// Plain sockets opened first and not measured (the server's
        /// first allocations), kept open to the end.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Run the presence phase before the plain one (to see how much
        /// the order, a warmer server, weighs).
        #[arg(long)]
        presence_first: bool,
    },
    /// Webhook throughput: client publishes from M sockets at a fixed
    /// rate, each a `client_event` webhook to a receiver started here.
    Webhooks {
        /// Port of the webhook receiver on 127.0.0.1; the server must
        /// have `[[apps.webhooks]] url = "http://127.0.0.1:PORT/webhook"`
        /// and `events = ["client_event"]` for the app under test.
        #[arg(long)]
        receiver_port: u16,
        #[arg(long, default_value_t = 100)]
        sockets: usize,
        /// Publishes per second over all sockets (20/s per socket and
        /// 40/s per token are the server's default limits).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// How long after the last publish every event may still take.
        #[arg(long, default_value_t = 10)]
        grace_secs: u64,
        /// Key and secret of an app of the same server without webhooks:
        /// the same load there first gives a client publish's CPU without
        /// its webhook.
        #[arg(long, requires = "baseline_secret")]
        baseline_key: Option<String>,
        #[arg(long, requires = "baseline_key")]
        baseline_secret: Option<String>,
    },
    /// Fill a server's store for a restart measurement: N tokens, then M
    /// messages (batches of 100) spread over channels of `per-channel`
    /// messages each; no sockets.
    Fill {
        #[arg(long, default_value_t = 100_000)]
        tokens: usize,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        per_channel: usize,
    },
    /// N sockets, each reached through its own token inbox.
    Inboxes {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every socket is a file; ask for as many as the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let target = Target {
        nodes: std::iter::once(cli.target.clone())
            .chain(cli.also.iter().cloned())
            .collect(),
        key: cli.key.clone(),
        secret: cli.secret.clone(),
        floor: cli.floor,
        pusher_app: cli.pusher_app.clone(),
    };
    // The webhooks scenario's app without webhooks, on the same nodes.
    let baseline = match &cli.scenario {
        Scenario::Webhooks {
            baseline_key: Some(key),
            baseline_secret: Some(secret),
            ..
        } => {
            let target = Target {
                key: key.clone(),
                secret: secret.clone(),
                ..target.clone()
            };
            Some(Arc::new(Client::new(target, cli.sources)?))
        }
        _ => None,
    };
    let client = Arc::new(Client::new(target, cli.sources)?);
    let report = match cli.scenario {
        Scenario::Idle { sockets, hold_secs } => idle(&client, &cli, sockets, hold_secs).await?,
        Scenario::Connect {
            sockets,
            with_token_and_subscribe,
        } => connect(&client, &cli, sockets, with_token_and_subscribe).await?,
        Scenario::Fanout {
            subscribers,
            rate,
            seconds,
        } => fanout(&client, &cli, subscribers, rate, seconds, false).await?,
        Scenario::Inboxes {
            sockets,
            rate,
            seconds,
        } => fanout(&client, &cli, sockets, rate, seconds, true).await?,
        Scenario::Fill {
            tokens,
            messages,
            per_channel,
        } => fill(&client, &cli, tokens, messages, per_channel).await?,
        Scenario::Presence {
            sockets,
            room_size,
            warmup,
            presence_first,
        } => {
            if cli.floor {
                bail!("the presence scenario measures the product's channels; drop --floor");
            }
            let settings = presence::Settings {
                sockets,
                warmup,
                room_size,
                concurrency: cli.concurrency,
                presence_first,
                host_pids: cli.host_pids.clone(),
            };
            presence::run(&client, &settings).await?
        }
        Scenario::Webhooks {
            receiver_port,
            sockets,
            rate,
            seconds,
            grace_secs,
            ..
        } => {
            if cli.floor {
                bail!("the webhooks scenario measures the product's webhooks; drop --floor");
            }
            let settings = webhooks::Settings {
                sockets,
                rate,
                seconds,
                grace: Duration::from_secs(grace_secs),
                receiver_port,
                concurrency: cli.concurrency,
                host_pids: cli.host_pids.clone(),
            };
            webhooks::run(&client, baseline.as_ref(), &settings).await?
        }
        Scenario::Overload {
            subscribers,
            stalled,
            stall_ms,
            rate,
            seconds,
            padding,
        } => {
            if cli.floor {
                bail!("the overload scenario checks recovery, which the floor has not");
            }
            let settings = overload::Settings {
                subscribers,
                stalled: stalled.min(subscribers),
                stall: Duration::from_millis(stall_ms),
                rate,
                seconds,
                padding,
            };
            overload::run(&client, &settings).await?
        }
    };
    let mut report = report;
    if let Some(fields) = report.as_object_mut() {
        if let Some(label) = &cli.label {
            fields.insert("label".into(), json!(label));
        }
        if let Some(round) = cli.round {
            fields.insert("round".into(), json!(round));
        }
    }
    println!("{report}");
    Ok(())
}

async fn idle(
    client: &Arc<Client>,
    cli: &Cli,
    sockets: usize,
    hold_secs: u64,
) -> anyhow::Result<serde_json::Value> {
    let rss_before = host::rss_bytes(&cli.host_pids);
    let started = Instant::now();
    let opened = client.open_many(sockets, cli.concurrency, None).await?;
    let ramp = started.elapsed();
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let rss_after = host::rss_bytes(&cli.host_pids);
    let per_socket = match (rss_before, rss_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / sockets as f64),
        _ => None,
    };
    let report = json!({
        "scenario": "idle", "floor": cli.floor, "sockets": opened.len(),
        "ramp_secs": ramp.as_secs_f64(),
        "host_rss_bytes": rss_after,
        "host_rss_per_socket_bytes": per_socket,
    });
    eprintln!(
        "idle: {} sockets open in {:.1} s; host RSS {} per socket",
        opened.len(),
        ramp.as_secs_f64(),
        per_socket.map_or("n/a (no --host-pid)".to_owned(), |bytes| format!(
            "{:.1} KiB",
            bytes / 1024.0
        ))
    );
    Ok(report)
}

async fn connect(
    client: &Arc<Client>,
    cli: &Cli,
    sockets: usize,
    with_token_and_subscribe: bool,
) -> anyhow::Result<serde_json::Value> {
    let rss_start = host::rss_bytes(&cli.host_pids);
    let tokens = if with_token_and_subscribe {
        Vec::new()
    } else {
        client.issue_many(sockets, cli.concurrency, None).await?
    };
    let rss_tokens = host::rss_bytes(&cli.host_pids);
    let cpu_before = host::cpu_seconds(&cli.host_pids);
    let started = Instant::now();
    let (opened, latencies) = if with_token_and_subscribe {
        client
            .join_many(sockets, cli.concurrency, CONNECT_CHANNEL)
            .await?
    } else {
        client.connect_tokens(tokens, cli.concurrency).await?
    };
    let elapsed = started.elapsed();
    let cpu = host::cpu_seconds(&cli.host_pids)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let rss_sockets = host::rss_bytes(&cli.host_pids);
    let per = |from: Option<u64>, to: Option<u64>| {
        from.zip(to)
            .map(|(from, to)| to.saturating_sub(from) as f64 / sockets.max(1) as f64)
    };
    let rate = opened.len() as f64 / elapsed.as_secs_f64();
    let latency = Percentiles::of(latencies);
    let journey = if with_token_and_subscribe {
        "token+upgrade+subscribe"
    } else {
        "upgrade"
    };
    let report = json!({
        "scenario": "connect", "floor": cli.floor, "journey": journey,
        "sockets": opened.len(), "connects_per_sec": rate,
        "handshake_p50_ms": latency.p50_ms(), "handshake_p99_ms": latency.p99_ms(),
        "host_cpu_per_connect_us": cpu.map(|seconds| seconds * 1e6 / opened.len() as f64),
        "host_rss_per_token_bytes": per(rss_start, rss_tokens),
        "host_rss_per_socket_bytes": per(rss_tokens, rss_sockets),
    });
    eprintln!(
        "connect ({journey}){}: {} in {:.2} s = {rate:.0}/s; p50 {:.2} ms, p99 {:.2} ms",
        if cli.floor { " (floor)" } else { "" },
        opened.len(),
        elapsed.as_secs_f64(),
        latency.p50_ms(),
        latency.p99_ms()
    );
    Ok(report)
}

/// The channel the connect scenario's sockets subscribe to.
const CONNECT_CHANNEL: &str = "bench-connect";

async fn fill(
    client: &Arc<Client>,
    cli: &Cli,
    tokens: usize,
    messages: usize,
    per_channel: usize,
) -> anyhow::Result<serde_json::Value> {
    const BATCH: usize = 100;
    let started = Instant::now();
    let issued = client
        .issue_many(tokens, cli.concurrency, None)
        .await?
        .len();
    let tokens_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let batches = messages.div_ceil(BATCH);
    futures_util::stream::iter(0..batches)
        .map(|batch| {
            let bodies: Vec<serde_json::Value> = (batch * BATCH..messages.min((batch + 1) * BATCH))
                .map(|n| {
                    json!({"channel": format!("fill-{}", n % messages.div_ceil(per_channel.max(1))),
                           "event": "fill", "data": {"n": n, "text": "a message of about a hundred bytes, as a notification carries"}})
                })
                .collect();
            client.publish_batch(bodies)
        })
        .buffer_unordered(cli.concurrency.clamp(1, 16))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let messages_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fill: {issued} tokens in {tokens_secs:.1} s, {messages} messages in {messages_secs:.1} s"
    );
    Ok(json!({
        "scenario": "fill", "tokens": issued, "tokens_secs": tokens_secs,
        "messages": messages, "messages_secs": messages_secs,
        "host_rss_bytes": host::rss_bytes(&cli.host_pids),
    }))
}

async fn fanout(
    client: &Arc<Client>,
    cli: &Cli,
    sockets: usize,
    rate: u64,
    seconds: u64,
    inboxes: bool,
) -> anyhow::Result<serde_json::Value> {
    let channel = if inboxes { None } else { Some("bench") };
    let opened = client.open_many(sockets, cli.concurrency, channel).await?;
    let access_ids: Vec<String> = opened
        .iter()
        .map(|socket| socket.access_id.clone())
        .collect();
    let receivers = client::receive_all(opened);

    let cpu_before = host::cpu_seconds(&cli.host_pids);
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let total = rate * seconds;
    // How long each publish took to be answered (its 202), as the
    // back-end that publishes sees it.
    let mut answers_us = Vec::with_capacity(total as usize);
    for n in 0..total {
        ticks.tick().await;
        let to = if inboxes {
            Some(access_ids[(n as usize) % access_ids.len()].as_str())
        } else {
            None
        };
        let sent = Instant::now();
        client.publish(n, to, 0).await?;
        answers_us.push(sent.elapsed().as_micros() as u64);
        published.fetch_add(1, Ordering::Relaxed);
    }
    let answers = Percentiles::of(answers_us);
    let publish_secs = started.elapsed().as_secs_f64();
    // Let the last messages arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = host::cpu_seconds(&cli.host_pids)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let per_socket = if inboxes {
        total.div_ceil(sockets.max(1) as u64)
    } else {
        total
    };
    let outcome = receivers.finish(per_socket).await;
    let expected = if inboxes {
        total
    } else {
        total * sockets as u64
    };
    let received = outcome.received;
    let lost = expected
        .saturating_sub(received)
        .saturating_sub(outcome.missed_by_closed);
    let latency = Percentiles::of(outcome.latencies_us);
    let cpu_per_delivery = cpu.map(|seconds| seconds * 1e6 / received.max(1) as f64);
    let report = json!({
        "scenario": if inboxes { "inboxes" } else { "fanout" }, "floor": cli.floor,
        "api": if cli.pusher_app.is_some() { "pusher" } else { "v1" },
        "sockets": sockets, "rate": rate, "seconds": seconds,
        "published": total, "expected": expected, "received": received,
        "closed_slow_consumer": outcome.closed_slow, "lost": lost,
        "deliveries_per_sec": received as f64 / publish_secs,
        "latency_p50_ms": latency.p50_ms(), "latency_p99_ms": latency.p99_ms(),
        "latency_p999_ms": latency.p999_ms(),
        "publish_answer_p50_ms": answers.p50_ms(), "publish_answer_p99_ms": answers.p99_ms(),
        "host_cpu_per_delivery_us": cpu_per_delivery,
    });
    eprintln!(
        "{}{}{}: {sockets} sockets, {total} publishes at {rate}/s: {received}/{expected} delivered, {} cut off (4202), {lost} lost; p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; publish answered p50 {:.2} ms, p99 {:.2} ms; host CPU {} per delivery",
        if inboxes { "inboxes" } else { "fanout" },
        if cli.floor { " (floor)" } else { "" },
        if cli.pusher_app.is_some() {
            " (Pusher API)"
        } else {
            ""
        },
        outcome.closed_slow,
        latency.p50_ms(),
        latency.p99_ms(),
        latency.p999_ms(),
        answers.p50_ms(),
        answers.p99_ms(),
        cpu_per_delivery.map_or("n/a".to_owned(), |us| format!("{us:.2} µs")),
    );
    Ok(report)
}
