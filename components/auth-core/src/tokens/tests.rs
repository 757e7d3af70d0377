//! The token rules against an in-memory backend with a hand-driven clock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::*;

#[derive(Default)]
struct TestBackend {
    /// key -> (value, expires at, in ms of the fake clock)
    entries: RefCell<HashMap<String, (Vec<u8>, u64)>>,
    settings: HashMap<&'static str, &'static str>,
    /// The settings asked for, in order: in the component each is a call
    /// into the host.
    settings_read: RefCell<Vec<String>>,
    now_ms: Cell<u64>,
    next_random: Cell<u8>,
}

impl TestBackend {
    fn at(unix_secs: u64) -> Self {
        let backend = TestBackend::default();
        backend.now_ms.set(unix_secs * 1000);
        backend
    }
    fn advance_secs(&self, secs: u64) {
        self.now_ms.set(self.now_ms.get() + secs * 1000);
    }
    fn live(&self, key: impl AsRef<str>) -> Option<Vec<u8>> {
        let entries = self.entries.borrow();
        let (value, expires) = entries.get(key.as_ref())?;
        (*expires > self.now_ms.get()).then(|| value.clone())
    }
    fn code(&self, seed: &str, step_offset: i64) -> String {
        let seed = BASE32_NOPAD.decode(seed.as_bytes()).unwrap();
        let profile = OtpProfile::RFC6238_DEFAULT;
        let step = profile.time_step(self.now_unix_secs()) as i64 + step_offset;
        profile.code_at_step(&seed, step as u64)
    }
}

impl Backend for TestBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFailure> {
        Ok(self.live(key))
    }
    fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), StoreFailure> {
        let expires = self.now_ms.get() + ttl_ms;
        self.entries
            .borrow_mut()
            .insert(key.into(), (value.to_vec(), expires));
        Ok(())
    }
    fn set_if_absent(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<bool, StoreFailure> {
        if self.live(key).is_some() {
            return Ok(false);
        }
        self.set(key, value, ttl_ms)?;
        Ok(true)
    }
    fn touch(&self, key: &str, ttl_ms: u64) -> Result<bool, StoreFailure> {
        let Some(value) = self.live(key) else {
            return Ok(false);
        };
        self.set(key, &value, ttl_ms)?;
        Ok(true)
    }
    fn delete(&self, key: &str) -> Result<bool, StoreFailure> {
        let existed = self.live(key).is_some();
        self.entries.borrow_mut().remove(key);
        Ok(existed)
    }
    fn increment(&self, key: &str, delta: u64, ttl_ms: u64) -> Result<u64, StoreFailure> {
        let now = self.now_ms.get();
        let mut entries = self.entries.borrow_mut();
        let (value, expires) = match entries.get(key) {
            Some((value, expires)) if *expires > now => {
                let current: u64 = std::str::from_utf8(value).unwrap().parse().unwrap();
                (current + delta, *expires)
            }
            _ => (delta, now + ttl_ms),
        };
        entries.insert(key.into(), (value.to_string().into_bytes(), expires));
        Ok(value)
    }
    fn decrement(&self, key: &str, delta: u64) -> Result<u64, StoreFailure> {
        let now = self.now_ms.get();
        let mut entries = self.entries.borrow_mut();
        let Some((value, expires)) = entries.get(key).filter(|(_, expires)| *expires > now) else {
            return Ok(0);
        };
        let current: u64 = std::str::from_utf8(value).unwrap().parse().unwrap();
        let next = current.saturating_sub(delta);
        let expires = *expires;
        if next == 0 {
            entries.remove(key);
        } else {
            entries.insert(key.into(), (next.to_string().into_bytes(), expires));
        }
        Ok(next)
    }
    fn setting(&self, name: &str) -> Option<String> {
        self.settings_read.borrow_mut().push(name.to_owned());
        self.settings.get(name).map(|value| value.to_string())
    }
    fn now_unix_secs(&self) -> u64 {
        self.now_ms.get() / 1000
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        for byte in buf {
            *byte = self.next_random.get();
            self.next_random.set(self.next_random.get().wrapping_add(1));
        }
    }
}

fn auth(backend: &TestBackend) -> Authority<'_, TestBackend> {
    Authority::new(backend, OtpProfile::RFC6238_DEFAULT)
}

fn issue_default(backend: &TestBackend) -> Issued {
    auth(backend).issue(Request::default()).unwrap()
}

/// A well-formed code that is not the current step's.
fn wrong_code(backend: &TestBackend, seed: &str) -> &'static str {
    if backend.code(seed, 0) == "000000" {
        "111111"
    } else {
        "000000"
    }
}

