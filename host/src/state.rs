//! What every request handler shares.

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::Broker;
use crate::config::{AppConfig, Config};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::store::StoreBackend;

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

/// Shared by every handler; cheap to clone behind an `Arc`.
pub struct AppState {
    pub config: Config,
    pub apps: Apps,
    pub plugins: Plugins,
    pub store: StoreBackend,
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
}
