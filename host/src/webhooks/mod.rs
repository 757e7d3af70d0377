//! Signed webhooks: the app's back-end told, in Pusher's format, that a
//! channel was occupied or vacated, a member added or removed, or a client
//! published (docs/webhooks.md).
//!
//! Each configured webhook (an app's `[[apps.webhooks]]` entry) is a
//! *target* with its own bounded, ordered [`queue`] and its own [`sender`]
//! task. [`Webhooks::emit`] only appends to the queues of the targets that
//! want the event, so a slow or dead receiver holds up nothing but its own
//! sender. The webhooks are built once at start-up: a reload swaps the
//! plugins, not the apps, so webhooks change with a restart only.

mod queue;
mod relay;
mod sender;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use madx_wire::webhooks::{Event, EventKind};
pub use relay::Relay;

use crate::config::{AppConfig, WebhookSettings};
use crate::metrics::Metrics;
use queue::{Pushed, Queue};

/// Every app's webhooks, each with its queue and sender task.
pub struct Webhooks {
    /// The targets of each app that has any.
    by_app: HashMap<String, Vec<Arc<Target>>>,
    metrics: Arc<Metrics>,
}

/// One webhook of one app.
struct Target {
    app_id: String,
    app_key: String,
    app_secret: String,
    url: String,
    wants: Vec<EventKind>,
    queue: Queue,
}

impl Target {
    /// Queue the event, or count (and now and then log) its drop.
    fn offer(&self, event: Event, metrics: &Metrics) {
        match self.queue.push(event) {
            Pushed::Queued => metrics.webhook_queue_changed(&self.app_id, 1),
            Pushed::Dropped { log } => {
                metrics.webhook_event_dropped(&self.app_id);
                if let Some(dropped) = log {
                    tracing::warn!(
                        app = %self.app_id,
                        url = %self.url,
                        dropped,
                        "webhook queue full: new events are dropped until the receiver catches up"
                    );
                }
            }
        }
    }
}

impl Webhooks {
    /// Start one sender task per configured webhook (on the current tokio
    /// runtime). Fails only when the HTTP client cannot be set up.
    pub fn start(
        apps: &[AppConfig],
        settings: WebhookSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Webhooks>> {
        let mut by_app: HashMap<String, Vec<Arc<Target>>> = HashMap::new();
        let has_webhooks = apps.iter().any(|app| !app.webhooks.is_empty());
        // No client (and its TLS roots) for a deployment without webhooks.
        let client = has_webhooks
            .then(|| sender::http_client(Duration::from_millis(settings.timeout_ms)))
            .transpose()?;
        for app in apps {
            for webhook in &app.webhooks {
                let target = Arc::new(Target {
                    app_id: app.id.clone(),
                    app_key: app.key.clone(),
                    app_secret: app.secret.clone(),
                    url: webhook.url.clone(),
                    wants: webhook.events.clone(),
                    queue: Queue::new(settings.queue, settings.queue_bytes()),
                });
                if let Some(client) = &client {
                    tokio::spawn(sender::run(
                        target.clone(),
                        client.clone(),
                        settings,
                        metrics.clone(),
                    ));
                }
                by_app.entry(app.id.clone()).or_default().push(target);
            }
        }
        Ok(Arc::new(Webhooks { by_app, metrics }))
    }

    /// No webhook at all: every event is ignored.
    pub fn none(metrics: Arc<Metrics>) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            by_app: HashMap::new(),
            metrics,
        })
    }

    /// Whether any webhook of the app wants events of this kind: lets a
    /// caller skip building an event nobody will be sent.
    pub fn wants(&self, app_id: &str, kind: EventKind) -> bool {
        self.targets(app_id)
            .iter()
            .any(|target| target.wants.contains(&kind))
    }

    /// Never blocks, never awaits: queues the event for every webhook of
    /// the app that wants it. A full queue drops the event (counted in
    /// `madx_webhook_events_dropped_total`, logged at most every few
    /// seconds).
    pub fn emit(&self, app_id: &str, event: Event) {
        let kind = event.kind();
        for target in self.targets(app_id) {
            if target.wants.contains(&kind) {
                target.offer(event.clone(), &self.metrics);
            }
        }
    }

    /// Events queued or in flight, over every webhook.
    pub fn undelivered(&self) -> usize {
        self.by_app
            .values()
            .flatten()
            .map(|target| target.queue.undelivered())
            .sum()
    }

    /// On shutdown: wait until every queued event is delivered, at most
    /// `within`. What is still undelivered then is lost with the process;
    /// the number is returned.
    pub async fn flush(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let undelivered = self.undelivered();
            if undelivered == 0 || tokio::time::Instant::now() >= deadline {
                return undelivered;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn targets(&self, app_id: &str) -> &[Arc<Target>] {
        self.by_app
            .get(app_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
