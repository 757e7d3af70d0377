//! The token rules of `madx-auth-core` (issue, verify, touch, revoke,
//! lockout) against an in-memory backend with a hand-driven clock, and its
//! TOTP arithmetic against an independent implementation (`totp-rs`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

use arbitrary::{Result, Unstructured};
use data_encoding::BASE32_NOPAD;
use madx_auth_core::tokens::{
    AuthFailure, Authority, Backend, Grant, MAX_TTL_SECS, Request, Settings, StoreFailure,
};
use madx_auth_core::totp::{self, Algorithm, OtpProfile};

/// Pairs of steps whose codes are the same for the first token a fresh
/// [`MemoryBackend`] issues (its seed is always the same), under the
/// default profile (SHA1, 6 digits, 30 s): one step apart and three.
const FIRST_SEED_RECURRENCES: [(u64, u64); 2] =
    [(60_285_582, 60_285_583), (61_746_090, 61_746_093)];

/// Operations on one backend, chosen by the fuzzer.
/// Invariants: a right code of the window is accepted exactly once (unless
/// the access id is locked or the token is gone), and the same string stays
/// refused until the clock is two steps past its use, even where its code
/// recurs in another step; a wrong or malformed one never; `max_failures`
/// wrong codes in a row lock the access id so that even the right code is
/// refused; tokens expire and are revoked as documented; issue refuses
/// exactly the requests outside the contract.
pub fn auth(data: &[u8]) {
    let mut input = Unstructured::new(data);
    // Running out of input just ends the run.
    let _ = run(&mut input);
}

/// A token request as the HTTP API passes it on: when the rules issue a
/// token, its current code connects once and only once.
pub(crate) fn issue_and_connect(request: Request) {
    let backend = MemoryBackend::new(1_800_000_015, HashMap::new());
    let mut world = World::new(&backend, OtpProfile::RFC6238_DEFAULT);
    if let Some(token) = world.issue(request) {
        let step = world.profile.time_step(backend.now_unix_secs());
        let code = world.profile.code_at_step(&world.tokens[token].seed, step);
        assert!(world.verify_right(token, &code).is_ok());
        assert_eq!(
            world.verify_right(token, &code),
            Err(AuthFailure::OtpReused)
        );
    }
}

/// HOTP/TOTP codes: the same as `totp-rs` computes for any key, time, step
/// length and 1 to 9 digits, well formed, and compared exactly.
pub fn totp(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok((algorithm, theirs, digits, period, time)) = (|| -> Result<_> {
        let (ours, theirs) = *input.choose(&[
            (Algorithm::Sha1, totp_rs::Algorithm::SHA1),
            (Algorithm::Sha256, totp_rs::Algorithm::SHA256),
            (Algorithm::Sha512, totp_rs::Algorithm::SHA512),
        ])?;
        Ok((
            ours,
            theirs,
            input.int_in_range(1..=9u8)?,
            input.int_in_range(1..=u32::MAX)?,
            input.arbitrary::<u64>()?,
        ))
    })() else {
        return;
    };
    let key = input.take_rest();
    let profile = OtpProfile {
        algorithm,
        digits,
        period_secs: period,
    };
    let code = profile.code_at_step(key, profile.time_step(time));
    let reference = totp_rs::TOTP::new_unchecked(
        theirs,
        usize::from(digits),
        0,
        u64::from(period),
        key.to_vec(),
    );
    assert_eq!(code, reference.generate(time));
    assert!(profile.is_well_formed(&code));
    assert!(totp::codes_equal(&code, &code.clone()));
    let mut other = code.clone().into_bytes();
    other[0] = if other[0] == b'9' { b'0' } else { other[0] + 1 };
    let other = String::from_utf8(other).expect("digits");
    assert!(!totp::codes_equal(&other, &code));
    assert!(!totp::codes_equal(&code[1..], &code));
}

