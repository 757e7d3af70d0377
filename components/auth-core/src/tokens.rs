//! Token issue, connection-string verification, idle expiry and throttling.
//!
//! The logic is written against [`Backend`] (store, settings, clock,
//! randomness) so that it reads the same in the component and in unit tests.
//!
//! Store layout (inside the namespace the host gives this plugin per app):
//!
//! | key | value | expires |
//! |---|---|---|
//! | `token:{id}` | [`TokenRecord`] as JSON | the token's idle timeout, restarted on activity |
//! | `spent:{id}:{code}` | `1`: the connection string was accepted | one step and 5 s after it can no longer be accepted for any step of the window it was accepted in |
//! | `fails:{id}` | codes counted against the limit: wrong ones, and those being compared | `failure_window_secs` after the first, or with the lock |
//! | `misses:{id}` | wrong codes compared, however paced | an hour after the first |
//! | `lock:{id}` | unix second the lock ends | at that second |
//! | `locks:{id}` | counter of locks | 24 h after the first |

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use serde::{Deserialize, Serialize};

use crate::totp::{self, OtpProfile};

/// The contract's ceiling on a token's idle timeout (2 hours).
pub const MAX_TTL_SECS: u32 = 7200;
const SEED_BYTES: usize = 20;
const ACCESS_ID_BYTES: usize = 16;
const MAX_ACCESS_ID_LEN: usize = 64;
/// The contract's limit on a user id (wit/types.wit), the same for tokens,
/// publishes and routing.
pub const MAX_USER_ID_LEN: usize = 200;
const MAX_GLOBS: usize = 64;
const MAX_GLOB_LEN: usize = 200;
const LOCK_HISTORY_SECS: u64 = 24 * 3600;
/// How long wrong codes are counted across failure windows. Paced under
/// the window's allowance, a guesser gets `max_failures - 1` codes per
/// this span (96 a day at the defaults), fewer than bursts that lock get;
/// a day would hold an entry per token with one wrong code for a day.
const MISSES_SPAN_SECS: u64 = 3600;
/// What a one-time marker lives beyond the step after its string's last.
const SPENT_MARKER_MARGIN_SECS: u64 = 5;

/// A failed store operation, as the component sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure(pub String);

/// What the token logic needs from its surroundings.
pub trait Backend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFailure>;
    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreFailure>;
    fn set_if_absent(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreFailure>;
    fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreFailure>;
    fn delete(&self, key: &str) -> Result<bool, StoreFailure>;
    fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreFailure>;
    fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreFailure>;
    fn setting(&self, name: &str) -> Option<String>;
    fn now_unix_secs(&self) -> u64;
    fn random_bytes(&self, buf: &mut [u8]);
}

/// Why a call was refused (mirrors the WIT `auth-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    BadRequest(String),
    OtpInvalid,
    OtpReused,
    TokenInvalid,
    RateLimited { retry_after_secs: u32 },
    Unavailable(String),
}

impl From<StoreFailure> for AuthFailure {
    fn from(failure: StoreFailure) -> Self {
        AuthFailure::Unavailable(failure.0)
    }
}

/// A token request as the app sent it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub user_id: Option<String>,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
    pub ttl_secs: Option<u32>,
}

/// A token just created.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_id: String,
    pub secret_seed: String,
    pub ttl_secs: u32,
}

/// What a verified connection string grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub access_id: String,
    pub user_id: Option<String>,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
    pub ttl_secs: u32,
}

/// The stored form of a token. Only this component reads it.
#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    /// Secret seed, base32 without padding.
    seed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    ttl: u32,
}

/// Tunables, read from the host's `[plugins.auth.settings]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Idle timeout of a token issued without `ttl`.
    pub default_ttl_secs: u32,
    /// Wrong codes within `failure_window_secs` that lock an access id.
    pub max_failures: u64,
    pub failure_window_secs: u64,
    /// Length of the first lock; each further lock within 24 h doubles it,
    /// up to `max_lockout_secs`.
    pub lockout_secs: u64,
    pub max_lockout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_ttl_secs: MAX_TTL_SECS,
            max_failures: 5,
            failure_window_secs: 300,
            lockout_secs: 300,
            max_lockout_secs: 3600,
        }
    }
}

impl Settings {
    /// Every setting from the backend. A call reads only the ones it needs
    /// (the methods below): each is a call into the host.
    pub fn load(backend: &impl Backend) -> Settings {
        Settings {
            default_ttl_secs: Settings::default_ttl_secs(backend),
            max_failures: Settings::max_failures(backend),
            failure_window_secs: Settings::failure_window_secs(backend),
            lockout_secs: Settings::lockout_secs(backend),
            max_lockout_secs: Settings::max_lockout_secs(backend),
        }
    }

