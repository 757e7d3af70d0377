//! Calls into the router component.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::router::{RouterPlugin as RouterWorld, RouterPluginPre};
use super::bindings::{Claims, ClientPublication, RouteError, RouteTarget};
use super::{HostState, PluginConfig, PluginCore, PluginFailure, PluginKind, Sandbox};
use crate::store::StoreBackend;

/// What a router call gives back: the plugin's decision, or a failure of
/// the plugin itself.
pub type RouteResult<T> = Result<Result<T, RouteError>, PluginFailure>;

/// The loaded router component.
pub struct RouterPlugin {
    core: PluginCore,
    pre: RouterPluginPre<HostState>,
}

impl RouterPlugin {
    pub fn load(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        config: &PluginConfig,
    ) -> anyhow::Result<RouterPlugin> {
        let component = sandbox.compile(PluginKind::Router, &config.source)?;
        Self::from_compiled(sandbox, store, config, &component)
    }

    /// Like [`RouterPlugin::load`], with the configured component already
    /// compiled by [`Sandbox::compile`].
    pub fn from_compiled(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        config: &PluginConfig,
        component: &Component,
    ) -> anyhow::Result<RouterPlugin> {
        let (core, pre) = PluginCore::load(sandbox, PluginKind::Router, store, config, component)?;
        let pre = RouterPluginPre::new(pre).map_err(|error| core.missing_export(error))?;
        Ok(RouterPlugin { core, pre })
    }

    /// How logs name this component.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// May a connection holding `claims` subscribe to `channel`?
    pub async fn authorize_subscribe(
        &self,
        app_id: &str,
        claims: &Claims,
        channel: &str,
    ) -> RouteResult<()> {
        self.call(app_id, "authorize-subscribe", async |router, store| {
            router
                .madx_pusher_router()
                .call_authorize_subscribe(store, claims, channel)
                .await
        })
        .await
    }

    /// May a connection holding `claims` publish `event` to `channel`, and
    /// as what?
    pub async fn authorize_publish(
        &self,
        app_id: &str,
        claims: &Claims,
        channel: &str,
        event: &str,
    ) -> RouteResult<ClientPublication> {
        self.call(app_id, "authorize-publish", async |router, store| {
            router
                .madx_pusher_router()
                .call_authorize_publish(store, claims, channel, event)
                .await
        })
        .await
    }

    /// The targets an app's publish to `target` reaches.
    pub async fn route_publish(
        &self,
        app_id: &str,
        target: &RouteTarget,
        event: &str,
    ) -> RouteResult<Vec<RouteTarget>> {
        self.call(app_id, "route-publish", async |router, store| {
            router
                .madx_pusher_router()
                .call_route_publish(store, target, event)
                .await
        })
        .await
    }

    /// One call of the router world on a fresh instance.
    async fn call<T>(
        &self,
        app_id: &str,
        call: &'static str,
        invoke: impl AsyncFnOnce(&RouterWorld, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginFailure> {
        let instantiate =
            async |store: &mut Store<HostState>| self.pre.instantiate_async(store).await;
        self.core.call(app_id, call, instantiate, invoke).await
    }
}
