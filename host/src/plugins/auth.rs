//! Calls into the auth component.

use std::sync::Arc;

use super::bindings::auth::{AuthPlugin as AuthWorld, AuthPluginPre};
use super::bindings::{AuthError, Claims, IssuedToken, TokenRequest};
use super::{PluginConfig, PluginFailure, PluginKind, PluginSettings, Sandbox};
use crate::store::{Namespace, StoreBackend};

/// What an auth call gives back: the plugin's answer, or a failure of the
/// plugin itself.
pub type AuthResult<T> = Result<Result<T, AuthError>, PluginFailure>;

/// The loaded auth component.
pub struct AuthPlugin {
    sandbox: Arc<Sandbox>,
    pre: AuthPluginPre<super::HostState>,
    store: StoreBackend,
    settings: PluginSettings,
    name: String,
}

impl AuthPlugin {
    pub(super) fn load(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        config: &PluginConfig,
    ) -> anyhow::Result<AuthPlugin> {
        let kind = PluginKind::Auth;
        let name = config.source.describe(kind);
        let linker = sandbox.linker(|linker| {
            AuthWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |state| state)
        })?;
        let pre = sandbox.load(kind, &config.source, &linker)?;
        let pre = AuthPluginPre::new(pre).map_err(|error| {
            anyhow::anyhow!(
                "the {name} does not export madx:pusher/auth@0.1.0 as the auth-plugin world requires: {error}"
            )
        })?;
        Ok(AuthPlugin {
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

    pub async fn issue(&self, app_id: &str, request: TokenRequest) -> AuthResult<IssuedToken> {
        let call = "issue";
        let (mut store, _slot) = self.store_for(app_id).await;
        let instance = self.instantiate(&mut store, call).await?;
        instance
            .madx_pusher_auth()
            .call_issue(&mut store, &request)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))
    }

    pub async fn verify(&self, app_id: &str, access_id: &str, otp: &str) -> AuthResult<Claims> {
        let call = "verify";
        let (mut store, _slot) = self.store_for(app_id).await;
        let instance = self.instantiate(&mut store, call).await?;
        instance
            .madx_pusher_auth()
            .call_verify(&mut store, access_id, otp)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))
    }

    pub async fn touch(&self, app_id: &str, access_id: &str) -> AuthResult<()> {
        let call = "touch";
        let (mut store, _slot) = self.store_for(app_id).await;
        let instance = self.instantiate(&mut store, call).await?;
        instance
            .madx_pusher_auth()
            .call_touch(&mut store, access_id)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))
    }

    pub async fn revoke(&self, app_id: &str, access_id: &str) -> AuthResult<bool> {
        let call = "revoke";
        let (mut store, _slot) = self.store_for(app_id).await;
        let instance = self.instantiate(&mut store, call).await?;
        instance
            .madx_pusher_auth()
            .call_revoke(&mut store, access_id)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))
    }

    async fn store_for(
        &self,
        app_id: &str,
    ) -> (
        wasmtime::Store<super::HostState>,
        tokio::sync::SemaphorePermit<'_>,
    ) {
        let namespace = Namespace::new(self.store.clone(), app_id, PluginKind::Auth.as_str());
        self.sandbox.store(namespace, self.settings.clone()).await
    }

    async fn instantiate(
        &self,
        store: &mut wasmtime::Store<super::HostState>,
        call: &'static str,
    ) -> Result<AuthWorld, PluginFailure> {
        self.pre
            .instantiate_async(store)
            .await
            .map_err(|error| PluginFailure::new(&self.name, call, &error))
    }
}