    pub fn default_ttl_secs(backend: &impl Backend) -> u32 {
        let default = Settings::default().default_ttl_secs;
        let ttl = read_setting(
            backend,
            "default_ttl_secs",
            u64::from(default),
            1..=u64::from(MAX_TTL_SECS),
        );
        u32::try_from(ttl).unwrap_or(MAX_TTL_SECS)
    }

    pub fn max_failures(backend: &impl Backend) -> u64 {
        let default = Settings::default().max_failures;
        read_setting(backend, "max_failures", default, 1..=1000)
    }

    pub fn failure_window_secs(backend: &impl Backend) -> u64 {
        let default = Settings::default().failure_window_secs;
        read_setting(backend, "failure_window_secs", default, 1..=86_400)
    }

    pub fn lockout_secs(backend: &impl Backend) -> u64 {
        let default = Settings::default().lockout_secs;
        read_setting(backend, "lockout_secs", default, 1..=86_400)
    }

    pub fn max_lockout_secs(backend: &impl Backend) -> u64 {
        let default = Settings::default().max_lockout_secs;
        read_setting(backend, "max_lockout_secs", default, 1..=86_400)
    }
}

/// A setting from the backend; an unparsable or out-of-range value keeps
/// its default (the host validates plugin settings only as strings).
fn read_setting(
    backend: &impl Backend,
    name: &str,
    default: u64,
    valid: std::ops::RangeInclusive<u64>,
) -> u64 {
    backend
        .setting(name)
        .and_then(|value| value.trim().parse::<u64>().ok())
        .filter(|value| valid.contains(value))
        .unwrap_or(default)
}

/// The token rules for one call: a backend (which also holds the
/// operator's settings, read when a rule needs one) and the code profile
/// the plugin announces.
pub struct Authority<'a, B> {
    backend: &'a B,
    profile: OtpProfile,
}

impl<'a, B: Backend> Authority<'a, B> {
    pub fn new(backend: &'a B, profile: OtpProfile) -> Self {
        Authority { backend, profile }
    }

    pub fn profile(&self) -> OtpProfile {
        self.profile
    }

    /// The contract's rules for a token request (ttl bounds, user id length,
    /// glob syntax); returns the idle timeout the token gets.
    pub fn check_request(&self, request: &Request) -> Result<u32, AuthFailure> {
        let ttl_secs = match request.ttl_secs {
            None => Settings::default_ttl_secs(self.backend),
            Some(ttl @ 1..=MAX_TTL_SECS) => ttl,
            Some(ttl) => {
                return Err(AuthFailure::BadRequest(format!(
                    "ttl must be between 1 and {MAX_TTL_SECS} seconds, got {ttl}"
                )));
            }
        };
        if let Some(user_id) = &request.user_id
            && (user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN)
        {
            return Err(AuthFailure::BadRequest(format!(
                "user_id must be 1 to {MAX_USER_ID_LEN} bytes long"
            )));
        }
        validate_globs("channels", &request.channels)?;
        validate_globs("publish", &request.publish)?;
        Ok(ttl_secs)
    }

    /// Create a token: a random access id and secret seed, stored with the
    /// request's claims for the idle timeout.
    pub fn issue(&self, request: Request) -> Result<Issued, AuthFailure> {
        let ttl_secs = self.check_request(&request)?;
        let backend = self.backend;
        let mut seed = [0u8; SEED_BYTES];
        backend.random_bytes(&mut seed);
        let record = TokenRecord {
            seed: BASE32_NOPAD.encode(&seed),
            user_id: request.user_id,
            channels: request.channels,
            publish: request.publish,
            ttl: ttl_secs,
        };
        let encoded = serde_json::to_vec(&record)
            .map_err(|error| AuthFailure::Unavailable(format!("cannot encode token: {error}")))?;

        // 128 random bits do not collide in practice; set-if-absent makes sure
        // a collision could never overwrite another token.
        for _ in 0..3 {
            let mut id = [0u8; ACCESS_ID_BYTES];
            backend.random_bytes(&mut id);
            let access_id = BASE64URL_NOPAD.encode(&id);
            if backend.set_if_absent(&token_key(&access_id), &encoded, secs_to_ms(ttl_secs))? {
                return Ok(Issued {
                    access_id,
                    secret_seed: record.seed,
                    ttl_secs,
                });
            }
        }
        Err(AuthFailure::Unavailable(
            "could not allocate a unique access id".into(),
        ))
    }

