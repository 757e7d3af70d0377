//! Prometheus metrics, served at `GET /metrics` to holders of the operator
//! token (`operator_token` in the config).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectLabels {
    /// Empty when the request named no known app.
    pub app: String,
    /// `accepted` or the close reason of the refusal.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisconnectLabels {
    pub app: String,
    /// The close reason (`slow_consumer`, `heartbeat_timeout`, ...) or
    /// `client` when the client left.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    pub app: String,
    /// `api` or `socket`.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `header_timeout`, `idle_timeout`, `request_timeout`,
    /// `pending_limit`, `connection_limit` or `fd_limit`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedPublishLabels {
    pub app: String,
    /// The error frame's reason (`rate_limited`, `forbidden`, ...).
    pub reason: String,
}

/// A plugin call's labels are fixed names: counting a call allocates
/// nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: &'static str,
    pub call: &'static str,
    /// `ok` or `failure` (trap, timeout, out of memory).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    pub plugin: &'static str,
    pub call: &'static str,
}

/// Every metric the host keeps. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub sockets_open: Family<AppLabels, Gauge>,
    pub connects: Family<ConnectLabels, Counter>,
    pub disconnects: Family<DisconnectLabels, Counter>,
    pub publishes: Family<PublishLabels, Counter>,
    pub deliveries: Family<AppLabels, Counter>,
    pub history_messages: Gauge,
    pub history_bytes: Gauge,
    pub store_entries: Gauge,
    pub store_disk_bytes: Gauge,
    pub hand_off_backlog: Gauge,
    pub publishes_refused: Family<RefusedPublishLabels, Counter>,
    pub plugin_calls: Family<PluginLabels, Counter>,
    pub plugin_call_seconds: Family<PluginCallLabels, Histogram>,
    pub connections_open: Gauge,
    pub connections_pending: Gauge,
    pub connections_shed: Family<ShedLabels, Counter>,
    pub credential_refusals: Family<OutcomeLabels, Counter>,
    pub plugin_log_lines_dropped: Family<PluginKindLabels, Counter>,
    /// Members (a user in a presence channel) with a socket on this node.
    pub presence_members: Gauge,
    pub webhooks: WebhookMetrics,
}

/// The webhook senders' series, labelled by app only.
pub struct WebhookMetrics {
    pub events_sent: Family<AppLabels, Counter>,
    pub requests_failed: Family<AppLabels, Counter>,
    pub events_dropped: Family<AppLabels, Counter>,
    pub request_seconds: Family<AppLabels, Histogram>,
    pub queue_events: Family<AppLabels, Gauge>,
}

