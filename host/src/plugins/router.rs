//! Calls into the router component.

use std::sync::Arc;

use wasmtime::component::Component;

use super::bindings::router::RouterPluginPre;
use super::bindings::{Claims, ClientPublication, RouteError, RouteTarget};
use super::{Export, PluginConfig, PluginCore, PluginFailure, PluginKind, Sandbox};
use crate::store::StoreBackend;

/// What a router call gives back: the plugin's decision, or a failure of
/// the plugin itself.
pub type RouteResult<T> = Result<Result<T, RouteError>, PluginFailure>;

/// The loaded router component.
pub struct RouterPlugin {
    core: PluginCore,
    authorize_subscribe: Export,
    authorize_publish: Export,
    route_publish: Export,
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
        let core = PluginCore::load(sandbox, PluginKind::Router, store, config, component)?;
        // The generated bindings check that the world's exports are there.
        RouterPluginPre::new(core.pre.clone()).map_err(|error| core.missing_export(error))?;
        Ok(RouterPlugin {
            authorize_subscribe: core.export(component, "authorize-subscribe")?,
            authorize_publish: core.export(component, "authorize-publish")?,
            route_publish: core.export(component, "route-publish")?,
            core,
        })
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
        self.core
            .call(app_id, &self.authorize_subscribe, (claims, channel))
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
        self.core
            .call(app_id, &self.authorize_publish, (claims, channel, event))
            .await
    }

    /// The targets an app's publish to `target` reaches.
    pub async fn route_publish(
        &self,
        app_id: &str,
        target: &RouteTarget,
        event: &str,
    ) -> RouteResult<Vec<RouteTarget>> {
        self.core
            .call(app_id, &self.route_publish, (target, event))
            .await
    }
}
