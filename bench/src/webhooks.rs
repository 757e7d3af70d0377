//! Webhook throughput: M sockets send client `publish` frames at a fixed
//! total rate; the host turns each into a `client_event` webhook to a
//! receiver started here, which checks `X-Pusher-Key` and
//! `X-Pusher-Signature` (lowercase hex HMAC-SHA256 of the body with the
//! app secret) and records every event. Each publish carries its send time
//! and sequence number in its data, so the receiver measures the delay
//! from the socket to the webhook and finds what never arrived.
//!
//! The host must already be configured with `[[apps.webhooks]] url =
//! "http://127.0.0.1:<receiver port>/webhook"`, `events = ["client_event"]`
//! for the app under test: the receiver binds the fixed port it is given.
//! With a baseline app (same load on an app without webhooks) the run also
//! gives what the webhook adds to the host's CPU per client publish.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Client, Ws};
use crate::host;
use crate::stats::Percentiles;

/// The channel every publish goes to (no one subscribes to it).
const CHANNEL: &str = "bench-webhooks";
/// The host's default client publish limits (`[limits]`).
const SOCKET_RATE_LIMIT: f64 = 20.0;

pub struct Settings {
    pub sockets: usize,
    pub rate: u64,
    pub seconds: u64,
    /// How long after the last publish the receiver may still take to get
    /// every event.
    pub grace: Duration,
    pub receiver_port: u16,
    pub concurrency: usize,
    pub host_pids: Vec<u32>,
}

/// What the publishing sockets were told.
#[derive(Default)]
struct Refusals {
    /// `error` frames (4308 `rate_limited`, 4303...): not published.
    refused: u64,
    /// Sockets closed during the run.
    closed: u64,
}

pub async fn run(
    client: &Arc<Client>,
    baseline: Option<&Arc<Client>>,
    settings: &Settings,
) -> anyhow::Result<Value> {
    let total = settings.rate * settings.seconds;
    let per_socket = settings.rate as f64 / settings.sockets.max(1) as f64;
    if per_socket > SOCKET_RATE_LIMIT {
        eprintln!(
            "webhooks: {per_socket:.1} publishes/s per socket is over the default [limits] client_publish_per_sec (20) and token_publish_per_sec (40): use more --sockets or raise them"
        );
    }
    let receiver =
        Receiver::start(settings.receiver_port, client.key(), client.secret(), total).await?;

    // The same load on an app without webhooks: what a client publish
    // costs the host without its webhook.
    let baseline_cpu = match baseline {
        Some(baseline) => {
            let run = publish(baseline, settings, total).await?;
            let published = run.sent.saturating_sub(run.refused).max(1);
            let cpu = run
                .cpu_seconds
                .map(|seconds| seconds * 1e6 / published as f64);
            eprintln!(
                "webhooks (baseline app, no webhook): {} publishes, {} refused; host CPU {} per client publish",
                run.sent,
                run.refused,
                cpu.map_or("n/a".to_owned(), |us| format!("{us:.1} µs"))
            );
            if receiver.record().events > 0 {
                bail!("the baseline app's publishes reached the receiver: it has a webhook");
            }
            Some(cpu)
        }
        None => None,
    };

    let run = publish(client, settings, total).await?;
    let expected = run.sent.saturating_sub(run.refused);
    // Wait for the stragglers, then read the host's CPU (it kept sending).
    let deadline = Instant::now() + settings.grace;
    while receiver.record().distinct < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = host::cpu_seconds(&settings.host_pids)
        .zip(run.cpu_before)
        .map(|(after, before)| after - before);
    let record = std::mem::take(&mut *receiver.record());
    receiver.stop();

    let span = record
        .last_arrival
        .map_or(run.publish_secs, |last| {
            last.duration_since(run.started).as_secs_f64()
        })
        .max(f64::EPSILON);
    let lost = expected.saturating_sub(record.distinct);
    let cpu_per_event = cpu.map(|seconds| seconds * 1e6 / record.distinct.max(1) as f64);
    let baseline_per_publish = baseline_cpu.flatten();
    let webhook_extra = cpu_per_event
        .zip(baseline_per_publish)
        .map(|(with, without)| with - without);
    let latency = Percentiles::of(record.latencies_us);
    let report = json!({
        "scenario": "webhooks", "sockets": settings.sockets, "rate": settings.rate,
        "seconds": settings.seconds,
        "published": run.sent, "refused": run.refused, "send_failures": run.send_failures,
        "publishers_closed": run.closed,
        "expected": expected, "received": record.distinct, "lost": lost,
        "duplicates": record.duplicates, "foreign_events": record.foreign,
        "requests": record.requests, "bad_signatures": record.bad_signatures,
        "events_per_sec": record.distinct as f64 / span,
        "requests_per_sec": record.requests as f64 / span,
        "events_per_request": record.events as f64 / record.requests.max(1) as f64,
        "latency_p50_ms": latency.p50_ms(), "latency_p99_ms": latency.p99_ms(),
        "latency_p999_ms": latency.p999_ms(),
        "host_cpu_per_event_us": cpu_per_event,
        "host_cpu_per_publish_without_webhook_us": baseline_per_publish,
        "host_cpu_webhook_extra_per_event_us": webhook_extra,
    });
    eprintln!(
        "webhooks: {} client publishes at {}/s from {} sockets: {}/{expected} events received in {} requests ({:.1} events each), {lost} lost, {} refused, {} duplicates, {} bad signatures; {:.0} events/s, {:.0} requests/s; publish-to-webhook p50 {:.2} ms, p99 {:.2} ms; host CPU {} per event{}",
        run.sent,
        settings.rate,
        settings.sockets,
        record.distinct,
        record.requests,
        record.events as f64 / record.requests.max(1) as f64,
        run.refused,
        record.duplicates,
        record.bad_signatures,
        record.distinct as f64 / span,
        record.requests as f64 / span,
        latency.p50_ms(),
        latency.p99_ms(),
        cpu_per_event.map_or("n/a".to_owned(), |us| format!("{us:.1} µs")),
        webhook_extra.map_or(String::new(), |us| format!(
            " ({us:.1} µs more than a publish without a webhook)"
        )),
    );
    Ok(report)
}

