//! Configuration: a TOML file, environment variables and command-line flags,
//! resolved into one validated [`Config`]. Flags beat the environment, which
//! beats the file, which beats the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use madx_wire::settings;
use serde::Deserialize;

use crate::plugins::{ComponentSource, PluginConfig, SandboxLimits};

/// The address a fresh install listens on: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Credentials of the demo app used when no app is configured.
pub const DEMO_APP: (&str, &str, &str) = ("demo", "demo-key", "demo-secret");

/// An application the host serves. Tokens, channels and history are scoped
/// to one app; nothing crosses apps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    /// Where this app's back-end is told what happened (`[[apps.webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

// ---- Webhooks ----

/// One webhook of an app: the URL that is POSTed to and the events it
/// wants (see docs/webhooks.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://`.
    pub url: String,
    /// One or more of `channel_occupied`, `channel_vacated`,
    /// `member_added`, `member_removed`, `client_event`.
    pub events: Vec<madx_wire::webhooks::EventKind>,
}

/// How webhooks are sent (the `[webhooks]` table), for every app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Events in one POST.
    pub batch_max: usize,
    /// A request without a complete answer by then has failed.
    pub timeout_ms: u64,
    /// Events waiting per webhook; one more is dropped (and counted).
    pub queue: usize,
    /// MiB of events waiting per webhook (client events carry their data);
    /// past it, new events are dropped as past `queue`.
    pub queue_mib: u64,
    /// The first retry's delay; each failure doubles it, with jitter...
    pub retry_min_ms: u64,
    /// ... up to this.
    pub retry_max_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            batch_max: 50,
            timeout_ms: 5000,
            queue: 10_000,
            queue_mib: 64,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