    /// Check a connection string. On success the code is spent, the idle clock
    /// restarts and the token's grant is returned.
    pub fn verify(&self, access_id: &str, otp: &str) -> Result<Grant, AuthFailure> {
        let (backend, profile) = (self.backend, &self.profile);
        check_access_id(access_id)?;
        if !profile.is_well_formed(otp) {
            return Err(AuthFailure::BadRequest(format!(
                "otp must be {} decimal digits",
                profile.digits
            )));
        }
        let record = load_token(backend, access_id)?.ok_or(AuthFailure::TokenInvalid)?;
        let now = backend.now_unix_secs();
        if let Some(retry_after_secs) = lock_remaining(backend, access_id, now)? {
            return Err(AuthFailure::RateLimited { retry_after_secs });
        }
        // Count the code before comparing it, atomically: however many codes
        // for this access id arrive at once, on one node or many, at most
        // `max_failures` of them are ever compared within a window. A code
        // that matches gives its count back below.
        let fails_key = fails_key(access_id);
        let failure_window_secs = Settings::failure_window_secs(backend);
        let max_failures = Settings::max_failures(backend);
        let counted = backend.increment(&fails_key, 1, failure_window_secs * 1000)?;
        if counted > max_failures {
            let retry_after_secs = lock_remaining(backend, access_id, now)?
                .unwrap_or_else(|| saturating_u32(failure_window_secs));
            return Err(AuthFailure::RateLimited { retry_after_secs });
        }

        let seed = BASE32_NOPAD
            .decode(record.seed.as_bytes())
            .map_err(|_| AuthFailure::Unavailable("stored token is corrupt".into()))?;
        let current = profile.time_step(now);
        let codes = profile.codes_for(&seed);
        // The previous, the current and the next step are accepted; the
        // current first, so a client with a good clock costs one HMAC.
        let window = [
            current,
            current.saturating_sub(1),
            current.saturating_add(1),
        ];
        if !window
            .iter()
            .any(|&step| totp::codes_equal(otp, &codes.code_at_step(step)))
        {
            self.count_miss(access_id, now, counted == max_failures, max_failures)?;
            return Err(AuthFailure::OtpInvalid);
        }
        backend.decrement(&fails_key, 1)?;

        // The guard spends the string, not the step it matched: two steps
        // share a code about once in 10^digits, and a string must stay
        // refused whatever step its code matches next. (The code is digits
        // only, checked above, so the key cannot run into another.)
        let spent_key = ["spent:", access_id, ":", otp].concat();
        if !backend.set_if_absent(&spent_key, b"1", spent_marker_ttl_ms(profile, current, now))? {
            return Err(AuthFailure::OtpReused);
        }
        if !backend.touch(&token_key(access_id), secs_to_ms(record.ttl))? {
            return Err(AuthFailure::TokenInvalid);
        }
        Ok(Grant {
            access_id: access_id.to_owned(),
            user_id: record.user_id,
            channels: record.channels,
            publish: record.publish,
            ttl_secs: record.ttl,
        })
    }

    /// Restart the token's idle clock.
    pub fn touch(&self, access_id: &str) -> Result<(), AuthFailure> {
        let backend = self.backend;
        check_access_id(access_id)?;
        let record = load_token(backend, access_id)?.ok_or(AuthFailure::TokenInvalid)?;
        if backend.touch(&token_key(access_id), secs_to_ms(record.ttl))? {
            Ok(())
        } else {
            Err(AuthFailure::TokenInvalid)
        }
    }

    /// Delete a token; `false` when there was none.
    pub fn revoke(&self, access_id: &str) -> Result<bool, AuthFailure> {
        check_access_id(access_id)?;
        Ok(self.backend.delete(&token_key(access_id))?)
    }

    /// A wrong code was compared. The one that uses up the window's
    /// allowance locks the access id, and so does every `max_failures`-th
    /// wrong code within [`MISSES_SPAN_SECS`] of the first, however they
    /// are paced: a guesser who stays under the allowance in each window
    /// is locked as often as one who bursts. (Right codes do not give these
    /// back: the owner's connects would reopen pacing.)
    fn count_miss(
        &self,
        access_id: &str,
        now: u64,
        window_used_up: bool,
        max_failures: u64,
    ) -> Result<(), AuthFailure> {
        // The window's lock first: a store failure counting the miss must
        // not cost it.
        if window_used_up {
            self.lock(access_id, now)?;
        }
        let misses =
            self.backend
                .increment(&["misses:", access_id].concat(), 1, MISSES_SPAN_SECS * 1000)?;
        if !window_used_up && misses % max_failures == 0 {
            self.lock(access_id, now)?;
        }
        Ok(())
    }