fn run(input: &mut Unstructured) -> Result<()> {
    let mut settings = HashMap::new();
    for name in [
        "default_ttl_secs",
        "max_failures",
        "failure_window_secs",
        "lockout_secs",
        "max_lockout_secs",
    ] {
        let value = match input.int_in_range(0..=3u8)? {
            0 => continue,
            1 => input.int_in_range(1..=20u64)?.to_string(),
            2 => input.int_in_range(0..=100_000u64)?.to_string(),
            _ => input.arbitrary::<String>()?,
        };
        settings.insert(name.to_owned(), value);
    }
    // Now and then the default profile and a clock a few steps before a
    // pair of steps where the first token's codes recur, so that replays
    // of a recurring code are reached (one pair in 10^digits otherwise).
    let recurrence = if input.ratio(1, 4)? {
        Some(*input.choose(&FIRST_SEED_RECURRENCES)?)
    } else {
        None
    };
    let (profile, start) = match recurrence {
        Some((first, _)) => (
            OtpProfile::RFC6238_DEFAULT,
            (first - 3) * 30 + input.int_in_range(0..=29u64)?,
        ),
        None => (
            OtpProfile {
                algorithm: *input.choose(&[
                    Algorithm::Sha1,
                    Algorithm::Sha256,
                    Algorithm::Sha512,
                ])?,
                digits: input.int_in_range(6..=9)?,
                period_secs: input.int_in_range(1..=300)?,
            },
            // Any time up to 2^40 s (year 36812): the host's clock is not
            // input.
            input.int_in_range(0..=1u64 << 40)?,
        ),
    };
    let backend = MemoryBackend::new(start, settings);
    let mut world = World::new(&backend, profile);

    let loaded = world.settings;
    assert!((1..=MAX_TTL_SECS).contains(&loaded.default_ttl_secs));
    assert!((1..=1000).contains(&loaded.max_failures));
    for secs in [
        loaded.failure_window_secs,
        loaded.lockout_secs,
        loaded.max_lockout_secs,
    ] {
        assert!((1..=86_400).contains(&secs));
    }

    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        match input.int_in_range(0..=8u8)? {
            0 => {
                let request = request(input)?;
                world.issue(request);
            }
            1 if !world.tokens.is_empty() => {
                let token = input.choose_index(world.tokens.len())?;
                // A code of the window, one of a step not yet accepted, or
                // a string that was accepted before, again.
                let code = match world.last_accepted(token) {
                    Some(code) if input.ratio(1, 4)? => code,
                    _ => {
                        // Mostly the window's, so that tokens are not
                        // locked at once by codes not accepted yet.
                        let offset = if input.ratio(3, 4)? {
                            input.int_in_range(-1..=1i64)?
                        } else {
                            input.int_in_range(-2..=4i64)?
                        };
                        let step = world.current_step().saturating_add_signed(offset);
                        profile.code_at_step(&world.tokens[token].seed, step)
                    }
                };
                let _ = world.verify_right(token, &code);
            }
            2 if !world.tokens.is_empty() => {
                let token = input.choose_index(world.tokens.len())?;
                let code = if input.arbitrary()? {
                    input.arbitrary::<String>()?
                } else {
                    world.wrong_code(token, input.arbitrary()?)
                };
                world.verify_any(&world.tokens[token].access_id.clone(), &code);
            }
            3 if !world.tokens.is_empty() => {
                let token = input.choose_index(world.tokens.len())?;
                world.burst(token, input.arbitrary()?);
            }
            4 => {
                let secs = *input.choose(&[0, 1, 29, 30, 31, 299, 300, 3600, 7200])?;
                backend.advance_ms(secs * 1000 + input.int_in_range(0..=999)?);
            }
            5 if !world.tokens.is_empty() => {
                let token = input.choose_index(world.tokens.len())?;
                world.revoke(token);
            }
            6 if !world.tokens.is_empty() => {
                let token = input.choose_index(world.tokens.len())?;
                world.touch(token);
            }
            7 => {
                let access_id = input.arbitrary::<String>()?;
                let code = input.arbitrary::<String>()?;
                world.verify_any(&access_id, &code);
            }
            8 if !world.tokens.is_empty() => {
                let token = input.choose_index(world.tokens.len())?;
                let bytes = input.arbitrary::<Vec<u8>>()?;
                world.corrupt(token, &bytes);
            }
            _ => {}
        }
    }
    Ok(())
}

