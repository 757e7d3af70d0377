//! `madx-pusher plugin check`: does a component link against this host,
//! implement its world, and keep the promises of the WIT contract, with
//! the inputs its author sets? Prints one line per check and a
//! `N passed, M failed, K skipped` summary; the exit status is non-zero on
//! any failure, so it fits a plugin's CI.
//!
//! Profiles: `contract` (the default) checks only what `wit/` promises, so
//! any correct component passes whatever its policy; `default-policy`
//! checks the built-in components' own rules (any user, glob-based
//! routing), which a component with a policy of its own need not follow.

mod auth;
mod default_policy;
mod inputs;
mod router;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use totp_rs::{Algorithm, Secret, TOTP};
use wasmtime::component::Component;

pub use inputs::{InputFlags, Inputs};

use crate::Boxed;
use crate::metrics::Metrics;
use crate::plugins::bindings::{AuthError, IssuedToken, RouteError};
use crate::plugins::imports::Linked;
use crate::plugins::{
    AuthPlugin, ComponentSource, PluginConfig, PluginFailure, PluginKind, RouterPlugin, Sandbox,
    SandboxLimits,
};
use crate::store::{MemoryStore, StoreBackend};

/// The app the checks run in.
const APP: &str = "plugin-check";

/// A set of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// What the WIT contract promises: passed by any correct component.
    Contract,
    /// The built-in components' rules (any user gets a token, routing by
    /// the token's globs): not part of the contract.
    DefaultPolicy,
}

/// Results of the checks so far.
#[derive(Default)]
pub struct Report {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok   {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }

    /// A check that could not run because one it depends on failed.
    fn skip(&mut self, name: &str, why: &str) {
        self.skipped += 1;
        println!("skip {name}: {why}");
    }

    /// Context for the lines that follow.
    fn note(&self, text: &str) {
        println!("# {text}");
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Check the given components with `profiles` (in order, each once).
pub fn run<'a>(
    auth: Option<&'a ComponentSource>,
    router: Option<&'a ComponentSource>,
    profiles: &'a [Profile],
    inputs: &'a Inputs,
    compile_cache: Option<&'a Path>,
) -> Boxed<'a, Report> {
    Box::pin(check_all(auth, router, profiles, inputs, compile_cache))
}

async fn check_all(
    auth: Option<&ComponentSource>,
    router: Option<&ComponentSource>,
    profiles: &[Profile],
    inputs: &Inputs,
    compile_cache: Option<&Path>,
) -> Report {
    let mut report = Report::default();
    let mut chosen: Vec<Profile> = Vec::new();
    for profile in profiles {
        if !chosen.contains(profile) {
            chosen.push(*profile);
        }
    }
    let sandbox = match Sandbox::new(
        SandboxLimits::default(),
        compile_cache,
        Arc::new(Metrics::new()),
    ) {
        Ok(sandbox) => sandbox,
        Err(error) => {
            report.check("start the WebAssembly engine", Err(format!("{error:#}")));
            return report;
        }
    };
    let store = StoreBackend::Memory(MemoryStore::start(100_000, 10_000));
    if let Some(source) = auth {
        let config = PluginConfig {
            source: source.clone(),
            settings: Arc::new(inputs.auth_settings.clone()),
        };
        let plugin = load(
            &mut report,
            &sandbox,
            PluginKind::Auth,
            &config,
            |config, component| {
                AuthPlugin::from_compiled(&sandbox, store.clone(), config, component)
            },
        );
        if let Some(plugin) = plugin {
            for profile in &chosen {
                match profile {
                    Profile::Contract => auth::contract(&mut report, &plugin, &inputs.token).await,
                    Profile::DefaultPolicy => default_policy::auth(&mut report, &plugin).await,
                }
            }
        }
    }
    if let Some(source) = router {
        let config = PluginConfig {
            source: source.clone(),
            settings: Arc::new(inputs.router_settings.clone()),
        };
        let plugin = load(
            &mut report,
            &sandbox,
            PluginKind::Router,
            &config,
            |config, component| {
                RouterPlugin::from_compiled(&sandbox, store.clone(), config, component)
            },
        );
        if let Some(plugin) = plugin {
            for profile in &chosen {
                match profile {
                    Profile::Contract => {
                        router::contract(&mut report, &plugin, &inputs.token, &inputs.expectations)
                            .await
                    }
                    Profile::DefaultPolicy => default_policy::router(&mut report, &plugin).await,
                }
            }
            if !inputs.expectations.is_empty() {
                router::expectations(&mut report, &plugin, &inputs.token, &inputs.expectations)
                    .await;
            }
        }
    } else if !inputs.expectations.is_empty() {
        report.note("the router expectations are not checked: no --router given");
    }
    report
}

