//! Calls into the router component.

use std::sync::Arc;

use super::bindings::router::{RouterPlugin as RouterWorld, RouterPluginPre};
use super::bindings::{Claims, RouteError};
use super::{PluginConfig, PluginFailure, PluginKind, PluginSettings, Sandbox};
use crate::store::{Namespace, StoreBackend};

/// What a router call gives back: the plugin's decision, or a failure of
/// the plugin itself.
pub type RouteResult<T> = Result<Result<T, RouteError>, PluginFailure>;

/// The loaded router component.
pub struct RouterPlugin {
    sandbox: Arc<Sandbox>,
    pre: RouterPluginPre<super::HostState>,
    store: StoreBackend,
    settings: PluginSettings,
    name: String,
}

impl RouterPlugin {
    pub(super) fn load(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        config: &PluginConfig,
    ) -> anyhow::Result<RouterPlugin> {
        let kind = PluginKind::Router;
        let name = config.source.describe(kind);
        let linker = sandbox.linker(|linker| {
            RouterWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |state| state)
        })?;
        let pre = sandbox.load(kind, &config.source, &linker)?;
        let pre = RouterPluginPre::new(pre).map_err(|error| {
            anyhow::anyhow!(
                "the {name} does not export madx:pusher/router@0.1.0 as the router-plugin world requires: {error}"
            )
        })?;
        Ok(RouterPlugin {
            sandbox: sandbox.clone(),
            pre,
            store,
            settings: config.settings.clone(),
            name,
        })
    }

    /// How logs name this component.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// May a connection holding `claims` subscribe to `channel`?
    pub async fn authorize_subscribe(
        &self,
        app_id: &str,
        claims: &Claims,
        channel: &str,
    ) -> RouteResult<()> {
        let call = "authorize-subscribe";
        let namespace = Namespace::new(self.store.clone(), app_id, PluginKind::Router.as_str());
        let (mut store, _slot) = self.sandbox.store(namespace, self.settings.clone()).await;
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))?;
        instance
            .madx_pusher_router()
            .call_authorize_subscribe(&mut store, claims, channel)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))
    }
}
