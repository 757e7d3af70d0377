//! Calls into the router component.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::HasSelf;

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
        let (core, pre) = PluginCore::load(sandbox, PluginKind::Router, store, config, |linker| {
            RouterWorld::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
        })?;
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
        let call = "authorize-subscribe";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_router()
                .call_authorize_subscribe(&mut store, claims, channel)
                .await
                .map_err(|error| self.core.failure(call, &error)),
            Err(failure) => Err(failure),
        };
        self.core.record(call, started, result)
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
        let call = "authorize-publish";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_router()
                .call_authorize_publish(&mut store, claims, channel, event)
                .await
                .map_err(|error| self.core.failure(call, &error)),
            Err(failure) => Err(failure),
        };
        self.core.record(call, started, result)
    }

    /// The targets an app's publish to `target` reaches.
    pub async fn route_publish(
        &self,
        app_id: &str,
        target: &RouteTarget,
        event: &str,
    ) -> RouteResult<Vec<RouteTarget>> {
        let call = "route-publish";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_router()
                .call_route_publish(&mut store, target, event)
                .await
                .map_err(|error| self.core.failure(call, &error)),
            Err(failure) => Err(failure),
        };
        self.core.record(call, started, result)
    }

    async fn instantiate(
        &self,
        store: &mut Store<HostState>,
        call: &'static str,
    ) -> Result<RouterWorld, PluginFailure> {
        self.pre
            .instantiate_async(store)
            .await
            .map_err(|error| self.core.failure(call, &error))
    }
}