impl WebhookSettings {
    /// `queue_mib` in bytes.
    pub fn queue_bytes(&self) -> usize {
        usize::try_from(self.queue_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// A webhook's URL is `http://` or `https://` with a host (kept in its
/// normal form: `HTTP:host` becomes `http://host/`), and it asks for at
/// least one event.
fn validate_webhooks(apps: &mut [AppConfig], settings: &WebhookSettings) -> anyhow::Result<()> {
    for app in apps {
        for (index, webhook) in app.webhooks.iter_mut().enumerate() {
            let name = format!("apps[id = {:?}].webhooks[{index}]", app.id);
            let url = reqwest::Url::parse(&webhook.url)
                .map_err(|error| anyhow::anyhow!("{name}.url {:?}: {error}", webhook.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                bail!(
                    "{name}.url must be an http:// or https:// URL with a host, got {:?}",
                    webhook.url
                );
            }
            if webhook.events.is_empty() {
                bail!(
                    "{name}.events must name at least one of: {}",
                    madx_wire::webhooks::EventKind::ALL
                        .map(|kind| kind.name())
                        .join(", ")
                );
            }
            webhook.url = url.into();
        }
    }
    let at_least_one = [
        ("webhooks.batch_max", settings.batch_max as u64),
        ("webhooks.timeout_ms", settings.timeout_ms),
        ("webhooks.queue", settings.queue as u64),
        ("webhooks.queue_mib", settings.queue_mib),
        ("webhooks.retry_min_ms", settings.retry_min_ms),
    ];
    for (name, value) in at_least_one {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if settings.retry_max_ms < settings.retry_min_ms {
        bail!(
            "webhooks.retry_max_ms ({}) must be at least webhooks.retry_min_ms ({})",
            settings.retry_max_ms,
            settings.retry_min_ms
        );
    }
    Ok(())
}

// ---- end of webhooks ----

/// Where tokens, one-time guards and (with Redis) history live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded default: this process only.
    Memory,
    /// One node whose tokens, guards, ids and history survive a restart:
    /// an embedded database in one directory.
    File {
        /// The directory (created when missing; refused when it holds
        /// anything that is not a madx-pusher store).
        path: PathBuf,
    },
    /// A Redis shared by every node of the deployment.
    Redis {
        /// `redis://[user:password@]host:port/db` (`rediss://` is refused
        /// at start-up: this build has no TLS to Redis).
        url: String,
        /// Every key and pub/sub channel starts with `<prefix>:`, so
        /// deployments can share one Redis.
        prefix: String,
    },
    /// A Redis Cluster shared by every node of the deployment, with sharded
    /// pub/sub (Redis 7 or later, or Valkey).
    RedisCluster {
        /// Seed nodes as `redis://[user:password@]host:port` URLs; the
        /// others are discovered.
        seeds: Vec<String>,
        /// As for `Redis`.
        prefix: String,
    },
}

/// How the `file:` store writes to its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileStoreConfig {
    /// How often written data is forced to the disk (fsync). Every write
    /// reaches the operating system before it is acknowledged, so a killed
    /// process loses nothing; a power loss loses at most this window.
    /// 0: every write is forced to the disk before it is acknowledged.
    pub fsync_ms: u64,
    /// Free space the disk must keep: below it new writes are refused
    /// (503 `store_full`, `/readyz` 503) until space returns.
    pub min_free_mib: u64,
    /// Bytes of live keys and values the plugins' store may hold (history
    /// has its own budgets in `[history]`).
    pub max_mib: u64,
}

impl Default for FileStoreConfig {
    fn default() -> Self {
        FileStoreConfig {
            fsync_ms: 1000,
            min_free_mib: 64,
            max_mib: 1024,
        }
    }
}

/// The deployment prefix when none is configured.
pub const DEFAULT_STORE_PREFIX: &str = settings::STORE_PREFIX;

/// Tunable limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest incoming WebSocket frame or message, in bytes.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body of the token API, in bytes.
    pub max_body_bytes: usize,
    /// Largest `data` of one published message (JSON text), in bytes.
    pub max_publish_bytes: usize,
    /// Messages in one `POST /v1/publish/batch`.
    pub max_batch: usize,
    /// Longest channel, user id, access id or event name in a publish.
    pub max_name_bytes: usize,
    /// Entries the in-memory store holds for new tokens (and anything else
    /// plugins write outside of checking a connection string).
    pub max_store_entries: usize,
    /// Entries the in-memory store keeps on top of `max_store_entries` for
    /// one-time guards and failure counters, so a store full of tokens
    /// still lets every valid token connect.
    pub store_reserved_entries: usize,
    /// Channels one socket may be subscribed to at once.
    pub max_subscriptions_per_socket: usize,
    /// Open sockets per token.
    pub max_sockets_per_token: usize,
    /// Open sockets per app on this node.
    pub max_sockets_per_app: usize,
    /// Messages queued for one socket before it is cut off as a slow
    /// consumer (4202).
    pub send_queue: usize,
    /// Refused frames (error frames) a socket may cause within 10 s before
    /// it is closed (4102).
    pub max_frame_errors: u32,
    /// Wrong app secrets for one key from one source address within
    /// `credential_failure_window_secs` before that source is refused (429)
    /// for that key until the window ends.
    pub max_credential_failures: u32,
    pub credential_failure_window_secs: u64,
    /// Client `publish` frames one socket may send per second, sustained
    /// (4308 above it).
    pub client_publish_per_sec: u32,
    /// Client publishes one socket may send at once after a quiet spell.
    pub client_publish_burst: u32,
    /// As `client_publish_per_sec`, for all sockets of one token on this
    /// node together.
    pub token_publish_per_sec: u32,
    /// As `client_publish_burst`, for all sockets of one token on this node.
    pub token_publish_burst: u32,
    /// `subscribe` frames one socket may send per second, sustained (4308
    /// above it): each may cost a router call and a webhook.
    pub client_subscribe_per_sec: u32,
    /// Subscribes one socket may send at once after a quiet spell; unset,
    /// a whole subscription set ([`Limits::subscribe_burst`]).
    pub client_subscribe_burst: Option<u32>,
    /// As `client_subscribe_per_sec`, for all sockets of one token on this
    /// node together.
    pub token_subscribe_per_sec: u32,
    /// As `client_subscribe_burst`, for all sockets of one token; unset,
    /// every socket's whole set ([`Limits::token_subscribe_burst`]).
    pub token_subscribe_burst: Option<u32>,
}

impl Limits {
    /// Subscribes one socket may send at once: `client_subscribe_burst`,
    /// or by default `max_subscriptions_per_socket`, so a page that
    /// subscribes to all it may at once is never slowed down.
    pub fn subscribe_burst(&self) -> u32 {
        self.client_subscribe_burst
            .unwrap_or_else(|| u32::try_from(self.max_subscriptions_per_socket).unwrap_or(u32::MAX))
    }

    /// Subscribes all sockets of one token may send at once:
    /// `token_subscribe_burst`, or by default every socket the token may
    /// open subscribing to all it may (a node's sockets coming back after
    /// a restart).
    pub fn token_subscribe_burst(&self) -> u32 {
        self.token_subscribe_burst.unwrap_or_else(|| {
            let all = self
                .max_subscriptions_per_socket
                .saturating_mul(self.max_sockets_per_token);
            u32::try_from(all).unwrap_or(u32::MAX)
        })
    }

    /// What a published message is checked against.
    pub fn message(&self) -> madx_wire::v1::MessageLimits {
        madx_wire::v1::MessageLimits {
            max_publish_bytes: self.max_publish_bytes,
            max_name_bytes: self.max_name_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: settings::MAX_BODY_BYTES,
            max_publish_bytes: settings::MAX_PUBLISH_BYTES,
            max_batch: settings::MAX_BATCH,
            max_name_bytes: settings::MAX_NAME_BYTES,
            max_store_entries: 1_000_000,
            store_reserved_entries: 200_000,
            max_subscriptions_per_socket: 100,
            max_sockets_per_token: 10,
            max_sockets_per_app: 100_000,
            send_queue: 1024,
            max_frame_errors: 20,
            max_credential_failures: 10,
            credential_failure_window_secs: 60,
            client_publish_per_sec: 20,
            client_publish_burst: 40,
            token_publish_per_sec: 40,
            token_publish_burst: 80,
            client_subscribe_per_sec: 10,
            client_subscribe_burst: None,
            token_subscribe_per_sec: 20,
            token_subscribe_burst: None,
        }
    }
}

/// How much history is kept for recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per stream (a channel, a user's or a token's inbox).
    pub per_stream: usize,
    /// Seconds a message is kept.
    pub ttl_secs: u64,
    /// Messages kept over all streams of all apps.
    pub total: usize,
    /// Bytes of history kept over all apps (see [`history_bytes_default`]).
    pub max_bytes: usize,
    /// Bytes of history kept per app.
    pub max_bytes_per_app: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let max_bytes = history_bytes_default(memory_limit());
        HistoryConfig {
            per_stream: settings::HISTORY_PER_STREAM,
            ttl_secs: settings::HISTORY_TTL_SECS,
            total: 100_000,
            max_bytes,
            max_bytes_per_app: max_bytes,
        }
    }
}