impl WebhookMetrics {
    fn register(registry: &mut Registry) -> WebhookMetrics {
        let metrics = WebhookMetrics {
            events_sent: Family::default(),
            requests_failed: Family::default(),
            events_dropped: Family::default(),
            // 1 ms to ~16 s.
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            queue_events: Family::default(),
        };
        registry.register(
            "webhook_events_sent",
            "Webhook events in requests the receiver accepted (2xx)",
            metrics.events_sent.clone(),
        );
        registry.register(
            "webhook_requests_failed",
            "Webhook requests that failed (connection error, timeout, non-2xx); retried, a 413 in halves",
            metrics.requests_failed.clone(),
        );
        registry.register(
            "webhook_events_dropped",
            "Webhook events dropped: the webhook's queue was full, or the receiver refused the event alone as too large (413)",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "webhook_request_duration_seconds",
            "Duration of webhook requests, failed ones included",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "webhook_queue_events",
            "Webhook events waiting to be sent (not counting the batch in flight)",
            metrics.queue_events.clone(),
        );
        metrics
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginKindLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("madx");
        let sockets_open = Family::<AppLabels, Gauge>::default();
        let connects = Family::<ConnectLabels, Counter>::default();
        let disconnects = Family::<DisconnectLabels, Counter>::default();
        let publishes = Family::<PublishLabels, Counter>::default();
        let deliveries = Family::<AppLabels, Counter>::default();
        let history_messages = Gauge::default();
        let history_bytes = Gauge::default();
        let store_entries = Gauge::default();
        let store_disk_bytes = Gauge::default();
        let hand_off_backlog = Gauge::default();
        let publishes_refused = Family::<RefusedPublishLabels, Counter>::default();
        let plugin_calls = Family::<PluginLabels, Counter>::default();
        let credential_refusals = Family::<OutcomeLabels, Counter>::default();
        let plugin_log_lines_dropped = Family::<PluginKindLabels, Counter>::default();
        let presence_members = Gauge::default();
        registry.register(
            "presence_members",
            "Members of presence channels (a user in a channel) with a socket on this node",
            presence_members.clone(),
        );
        registry.register(
            "plugin_log_lines_dropped",
            "Lines of plugin output not logged: over the rate limit or beyond a call's buffer",
            plugin_log_lines_dropped.clone(),
        );
        registry.register(
            "credential_refusals",
            "Requests refused for their app credentials: wrong, or throttled after too many wrong ones",
            credential_refusals.clone(),
        );
        // 10 µs to ~2.6 s.
        let plugin_call_seconds =
            Family::<PluginCallLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
            });
        let connections_open = Gauge::default();
        let connections_pending = Gauge::default();
        let connections_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "connections_open",
            "Open TCP connections on the listener, WebSockets included",
            connections_open.clone(),
        );
        registry.register(
            "connections_pending",
            "Connections that have not yet sent a complete first request",
            connections_pending.clone(),
        );
        registry.register(
            "connections_shed",
            "Connections closed by the server's connection limits, by reason",
            connections_shed.clone(),
        );
        registry.register(
            "sockets_open",
            "Open WebSockets on this node",
            sockets_open.clone(),
        );
        registry.register(
            "connects",
            "WebSocket connection attempts by outcome (accepted or the refusal reason)",
            connects.clone(),
        );
        registry.register(
            "disconnects",
            "Closed WebSockets by reason",
            disconnects.clone(),
        );
        registry.register(
            "publishes",
            "Messages accepted for publishing",
            publishes.clone(),
        );
        registry.register(
            "deliveries",
            "Messages queued for a socket on this node",
            deliveries.clone(),
        );
        registry.register(
            "history_messages",
            "Messages held in history for recovery",
            history_messages.clone(),
        );
        registry.register(
            "history_bytes",
            "Bytes held in history for recovery, as the history byte budgets count them",
            history_bytes.clone(),
        );
        registry.register(
            "store_entries",
            "Entries in this node's memory or file store (expired ones not yet reclaimed included; 0 with Redis)",
            store_entries.clone(),
        );
        registry.register(
            "store_disk_bytes",
            "Bytes the file store's database takes on disk (0 for the other stores)",
            store_disk_bytes.clone(),
        );
        registry.register(
            "hand_off_backlog",
            "Deliveries accepted on this node and not yet handed to its sockets (0 with Redis)",
            hand_off_backlog.clone(),
        );
        registry.register(
            "publishes_refused",
            "Client publish frames refused, by error reason",
            publishes_refused.clone(),
        );
        registry.register(
            "plugin_calls",
            "Calls into plugin components",
            plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Duration of plugin calls, instantiation included",
            plugin_call_seconds.clone(),
        );
        let webhooks = WebhookMetrics::register(&mut registry);
        Metrics {
            registry,
            webhooks,
            sockets_open,
            connects,
            disconnects,
            publishes,
            deliveries,
            history_messages,
            history_bytes,
            store_entries,
            store_disk_bytes,
            hand_off_backlog,
            publishes_refused,
            plugin_calls,
            plugin_call_seconds,
            connections_open,
            connections_pending,
            connections_shed,
            credential_refusals,
            plugin_log_lines_dropped,
            presence_members,
        }
    }

    /// Plugin output lines that were not logged.
    pub fn plugin_log_lines_dropped(&self, plugin: &str, lines: u64) {
        if lines > 0 {
            self.plugin_log_lines_dropped
                .get_or_create(&PluginKindLabels {
                    plugin: plugin.to_owned(),
                })
                .inc_by(lines);
        }
    }

    /// A request refused for its app credentials (`wrong` or `throttled`).
    pub fn credential_refusal(&self, outcome: &str) {
        self.credential_refusals
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn connection_shed(&self, reason: &str) {
        self.connections_shed
            .get_or_create(&ShedLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn connect(&self, app: &str, outcome: &str) {
        self.connects
            .get_or_create(&ConnectLabels {
                app: app.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn disconnect(&self, app: &str, reason: &str) {
        self.disconnects
            .get_or_create(&DisconnectLabels {
                app: app.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A message accepted (its deliveries are counted as they are handed
    /// out, by [`Metrics::delivered`]).
    pub fn published(&self, app: &str, source: &str) {
        self.publishes
            .get_or_create(&PublishLabels {
                app: app.to_owned(),
                source: source.to_owned(),
            })
            .inc();
    }

    /// Messages queued for sockets on this node.
    pub fn delivered(&self, app: &str, delivered: usize) {
        self.deliveries
            .get_or_create(&AppLabels {
                app: app.to_owned(),
            })
            .inc_by(delivered as u64);
    }

    /// A client publish answered with an error frame.
    pub fn publish_refused(&self, app: &str, reason: &str) {
        self.publishes_refused
            .get_or_create(&RefusedPublishLabels {
                app: app.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn plugin_call(
        &self,
        plugin: &'static str,
        call: &'static str,
        started: Instant,
        ok: bool,
    ) {
        self.plugin_call_seconds
            .get_or_create(&PluginCallLabels { plugin, call })
            .observe(started.elapsed().as_secs_f64());
        self.plugin_calls
            .get_or_create(&PluginLabels {
                plugin,
                call,
                outcome: if ok { "ok" } else { "failure" },
            })
            .inc();
    }

    /// Events queued (`change` > 0) or taken for sending (< 0).
    pub fn webhook_queue_changed(&self, app: &str, change: i64) {
        self.webhooks
            .queue_events
            .get_or_create(&app_labels(app))
            .inc_by(change);
    }

    pub fn webhook_event_dropped(&self, app: &str) {
        self.webhook_events_dropped(app, 1);
    }

    /// Webhook events dropped, `count` at once (the Redis queue's drops).
    pub fn webhook_events_dropped(&self, app: &str, count: u64) {
        self.webhooks
            .events_dropped
            .get_or_create(&app_labels(app))
            .inc_by(count);
    }

    /// One webhook request, accepted (`ok`) or failed.
    pub fn webhook_request(&self, app: &str, took: std::time::Duration, ok: bool) {
        let labels = app_labels(app);
        self.webhooks
            .request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.webhooks.requests_failed.get_or_create(&labels).inc();
        }
    }

    pub fn webhook_events_sent(&self, app: &str, events: usize) {
        self.webhooks
            .events_sent
            .get_or_create(&app_labels(app))
            .inc_by(events as u64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn app_labels(app: &str) -> AppLabels {
    AppLabels {
        app: app.to_owned(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