/// Open the publishing sockets of `client`'s app and send `total`
/// publishes at `settings.rate`, spread round-robin over them.
async fn publish(
    client: &Arc<Client>,
    settings: &Settings,
    total: u64,
) -> anyhow::Result<PublishRun> {
    let sockets = settings.sockets.max(1);
    let nodes = client.node_count();
    let tokens: Vec<client::Token> = stream::iter(0..sockets)
        .map(|index| {
            let claims = json!({
                "user_id": format!("bench-publisher-{index}"),
                "publish": [CHANNEL],
            });
            async move { client.issue_claims(index % nodes, &claims).await }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let (opened, _) = client
        .connect_tokens(tokens, settings.concurrency)
        .await
        .context("opening the publishing sockets")?;

    let refusals = Arc::new(Mutex::new(Refusals::default()));
    let mut sinks: Vec<SplitSink<Ws, Message>> = Vec::with_capacity(opened.len());
    let mut readers = Vec::with_capacity(opened.len());
    for opened in opened {
        let (sink, stream) = opened.socket.split();
        sinks.push(sink);
        readers.push(tokio::spawn(read_refusals(stream, refusals.clone())));
    }

    let count = sinks.len();
    if count == 0 {
        bail!("no publishing socket opened");
    }
    let cpu_before = host::cpu_seconds(&settings.host_pids);
    let started = Instant::now();
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate.max(1) as f64));
    let (mut sent, mut send_failures) = (0u64, 0u64);
    for n in 0..total {
        ticks.tick().await;
        let data = json!({ "t": client::now_micros(), "n": n });
        let frame = json!({"type": "publish", "channel": CHANNEL, "event": "tick", "data": data});
        let sink = &mut sinks[(n as usize) % count];
        match sink.send(Message::Text(frame.to_string().into())).await {
            Ok(()) => sent += 1,
            Err(error) => {
                send_failures += 1;
                if send_failures == 1 {
                    eprintln!("webhooks: a publish could not be sent: {error}");
                }
            }
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    // Refusals answer within a round trip; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (refused, closed) = match refusals.lock() {
        Ok(refusals) => (refusals.refused, refusals.closed),
        Err(_) => bail!("a socket reader panicked"),
    };
    for reader in readers {
        reader.abort();
    }
    drop(sinks);
    Ok(PublishRun {
        sent,
        send_failures,
        refused,
        closed,
        cpu_before,
        cpu_seconds: host::cpu_seconds(&settings.host_pids)
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        started,
        publish_secs,
    })
}

/// What one publishing run did.
struct PublishRun {
    sent: u64,
    send_failures: u64,
    refused: u64,
    closed: u64,
    /// Host CPU seconds at the first publish.
    cpu_before: Option<f64>,
    /// Host CPU from the first publish to just after the last.
    cpu_seconds: Option<f64>,
    started: Instant,
    publish_secs: f64,
}

async fn read_refusals(mut stream: SplitStream<Ws>, refusals: Arc<Mutex<Refusals>>) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => {
                let frame = serde_json::from_str::<Value>(text.as_str()).unwrap_or_default();
                if frame["type"] == "error"
                    && let Ok(mut refusals) = refusals.lock()
                {
                    refusals.refused += 1;
                    if refusals.refused == 1 {
                        eprintln!("webhooks: a publish was refused: {}", text.as_str());
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Ok(mut refusals) = refusals.lock() {
        refusals.closed += 1;
    }
}

/// What the receiver saw.
#[derive(Default)]
struct Record {
    /// Which publishes (by `n`) arrived.
    seen: Vec<bool>,
    distinct: u64,
    duplicates: u64,
    /// Events in accepted requests.
    events: u64,
    /// Events that were no client event of this run.
    foreign: u64,
    /// Requests accepted (signature right).
    requests: u64,
    bad_signatures: u64,
    latencies_us: Vec<u64>,
    last_arrival: Option<Instant>,
}

struct Shared {
    key: String,
    secret: String,
    record: Mutex<Record>,
}

/// The webhook receiver: `POST /webhook` on 127.0.0.1.
struct Receiver {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, key: &str, secret: &str, total: u64) -> anyhow::Result<Receiver> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the webhook receiver to {address}"))?;
        eprintln!("webhooks: receiver listening on http://{address}/webhook");
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            secret: secret.to_owned(),
            record: Mutex::new(Record {
                seen: vec![false; total as usize],
                ..Record::default()
            }),
        });
        let app = Router::new()
            .route("/webhook", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("webhooks: the receiver stopped: {error}");
            }
        });
        Ok(Receiver { shared, server })
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.shared.record()
    }

    fn stop(self) {
        self.server.abort();
    }
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        // A panic while holding the lock leaves counts that are still
        // counts: keep them.
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived = Instant::now();
    let now = client::now_micros();
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let signed = header("x-pusher-key") == Some(shared.key.as_str())
        && header("x-pusher-signature") == Some(signature(&shared.secret, &body).as_str());
    let mut record = shared.record();
    if !signed {
        record.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        record.foreign += 1;
        return StatusCode::BAD_REQUEST;
    };
    record.requests += 1;
    record.last_arrival = Some(arrived);
    for event in parsed["events"].as_array().map_or(&[][..], Vec::as_slice) {
        record.events += 1;
        // `data` is the published JSON text: {"t": send micros, "n": seq}.
        let data = event["data"]
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let stamp = data
            .as_ref()
            .and_then(|data| Some((data["t"].as_u64()?, data["n"].as_u64()?)));
        let Some((sent, n)) = stamp.filter(|_| event["name"] == "client_event") else {
            record.foreign += 1;
            continue;
        };
        match record.seen.get_mut(n as usize) {
            Some(seen) if !*seen => {
                *seen = true;
                record.distinct += 1;
                record.latencies_us.push(now.saturating_sub(sent));
            }
            Some(_) => record.duplicates += 1,
            None => record.foreign += 1,
        }
    }
    StatusCode::OK
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