/// Report the component's imports and whether it loads against its world.
fn load<P>(
    report: &mut Report,
    sandbox: &Sandbox,
    kind: PluginKind,
    config: &PluginConfig,
    load: impl FnOnce(&PluginConfig, &Component) -> anyhow::Result<P>,
) -> Option<P> {
    println!("# {}", config.source.describe(kind));
    // Compiled once for the import report and the load: a large component
    // takes seconds to compile.
    let component = match sandbox.compile(kind, &config.source) {
        Ok(component) => component,
        Err(error) => {
            report.check("is a WebAssembly component", Err(format!("{error:#}")));
            return None;
        }
    };
    match sandbox.imports(kind, &component) {
        Ok(imports) => {
            let mut missing = Vec::new();
            for import in &imports {
                let mark = match &import.linked {
                    Linked::Provided => "provided".to_owned(),
                    Linked::Missing(why) => {
                        missing.push(import.name.as_str());
                        format!("NOT PROVIDED ({why})")
                    }
                    Linked::Unknown => "not decided".to_owned(),
                };
                println!("     import {}: {mark}", import.name);
            }
            let outcome = if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "imports the host does not provide: {}",
                    missing.join(", ")
                ))
            };
            report.check("every import is provided by the host", outcome);
        }
        Err(error) => {
            report.check("the host links its imports", Err(format!("{error:#}")));
            return None;
        }
    }
    if !config.settings.is_empty() {
        report.note(&format!(
            "settings: {}",
            describe_settings(&config.settings)
        ));
    }
    let name = format!("implements madx:pusher/{}@0.1.0", kind.world());
    match load(config, &component) {
        Ok(plugin) => {
            report.check(&name, Ok(()));
            Some(plugin)
        }
        Err(error) => {
            report.check(&name, Err(format!("{error:#}")));
            None
        }
    }
}

fn describe_settings(settings: &BTreeMap<String, String>) -> String {
    settings
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A code for `token` at `steps` away from now, from the parameters the
/// component announced, computed with an independent TOTP implementation.
fn code(token: &IssuedToken, steps: i64) -> Result<String, String> {
    let algorithm = match token.otp.algorithm.as_str() {
        "SHA1" => Algorithm::SHA1,
        "SHA256" => Algorithm::SHA256,
        "SHA512" => Algorithm::SHA512,
        other => return Err(format!("unknown algorithm {other:?}")),
    };
    let secret = Secret::Encoded(token.secret_seed.clone())
        .to_bytes()
        .map_err(|_| "secret-seed is not base32".to_owned())?;
    let period = u64::from(token.otp.period_secs.max(1));
    let totp = TOTP::new_unchecked(algorithm, usize::from(token.otp.digits), 0, period, secret);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_owned())?
        .as_secs();
    let at = now.saturating_add_signed(steps * i64::try_from(period).unwrap_or(30));
    Ok(totp.generate(at))
}

/// Does a call's answer satisfy `wanted`? A plugin failure (trap, time or
/// memory budget) never does.
fn expect<T, E>(
    got: Result<Result<T, E>, PluginFailure>,
    wanted: impl FnOnce(&Result<T, E>) -> bool,
    describe: &str,
    show: impl FnOnce(&Result<T, E>) -> String,
) -> Result<(), String> {
    match got {
        Err(failure) => Err(failure.reason),
        Ok(answer) if wanted(&answer) => Ok(()),
        Ok(answer) => Err(format!("expected {describe}, got {}", show(&answer))),
    }
}

/// An `auth-error` as the WIT spells it.
fn auth_error(error: &AuthError) -> String {
    match error {
        AuthError::BadRequest(why) => format!("bad-request({why:?})"),
        AuthError::OtpInvalid => "otp-invalid".into(),
        AuthError::OtpReused => "otp-reused".into(),
        AuthError::TokenInvalid => "token-invalid".into(),
        AuthError::RateLimited(secs) => format!("rate-limited({secs})"),
        AuthError::Unavailable(why) => format!("unavailable({why:?})"),
    }
}

/// A `route-error` as the WIT spells it.
fn route_error(error: &RouteError) -> String {
    match error {
        RouteError::InvalidChannel(why) => format!("invalid-channel({why:?})"),
        RouteError::Forbidden(why) => format!("forbidden({why:?})"),
        RouteError::Invalid(why) => format!("invalid({why:?})"),
    }
}

/// Names no correct component may trap or time out on, with how the
/// output calls them.
fn hostile_names() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("10 KiB", "a".repeat(10 * 1024)),
        ("unicode", "ünï-cödé.通道.🚀".into()),
        ("control characters", "line\nbreak\ttab\0nul\u{7f}".into()),
        ("glob and path characters", "*/../%2F?#&=".into()),
    ]
}