    /// Lock the access id after a wrong code (see [`Self::count_miss`];
    /// RFC 4226 section 7.3), for longer each time within a day.
    /// Only the call that creates the lock counts it, so a burst of wrong
    /// codes escalates by one lock, not by one per code.
    fn lock(&self, access_id: &str, now: u64) -> Result<(), AuthFailure> {
        let backend = self.backend;
        let locks_key = format!("locks:{access_id}");
        let previous_locks = backend
            .get(&locks_key)?
            .and_then(|count| std::str::from_utf8(&count).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let lockout_secs = Settings::lockout_secs(backend);
        let lock_secs = lockout_secs
            .saturating_mul(1u64 << previous_locks.min(20))
            .min(Settings::max_lockout_secs(backend).max(lockout_secs));
        let until = now + lock_secs;
        let lock_key = format!("lock:{access_id}");
        if backend.set_if_absent(&lock_key, until.to_string().as_bytes(), lock_secs * 1000)? {
            backend.increment(&locks_key, 1, LOCK_HISTORY_SECS * 1000)?;
            // The count ends with the lock: codes that were in flight when it
            // was set stay refused, and a fresh window starts after it.
            backend.touch(&fails_key(access_id), lock_secs * 1000)?;
        }
        Ok(())
    }
}

fn token_key(access_id: &str) -> String {
    ["token:", access_id].concat()
}

fn fails_key(access_id: &str) -> String {
    ["fails:", access_id].concat()
}

fn saturating_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// How long the one-time marker of a string accepted at step `current`
/// lives, from `now`: the latest step it can have matched is `current + 1`,
/// which is accepted until the clock reaches `current + 3`; the marker
/// outlives that by one more step, so nodes whose clocks differ by up to a
/// step still find it, and by `SPENT_MARKER_MARGIN_SECS` for the time a
/// store call takes to arrive.
fn spent_marker_ttl_ms(profile: &OtpProfile, current: u64, now: u64) -> u64 {
    let expires = current
        .saturating_add(4)
        .saturating_mul(u64::from(profile.period_secs))
        .saturating_add(SPENT_MARKER_MARGIN_SECS);
    expires.saturating_sub(now).saturating_mul(1000)
}

fn secs_to_ms(secs: u32) -> u64 {
    u64::from(secs) * 1000
}

fn check_access_id(access_id: &str) -> Result<(), AuthFailure> {
    let well_formed = !access_id.is_empty()
        && access_id.len() <= MAX_ACCESS_ID_LEN
        && access_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(AuthFailure::BadRequest(format!(
            "access_id must be 1 to {MAX_ACCESS_ID_LEN} URL-safe characters"
        )))
    }
}

fn validate_globs(field: &str, globs: &[String]) -> Result<(), AuthFailure> {
    if globs.len() > MAX_GLOBS {
        return Err(AuthFailure::BadRequest(format!(
            "{field} holds at most {MAX_GLOBS} patterns"
        )));
    }
    for glob in globs {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-=@,.;:*".contains(c);
        if glob.is_empty() || glob.len() > MAX_GLOB_LEN || !glob.chars().all(allowed) {
            return Err(AuthFailure::BadRequest(format!(
                "{field}: {glob:?} is not a valid channel pattern (1 to {MAX_GLOB_LEN} of A-Z a-z 0-9 _ - = @ , . ; : and *)"
            )));
        }
    }
    Ok(())
}

fn load_token(backend: &impl Backend, access_id: &str) -> Result<Option<TokenRecord>, AuthFailure> {
    let Some(bytes) = backend.get(&token_key(access_id))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| AuthFailure::Unavailable("stored token is corrupt".into()))
}

/// Seconds left on the access id's lock, if it is locked.
fn lock_remaining(
    backend: &impl Backend,
    access_id: &str,
    now: u64,
) -> Result<Option<u32>, AuthFailure> {
    let Some(until) = backend.get(&format!("lock:{access_id}"))? else {
        return Ok(None);
    };
    let until = std::str::from_utf8(&until)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(now + 1);
    Ok(Some(saturating_u32(until.saturating_sub(now).max(1))))
}

#[cfg(test)]
mod tests;
