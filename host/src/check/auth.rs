//! The auth contract: what `wit/auth.wit` and `wit/types.wit` promise,
//! checked with the author's token request. Nothing here depends on a
//! policy: any correct auth component passes, given a request it accepts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::inputs::TokenInputs;
use super::{APP, Report, auth_error, code, expect, hostile_names};
use crate::plugins::AuthPlugin;
use crate::plugins::bindings::{AuthError, Claims, IssuedToken, TokenRequest};

/// The contract's bounds on a token's idle timeout.
const TTL_SECS: std::ops::RangeInclusive<u32> = 1..=madx_wire::tokens::MAX_TTL_SECS;
use madx_wire::tokens::MAX_USER_ID_BYTES;

/// Names of the checks, in the order they run. The ones after `ISSUE` need
/// its token and are skipped when there is none.
const MALFORMED_ACCESS_IDS: &str = "malformed access ids are refused without a trap";
const ISSUE: &str = "issue returns a token for the request";
const OTP_PARAMS: &str = "the token announces usable otp parameters";
const ACCESS_ID: &str = "the access id is URL-safe";
const SEED: &str = "the secret seed is base32 without padding";
const EXPIRES: &str = "expires-in-secs is the requested ttl-secs (or a default within 1..=7200)";
const VERIFIES: &str = "a correct code verifies, with the request's claims";
const REUSED: &str = "a used code is refused as otp-reused";
const WRONG: &str = "a wrong code is refused as otp-invalid";
const MALFORMED_CODES: &str = "malformed codes are refused without a trap";
const TOUCH: &str = "touch keeps a live token";
const REVOKE: &str = "revoke deletes the token (true)";
const REVOKED_VERIFY: &str = "a revoked token is refused as token-invalid";
const REVOKED_TOUCH: &str = "touch of a revoked token is token-invalid";
const REVOKE_AGAIN: &str = "revoking again returns false";
const UNKNOWN: &str = "an unknown access id is token-invalid, and revoking it returns false";
const TTL_ZERO: &str = "ttl-secs 0 is refused as bad-request";
const TTL_OVER: &str = "ttl-secs 7201 is refused as bad-request";
const USER_ID_BOUNDS: &str = "a user id of 0 or 201 bytes is refused as bad-request";
const DEFAULT_TTL: &str = "without ttl-secs, the component applies a default within 1..=7200";
const IDLE_EXPIRY: &str = "a token issued with ttl-secs 1 is gone after 1 s of inactivity";

const NEEDS_TOKEN: [&str; 19] = [
    OTP_PARAMS,
    ACCESS_ID,
    SEED,
    EXPIRES,
    VERIFIES,
    REUSED,
    WRONG,
    MALFORMED_CODES,
    TOUCH,
    REVOKE,
    REVOKED_VERIFY,
    REVOKED_TOUCH,
    REVOKE_AGAIN,
    UNKNOWN,
    TTL_ZERO,
    TTL_OVER,
    USER_ID_BOUNDS,
    DEFAULT_TTL,
    IDLE_EXPIRY,
];

pub async fn contract(report: &mut Report, auth: &AuthPlugin, inputs: &TokenInputs) {
    report.note(&format!(
        "contract: token request with {}",
        inputs.describe()
    ));
    malformed_access_ids(report, auth).await;

    let request = inputs.request();
    let token = match auth.issue(APP, request.clone()).await {
        Ok(Ok(token)) => Some(token),
        Ok(Err(AuthError::BadRequest(why))) => {
            report.check(
                ISSUE,
                Err(format!(
                    "the component refused it as bad-request({why:?}); give a request it \
                     accepts with --user-id, --channels, --publish, --ttl-secs or \
                     --auth-setting (or the check file)"
                )),
            );
            None
        }
        Ok(Err(error)) => {
            report.check(ISSUE, Err(format!("got {}", auth_error(&error))));
            None
        }
        Err(failure) => {
            report.check(ISSUE, Err(failure.reason));
            None
        }
    };
    let Some(token) = token else {
        for name in NEEDS_TOKEN {
            report.skip(name, "needs a token");
        }
        return;
    };
    report.check(ISSUE, Ok(()));
    with_token(report, auth, &request, &token).await;
}