/// A token request within and around the contract's bounds.
fn request(input: &mut Unstructured) -> Result<Request> {
    let user_id = match input.int_in_range(0..=3u8)? {
        0 => None,
        1 => Some("u".repeat(input.int_in_range(0..=300)?)),
        _ => Some(input.arbitrary()?),
    };
    let mut globs = || -> Result<Vec<String>> {
        let count = *input.choose(&[0, 1, 2, 3, 64, 65])?;
        (0..count)
            .map(|index| {
                Ok(match input.int_in_range(0..=3u8)? {
                    0 => format!("news.{index}.*"),
                    1 => "c".repeat(input.int_in_range(0..=201)?),
                    _ => input.arbitrary()?,
                })
            })
            .collect()
    };
    let channels = globs()?;
    let publish = globs()?;
    let ttl_secs = match input.int_in_range(0..=2u8)? {
        0 => None,
        1 => Some(input.int_in_range(0..=7201)?),
        _ => Some(input.arbitrary()?),
    };
    Ok(Request {
        user_id,
        channels,
        publish,
        ttl_secs,
    })
}

/// Is the request within the contract (`Some(true)`), outside it
/// (`Some(false)`), or in the band where the user id limit may still move
/// (`None`: 201 to 256 bytes)?
fn within_contract(request: &Request) -> Option<bool> {
    let ttl_ok = request
        .ttl_secs
        .is_none_or(|ttl| (1..=MAX_TTL_SECS).contains(&ttl));
    let globs_ok = |globs: &[String]| {
        globs.len() <= 64
            && globs.iter().all(|glob| {
                (1..=200).contains(&glob.len())
                    && glob
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"_-=@,.;:*".contains(&byte))
            })
    };
    let others_ok = ttl_ok && globs_ok(&request.channels) && globs_ok(&request.publish);
    match request.user_id.as_ref().map(String::len) {
        _ if !others_ok => Some(false),
        None | Some(1..=200) => Some(true),
        Some(201..=256) => None,
        Some(_) => Some(false),
    }
}

/// What the fuzzer's run knows about one issued token.
struct Token {
    access_id: String,
    seed: Vec<u8>,
    request: Request,
    ttl_secs: u32,
    /// When the idle timeout ends, in ms of the backend's clock.
    expires_ms: u64,
    revoked: bool,
    /// Its stored record was overwritten with fuzzer bytes.
    corrupt: bool,
}

/// A string's last acceptance.
struct Acceptance {
    /// The step of the clock then.
    step: u64,
    /// When its one-time marker ends, in ms of the backend's clock.
    marker_ends_ms: u64,
}

struct World<'a> {
    backend: &'a MemoryBackend,
    profile: OtpProfile,
    settings: Settings,
    tokens: Vec<Token>,
    /// (access id, code) strings accepted, at their last acceptance.
    accepted: BTreeMap<(String, String), Acceptance>,
}

impl<'a> World<'a> {
    fn new(backend: &'a MemoryBackend, profile: OtpProfile) -> Self {
        World {
            backend,
            profile,
            settings: Settings::load(backend),
            tokens: Vec::new(),
            accepted: BTreeMap::new(),
        }
    }