// A time in the middle of a 30 s step, so `advance_secs` moves predictably.
const T: u64 = 1_800_000_015;

#[test]
fn issued_token_has_url_safe_id_and_20_byte_base32_seed() {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    assert_eq!(issued.access_id.len(), 22, "128 bits in base64url");
    assert!(
        issued
            .access_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(
        BASE32_NOPAD
            .decode(issued.secret_seed.as_bytes())
            .unwrap()
            .len(),
        20
    );
    assert_eq!(issued.ttl_secs, MAX_TTL_SECS);
}

#[test]
fn verify_returns_claims_and_spends_the_code() {
    let backend = TestBackend::at(T);
    let request = Request {
        user_id: Some("u1".into()),
        channels: vec!["news.*".into()],
        publish: vec!["chat".into()],
        ttl_secs: Some(60),
    };
    let issued = auth(&backend).issue(request).unwrap();
    let code = backend.code(&issued.secret_seed, 0);
    let grant = auth(&backend).verify(&issued.access_id, &code).unwrap();
    assert_eq!(grant.user_id.as_deref(), Some("u1"));
    assert_eq!(grant.channels, vec!["news.*"]);
    assert_eq!(grant.publish, vec!["chat"]);
    assert_eq!(grant.ttl_secs, 60);
    assert_eq!(
        auth(&backend).verify(&issued.access_id, &code),
        Err(AuthFailure::OtpReused)
    );
}

#[test]
fn a_call_reads_only_the_settings_its_rules_use() {
    let backend = TestBackend::at(T);
    let issued = auth(&backend).issue(Request::default()).unwrap();
    assert_eq!(*backend.settings_read.borrow(), ["default_ttl_secs"]);

    backend.settings_read.borrow_mut().clear();
    let with_ttl = Request {
        ttl_secs: Some(60),
        ..Request::default()
    };
    auth(&backend).issue(with_ttl).unwrap();
    assert!(backend.settings_read.borrow().is_empty());

    let code = backend.code(&issued.secret_seed, 0);
    auth(&backend).verify(&issued.access_id, &code).unwrap();
    assert_eq!(
        *backend.settings_read.borrow(),
        ["failure_window_secs", "max_failures"]
    );
}

#[test]
fn one_step_of_skew_is_accepted_two_are_not() {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    for offset in [-1, 1] {
        let code = backend.code(&issued.secret_seed, offset);
        assert!(
            auth(&backend).verify(&issued.access_id, &code).is_ok(),
            "offset {offset}"
        );
    }
    for offset in [-2, 2] {
        let code = backend.code(&issued.secret_seed, offset);
        assert_eq!(
            auth(&backend).verify(&issued.access_id, &code),
            Err(AuthFailure::OtpInvalid),
            "offset {offset}"
        );
    }
}

/// The one-time guard spends the string, whichever step of the window it
/// matched, until one step and 5 s past the last step it could match. At
/// the first step of the clock (T < 30 s) there is no previous step to
/// wrap around to.
#[test]
fn the_guard_spends_the_string_until_no_step_it_matched_is_accepted() {
    for (now, offsets) in [(T, [-1, 0, 1].as_slice()), (10, [0, 1].as_slice())] {
        for &offset in offsets {
            let backend = TestBackend::at(now);
            let issued = issue_default(&backend);
            let code = backend.code(&issued.secret_seed, offset);
            auth(&backend).verify(&issued.access_id, &code).unwrap();
            let markers: Vec<(String, u64)> = backend
                .entries
                .borrow()
                .iter()
                .filter(|(key, _)| !key.starts_with("token:"))
                .map(|(key, (_, expires))| (key.clone(), *expires))
                .collect();
            // The next step is accepted until the clock reaches the step
            // three after now's; the marker lives a step and 5 s more.
            let expires = ((now / 30 + 4) * 30 + 5) * 1000;
            assert_eq!(
                markers,
                [(format!("spent:{}:{code}", issued.access_id), expires)],
                "now {now}, offset {offset}"
            );
        }
    }
}

/// A code recurs in another step about once in 10^digits. This token
/// (the first one a fresh `TestBackend` issues) has two such pairs: steps
/// 60,585,738 and 60,585,739 share a code, and so do 60,421,732 and
/// 60,421,735. Whichever step a first use matches, the same string is
/// refused until the clock is two steps past the first use, whatever step
/// its code matches then; and so on a node whose clock reads a step behind
/// or ahead of the one that accepted it (from a step before the first use
/// to three after).
#[test]
fn a_string_stays_refused_when_its_code_recurs_in_another_step() {
    for (first, second) in [(60_585_738, 60_585_739), (60_421_732, 60_421_735)] {
        for first_use in first - 1..=second + 1 {
            for later in first_use - 1..=first_use + 3 {
                let backend = TestBackend::at(first_use * 30 + 15);
                let issued = issue_default(&backend);
                let code_of =
                    |step: u64| backend.code(&issued.secret_seed, step as i64 - first_use as i64);
                let code = code_of(first);
                assert_eq!(code, code_of(second), "the fixture's steps share a code");
                auth(&backend).verify(&issued.access_id, &code).unwrap();

                backend.now_ms.set((later * 30 + 15) * 1000);
                let window = later - 1..=later + 1;
                let expected = if window.contains(&first) || window.contains(&second) {
                    AuthFailure::OtpReused
                } else {
                    AuthFailure::OtpInvalid
                };
                assert_eq!(
                    auth(&backend).verify(&issued.access_id, &code),
                    Err(expected.clone()),
                    "steps {first} and {second}: first used at step {first_use}, again at {later}"
                );
                // A reused code gives its count back; a wrong one keeps it.
                let failures = backend.live(format!("fails:{}", issued.access_id));
                let counted = (expected == AuthFailure::OtpInvalid).then(|| b"1".to_vec());
                assert_eq!(
                    failures, counted,
                    "first used at step {first_use}, again at {later}"
                );
            }
        }
    }
}

#[test]
fn a_spent_code_stays_spent_while_it_could_still_match() {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    let code = backend.code(&issued.secret_seed, 1);
    auth(&backend).verify(&issued.access_id, &code).unwrap();
    // Two steps later the same code is the previous step: still refused.
    backend.advance_secs(60);
    assert_eq!(
        auth(&backend).verify(&issued.access_id, &code),
        Err(AuthFailure::OtpReused)
    );
}

#[test]
fn idle_token_expires_and_activity_keeps_it() {
    let backend = TestBackend::at(T);
    let issued = auth(&backend)
        .issue(Request {
            ttl_secs: Some(100),
            ..Request::default()
        })
        .unwrap();
    backend.advance_secs(90);
    auth(&backend).touch(&issued.access_id).unwrap();
    backend.advance_secs(90);
    let code = backend.code(&issued.secret_seed, 0);
    auth(&backend).verify(&issued.access_id, &code).unwrap();
    backend.advance_secs(101);
    assert_eq!(
        auth(&backend).touch(&issued.access_id),
        Err(AuthFailure::TokenInvalid)
    );
    let code = backend.code(&issued.secret_seed, 0);
    assert_eq!(
        auth(&backend).verify(&issued.access_id, &code),
        Err(AuthFailure::TokenInvalid)
    );
}

#[test]
fn ttl_outside_the_contract_is_a_bad_request() {
    let backend = TestBackend::at(T);
    for ttl in [0, MAX_TTL_SECS + 1] {
        let request = Request {
            ttl_secs: Some(ttl),
            ..Request::default()
        };
        assert!(matches!(
            auth(&backend).issue(request),
            Err(AuthFailure::BadRequest(_))
        ));
    }
}

#[test]
fn bad_patterns_and_user_ids_are_refused() {
    let backend = TestBackend::at(T);
    let bad = [
        Request {
            channels: vec!["has space".into()],
            ..Request::default()
        },
        Request {
            publish: vec![String::new()],
            ..Request::default()
        },
        Request {
            user_id: Some("x".repeat(MAX_USER_ID_LEN + 1)),
            ..Request::default()
        },
    ];
    for request in bad {
        assert!(matches!(
            auth(&backend).issue(request),
            Err(AuthFailure::BadRequest(_))
        ));
    }
}

#[test]
fn revoked_token_is_invalid() {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    assert_eq!(auth(&backend).revoke(&issued.access_id), Ok(true));
    assert_eq!(auth(&backend).revoke(&issued.access_id), Ok(false));
    let code = backend.code(&issued.secret_seed, 0);
    assert_eq!(
        auth(&backend).verify(&issued.access_id, &code),
        Err(AuthFailure::TokenInvalid)
    );
}

#[test]
fn wrong_codes_lock_the_access_id_and_locks_grow() {
    let mut backend = TestBackend::at(T);
    backend.settings.insert("max_failures", "3");
    backend.settings.insert("lockout_secs", "10");
    let issued = issue_default(&backend);
    let right = backend.code(&issued.secret_seed, 0);
    let wrong = wrong_code(&backend, &issued.secret_seed);

    // Every wrong code is answered as wrong; the third one also locks.
    for _ in 0..3 {
        assert_eq!(
            auth(&backend).verify(&issued.access_id, wrong),
            Err(AuthFailure::OtpInvalid)
        );
    }
    // Locked: even the right code is refused, and not spent.
    assert_eq!(
        auth(&backend).verify(&issued.access_id, &right),
        Err(AuthFailure::RateLimited {
            retry_after_secs: 10
        })
    );
    backend.advance_secs(10);
    let right = backend.code(&issued.secret_seed, 0);
    auth(&backend).verify(&issued.access_id, &right).unwrap();

    // The second lock within a day lasts twice as long.
    for _ in 0..3 {
        assert_eq!(
            auth(&backend).verify(&issued.access_id, wrong),
            Err(AuthFailure::OtpInvalid)
        );
    }
    assert_eq!(
        auth(&backend).verify(&issued.access_id, wrong),
        Err(AuthFailure::RateLimited {
            retry_after_secs: 20
        })
    );
    assert_eq!(
        backend
            .live("locks:".to_owned() + &issued.access_id)
            .as_deref(),
        Some(&b"2"[..])
    );
}

#[test]
fn wrong_codes_paced_under_the_allowance_still_lock() {
    let mut backend = TestBackend::at(T);
    backend.settings.insert("max_failures", "3");
    backend.settings.insert("lockout_secs", "10");
    backend.settings.insert("failure_window_secs", "60");
    let issued = issue_default(&backend);
    let id = &issued.access_id;

    // Two wrong codes a window never use up a window's allowance...
    for _ in 0..2 {
        assert_eq!(
            auth(&backend).verify(id, wrong_code(&backend, &issued.secret_seed)),
            Err(AuthFailure::OtpInvalid)
        );
    }
    backend.advance_secs(60);
    assert_eq!(backend.live(format!("fails:{id}")), None);
    // ...but the third within the hour locks, as a burst of three would have.
    assert_eq!(
        auth(&backend).verify(id, wrong_code(&backend, &issued.secret_seed)),
        Err(AuthFailure::OtpInvalid)
    );
    let right = backend.code(&issued.secret_seed, 0);
    assert_eq!(
        auth(&backend).verify(id, &right),
        Err(AuthFailure::RateLimited {
            retry_after_secs: 10
        })
    );
    // A right code does not give the hour's count back.
    backend.advance_secs(10);
    let right = backend.code(&issued.secret_seed, 0);
    auth(&backend).verify(id, &right).unwrap();
    assert_eq!(
        backend.live(format!("misses:{id}")).as_deref(),
        Some(&b"3"[..])
    );
}

/// Wrong codes compared in a day by a guesser who sends four wrong codes
/// at once, then waits `windows` failure windows, keeping the token alive.
fn guesses_in_a_day_spaced(windows: u64) -> u64 {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    let id = &issued.access_id;
    let window_secs = Settings::default().failure_window_secs;
    let day_ends_ms = backend.now_ms.get() + 24 * 3600 * 1000;
    let mut compared = 0;
    while backend.now_ms.get() < day_ends_ms {
        for _ in 0..4 {
            let wrong = wrong_code(&backend, &issued.secret_seed);
            match auth(&backend).verify(id, wrong) {
                Err(AuthFailure::OtpInvalid) => compared += 1,
                Err(AuthFailure::RateLimited { .. }) => {}
                other => panic!("a wrong code gave {other:?}"),
            }
        }
        for _ in 0..windows {
            auth(&backend).touch(id).unwrap();
            backend.advance_secs(window_secs);
        }
    }
    compared
}

/// Wrong codes compared in a day by a guesser who follows `pace`: it sends
/// a wrong code whenever `pace` allows (given the wrong codes sent in the
/// current window so far), waits out every 4100 and every window, and keeps
/// the token alive as its real owner's open socket would.
fn guesses_in_a_day(pace: impl Fn(u64) -> bool) -> u64 {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    let id = &issued.access_id;
    let settings = Settings::default();
    let day_ends_ms = backend.now_ms.get() + 24 * 3600 * 1000;
    let (mut compared, mut in_window) = (0, 0);
    let mut window_ends_ms = backend.now_ms.get() + settings.failure_window_secs * 1000;
    while backend.now_ms.get() < day_ends_ms {
        auth(&backend).touch(id).unwrap();
        if backend.now_ms.get() >= window_ends_ms {
            in_window = 0;
            window_ends_ms = backend.now_ms.get() + settings.failure_window_secs * 1000;
        }
        if !pace(in_window) {
            backend.now_ms.set(window_ends_ms);
            continue;
        }
        let wrong = wrong_code(&backend, &issued.secret_seed);
        match auth(&backend).verify(id, wrong) {
            Err(AuthFailure::OtpInvalid) => {
                compared += 1;
                in_window += 1;
            }
            Err(AuthFailure::RateLimited { retry_after_secs }) => {
                backend.advance_secs(u64::from(retry_after_secs));
                in_window = 0;
                window_ends_ms = backend.now_ms.get() + settings.failure_window_secs * 1000;
            }
            other => panic!("a wrong code gave {other:?}"),
        }
    }
    compared
}

#[test]
fn guessing_is_capped_at_about_130_codes_a_day_however_it_is_paced() {
    let max_failures = Settings::default().max_failures;
    let bursts = guesses_in_a_day(|_| true);
    let paced = guesses_in_a_day(|in_window| in_window + 1 < max_failures);
    let one_a_window = guesses_in_a_day(|in_window| in_window == 0);
    // docs/protocol.md promises roughly 130 a day: five codes, then locks
    // of 300, 600, 1200, 2400 and 3600 s (the most) for the rest of the day.
    assert!((125..=145).contains(&bursts), "{bursts} bursting");
    assert!(paced <= bursts, "{paced} paced under the allowance");
    assert!(one_a_window <= bursts, "{one_a_window} one a window");
    // Slower still, the count ends before it reaches a lock: four a span
    // of an hour (here every 65 minutes), at most 96 a day.
    let four_an_hour = guesses_in_a_day_spaced(13);
    assert!(
        (88..=96).contains(&four_an_hour),
        "{four_an_hour} four an hour"
    );
}

#[test]
fn codes_are_counted_before_they_are_compared() {
    let mut backend = TestBackend::at(T);
    backend.settings.insert("max_failures", "3");
    backend.settings.insert("lockout_secs", "10");
    backend.settings.insert("failure_window_secs", "60");
    let issued = issue_default(&backend);
    let right = backend.code(&issued.secret_seed, 0);
    let id = &issued.access_id;

    // Codes still being compared elsewhere hold the whole allowance (what a
    // burst of parallel guesses looks like to the next one): the next code
    // is refused without being compared, even the right one, and it neither
    // locks nor escalates.
    backend
        .increment(&format!("fails:{id}"), 3, 60_000)
        .unwrap();
    assert_eq!(
        auth(&backend).verify(id, &right),
        Err(AuthFailure::RateLimited {
            retry_after_secs: 60
        })
    );
    assert_eq!(backend.live(format!("lock:{id}")), None);
    assert_eq!(backend.live(format!("locks:{id}")), None);

    // A right code gives its count back; wrong ones keep theirs for the
    // window, right codes in between or not.
    backend.advance_secs(60);
    let right = backend.code(&issued.secret_seed, 0);
    let wrong = wrong_code(&backend, &issued.secret_seed);
    assert_eq!(
        auth(&backend).verify(id, wrong),
        Err(AuthFailure::OtpInvalid)
    );
    auth(&backend).verify(id, &right).unwrap();
    assert_eq!(
        backend.live(format!("fails:{id}")).as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        auth(&backend).verify(id, wrong),
        Err(AuthFailure::OtpInvalid)
    );
    assert_eq!(
        auth(&backend).verify(id, wrong),
        Err(AuthFailure::OtpInvalid)
    );
    assert!(matches!(
        auth(&backend).verify(id, wrong),
        Err(AuthFailure::RateLimited { .. })
    ));
}

#[test]
fn malformed_connection_strings_are_bad_requests() {
    let backend = TestBackend::at(T);
    let issued = issue_default(&backend);
    for (access_id, otp) in [
        ("", "123456"),
        ("bad id!", "123456"),
        (issued.access_id.as_str(), "12345"),
        (issued.access_id.as_str(), "12345a"),
    ] {
        assert!(
            matches!(
                auth(&backend).verify(access_id, otp),
                Err(AuthFailure::BadRequest(_))
            ),
            "{access_id:?} {otp:?}"
        );
    }
}

#[test]
fn unknown_token_is_invalid() {
    let backend = TestBackend::at(T);
    assert_eq!(
        auth(&backend).verify("AAAAAAAAAAAAAAAAAAAAAA", "123456"),
        Err(AuthFailure::TokenInvalid)
    );
}
