//! Calls into the auth component.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::HasSelf;

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
        let (core, pre) = PluginCore::load(sandbox, PluginKind::Auth, store, config, |linker| {
            AuthWorld::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
        })?;
        let pre = AuthPluginPre::new(pre).map_err(|error| core.missing_export(error))?;
        Ok(AuthPlugin { core, pre })
    }

    /// How logs name this component.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub async fn issue(&self, app_id: &str, request: TokenRequest) -> AuthResult<IssuedToken> {
        let call = "issue";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_auth()
                .call_issue(&mut store, &request)
                .await
                .map_err(|error| self.core.failure(call, &error)),
            Err(failure) => Err(failure),
        };
        self.core.record(call, started, result)
    }

    pub async fn verify(&self, app_id: &str, access_id: &str, otp: &str) -> AuthResult<Claims> {
        let call = "verify";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_auth()
                .call_verify(&mut store, access_id, otp)
                .await
                .map_err(|error| self.core.failure(call, &error)),
            Err(failure) => Err(failure),
        };
        self.core.record(call, started, result)
    }

    pub async fn touch(&self, app_id: &str, access_id: &str) -> AuthResult<()> {
        let call = "touch";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_auth()
                .call_touch(&mut store, access_id)
                .await
                .map_err(|error| self.core.failure(call, &error)),
            Err(failure) => Err(failure),
        };
        self.core.record(call, started, result)
    }

    pub async fn revoke(&self, app_id: &str, access_id: &str) -> AuthResult<bool> {
        let call = "revoke";
        let started = Instant::now();
        let (mut store, _slot) = self.core.store_for(app_id).await;
        let result = match self.instantiate(&mut store, call).await {
            Ok(instance) => instance
                .madx_pusher_auth()
                .call_revoke(&mut store, access_id)
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
    ) -> Result<AuthWorld, PluginFailure> {
        self.pre
            .instantiate_async(store)
            .await
            .map_err(|error| self.core.failure(call, &error))
    }
}