    fn authority(&self) -> Authority<'a, MemoryBackend> {
        Authority::new(self.backend, self.profile)
    }

    fn current_step(&self) -> u64 {
        self.profile.time_step(self.backend.now_unix_secs())
    }

    /// The steps a code is accepted in.
    fn window(&self) -> RangeInclusive<u64> {
        let current = self.current_step();
        current.saturating_sub(1)..=current.saturating_add(1)
    }

    fn live(&self, token: usize) -> bool {
        let token = &self.tokens[token];
        !token.revoked && token.expires_ms > self.backend.now_ms.get()
    }

    fn locked(&self, token: usize) -> bool {
        let key = format!("lock:{}", self.tokens[token].access_id);
        self.backend.live(&key).is_some()
    }

    /// A well-formed code that matches no step of the window.
    fn wrong_code(&self, token: usize, seed: u32) -> String {
        let right: Vec<String> = self
            .window()
            .map(|step| self.profile.code_at_step(&self.tokens[token].seed, step))
            .collect();
        let modulus = 10u64.pow(u32::from(self.profile.digits));
        (0..4u64)
            .map(|extra| {
                let code = (u64::from(seed) + extra) % modulus;
                format!("{code:0width$}", width = usize::from(self.profile.digits))
            })
            .find(|code| !right.contains(code))
            .expect("three right codes leave a fourth wrong one")
    }

    fn issue(&mut self, request: Request) -> Option<usize> {
        let expected = within_contract(&request);
        match self.authority().issue(request.clone()) {
            Ok(issued) => {
                assert_ne!(expected, Some(false), "issued {request:?}");
                assert_eq!(issued.access_id.len(), 22);
                assert!(
                    issued
                        .access_id
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte))
                );
                let seed = BASE32_NOPAD
                    .decode(issued.secret_seed.as_bytes())
                    .expect("the seed is base32");
                assert_eq!(seed.len(), 20);
                let ttl = request.ttl_secs.unwrap_or(self.settings.default_ttl_secs);
                assert_eq!(issued.ttl_secs, ttl);
                assert!(self.tokens.iter().all(|t| t.access_id != issued.access_id));
                self.tokens.push(Token {
                    access_id: issued.access_id,
                    seed,
                    request,
                    ttl_secs: ttl,
                    expires_ms: self.backend.now_ms.get() + u64::from(ttl) * 1000,
                    revoked: false,
                    corrupt: false,
                });
                Some(self.tokens.len() - 1)
            }
            Err(AuthFailure::BadRequest(_)) => {
                assert_ne!(expected, Some(true), "refused {request:?}");
                None
            }
            Err(other) => panic!("issue failed with {other:?}"),
        }
    }

    /// A string accepted for this token at the latest step, if any.
    fn last_accepted(&self, token: usize) -> Option<String> {
        let access_id = &self.tokens[token].access_id;
        self.accepted
            .iter()
            .filter(|((id, _), _)| id == access_id)
            .max_by_key(|(_, acceptance)| acceptance.step)
            .map(|((_, code), _)| code.clone())
    }

    /// Present a well-formed code for a known token.
    fn verify_right(&mut self, token: usize, code: &str) -> Result<Grant, AuthFailure> {
        let (live, locked) = (self.live(token), self.locked(token));
        let current = self.current_step();
        // The steps of the window the code matches: one at most, unless the
        // code recurs (about once in 10^digits per pair of steps).
        let matched: Vec<u64> = self
            .window()
            .filter(|&step| self.profile.code_at_step(&self.tokens[token].seed, step) == code)
            .collect();
        let acceptable = !matched.is_empty();
        let access_id = self.tokens[token].access_id.clone();
        let string = (access_id.clone(), code.to_owned());
        let now_ms = self.backend.now_ms.get();
        let was_spent = self
            .accepted
            .get(&string)
            .is_some_and(|acceptance| acceptance.marker_ends_ms > now_ms);
        let result = self.authority().verify(&access_id, code);
        if self.tokens[token].corrupt {
            return result;
        }
        match (&result, acceptable) {
            (Ok(grant), true) => {
                assert!(live && !locked);
                assert!(
                    !was_spent,
                    "code {code:?} of steps {matched:?} accepted twice"
                );
                // The promise to the client: a string once accepted stays
                // refused until the clock is two steps past that, and so
                // through three steps here, as the promise also holds on a
                // node whose clock reads a step ahead.
                if let Some(&Acceptance { step: before, .. }) = self.accepted.get(&string) {
                    assert!(
                        current > before.saturating_add(3),
                        "{code:?} accepted at step {before} and again at {current}"
                    );
                }
                // The contract: the marker lives until the start of the
                // step four ahead, plus 5 s.
                let marker_ends_secs = (current + 4) * u64::from(self.profile.period_secs) + 5;
                let marker_ends_ms =
                    now_ms + (marker_ends_secs - self.backend.now_unix_secs()) * 1000;
                let acceptance = Acceptance {
                    step: current,
                    marker_ends_ms,
                };
                self.accepted.insert(string, acceptance);
                let token = &mut self.tokens[token];
                assert_eq!(grant.access_id, access_id);
                assert_eq!(grant.user_id, token.request.user_id);
                assert_eq!(grant.channels, token.request.channels);
                assert_eq!(grant.publish, token.request.publish);
                assert_eq!(grant.ttl_secs, token.ttl_secs);
                token.expires_ms = self.backend.now_ms.get() + u64::from(token.ttl_secs) * 1000;
            }
            (Err(AuthFailure::TokenInvalid), _) => assert!(!live),
            (Err(AuthFailure::RateLimited { retry_after_secs }), _) => {
                assert!(live);
                assert!(*retry_after_secs >= 1);
            }
            (Err(AuthFailure::OtpReused), true) => {
                assert!(live && !locked);
                assert!(
                    was_spent,
                    "code {code:?} of steps {matched:?} refused as reused"
                );
            }
            (Err(AuthFailure::OtpInvalid), false) => assert!(live && !locked),
            (other, _) => panic!("code {code:?} of steps {matched:?} gave {other:?}"),
        }
        if acceptable && live && !locked && !was_spent && result.is_err() {
            panic!("the right code of steps {matched:?} was refused: {result:?}");
        }
        result
    }

    /// Present any access id and code.
    fn verify_any(&mut self, access_id: &str, code: &str) {
        if let Some(token) = self.tokens.iter().position(|t| t.access_id == access_id)
            && self.profile.is_well_formed(code)
        {
            let _ = self.verify_right(token, code);
            return;
        }
        let id_ok = (1..=64).contains(&access_id.len())
            && access_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte));
        let result = self.authority().verify(access_id, code);
        match result {
            Err(AuthFailure::BadRequest(_)) => {
                assert!(!id_ok || !self.profile.is_well_formed(code));
            }
            Err(AuthFailure::TokenInvalid) => assert!(id_ok),
            other => panic!("{access_id:?} / {code:?} gave {other:?}"),
        }
    }

    /// `max_failures` wrong codes in a row, then the right one: the lock
    /// must hold, however the counting is done.
    fn burst(&mut self, token: usize, seed: u32) {
        let (live, corrupt) = (self.live(token), self.tokens[token].corrupt);
        let access_id = self.tokens[token].access_id.clone();
        let mut compared = 0;
        for attempt in 0..self.settings.max_failures {
            let wrong = self.wrong_code(token, seed.wrapping_add(attempt as u32));
            match self.authority().verify(&access_id, &wrong) {
                Err(AuthFailure::OtpInvalid) => compared += 1,
                Err(AuthFailure::RateLimited { .. } | AuthFailure::TokenInvalid) => {}
                Err(AuthFailure::Unavailable(_)) if corrupt => {}
                other => panic!("a wrong code gave {other:?}"),
            }
        }
        // The wrong code that uses up the allowance is compared (and
        // answered as wrong) and locks; none after it is compared.
        assert!(compared <= self.settings.max_failures);
        if !live || corrupt {
            return;
        }
        let step = self.current_step();
        let right = self.profile.code_at_step(&self.tokens[token].seed, step);
        let result = self.authority().verify(&access_id, &right);
        assert!(
            matches!(result, Err(AuthFailure::RateLimited { .. })),
            "after {} wrong codes the right one gave {result:?}",
            self.settings.max_failures
        );
    }

    fn revoke(&mut self, token: usize) {
        let live = self.live(token) && !self.tokens[token].corrupt;
        let access_id = self.tokens[token].access_id.clone();
        let existed = self.authority().revoke(&access_id);
        if !self.tokens[token].corrupt {
            assert_eq!(existed, Ok(live));
        }
        self.tokens[token].revoked = true;
    }

    fn touch(&mut self, token: usize) {
        let live = self.live(token);
        let access_id = self.tokens[token].access_id.clone();
        let result = self.authority().touch(&access_id);
        let token = &mut self.tokens[token];
        if token.corrupt {
            return;
        }
        if live {
            assert_eq!(result, Ok(()));
            token.expires_ms = self.backend.now_ms.get() + u64::from(token.ttl_secs) * 1000;
        } else {
            assert_eq!(result, Err(AuthFailure::TokenInvalid));
        }
    }

    /// Overwrite a live token's record with other bytes: the rules must
    /// fail cleanly, whatever they read.
    fn corrupt(&mut self, token: usize, bytes: &[u8]) {
        if !self.live(token) {
            return;
        }
        let key = format!("token:{}", self.tokens[token].access_id);
        let expires_ms = self.tokens[token].expires_ms;
        self.backend
            .entries
            .borrow_mut()
            .insert(key, (bytes.to_vec(), expires_ms));
        self.tokens[token].corrupt = true;
    }
}