/// Connection-level limits of the HTTP listener (the `[http]` table):
/// what an idle, slow or flooding client can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// From accepting a connection (TLS handshake included) until its first
    /// request's headers are complete. Not reset by bytes that trickle in.
    pub header_timeout_secs: u64,
    /// A keep-alive connection with no request in flight is closed after
    /// this long; the next request's headers must be complete by then.
    pub idle_timeout_secs: u64,
    /// From a request's headers until its response starts (a slow request
    /// body included).
    pub request_timeout_secs: u64,
    /// Connections that have not yet sent a complete first request; beyond
    /// it the oldest of them is closed.
    pub max_pending_connections: usize,
    /// Open connections, WebSockets included. Default and ceiling: the
    /// descriptor limit (`RLIMIT_NOFILE`) minus `fd_reserve`.
    pub max_connections: Option<usize>,
    /// Descriptors kept free of connections for everything else (store,
    /// log, accepting and closing when the table is full).
    pub fd_reserve: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: 10,
            // Longer than the 60 s idle timeout of common load balancers,
            // so they, not this host, close an idle connection first.
            idle_timeout_secs: 75,
            request_timeout_secs: 30,
            max_pending_connections: 1024,
            max_connections: None,
            fd_reserve: 64,
        }
    }
}

/// Presence channels (`[presence]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Channels whose names start with this track their members; empty
    /// turns presence off.
    pub channel_prefix: String,
    /// Members one presence channel holds at most, over the deployment; a
    /// new member over it is refused (4309 `presence_full`).
    pub max_members: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            channel_prefix: madx_wire::presence::CHANNEL_PREFIX.to_owned(),
            max_members: madx_wire::presence::MAX_MEMBERS,
        }
    }
}

/// The file's `[history]` table; the byte budgets default from the machine.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HistoryFile {
    per_stream: usize,
    ttl_secs: u64,
    total: usize,
    max_bytes: Option<usize>,
    max_bytes_per_app: Option<usize>,
}

impl Default for HistoryFile {
    fn default() -> Self {
        HistoryFile {
            per_stream: settings::HISTORY_PER_STREAM,
            ttl_secs: settings::HISTORY_TTL_SECS,
            total: 100_000,
            max_bytes: None,
            max_bytes_per_app: None,
        }
    }
}

/// Smallest default history budget.
const MIN_DEFAULT_HISTORY_BYTES: usize = 16 << 20;
/// Largest default history budget.
const MAX_DEFAULT_HISTORY_BYTES: usize = 1 << 30;
/// Assumed memory when neither /proc/meminfo nor a cgroup says.
const ASSUMED_MEMORY: u64 = 1 << 30;

/// The default global history budget: an eighth of the memory this process
/// may use (`memory`, see [`memory_limit`]), between 16 MiB and 1 GiB.
pub fn history_bytes_default(memory: u64) -> usize {
    usize::try_from(memory / 8)
        .unwrap_or(usize::MAX)
        .clamp(MIN_DEFAULT_HISTORY_BYTES, MAX_DEFAULT_HISTORY_BYTES)
}

