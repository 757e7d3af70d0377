//! Calls into the auth component.

use std::sync::Arc;

use wasmtime::component::Component;

use super::bindings::auth::AuthPluginPre;
use super::bindings::{AuthError, Claims, IssuedToken, TokenRequest};
use super::{Export, PluginConfig, PluginCore, PluginFailure, PluginKind, Sandbox};
use crate::store::StoreBackend;

/// What an auth call gives back: the plugin's answer, or a failure of the
/// plugin itself.
pub type AuthResult<T> = Result<Result<T, AuthError>, PluginFailure>;

/// The loaded auth component.
pub struct AuthPlugin {
    core: PluginCore,
    issue: Export,
    verify: Export,
    touch: Export,
    revoke: Export,
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
        let core = PluginCore::load(sandbox, PluginKind::Auth, store, config, component)?;
        // The generated bindings check that the world's exports are there.
        AuthPluginPre::new(core.pre.clone()).map_err(|error| core.missing_export(error))?;
        Ok(AuthPlugin {
            issue: core.export(component, "issue")?,
            verify: core.export(component, "verify")?,
            touch: core.export(component, "touch")?,
            revoke: core.export(component, "revoke")?,
            core,
        })
    }

    /// How logs name this component.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub async fn issue(&self, app_id: &str, request: TokenRequest) -> AuthResult<IssuedToken> {
        self.core.call(app_id, &self.issue, (&request,)).await
    }

    pub async fn verify(&self, app_id: &str, access_id: &str, otp: &str) -> AuthResult<Claims> {
        self.core.call(app_id, &self.verify, (access_id, otp)).await
    }

    pub async fn touch(&self, app_id: &str, access_id: &str) -> AuthResult<()> {
        self.core.call(app_id, &self.touch, (access_id,)).await
    }

    pub async fn revoke(&self, app_id: &str, access_id: &str) -> AuthResult<bool> {
        self.core.call(app_id, &self.revoke, (access_id,)).await
    }
}
