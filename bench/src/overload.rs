//! Overload: publishes outrun some subscribers. Those that stall are cut
//! off by the server (4202) and come back as a real client would: a fresh
//! code, `last_id` on connect and `since` on subscribe. At the end every
//! subscriber must hold every message; the report counts what is missing.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Client, Token, Ws};

const CHANNEL: &str = "bench";
/// How long a subscriber may wait for its next frame before giving up.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Settings {
    pub subscribers: usize,
    /// How many of them stop reading for `stall` right after subscribing.
    pub stalled: usize,
    pub stall: Duration,
    pub rate: u64,
    pub seconds: u64,
    pub padding: usize,
}

/// What one subscriber ended with.
#[derive(Default)]
struct Tally {
    received: BTreeSet<u64>,
    duplicates: u64,
    cut_off: u64,
    incomplete_recoveries: u64,
    failure: Option<String>,
}

pub async fn run(client: &Arc<Client>, settings: &Settings) -> anyhow::Result<Value> {
    let tokens = client
        .issue_many(settings.subscribers, 64, Some(CHANNEL))
        .await?;
    let total = settings.rate * settings.seconds;
    let mut tasks = Vec::with_capacity(tokens.len());
    for (index, token) in tokens.into_iter().enumerate() {
        let stall = (index < settings.stalled).then_some(settings.stall);
        let mut socket = client
            .open_with(&token, &client::current_code(&token.seed, 0)?, None)
            .await?;
        client::subscribe(&mut socket, CHANNEL, None).await?;
        let client = Arc::clone(client);
        tasks.push(tokio::spawn(async move {
            subscriber(&client, token, socket, stall, total).await
        }));
    }

    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate as f64));
    for n in 0..total {
        ticks.tick().await;
        client.publish(n, None, settings.padding).await?;
    }
    // The sentinel: a subscriber that has it (and everything before) is done.
    client.publish(total, None, 0).await?;

    let (mut lost, mut duplicates, mut cut_off, mut incomplete, mut failed) = (0, 0, 0, 0, 0);
    for task in tasks {
        let tally = task.await.context("subscriber task")?;
        lost += (0..total).filter(|n| !tally.received.contains(n)).count() as u64;
        duplicates += tally.duplicates;
        cut_off += tally.cut_off;
        incomplete += tally.incomplete_recoveries;
        if let Some(failure) = tally.failure {
            failed += 1;
            eprintln!("overload: a subscriber failed: {failure}");
        }
    }
    eprintln!(
        "overload: {} subscribers ({} stalled {:.1} s), {total} publishes at {}/s of {} B: {cut_off} cut off (4202) and recovered, {lost} lost, {duplicates} duplicates, {incomplete} incomplete recoveries, {failed} failed",
        settings.subscribers,
        settings.stalled,
        settings.stall.as_secs_f64(),
        settings.rate,
        settings.padding,
    );
    Ok(json!({
        "scenario": "overload", "subscribers": settings.subscribers,
        "stalled": settings.stalled, "stall_secs": settings.stall.as_secs_f64(),
        "rate": settings.rate, "published": total, "padding_bytes": settings.padding,
        "cut_off": cut_off, "lost": lost, "duplicates": duplicates,
        "incomplete_recoveries": incomplete, "failed_subscribers": failed,
    }))
}

/// Read until the sentinel, reconnecting after every 4202.
async fn subscriber(
    client: &Client,
    token: Token,
    mut socket: Ws,
    stall: Option<Duration>,
    total: u64,
) -> Tally {
    let mut tally = Tally::default();
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    let mut used_steps = HashSet::from([current_step()]);
    let mut last_id: Option<String> = None;
    loop {
        match read(&mut socket, &mut tally, &mut last_id, total).await {
            Ok(Ending::Done) => return tally,
            Ok(Ending::CutOff) => {
                tally.cut_off += 1;
                match reconnect(client, &token, &mut used_steps, last_id.as_deref()).await {
                    Ok((fresh, complete)) => {
                        socket = fresh;
                        if !complete {
                            tally.incomplete_recoveries += 1;
                        }
                    }
                    Err(error) => {
                        tally.failure = Some(format!("reconnect: {error:#}"));
                        return tally;
                    }
                }
            }
            Err(error) => {
                tally.failure = Some(format!("{error:#}"));
                return tally;
            }
        }
    }
}

enum Ending {
    /// The sentinel arrived.
    Done,
    /// Closed with 4202.
    CutOff,
}

async fn read(
    socket: &mut Ws,
    tally: &mut Tally,
    last_id: &mut Option<String>,
    total: u64,
) -> anyhow::Result<Ending> {
    loop {
        let message = timeout(PATIENCE, socket.next())
            .await
            .context("no frame in time")?
            .context("closed without a close frame")??;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(Some(frame)) if u16::from(frame.code) == 4202 => {
                return Ok(Ending::CutOff);
            }
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => continue,
        };
        let frame: Value = serde_json::from_str(text.as_str())?;
        // Anything else is the error frame before a close.
        if frame["type"] == "message" {
            let n = frame["data"]["n"].as_u64().context("message without n")?;
            if !tally.received.insert(n) {
                tally.duplicates += 1;
            }
            *last_id = frame["id"].as_str().map(str::to_owned);
            if n == total {
                return Ok(Ending::Done);
            }
        }
    }
}

/// A new socket with an unused code of the window, recovering after
/// `last_id`, subscribed again with `since`; and whether the server said
/// the channel's recovery was complete.
async fn reconnect(
    client: &Client,
    token: &Token,
    used_steps: &mut HashSet<i64>,
    last_id: Option<&str>,
) -> anyhow::Result<(Ws, bool)> {
    let now = current_step();
    let step = [now, now + 1, now - 1]
        .into_iter()
        .find(|step| !used_steps.contains(step))
        .context("every code of this window is used")?;
    used_steps.insert(step);
    let code = client::current_code(&token.seed, step - now)?;
    let mut socket = client.open_with(token, &code, last_id).await?;
    let answer = client::subscribe(&mut socket, CHANNEL, last_id).await?;
    Ok((socket, !answer.contains("\"recovered\":false")))
}

fn current_step() -> i64 {
    (client::now_micros() / 30_000_000) as i64
}