/// The default per-app budget: the global one shared by up to four apps
/// (one app may use it all; with four or more, each a quarter), so one
/// app's flood cannot take every other app's history.
fn history_bytes_per_app_default(max_bytes: usize, apps: usize) -> usize {
    max_bytes / apps.clamp(1, 4)
}

/// The memory this process may use: physical memory (`MemTotal` of
/// /proc/meminfo), or the cgroup's limit when that is lower (v2
/// `memory.max`, v1 `memory.limit_in_bytes`); 1 GiB when none is readable.
pub fn memory_limit() -> u64 {
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_total(&text));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    // "max" (v2) or a huge number (v1) mean no limit.
    .filter_map(|text| text.trim().parse::<u64>().ok())
    .min();
    match (physical, cgroup) {
        (Some(physical), Some(cgroup)) => physical.min(cgroup),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => ASSUMED_MEMORY,
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The file's `[plugins]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PluginsFile {
    auth: PluginFile,
    router: PluginFile,
    /// Budget of one plugin call in milliseconds.
    call_timeout_ms: Option<u64>,
    /// Memory cap of one plugin instance in MiB.
    memory_mib: Option<usize>,
    /// Plugin calls running at once.
    max_concurrent_calls: Option<u32>,
    /// Directory where compiled components are kept across restarts.
    compile_cache: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PluginFile {
    /// A `.wasm` component replacing the built-in one.
    path: Option<PathBuf>,
    /// Strings handed to the component through the `settings` import.
    settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    heartbeat_secs: Option<u64>,
    operator_token: Option<String>,
    /// `"memory"` (default), `"file:PATH"`, a `redis://` URL or
    /// `redis-cluster://host:port,...`.
    store: Option<String>,
    store_prefix: Option<String>,
    file_store: FileStoreConfig,
    tls: Option<TlsFile>,
    limits: Limits,
    http: HttpConfig,
    history: HistoryFile,
    presence: PresenceConfig,
    plugins: PluginsFile,
    apps: Vec<AppConfig>,
    webhooks: WebhookSettings,
}

/// Values from flags or environment variables, which override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub auth_component: Option<PathBuf>,
    pub router_component: Option<PathBuf>,
    pub compile_cache: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `ID:KEY:SECRET` triples.
    pub apps: Vec<String>,
    pub operator_token: Option<String>,
    /// `memory`, `file:PATH`, a `redis://` URL or
    /// `redis-cluster://host:port,...`.
    pub store: Option<String>,
    pub store_prefix: Option<String>,
}

/// PEM files for HTTPS and WSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Public base URL (`https://push.example.com`) that `ws_url` is built
    /// from; without it, `ws_url` follows the request's `Host`.
    pub public_url: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Interval of server pings; a socket silent for two intervals is closed.
    pub heartbeat: Duration,
    /// Bearer token that opens `GET /metrics`; metrics are off without it.
    pub operator_token: Option<String>,
    pub store: StoreConfig,
    pub file_store: FileStoreConfig,
    pub limits: Limits,
    pub http: HttpConfig,
    pub history: HistoryConfig,
    pub presence: PresenceConfig,
    pub sandbox: SandboxLimits,
    /// Directory where compiled components are kept, so a restart or a
    /// reload does not compile an unchanged component again.
    pub compile_cache: Option<PathBuf>,
    pub auth: PluginConfig,
    pub router: PluginConfig,
    pub apps: Vec<AppConfig>,
    /// How every app's webhooks are sent. Like the apps, read at start-up
    /// only (a reload swaps plugins, not apps).
    pub webhooks: WebhookSettings,
    /// No app was configured: the demo app with well-known credentials.
    pub demo: bool,
}

