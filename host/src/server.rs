//! Start-up and shutdown: load the plugins, bind the listener (plain or
//! TLS), serve until a shutdown signal, then close sockets with 4200.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use madx_wire::broker::Keys;
use madx_wire::close::CloseCode;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::config::{Config, StoreConfig, TlsFiles};
use crate::connections::{ConnectionLimits, Connections};
use crate::data_dir::DataDir;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::plugins::{Plugins, Sandbox};
use crate::presence::{Change, Presence, RedisMembership};
use crate::redis_link::RedisLink;
use crate::state::{AppState, Parts};
use crate::store::{FileStore, MemoryStore, RedisStore, StoreBackend};
use crate::webhooks::{Event, Relay, Webhooks};
use crate::{Boxed, api, gateway};

/// Start-up stopped because a configured component cannot be used (missing
/// file, not a component, does not fit its world): an operator's mistake,
/// like a bad configuration value, so the process exits with status 2.
#[derive(Debug, Clone, Copy)]
pub struct ComponentRejected;

impl std::fmt::Display for ComponentRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a configured component cannot be used")
    }
}

/// How long open connections get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long queued webhook events get to reach their receivers after the
/// sockets are closed; what is left then is lost with the process.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(2);

/// A host with its plugins loaded and its port bound, not yet serving.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    connections: Arc<Connections>,
    state: Arc<AppState>,
}

