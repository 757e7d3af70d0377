//! Calls into the auth component.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::auth::{AuthPlugin as AuthWorld, AuthPluginPre};
use super::bindings::{AuthError, Claims, IssuedToken, TokenRequest};
use super::{HostState, PluginConfig, PluginCore, PluginFailure, PluginKind, Sandbox};
use crate::store::StoreBackend;

/// What an auth call gives back: the plugin's answer, or a failure of the
/// plugin itself.
pub type AuthResult<T> = Result<Result<T, AuthError>, PluginFailure>;

/// The loaded auth component.
pub struct AuthPlugin {
    core: PluginCore,
    pre: AuthPluginPre<HostState>,
}

impl AuthPlugin {
    pub fn load(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        config: &PluginConfig,
    ) -> anyhow::Result<AuthPlugin> {
        let component = sandbox.compile(PluginKind::Auth, &config.source)?;
        Self::from_compiled(sandbox, store, config, &component)
    }

    /// Like [`AuthPlugin::load`], with the configured component already
    /// compiled by [`Sandbox::compile`].
    pub fn from_compiled(
        sandbox: &Arc<Sandbox>,
        store: StoreBackend,
        config: &PluginConfig,
        component: &Component,
    ) -> anyhow::Result<AuthPlugin> {
        let (core, pre) = PluginCore::load(sandbox, PluginKind::Auth, store, config, component)?;
        let pre = AuthPluginPre::new(pre).map_err(|error| core.missing_export(error))?;
        Ok(AuthPlugin { core, pre })
    }

    /// How logs name this component.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub async fn issue(&self, app_id: &str, request: TokenRequest) -> AuthResult<IssuedToken> {
        self.call(app_id, "issue", async |auth, store| {
            auth.madx_pusher_auth().call_issue(store, &request).await
        })
        .await
    }

    pub async fn verify(&self, app_id: &str, access_id: &str, otp: &str) -> AuthResult<Claims> {
        self.call(app_id, "verify", async |auth, store| {
            auth.madx_pusher_auth()
                .call_verify(store, access_id, otp)
                .await
        })
        .await
    }

    pub async fn touch(&self, app_id: &str, access_id: &str) -> AuthResult<()> {
        self.call(app_id, "touch", async |auth, store| {
            auth.madx_pusher_auth().call_touch(store, access_id).await
        })
        .await
    }

    pub async fn revoke(&self, app_id: &str, access_id: &str) -> AuthResult<bool> {
        self.call(app_id, "revoke", async |auth, store| {
            auth.madx_pusher_auth().call_revoke(store, access_id).await
        })
        .await
    }

    /// One call of the auth world on a fresh instance.
    async fn call<T>(
        &self,
        app_id: &str,
        call: &'static str,
        invoke: impl AsyncFnOnce(&AuthWorld, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginFailure> {
        let instantiate =
            async |store: &mut Store<HostState>| self.pre.instantiate_async(store).await;
        self.core.call(app_id, call, instantiate, invoke).await
    }
}