impl Config {
    /// Read the file (if any), apply overrides and validate the result.
    pub fn load(overrides: Overrides) -> anyhow::Result<Config> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => ConfigFile::default(),
        };
        Config::resolve(file, overrides)
    }

    /// A configuration file's text, validated as [`Config::load`] does,
    /// without overrides.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let file = toml::from_str(text).context("invalid config file")?;
        Config::resolve(file, Overrides::default())
    }

    fn resolve(file: ConfigFile, overrides: Overrides) -> anyhow::Result<Config> {
        let listen = match overrides.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };

        let public_url = overrides.public_url.or(file.public_url);
        if let Some(url) = &public_url {
            validate_public_url(url)?;
        }

        let tls = match (overrides.tls_cert, overrides.tls_key, file.tls) {
            (Some(cert), Some(key), _) => Some(TlsFiles { cert, key }),
            (None, None, Some(tls)) => Some(TlsFiles {
                cert: tls.cert,
                key: tls.key,
            }),
            (None, None, None) => None,
            _ => bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
        };

        let operator_token = overrides.operator_token.or(file.operator_token);
        if operator_token
            .as_ref()
            .is_some_and(|token| token.len() < 16)
        {
            bail!("operator_token must be at least 16 characters");
        }

        let store = store_config(
            overrides.store.or(file.store),
            overrides.store_prefix.or(file.store_prefix),
        )?;
        let file_store = file.file_store;
        if file_store.max_mib == 0 {
            bail!("file_store.max_mib must be at least 1");
        }

        let heartbeat_secs = file.heartbeat_secs.unwrap_or(25);
        if !(1..=3600).contains(&heartbeat_secs) {
            bail!("heartbeat_secs must be between 1 and 3600, got {heartbeat_secs}");
        }

        let limits = file.limits;
        let min = settings::MIN_BODY_BYTES;
        if limits.max_frame_bytes < min || limits.max_body_bytes < min {
            bail!("limits.max_frame_bytes and limits.max_body_bytes must be at least {min}");
        }
        let at_least_one = [
            ("limits.max_publish_bytes", limits.max_publish_bytes),
            ("limits.max_batch", limits.max_batch),
            ("limits.max_name_bytes", limits.max_name_bytes),
            (
                "limits.max_subscriptions_per_socket",
                limits.max_subscriptions_per_socket,
            ),
            ("limits.max_sockets_per_token", limits.max_sockets_per_token),
            ("limits.max_sockets_per_app", limits.max_sockets_per_app),
            ("limits.send_queue", limits.send_queue),
            (
                "limits.client_publish_per_sec",
                limits.client_publish_per_sec as usize,
            ),
            (
                "limits.client_publish_burst",
                limits.client_publish_burst as usize,
            ),
            (
                "limits.token_publish_per_sec",
                limits.token_publish_per_sec as usize,
            ),
            (
                "limits.token_publish_burst",
                limits.token_publish_burst as usize,
            ),
            (
                "limits.client_subscribe_per_sec",
                limits.client_subscribe_per_sec as usize,
            ),
            (
                "limits.client_subscribe_burst",
                limits
                    .client_subscribe_burst
                    .map_or(1, |burst| burst as usize),
            ),
            (
                "limits.token_subscribe_per_sec",
                limits.token_subscribe_per_sec as usize,
            ),
            (
                "limits.token_subscribe_burst",
                limits
                    .token_subscribe_burst
                    .map_or(1, |burst| burst as usize),
            ),
            ("history.per_stream", file.history.per_stream),
            ("history.total", file.history.total),
            ("history.max_bytes", file.history.max_bytes.unwrap_or(1)),
            (
                "history.max_bytes_per_app",
                file.history.max_bytes_per_app.unwrap_or(1),
            ),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }

        let http = file.http;
        let timeouts = [
            ("http.header_timeout_secs", http.header_timeout_secs),
            ("http.idle_timeout_secs", http.idle_timeout_secs),
            ("http.request_timeout_secs", http.request_timeout_secs),
        ];
        for (name, value) in timeouts {
            if !(1..=3600).contains(&value) {
                bail!("{name} must be between 1 and 3600, got {value}");
            }
        }
        if http.max_pending_connections == 0 || http.max_connections == Some(0) {
            bail!("http.max_pending_connections and http.max_connections must be at least 1");
        }
        if http.fd_reserve < 16 {
            bail!(
                "http.fd_reserve must be at least 16, got {}",
                http.fd_reserve
            );
        }

        let defaults = SandboxLimits::default();
        let sandbox = SandboxLimits {
            call_timeout: file
                .plugins
                .call_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.call_timeout),
            memory_bytes: match file.plugins.memory_mib {
                // A shift would drop the high bits of a huge value silently.
                Some(mib) => mib
                    .checked_mul(1 << 20)
                    .context("plugins.memory_mib is too large")?,
                None => defaults.memory_bytes,
            },
            max_concurrent_calls: file
                .plugins
                .max_concurrent_calls
                .unwrap_or(defaults.max_concurrent_calls),
        };
        if sandbox.call_timeout < Duration::from_millis(10) {
            bail!("plugins.call_timeout_ms must be at least 10");
        }
        if sandbox.memory_bytes < (1 << 20) {
            bail!("plugins.memory_mib must be at least 1");
        }
        if !(1..=10_000).contains(&sandbox.max_concurrent_calls) {
            bail!("plugins.max_concurrent_calls must be between 1 and 10000");
        }

        let compile_cache = overrides.compile_cache.or(file.plugins.compile_cache);
        let auth = plugin_config(overrides.auth_component, file.plugins.auth)?;
        let router = plugin_config(overrides.router_component, file.plugins.router)?;

        let mut apps = file.apps;
        for triple in &overrides.apps {
            apps.push(parse_app_triple(triple)?);
        }
        let demo = apps.is_empty();
        if demo {
            let (id, key, secret) = DEMO_APP;
            apps.push(AppConfig {
                id: id.into(),
                key: key.into(),
                secret: secret.into(),
                webhooks: Vec::new(),
            });
        }
        validate_apps(&apps)?;
        validate_webhooks(&mut apps, &file.webhooks)?;

        let max_bytes = file
            .history
            .max_bytes
            .unwrap_or_else(|| history_bytes_default(memory_limit()));
        let history = HistoryConfig {
            per_stream: file.history.per_stream,
            ttl_secs: file.history.ttl_secs,
            total: file.history.total,
            max_bytes,
            max_bytes_per_app: file
                .history
                .max_bytes_per_app
                .unwrap_or_else(|| history_bytes_per_app_default(max_bytes, apps.len()))
                .min(max_bytes),
        };

        if file.presence.max_members == 0 {
            bail!("presence.max_members must be at least 1");
        }

        Ok(Config {
            presence: file.presence,
            listen,
            public_url,
            tls,
            heartbeat: Duration::from_secs(heartbeat_secs),
            operator_token,
            store,
            file_store,
            limits,
            http,
            history,
            sandbox,
            compile_cache,
            auth,
            router,
            apps,
            webhooks: file.webhooks,
            demo,
        })
    }
}