impl Server {
    /// Load everything the configuration names; any problem (a component
    /// that does not fit its world, a port in use, unreadable TLS files) is
    /// an error here, before anything is served.
    pub fn bind(config: Config) -> Boxed<'static, anyhow::Result<Server>> {
        Box::pin(Server::load(config))
    }

    async fn load(config: Config) -> anyhow::Result<Server> {
        let metrics = Arc::new(Metrics::new());
        let (store, hub, broker, shared) = match &config.store {
            StoreConfig::Memory => {
                let hub = Hub::new();
                let broker = MemoryBroker::start(hub.clone(), config.history, metrics.clone());
                let store = MemoryStore::start(
                    config.limits.max_store_entries,
                    config.limits.store_reserved_entries,
                );
                (
                    StoreBackend::Memory(store),
                    hub,
                    Broker::Memory(broker),
                    None,
                )
            }
            StoreConfig::File { path } => {
                let dir = DataDir::open(path, config.file_store)?;
                let hub = Hub::new();
                let broker = MemoryBroker::start_durable(
                    hub.clone(),
                    config.history,
                    metrics.clone(),
                    dir.clone(),
                )
                .with_context(|| format!("cannot read the history in {}", path.display()))?;
                let store = FileStore::start(
                    dir,
                    config.limits.max_store_entries,
                    config.limits.store_reserved_entries,
                    usize::try_from(config.file_store.max_mib.saturating_mul(1 << 20))
                        .unwrap_or(usize::MAX),
                )
                .with_context(|| format!("cannot read the store in {}", path.display()))?;
                tracing::info!(
                    path = %path.display(),
                    entries = store.entries(),
                    fsync_ms = config.file_store.fsync_ms,
                    "file store open"
                );
                (StoreBackend::File(store), hub, Broker::Memory(broker), None)
            }
            StoreConfig::Redis { url, prefix } => {
                shared_redis(RedisLink::single(url)?, prefix, &config, &metrics)
            }
            StoreConfig::RedisCluster { seeds, prefix } => shared_redis(
                RedisLink::cluster(seeds.clone())?,
                prefix,
                &config,
                &metrics,
            ),
        };
        let presence = Presence::start(
            config.presence.clone(),
            hub.clone(),
            store.clone(),
            metrics.clone(),
            shared
                .clone()
                .map(|(connection, keys)| RedisMembership::new(connection, &keys, hub.node_tag())),
        );
        let sandbox = Sandbox::new(
            config.sandbox,
            config.compile_cache.as_deref(),
            metrics.clone(),
        )?;
        let plugins = Plugins::load(&sandbox, store.clone(), &config.auth, &config.router)
            .context(ComponentRejected)?;

        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(files).with_context(|| {
                format!(
                    "cannot load TLS certificate {} and key {}",
                    files.cert.display(),
                    files.key.display()
                )
            })?),
            None => None,
        };

        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let limits = ConnectionLimits::resolve(&config.http);
        tracing::info!(
            max_connections = limits.max_connections,
            max_pending = limits.max_pending,
            "connection limits"
        );
        let connections = Connections::new(limits, metrics.clone());
        let webhooks = Webhooks::start(&config.apps, config.webhooks, metrics.clone())
            .context("cannot set up the webhooks' HTTP client")?;
        match shared {
            // One order for the deployment's decisions: through Redis.
            Some((connection, keys)) => Relay::start(
                connection,
                &keys,
                hub.node_tag(),
                config.apps.iter().map(|app| app.id.clone()),
                config.webhooks.queue,
                webhooks.clone(),
                metrics.clone(),
            ),
            // One node decides everything itself.
            None => {
                let sink = webhooks.clone();
                presence.listen(Box::new(move |change| {
                    let (app, event) = webhook_event(change);
                    sink.emit(&app, event);
                }));
            }
        }

        let state = Arc::new(AppState::new(
            config,
            sandbox,
            plugins,
            Parts {
                store,
                hub,
                broker: Arc::new(broker),
                presence,
                webhooks,
            },
            metrics,
        ));
        Ok(Server {
            listener,
            local_addr,
            tls,
            connections,
            state,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://` or `https://` and the bound address.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The shared state (for the start-up banner).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serve until `shutdown` resolves, then ask every socket to reconnect
    /// elsewhere (4200) and drain connections for a grace period.
    /// (`shutdown` is boxed too: a generic parameter would make the caller
    /// compile `serve` again, see [`Boxed`].)
    pub fn serve(self, shutdown: Boxed<'static, ()>) -> Boxed<'static, anyhow::Result<()>> {
        Box::pin(self.serve_until(shutdown))
    }

    async fn serve_until(self, shutdown: Boxed<'static, ()>) -> anyhow::Result<()> {
        let websocket = Router::new().route("/v1/ws", get(gateway::upgrade));
        let app = api::router(self.state.clone(), websocket);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let hub = self.state.hub.clone();
        tokio::spawn(async move {
            shutdown.await;
            // Each session hands off what is queued, and sends what it was
            // given, before it closes (Session::finish).
            let closing = hub.close_all(CloseCode::GoingAway);
            tracing::info!(closing, "shutting down");
            let _ = stop.send(true);
            // Keep the sender: a dropped one would also read as "stop".
            std::future::pending::<()>().await;
        });

        tokio::spawn(reload_on_hangup(self.state.clone()));
        let hub = self.state.hub.clone();
        self.listener
            .set_nonblocking(true)
            .context("cannot make the listener non-blocking")?;
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .context("cannot register the listener")?;
        self.connections
            .serve(listener, self.tls, app, stopped, SHUTDOWN_GRACE)
            .await;
        // Upgraded sockets live outside the HTTP connections' bookkeeping:
        // let them finish their close handshakes before the runtime stops.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while hub.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Last: closing sockets may have queued webhook events (vacated,
        // member_removed), and retiring decides the rest.
        self.state.presence.retire().await;
        let lost = self.state.webhooks.flush(WEBHOOK_FLUSH).await;
        if lost > 0 {
            tracing::warn!(lost, "webhook events still undelivered at exit are lost");
        }
        // A graceful stop loses nothing, whatever the fsync window.
        let store = self.state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.sync()).await;
        Ok(())
    }
}

/// What a node on a shared Redis (one server or a cluster) is made of: the
/// store, hub and broker, and the link and names presence and the webhook
/// relay share.
fn shared_redis(
    link: RedisLink,
    prefix: &str,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> (StoreBackend, Arc<Hub>, Broker, Option<(RedisLink, Keys)>) {
    let (hub, broker) = RedisBroker::start(link.clone(), prefix, config.history, metrics.clone());
    let store = RedisStore::new(link.clone(), prefix);
    let keys = link.keys(prefix);
    (
        StoreBackend::Redis(Arc::new(store)),
        hub,
        Broker::Redis(broker),
        Some((link, keys)),
    )
}

/// A deployment-wide decision of presence as the webhooks report it.
fn webhook_event(change: Change) -> (String, Event) {
    match change {
        Change::Occupied { app, channel } => (app, Event::ChannelOccupied { channel }),
        Change::Vacated { app, channel } => (app, Event::ChannelVacated { channel }),
        Change::MemberAdded {
            app,
            channel,
            user_id,
        } => (app, Event::MemberAdded { channel, user_id }),
        Change::MemberRemoved {
            app,
            channel,
            user_id,
        } => (app, Event::MemberRemoved { channel, user_id }),
    }
}

/// The rustls acceptor for the configured PEM files. HTTP/2 and HTTP/1.1
/// are offered by ALPN, as before.
fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow::anyhow!("{}: {error}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate found", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(Path::new(&files.key))
        .map_err(|error| anyhow::anyhow!("{}: {error}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// `SIGHUP` reloads the plugin components.
async fn reload_on_hangup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reloading needs POST /admin/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(error) = state.reload_plugins().await {
                tracing::error!("plugin reload refused, the running components stay: {error:#}");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}
