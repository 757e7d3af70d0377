//! The default policy: how the built-in components behave, which is not
//! the contract. Any user gets a token for any well-formed globs; the
//! router allows exactly what the token's globs grant and refuses
//! malformed names. A component with a policy of its own may fail these
//! and still be correct; `--profile default-policy` asks for them.

use super::inputs::TargetKey;
use super::{APP, Report, code};
use crate::plugins::bindings::{
    AuthError, Claims, ClientPublication, RouteError, RouteTarget, TokenRequest,
};
use crate::plugins::{AuthPlugin, PluginFailure, RouterPlugin};

/// Like [`super::expect`], with the answer shown as Rust prints it.
fn expect<T: std::fmt::Debug, E: std::fmt::Debug>(
    got: Result<Result<T, E>, PluginFailure>,
    wanted: impl FnOnce(&Result<T, E>) -> bool,
    describe: &str,
) -> Result<(), String> {
    super::expect(got, wanted, describe, |answer| format!("{answer:?}"))
}

pub async fn auth(report: &mut Report, auth: &AuthPlugin) {
    report.note(
        "default policy (the built-in auth component's behaviour, not the contract): \
         a token for user \"checker\" with channels [\"news.*\"] and publish [\"chat\"]",
    );
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

pub async fn router(report: &mut Report, router: &RouterPlugin) {
    report.note(
        "default policy (the built-in router's behaviour, not the contract): \
         claims of user \"checker\" with channels [\"news.*\"] and publish [\"chat.*\"]",
    );
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
        let name = format!(
            "an app publish to {} reaches somewhere",
            TargetKey::of(&target)
        );
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
