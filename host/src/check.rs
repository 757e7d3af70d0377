//! `madx-pusher plugin check`: does a component implement its world, and
//! does it behave as the contract says? Prints one line per check and a
//! `N passed, M failed` summary; the exit status is non-zero on any failure,
//! so it fits a plugin's CI.

use std::collections::BTreeMap;
use std::sync::Arc;

use totp_rs::{Algorithm, Secret, TOTP};

use crate::metrics::Metrics;
use crate::plugins::bindings::{
    AuthError, Claims, ClientPublication, IssuedToken, RouteError, RouteTarget, TokenRequest,
};
use crate::plugins::{
    AuthPlugin, ComponentSource, PluginConfig, PluginKind, RouterPlugin, Sandbox, SandboxLimits,
};
use crate::store::{MemoryStore, StoreBackend};

/// The app the checks run in.
const APP: &str = "plugin-check";

/// Results of the checks so far.
#[derive(Default)]
pub struct Report {
    passed: usize,
    failed: usize,
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

    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// Check the given components; `Err` when the checks could not run at all.
pub async fn run(auth: Option<&ComponentSource>, router: Option<&ComponentSource>) -> Report {
    let mut report = Report::default();
    let sandbox = match Sandbox::new(SandboxLimits::default(), Arc::new(Metrics::new())) {
        Ok(sandbox) => sandbox,
        Err(error) => {
            report.check("start the WebAssembly engine", Err(format!("{error:#}")));
            return report;
        }
    };
    let store = StoreBackend::Memory(MemoryStore::start(100_000, 10_000));
    if let Some(source) = auth {
        let plugin = load(&mut report, &sandbox, PluginKind::Auth, source, |config| {
            AuthPlugin::load(&sandbox, store.clone(), config)
        });
        if let Some(plugin) = plugin {
            check_auth(&mut report, &plugin).await;
        }
    }
    if let Some(source) = router {
        let plugin = load(
            &mut report,
            &sandbox,
            PluginKind::Router,
            source,
            |config| RouterPlugin::load(&sandbox, store.clone(), config),
        );
        if let Some(plugin) = plugin {
            check_router(&mut report, &plugin).await;
        }
    }
    report
}

/// Report the component's imports and whether it loads against its world.
fn load<P>(
    report: &mut Report,
    sandbox: &Sandbox,
    kind: PluginKind,
    source: &ComponentSource,
    load: impl FnOnce(&PluginConfig) -> anyhow::Result<P>,
) -> Option<P> {
    println!("# {}", source.describe(kind));
    match sandbox.imports(kind, source) {
        Ok(imports) => {
            let missing: Vec<&str> = imports
                .iter()
                .filter(|(_, provided)| !provided)
                .map(|(name, _)| name.as_str())
                .collect();
            for (name, provided) in &imports {
                let mark = if *provided {
                    "provided"
                } else {
                    "NOT PROVIDED"
                };
                println!("     import {name}: {mark}");
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
            report.check("is a WebAssembly component", Err(format!("{error:#}")));
            return None;
        }
    }
    let config = PluginConfig {
        source: source.clone(),
        settings: Arc::new(BTreeMap::new()),
    };
    match load(&config) {
        Ok(plugin) => {
            report.check(
                &format!("implements madx:pusher/{}@0.1.0", kind.world()),
                Ok(()),
            );
            Some(plugin)
        }
        Err(error) => {
            let name = format!("implements madx:pusher/{}@0.1.0", kind.world());
            report.check(&name, Err(format!("{error:#}")));
            None
        }
    }
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

fn expect<T: std::fmt::Debug, E: std::fmt::Debug>(
    got: Result<Result<T, E>, crate::plugins::PluginFailure>,
    wanted: impl FnOnce(&Result<T, E>) -> bool,
    describe: &str,
) -> Result<(), String> {
    match got {
        Err(failure) => Err(failure.to_string()),
        Ok(answer) if wanted(&answer) => Ok(()),
        Ok(answer) => Err(format!("expected {describe}, got {answer:?}")),
    }
}

async fn check_auth(report: &mut Report, auth: &AuthPlugin) {
    let request = TokenRequest {
        user_id: Some("checker".into()),
        channels: vec!["news.*".into()],
        publish: vec!["chat".into()],
        ttl_secs: Some(60),
    };
    let token = match auth.issue(APP, request).await {
        Ok(Ok(token)) => token,
        other => {
            report.check("issue returns a token", Err(format!("{other:?}")));
            return;
        }
    };
    report.check("issue returns a token", Ok(()));
    let params = &token.otp;
    let sane = ["SHA1", "SHA256", "SHA512"].contains(&params.algorithm.as_str())
        && (6..=9).contains(&params.digits)
        && params.period_secs > 0;
    report.check(
        "the token announces usable otp parameters",
        if sane {
            Ok(())
        } else {
            Err(format!("{params:?}"))
        },
    );
    let url_safe = !token.access_id.is_empty()
        && token
            .access_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    report.check(
        "the access id is URL-safe",
        if url_safe {
            Ok(())
        } else {
            Err(token.access_id.clone())
        },
    );

    let right = match code(&token, 0) {
        Ok(code) => code,
        Err(why) => {
            report.check("the secret seed computes codes", Err(why));
            return;
        }
    };
    let verified = auth.verify(APP, &token.access_id, &right).await;
    let round_trip = |claims: &Claims| {
        claims.access_id == token.access_id
            && claims.user_id.as_deref() == Some("checker")
            && claims.channels == ["news.*"]
            && claims.publish == ["chat"]
    };
    report.check(
        "a correct code verifies and the claims round-trip",
        expect(
            verified,
            |answer| answer.as_ref().is_ok_and(round_trip),
            "the requested claims",
        ),
    );
    report.check(
        "a used code is refused as reused",
        expect(
            auth.verify(APP, &token.access_id, &right).await,
            |answer| matches!(answer, Err(AuthError::OtpReused)),
            "otp-reused",
        ),
    );
    let wrong: String = right
        .chars()
        .map(|digit| if digit == '0' { '1' } else { '0' })
        .collect();
    report.check(
        "a wrong code is refused",
        expect(
            auth.verify(APP, &token.access_id, &wrong).await,
            |answer| matches!(answer, Err(AuthError::OtpInvalid)),
            "otp-invalid",
        ),
    );
    report.check(
        "touch keeps a live token",
        expect(auth.touch(APP, &token.access_id).await, Result::is_ok, "ok"),
    );
    let out_of_range = TokenRequest {
        user_id: None,
        channels: vec![],
        publish: vec![],
        ttl_secs: Some(7201),
    };
    report.check(
        "a ttl over 7200 s is a bad request",
        expect(
            auth.issue(APP, out_of_range).await,
            |answer| matches!(answer, Err(AuthError::BadRequest(_))),
            "bad-request",
        ),
    );
    report.check(
        "revoke deletes the token",
        expect(
            auth.revoke(APP, &token.access_id).await,
            |answer| matches!(answer, Ok(true)),
            "true",
        ),
    );
    let fresh = code(&token, 1).unwrap_or_default();
    report.check(
        "a revoked token is refused",
        expect(
            auth.verify(APP, &token.access_id, &fresh).await,
            |answer| matches!(answer, Err(AuthError::TokenInvalid)),
            "token-invalid",
        ),
    );
    report.check(
        "revoking twice says there was nothing",
        expect(
            auth.revoke(APP, &token.access_id).await,
            |answer| matches!(answer, Ok(false)),
            "false",
        ),
    );
}

async fn check_router(report: &mut Report, router: &RouterPlugin) {
    let claims = Claims {
        access_id: "checker".into(),
        user_id: Some("checker".into()),
        channels: vec!["news.*".into()],
        publish: vec!["chat.*".into()],
        idle_timeout_secs: 60,
    };
    let subscribe = |channel: &'static str| router.authorize_subscribe(APP, &claims, channel);
    report.check(
        "subscribe allowed by a channels glob",
        expect(subscribe("news.sport").await, Result::is_ok, "ok"),
    );
    report.check(
        "subscribe outside the globs is forbidden",
        expect(
            subscribe("admin").await,
            |answer| matches!(answer, Err(RouteError::Forbidden(_))),
            "forbidden",
        ),
    );
    report.check(
        "a malformed channel name is invalid",
        expect(
            subscribe("bad channel!").await,
            |answer| matches!(answer, Err(RouteError::InvalidChannel(_))),
            "invalid-channel",
        ),
    );
    report.check(
        "client publish allowed by a publish glob",
        expect(
            router
                .authorize_publish(APP, &claims, "chat.room", "said")
                .await,
            |answer: &Result<ClientPublication, _>| answer.is_ok(),
            "ok",
        ),
    );
    report.check(
        "client publish outside the globs is forbidden",
        expect(
            router
                .authorize_publish(APP, &claims, "news.sport", "said")
                .await,
            |answer| matches!(answer, Err(RouteError::Forbidden(_))),
            "forbidden",
        ),
    );
    for target in [
        RouteTarget::Channel("news.sport".into()),
        RouteTarget::User("checker".into()),
        RouteTarget::Token("checker".into()),
    ] {
        let name = format!("an app publish to {target:?} reaches somewhere");
        report.check(
            &name,
            expect(
                router.route_publish(APP, &target, "event").await,
                |answer| answer.as_ref().is_ok_and(|targets| !targets.is_empty()),
                "a non-empty target list",
            ),
        );
    }
    report.check(
        "an app publish to a malformed channel is refused",
        expect(
            router
                .route_publish(APP, &RouteTarget::Channel("bad channel!".into()), "event")
                .await,
            Result::is_err,
            "an error",
        ),
    );
}