fn store_config(store: Option<String>, prefix: Option<String>) -> anyhow::Result<StoreConfig> {
    let prefix = prefix.unwrap_or_else(|| DEFAULT_STORE_PREFIX.to_owned());
    settings::check_store_prefix(&prefix).map_err(anyhow::Error::msg)?;
    match store.as_deref() {
        None | Some("memory") => Ok(StoreConfig::Memory),
        Some(file) if file.starts_with("file:") => {
            let path = &file["file:".len()..];
            if path.is_empty() {
                bail!("store \"file:PATH\" needs a directory, e.g. file:/var/lib/madx-pusher");
            }
            Ok(StoreConfig::File { path: path.into() })
        }
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            // Checked here so a typo fails at start-up, not at first use.
            redis::Client::open(url)
                .map_err(|error| anyhow::anyhow!("invalid store URL: {error}"))?;
            Ok(StoreConfig::Redis {
                url: url.to_owned(),
                prefix,
            })
        }
        Some(cluster) if cluster.starts_with(CLUSTER_SCHEME) => Ok(StoreConfig::RedisCluster {
            seeds: cluster_seeds(&cluster[CLUSTER_SCHEME.len()..])?,
            prefix,
        }),
        Some(other) => bail!(
            "store must be \"memory\", \"file:PATH\", a redis:// URL or redis-cluster://host:port,..., got {:?}",
            other.split('@').next_back().unwrap_or_default()
        ),
    }
}

/// `redis-cluster://[user:password@]host:port,host:port,...`
pub(crate) const CLUSTER_SCHEME: &str = "redis-cluster://";

/// The seed nodes of a `redis-cluster://` store, as `redis://` URLs (the
/// credentials, if any, go to every node).
pub(crate) fn cluster_seeds(rest: &str) -> anyhow::Result<Vec<String>> {
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(|host| format!("redis://{credentials}{}", host.trim()))
        .collect();
    for (seed, host) in seeds.iter().zip(hosts.split(',')) {
        let host = host.trim();
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
        if !has_port || host.contains('/') {
            bail!("redis-cluster:// seeds are host:port pairs separated by commas, got {host:?}");
        }
        redis::Client::open(seed.as_str())
            .map_err(|error| anyhow::anyhow!("invalid store URL: seed {host:?}: {error}"))?;
    }
    Ok(seeds)
}

fn read_file(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn plugin_config(path_override: Option<PathBuf>, file: PluginFile) -> anyhow::Result<PluginConfig> {
    let source = match path_override.or(file.path) {
        Some(path) => ComponentSource::File(path),
        None => ComponentSource::BuiltIn,
    };
    Ok(PluginConfig {
        source,
        settings: Arc::new(plugin_settings(file.settings)?),
    })
}

/// A `[plugins.<kind>.settings]` table as the strings the `settings`
/// import hands out: numbers and booleans are converted, anything else is
/// refused.
pub fn plugin_settings(
    table: BTreeMap<String, toml::Value>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    for (name, value) in table {
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            other => bail!(
                "plugin setting {name:?} must be a string, number or boolean, got {}",
                other.type_str()
            ),
        };
        settings.insert(name, text);
    }
    Ok(settings)
}

fn parse_app_triple(triple: &str) -> anyhow::Result<AppConfig> {
    let (id, key, secret) = settings::parse_app(triple).map_err(anyhow::Error::msg)?;
    Ok(AppConfig {
        id: id.into(),
        key: key.into(),
        secret: secret.into(),
        webhooks: Vec::new(),
    })
}