/// The store, settings, clock and randomness of one run, in memory. Entries
/// expire when the clock reaches their expiry, as in the real stores.
struct MemoryBackend {
    /// key -> (value, expires at in ms of the clock)
    entries: RefCell<HashMap<String, (Vec<u8>, u64)>>,
    settings: HashMap<String, String>,
    now_ms: Cell<u64>,
    next_random: Cell<u64>,
}

impl MemoryBackend {
    fn new(unix_secs: u64, settings: HashMap<String, String>) -> Self {
        MemoryBackend {
            entries: RefCell::new(HashMap::new()),
            settings,
            now_ms: Cell::new(unix_secs * 1000),
            next_random: Cell::new(1),
        }
    }

    fn advance_ms(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }

    fn live(&self, key: &str) -> Option<Vec<u8>> {
        let entries = self.entries.borrow();
        let (value, expires) = entries.get(key)?;
        (*expires > self.now_ms.get()).then(|| value.clone())
    }
}

fn failure(message: &str) -> StoreFailure {
    StoreFailure(message.to_owned())
}

impl Backend for MemoryBackend {
    fn get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, StoreFailure> {
        Ok(self.live(key))
    }
    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> std::result::Result<(), StoreFailure> {
        let expires = self.now_ms.get().saturating_add(ttl_ms);
        self.entries
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), expires));
        Ok(())
    }
    fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> std::result::Result<bool, StoreFailure> {
        if self.live(key).is_some() {
            return Ok(false);
        }
        self.set(key, value, ttl_ms)?;
        Ok(true)
    }
    fn touch(&self, key: &str, ttl_ms: u64) -> std::result::Result<bool, StoreFailure> {
        let Some(value) = self.live(key) else {
            return Ok(false);
        };
        self.set(key, &value, ttl_ms)?;
        Ok(true)
    }
    fn delete(&self, key: &str) -> std::result::Result<bool, StoreFailure> {
        let existed = self.live(key).is_some();
        self.entries.borrow_mut().remove(key);
        Ok(existed)
    }
    fn increment(
        &self,
        key: &str,
        delta: u64,
        ttl_ms: u64,
    ) -> std::result::Result<u64, StoreFailure> {
        let now = self.now_ms.get();
        let mut entries = self.entries.borrow_mut();
        let (value, expires) = match entries.get(key) {
            Some((value, expires)) if *expires > now => {
                let current = madx_wire::store::parse_counter(value)
                    .ok_or_else(|| failure("not a counter"))?;
                (current.saturating_add(delta), *expires)
            }
            _ => (delta, now.saturating_add(ttl_ms)),
        };
        entries.insert(key.to_owned(), (value.to_string().into_bytes(), expires));
        Ok(value)
    }
    fn decrement(&self, key: &str, delta: u64) -> std::result::Result<u64, StoreFailure> {
        let now = self.now_ms.get();
        let mut entries = self.entries.borrow_mut();
        let Some((value, expires)) = entries.get(key).filter(|(_, expires)| *expires > now) else {
            return Ok(0);
        };
        let current =
            madx_wire::store::parse_counter(value).ok_or_else(|| failure("not a counter"))?;
        let (next, expires) = (current.saturating_sub(delta), *expires);
        if next == 0 {
            entries.remove(key);
        } else {
            entries.insert(key.to_owned(), (next.to_string().into_bytes(), expires));
        }
        Ok(next)
    }
    fn setting(&self, name: &str) -> Option<String> {
        self.settings.get(name).cloned()
    }
    fn now_unix_secs(&self) -> u64 {
        self.now_ms.get() / 1000
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        // Distinct, not random: enough for unique access ids and seeds.
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_random.get().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
            self.next_random.set(self.next_random.get() + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs the fuzzer sets its clock near do share a code for the
    /// first token a fresh backend issues.
    #[test]
    fn the_first_seeds_recurrences_share_a_code() {
        let backend = MemoryBackend::new(0, HashMap::new());
        let profile = OtpProfile::RFC6238_DEFAULT;
        let issued = Authority::new(&backend, profile)
            .issue(Request::default())
            .expect("a default request is issued");
        let seed = BASE32_NOPAD
            .decode(issued.secret_seed.as_bytes())
            .expect("the seed is base32");
        for (first, second) in FIRST_SEED_RECURRENCES {
            assert_eq!(
                profile.code_at_step(&seed, first),
                profile.code_at_step(&seed, second),
                "steps {first} and {second}"
            );
        }
    }
}