/// Access ids no token can have, for every call that takes one.
async fn malformed_access_ids(report: &mut Report, auth: &AuthPlugin) {
    let mut wrong = Vec::new();
    for (label, id) in hostile_names() {
        let answers = [
            (
                "verify",
                expect(
                    auth.verify(APP, &id, "000000").await,
                    refused_as_unknown,
                    "bad-request or token-invalid",
                    show_claims,
                ),
            ),
            (
                "touch",
                expect(
                    auth.touch(APP, &id).await,
                    refused_as_unknown,
                    "bad-request or token-invalid",
                    show_unit,
                ),
            ),
            (
                "revoke",
                expect(
                    auth.revoke(APP, &id).await,
                    |answer| matches!(answer, Ok(false) | Err(AuthError::BadRequest(_))),
                    "false or bad-request",
                    show_bool,
                ),
            ),
        ];
        for (call, answer) in answers {
            if let Err(why) = answer {
                wrong.push(format!("{call} ({label}): {why}"));
            }
        }
    }
    report.check(MALFORMED_ACCESS_IDS, all_right(wrong));
}

/// The checks that need an issued token, in the order of `NEEDS_TOKEN`.
async fn with_token(
    report: &mut Report,
    auth: &AuthPlugin,
    request: &TokenRequest,
    token: &IssuedToken,
) {
    // Issued now, checked last: its second of inactivity passes meanwhile.
    let short_lived = auth
        .issue(
            APP,
            TokenRequest {
                ttl_secs: Some(1),
                ..request.clone()
            },
        )
        .await;
    let short_lived_at = Instant::now();

    let params = &token.otp;
    let usable = ["SHA1", "SHA256", "SHA512"].contains(&params.algorithm.as_str())
        && (6..=9).contains(&params.digits)
        && params.period_secs > 0;
    report.check(
        OTP_PARAMS,
        usable.then_some(()).ok_or_else(|| {
            format!(
                "{params:?}: codes need SHA1, SHA256 or SHA512, 6 to 9 digits and a period over 0"
            )
        }),
    );
    report.check(ACCESS_ID, url_safe(&token.access_id));
    report.check(SEED, base32_without_padding(&token.secret_seed));
    let expires = match request.ttl_secs {
        Some(ttl) if token.expires_in_secs == ttl => Ok(()),
        Some(ttl) => Err(format!("asked for {ttl}, got {}", token.expires_in_secs)),
        None if TTL_SECS.contains(&token.expires_in_secs) => Ok(()),
        None => Err(format!("{} is outside 1..=7200", token.expires_in_secs)),
    };
    report.check(EXPIRES, expires);

    // A component may accept the current step only: keep the code and its
    // use within one step.
    avoid_step_end(token.otp.period_secs).await;
    let codes = Codes::of(token);
    let right = codes.as_ref().map(|codes| codes.right.as_str());
    let verified = match right {
        Ok(code) => expect(
            auth.verify(APP, &token.access_id, code).await,
            |answer| {
                answer
                    .as_ref()
                    .is_ok_and(|claims| claims_match(claims, request, token).is_ok())
            },
            "the request's claims",
            |answer| match answer {
                Ok(claims) => claims_match(claims, request, token)
                    .err()
                    .unwrap_or_default(),
                Err(error) => auth_error(error),
            },
        ),
        Err(why) => Err(why.clone()),
    };
    report.check(VERIFIES, verified);
    report.check(
        REUSED,
        refused_code(auth, token, right, |error| {
            matches!(error, AuthError::OtpReused)
        })
        .await,
    );
    let wrong = codes.as_ref().map(|codes| codes.wrong.as_str());
    report.check(
        WRONG,
        refused_code(auth, token, wrong, |error| {
            matches!(error, AuthError::OtpInvalid)
        })
        .await,
    );
    report.check(MALFORMED_CODES, malformed_codes(auth, token).await);

    report.check(
        TOUCH,
        expect(
            auth.touch(APP, &token.access_id).await,
            Result::is_ok,
            "ok",
            show_unit,
        ),
    );
    report.check(
        REVOKE,
        expect(
            auth.revoke(APP, &token.access_id).await,
            |answer| matches!(answer, Ok(true)),
            "true",
            show_bool,
        ),
    );
    let next = codes.as_ref().map(|codes| codes.next.as_str());
    report.check(
        REVOKED_VERIFY,
        refused_code(auth, token, next, |error| {
            matches!(error, AuthError::TokenInvalid)
        })
        .await,
    );
    report.check(
        REVOKED_TOUCH,
        expect(
            auth.touch(APP, &token.access_id).await,
            |answer| matches!(answer, Err(AuthError::TokenInvalid)),
            "token-invalid",
            show_unit,
        ),
    );
    report.check(
        REVOKE_AGAIN,
        expect(
            auth.revoke(APP, &token.access_id).await,
            |answer| matches!(answer, Ok(false)),
            "false",
            show_bool,
        ),
    );
    report.check(UNKNOWN, unknown_access_id(auth, token).await);

    for (name, ttl) in [(TTL_ZERO, 0), (TTL_OVER, 7201)] {
        let out_of_range = TokenRequest {
            ttl_secs: Some(ttl),
            ..request.clone()
        };
        report.check(
            name,
            expect(
                auth.issue(APP, out_of_range).await,
                |answer| matches!(answer, Err(AuthError::BadRequest(_))),
                "bad-request",
                show_issued,
            ),
        );
    }
    let mut wrong_user_ids = Vec::new();
    for user_id in [String::new(), "u".repeat(MAX_USER_ID_BYTES + 1)] {
        let bytes = user_id.len();
        let outcome = expect(
            auth.issue(
                APP,
                TokenRequest {
                    user_id: Some(user_id),
                    ..request.clone()
                },
            )
            .await,
            |answer| matches!(answer, Err(AuthError::BadRequest(_))),
            "bad-request",
            show_issued,
        );
        if let Err(why) = outcome {
            wrong_user_ids.push(format!("{bytes} bytes: {why}"));
        }
    }
    report.check(USER_ID_BOUNDS, all_right(wrong_user_ids));
    report.check(
        DEFAULT_TTL,
        expect(
            auth.issue(
                APP,
                TokenRequest {
                    ttl_secs: None,
                    ..request.clone()
                },
            )
            .await,
            |answer| {
                answer
                    .as_ref()
                    .is_ok_and(|token| TTL_SECS.contains(&token.expires_in_secs))
            },
            "a token with expires-in-secs within 1..=7200",
            show_issued,
        ),
    );

    match short_lived {
        Ok(Ok(token)) if token.expires_in_secs != 1 => report.check(
            IDLE_EXPIRY,
            Err(format!(
                "expires-in-secs is {}, not 1",
                token.expires_in_secs
            )),
        ),
        Ok(Ok(token)) => {
            // The store keeps milliseconds; leave a margin for slow calls.
            let gone_by = short_lived_at + Duration::from_millis(1500);
            tokio::time::sleep_until(gone_by.into()).await;
            report.check(
                IDLE_EXPIRY,
                expect(
                    auth.touch(APP, &token.access_id).await,
                    |answer| matches!(answer, Err(AuthError::TokenInvalid)),
                    "token-invalid from touch",
                    show_unit,
                ),
            );
        }
        // The WIT lets a component refuse short timeouts, as a policy.
        Ok(Err(AuthError::BadRequest(why))) => report.skip(
            IDLE_EXPIRY,
            &format!("the component refuses ttl-secs 1: bad-request({why:?})"),
        ),
        Ok(Err(error)) => report.check(IDLE_EXPIRY, Err(format!("issue: {}", auth_error(&error)))),
        Err(failure) => report.check(IDLE_EXPIRY, Err(format!("issue: {}", failure.reason))),
    }
}