fn validate_apps(apps: &[AppConfig]) -> anyhow::Result<()> {
    settings::check_apps(
        apps.iter()
            .map(|app| (app.id.as_str(), app.key.as_str(), app.secret.as_str())),
    )
    .map_err(anyhow::Error::msg)
}

fn validate_public_url(url: &str) -> anyhow::Result<()> {
    settings::check_public_url(url).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::resolve(toml::from_str(text)?, Overrides::default())
    }

    #[test]
    fn no_app_means_demo_app() {
        let config = parse("").unwrap();
        assert!(config.demo);
        assert_eq!(config.apps[0].id, "demo");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn file_apps_and_plugin_settings() {
        let config = parse(
            r#"
            listen = "127.0.0.1:0"
            [plugins.auth]
            path = "custom.wasm"
            settings = { max_failures = 3, mode = "strict" }
            [[apps]]
            id = "a"
            key = "key-a"
            secret = "secret-a"
            "#,
        )
        .unwrap();
        assert!(!config.demo);
        assert_eq!(
            config.auth.source,
            ComponentSource::File("custom.wasm".into())
        );
        assert_eq!(config.auth.settings.get("max_failures").unwrap(), "3");
        assert_eq!(config.auth.settings.get("mode").unwrap(), "strict");
        assert_eq!(config.router.source, ComponentSource::BuiltIn);
    }

    #[test]
    fn webhooks_are_read_per_app_with_global_tunables() {
        let config = parse(
            r#"
            [webhooks]
            batch_max = 10
            [[apps]]
            id = "a"
            key = "key-a"
            secret = "secret-a"
            [[apps.webhooks]]
            url = "HTTPS://hooks.example.com:443/pusher"
            events = ["channel_occupied", "client_event"]
            "#,
        )
        .unwrap();
        let webhook = &config.apps[0].webhooks[0];
        assert_eq!(webhook.url, "https://hooks.example.com/pusher");
        assert_eq!(
            webhook.events,
            [
                madx_wire::webhooks::EventKind::ChannelOccupied,
                madx_wire::webhooks::EventKind::ClientEvent
            ]
        );
        assert_eq!(config.webhooks.batch_max, 10);
        assert_eq!(config.webhooks.queue, WebhookSettings::default().queue);
        assert!(parse("").unwrap().apps[0].webhooks.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let file: ConfigFile = toml::from_str("listen = \"127.0.0.1:1\"").unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            apps: vec!["x:kx:secret-x-123".into()],
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides).unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.apps[0].secret, "secret-x-123");
    }

    #[test]
    fn the_store_is_memory_unless_a_redis_url_is_given() {
        assert_eq!(parse("").unwrap().store, StoreConfig::Memory);
        let file: ConfigFile =
            toml::from_str("store = \"redis://127.0.0.1:6379/0\"\nstore_prefix = \"a\"").unwrap();
        let overrides = Overrides {
            store_prefix: Some("prod-1".into()),
            ..Overrides::default()
        };
        assert_eq!(
            Config::resolve(file, overrides).unwrap().store,
            StoreConfig::Redis {
                url: "redis://127.0.0.1:6379/0".into(),
                prefix: "prod-1".into(),
            }
        );
    }

    #[test]
    fn a_cluster_store_names_its_seed_nodes() {
        let config =
            parse("store = \"redis-cluster://u:pw@10.0.0.1:7000, 10.0.0.2:7001\"").unwrap();
        assert_eq!(
            config.store,
            StoreConfig::RedisCluster {
                seeds: vec![
                    "redis://u:pw@10.0.0.1:7000".into(),
                    "redis://u:pw@10.0.0.2:7001".into()
                ],
                prefix: DEFAULT_STORE_PREFIX.into(),
            }
        );
    }

    #[test]
    fn history_budgets_default_from_the_machine() {
        let meminfo = "MemTotal:        8046512 kB\nMemFree:  100 kB\n";
        assert_eq!(meminfo_total(meminfo), Some(8_046_512 * 1024));
        assert_eq!(meminfo_total("garbage"), None);
        // An eighth, between 16 MiB and 1 GiB.
        assert_eq!(history_bytes_default(2 << 30), 256 << 20);
        assert_eq!(history_bytes_default(64 << 20), 16 << 20);
        assert_eq!(history_bytes_default(64 << 30), 1 << 30);
        assert!(memory_limit() > 0);

        let one_app = parse("[history]\nmax_bytes = 4000000").unwrap().history;
        assert_eq!(one_app.max_bytes, 4_000_000);
        assert_eq!(one_app.max_bytes_per_app, 4_000_000);
        let two_apps = parse(
            "[history]\nmax_bytes = 4000000\n[[apps]]\nid = \"a\"\nkey = \"ka\"\nsecret = \"secret-a\"\n[[apps]]\nid = \"b\"\nkey = \"kb\"\nsecret = \"secret-b\"",
        )
        .unwrap()
        .history;
        assert_eq!(two_apps.max_bytes_per_app, 2_000_000);
        // A per-app budget above the global one is the global one.
        let capped = parse("[history]\nmax_bytes = 3000000\nmax_bytes_per_app = 9000000")
            .unwrap()
            .history;
        assert_eq!(capped.max_bytes_per_app, 3_000_000);
        let defaults = parse("").unwrap();
        assert_eq!(
            defaults.history.max_bytes,
            history_bytes_default(memory_limit())
        );
        assert_eq!(defaults.limits.client_publish_per_sec, 20);
    }

    #[test]
    fn mistakes_are_reported() {
        let cases = [
            ("lisen = \"127.0.0.1:1\"", "unknown field"),
            (
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"s\"",
                "at least 8",
            ),
            (
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"secret-1\"\n[[apps]]\nid = \"a\"\nkey = \"k2\"\nsecret = \"secret-2\"",
                "appears twice",
            ),
            ("public_url = \"push.example.com\"", "public_url"),
            ("heartbeat_secs = 0", "heartbeat_secs"),
            ("store = \"postgres://db\"", "redis:// URL"),
            ("store = \"redis://:pw@[::1\"", "invalid store URL"),
            ("store = \"rediss://redis.internal:6379/0\"", "TLS"),
            ("store = \"redis-cluster://\"", "host:port pairs"),
            ("store = \"redis-cluster://a:1,b\"", "host:port pairs"),
            ("store = \"redis-cluster://a:1/0\"", "host:port pairs"),
            ("store = \"file:\"", "needs a directory"),
            ("[file_store]\nmax_mib = 0", "file_store.max_mib"),
            ("store_prefix = \"a:b\"", "store_prefix"),
            (
                "[http]\nheader_timeout_secs = 0",
                "http.header_timeout_secs",
            ),
            ("[http]\nmax_connections = 0", "http.max_connections"),
            ("[http]\nfd_reserve = 2", "http.fd_reserve"),
            ("[http]\nidle_secs = 2", "unknown field"),
            ("[history]\nmax_bytes = 0", "history.max_bytes"),
            (
                "[history]\nmax_bytes_per_app = 0",
                "history.max_bytes_per_app",
            ),
            ("[history]\nmax_bytes = -1", "invalid"),
            (
                "[limits]\nclient_publish_per_sec = 0",
                "client_publish_per_sec",
            ),
            ("[limits]\ntoken_publish_burst = 0", "token_publish_burst"),
            (
                "[limits]\nclient_subscribe_burst = 0",
                "client_subscribe_burst",
            ),
            (
                "[limits]\nclient_subscribe_per_sec = 0",
                "client_subscribe_per_sec",
            ),
            (
                "[limits]\ntoken_subscribe_burst = 0",
                "token_subscribe_burst",
            ),
            (
                "[plugins]\nmemory_mib = 17592186044417",
                "memory_mib is too large",
            ),
            (
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"secret-1\"\n[[apps.webhooks]]\nurl = \"ftp://x\"\nevents = [\"client_event\"]",
                "apps[id = \"a\"].webhooks[0].url must be an http:// or https:// URL",
            ),
            (
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"secret-1\"\n[[apps.webhooks]]\nurl = \"not a url\"\nevents = [\"client_event\"]",
                "apps[id = \"a\"].webhooks[0].url \"not a url\"",
            ),
            (
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"secret-1\"\n[[apps.webhooks]]\nurl = \"http://x\"\nevents = [\"nope\"]",
                "unknown variant `nope`, expected one of `channel_occupied`",
            ),
            (
                "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"secret-1\"\n[[apps.webhooks]]\nurl = \"http://x\"\nevents = []",
                "events must name at least one of: channel_occupied, channel_vacated",
            ),
            ("[webhooks]\nqueue = 0", "webhooks.queue must be at least 1"),
            (
                "[webhooks]\nqueue_mib = 0",
                "webhooks.queue_mib must be at least 1",
            ),
            (
                "[webhooks]\nretry_min_ms = 10\nretry_max_ms = 5",
                "webhooks.retry_max_ms (5) must be at least",
            ),
            ("[webhooks]\nbatch = 5", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = match toml::from_str::<ConfigFile>(text) {
                Err(error) => error.to_string(),
                Ok(file) => format!(
                    "{:#}",
                    Config::resolve(file, Overrides::default()).unwrap_err()
                ),
            };
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }
}
