//! What every request handler shares.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::broker::{Broker, BrokerError};
use crate::config::{AppConfig, Config};
use crate::hub::Hub;
use crate::limits::{CredentialThrottle, FrameRates};
use crate::metrics::Metrics;
use crate::plugins::{Plugins, Sandbox};
use crate::presence::Presence;
use crate::store::StoreBackend;
use crate::webhooks::Webhooks;

/// One served application.
pub type App = AppConfig;

/// The configured apps, by API key and by id.
pub struct Apps {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
}

impl Apps {
    pub fn new(apps: &[AppConfig]) -> Apps {
        let apps: Vec<Arc<App>> = apps.iter().cloned().map(Arc::new).collect();
        Apps {
            by_key: apps
                .iter()
                .map(|app| (app.key.clone(), app.clone()))
                .collect(),
            by_id: apps
                .iter()
                .map(|app| (app.id.clone(), app.clone()))
                .collect(),
        }
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<App>> {
        self.by_key.get(key).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.by_id.get(id).cloned()
    }

    /// The app, when exactly one is served.
    pub fn only(&self) -> Option<Arc<App>> {
        match self.by_id.values().next() {
            Some(app) if self.by_id.len() == 1 => Some(app.clone()),
            _ => None,
        }
    }
}

/// What a node keeps and moves its data with: one store, hub, broker and
/// presence, all on one node's memory or all on one Redis.
pub struct Parts {
    pub store: StoreBackend,
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    pub presence: Arc<Presence>,
    pub webhooks: Arc<Webhooks>,
}

/// Shared by every handler; cheap to clone behind an `Arc`.
pub struct AppState {
    pub config: Config,
    pub apps: Apps,
    /// The loaded components; swapped whole by a reload, so a call in
    /// flight finishes on the components it started with.
    plugins: ArcSwap<Plugins>,
    sandbox: Arc<Sandbox>,
    pub store: StoreBackend,
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    /// Presence channels' members, and occupied/vacated decisions.
    pub presence: Arc<Presence>,
    pub metrics: Arc<Metrics>,
    /// Wrong app secrets per (key, source).
    pub credential_throttle: CredentialThrottle,
    /// Client publish rate limits (per socket, per token on this node).
    pub frame_rates: Arc<FrameRates>,
    /// The apps' webhooks: `emit` queues an event for those that want it.
    /// Built at start-up with the apps, which a reload does not change.
    pub webhooks: Arc<Webhooks>,
}

impl AppState {
    pub fn new(
        config: Config,
        sandbox: Arc<Sandbox>,
        plugins: Plugins,
        parts: Parts,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            credential_throttle: CredentialThrottle::new(
                config.limits.max_credential_failures,
                std::time::Duration::from_secs(config.limits.credential_failure_window_secs),
            ),
            apps: Apps::new(&config.apps),
            frame_rates: FrameRates::new(&config.limits),
            config,
            plugins: ArcSwap::from_pointee(plugins),
            sandbox,
            store: parts.store,
            hub: parts.hub,
            broker: parts.broker,
            presence: parts.presence,
            webhooks: parts.webhooks,
            metrics,
        }
    }

    /// Can this node take new tokens, connections and publishes? With
    /// Redis, not while it is unreachable: accepting then would promise
    /// what the node cannot keep.
    pub fn ready(&self) -> Result<(), BrokerError> {
        self.broker.is_ready()
    }

    /// The components serving calls now.
    pub fn plugins(&self) -> Arc<Plugins> {
        self.plugins.load_full()
    }

    /// Load the configured component files again and, if both load and fit
    /// their worlds, serve every new call with them. On error the running
    /// components stay. Open sockets are not touched either way.
    pub async fn reload_plugins(self: &Arc<Self>) -> anyhow::Result<()> {
        let state = Arc::clone(self);
        // Compiling takes a while: keep it off the async workers.
        let fresh = tokio::task::spawn_blocking(move || {
            Plugins::load(
                &state.sandbox,
                state.store.clone(),
                &state.config.auth,
                &state.config.router,
            )
        })
        .await??;
        tracing::info!(
            auth = fresh.auth.name(),
            router = fresh.router.name(),
            "plugins reloaded"
        );
        self.plugins.store(Arc::new(fresh));
        Ok(())
    }
}