/// Codes to try on a token, from the parameters it announced.
struct Codes {
    /// The current step's code.
    right: String,
    /// The next step's code.
    next: String,
    /// A well-formed code that matches no step near now.
    wrong: String,
}

impl Codes {
    fn of(token: &IssuedToken) -> Result<Codes, String> {
        let why = |error: String| format!("no code can be computed from the token: {error}");
        let near: Vec<String> = (-2..=2)
            .map(|steps| code(token, steps))
            .collect::<Result<_, _>>()
            .map_err(why)?;
        let digits = usize::from(token.otp.digits);
        let wrong = ('0'..='9')
            .map(|digit| digit.to_string().repeat(digits))
            .find(|candidate| !near.contains(candidate))
            .ok_or_else(|| why("every candidate matches".to_owned()))?;
        Ok(Codes {
            right: near[2].clone(),
            next: near[3].clone(),
            wrong,
        })
    }
}

/// Wait for the next time step when less than a second of this one is left.
async fn avoid_step_end(period_secs: u32) {
    let period = u64::from(period_secs.max(1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into_step = Duration::from_millis(
        u64::try_from(now.as_millis() % u128::from(period * 1000)).unwrap_or(0),
    );
    let left = Duration::from_secs(period).saturating_sub(into_step);
    if left < Duration::from_secs(1) {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

/// Verify `code` on the token; the refusal must satisfy `wanted`.
async fn refused_code(
    auth: &AuthPlugin,
    token: &IssuedToken,
    code: Result<&str, &String>,
    wanted: impl Fn(&AuthError) -> bool,
) -> Result<(), String> {
    let code = code.map_err(Clone::clone)?;
    expect(
        auth.verify(APP, &token.access_id, code).await,
        |answer| answer.as_ref().err().is_some_and(wanted),
        "the refusal the WIT names",
        show_claims,
    )
}

/// Codes no token accepts: refused (as malformed, wrong or rate-limited),
/// never accepted, never a trap.
async fn malformed_codes(auth: &AuthPlugin, token: &IssuedToken) -> Result<(), String> {
    let mut wrong = Vec::new();
    let letters = "abcdefgh"[..usize::from(token.otp.digits).min(8)].to_owned();
    let codes = [
        ("letters", letters),
        ("empty", String::new()),
        ("10 KiB", "1".repeat(10 * 1024)),
        ("unicode", "١٢٣٤٥٦".into()),
    ];
    for (label, code) in codes {
        let outcome = expect(
            auth.verify(APP, &token.access_id, &code).await,
            |answer| {
                matches!(
                    answer,
                    Err(AuthError::BadRequest(_)
                        | AuthError::OtpInvalid
                        | AuthError::RateLimited(_))
                )
            },
            "bad-request, otp-invalid or rate-limited",
            show_claims,
        );
        if let Err(why) = outcome {
            wrong.push(format!("{label}: {why}"));
        }
    }
    all_right(wrong)
}

/// A well-formed access id that was never issued.
async fn unknown_access_id(auth: &AuthPlugin, token: &IssuedToken) -> Result<(), String> {
    let unknown = "never-issued-by-plugin-check";
    let code = "0".repeat(usize::from(token.otp.digits));
    let mut wrong = Vec::new();
    let answers = [
        (
            "verify",
            expect(
                auth.verify(APP, unknown, &code).await,
                token_invalid,
                "token-invalid",
                show_claims,
            ),
        ),
        (
            "touch",
            expect(
                auth.touch(APP, unknown).await,
                token_invalid,
                "token-invalid",
                show_unit,
            ),
        ),
        (
            "revoke",
            expect(
                auth.revoke(APP, unknown).await,
                |answer| matches!(answer, Ok(false)),
                "false",
                show_bool,
            ),
        ),
    ];
    for (call, answer) in answers {
        if let Err(why) = answer {
            wrong.push(format!("{call}: {why}"));
        }
    }
    all_right(wrong)
}

/// Are these the claims of `token`, issued for `request`? Globs compare as
/// sets: their order means nothing.
fn claims_match(
    claims: &Claims,
    request: &TokenRequest,
    token: &IssuedToken,
) -> Result<(), String> {
    let set = |globs: &[String]| globs.iter().cloned().collect::<BTreeSet<_>>();
    let mut differences = Vec::new();
    if claims.access_id != token.access_id {
        differences.push(format!("access-id {:?}", claims.access_id));
    }
    if claims.user_id != request.user_id {
        differences.push(format!("user-id {:?}", claims.user_id));
    }
    if set(&claims.channels) != set(&request.channels) {
        differences.push(format!("channels {:?}", claims.channels));
    }
    if set(&claims.publish) != set(&request.publish) {
        differences.push(format!("publish {:?}", claims.publish));
    }
    if claims.idle_timeout_secs != token.expires_in_secs {
        differences.push(format!(
            "idle-timeout-secs {} (the token said {})",
            claims.idle_timeout_secs, token.expires_in_secs
        ));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(format!("claims with {}", differences.join(", ")))
    }
}

/// RFC 3986 unreserved characters only.
fn url_safe(access_id: &str) -> Result<(), String> {
    let safe = !access_id.is_empty()
        && access_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    safe.then_some(())
        .ok_or_else(|| format!("{access_id:?} needs escaping in a URL"))
}

/// RFC 4648 base32 alphabet, no `=` padding.
fn base32_without_padding(seed: &str) -> Result<(), String> {
    let valid = !seed.is_empty()
        && seed
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    valid
        .then_some(())
        .ok_or_else(|| format!("{} characters outside A-Z 2-7 (or empty)", seed.len()))
}

/// The refusals of an access id no token has.
fn refused_as_unknown<T>(answer: &Result<T, AuthError>) -> bool {
    matches!(
        answer,
        Err(AuthError::BadRequest(_) | AuthError::TokenInvalid)
    )
}

fn token_invalid<T>(answer: &Result<T, AuthError>) -> bool {
    matches!(answer, Err(AuthError::TokenInvalid))
}

/// Every sub-check passed, or what went wrong in each.
fn all_right(wrong: Vec<String>) -> Result<(), String> {
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

fn show_unit(answer: &Result<(), AuthError>) -> String {
    match answer {
        Ok(()) => "ok".into(),
        Err(error) => auth_error(error),
    }
}

fn show_bool(answer: &Result<bool, AuthError>) -> String {
    match answer {
        Ok(removed) => removed.to_string(),
        Err(error) => auth_error(error),
    }
}

fn show_issued(answer: &Result<IssuedToken, AuthError>) -> String {
    match answer {
        Ok(token) => format!("a token (expires-in-secs {})", token.expires_in_secs),
        Err(error) => auth_error(error),
    }
}

fn show_claims(answer: &Result<Claims, AuthError>) -> String {
    match answer {
        Ok(_) => "claims (accepted)".into(),
        Err(error) => auth_error(error),
    }
}
