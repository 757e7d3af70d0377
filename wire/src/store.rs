//! The plugins' store as every backend keeps it (the WIT `store`
//! interface): the limits on what a plugin may write, and where its keys
//! live. The hosts' in-memory and Redis stores and the edge's plugin host
//! check the same arguments and use the same keys, so a token written by
//! one is the token another reads.

/// What a client is told when the store cannot be reached (HTTP 503
/// `store_unavailable`, or an `error` frame before close 1011); the
/// backend's own words go to the log only.
pub const UNAVAILABLE: &str = "the store cannot be reached right now; retry later";

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value a plugin may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest time to live a plugin may ask for, in milliseconds (30 days).
pub const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Largest value a counter holds, and largest `delta`: 2^63 - 1, what every
/// backend can keep (Redis's counters are signed 64-bit).
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// `app/<app>/<plugin>/`: the prefix of one plugin kind's keys for one app.
/// A Redis store puts the deployment's `<prefix>:` in front
/// ([`redis_key_prefix`]).
pub fn plugin_namespace(app_id: &str, plugin_kind: &str) -> String {
    format!("app/{app_id}/{plugin_kind}/")
}

/// `<prefix>:`, in front of every key a Redis store writes, so deployments
/// sharing one Redis never meet.
pub fn redis_key_prefix(store_prefix: &str) -> String {
    format!("{store_prefix}:")
}

/// A key is 1 to [`MAX_KEY_BYTES`] bytes long.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("keys are 1 to {MAX_KEY_BYTES} bytes long"));
    }
    Ok(())
}

/// A value is at most [`MAX_VALUE_BYTES`] bytes long.
pub fn check_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("values are at most {MAX_VALUE_BYTES} bytes"));
    }
    Ok(())
}

/// A time to live is 1 to [`MAX_TTL_MS`] milliseconds: nothing a plugin
/// writes is permanent.
pub fn check_ttl_ms(ttl_ms: u64) -> Result<(), String> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(format!("ttl-ms must be between 1 and {MAX_TTL_MS}"));
    }
    Ok(())
}

/// A counter's `delta` is at most [`MAX_COUNTER`].
pub fn check_delta(delta: u64) -> Result<(), String> {
    if delta > MAX_COUNTER {
        return Err(format!("delta must be at most {MAX_COUNTER}"));
    }
    Ok(())
}

/// The number a counter entry holds, read as Redis reads one: decimal
/// digits with no sign, no leading zero and no spaces, 0 to
/// [`MAX_COUNTER`]. Anything else is not a counter on any backend, and
/// `increment` and `decrement` refuse it without writing (the Redis
/// scripts check the same form first).
pub fn parse_counter(text: &[u8]) -> Option<u64> {
    let canonical = match text {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|&count| count <= MAX_COUNTER)
}

/// Does a Redis error reply refuse the value (not a counter, a key of
/// another type, an overflow), which a plugin is told as
/// `invalid-argument`, rather than say that the backend failed? Redis's
/// own words, whole, so an outage's message is never taken for one.
pub fn redis_refused_value(reply: &str) -> bool {
    const REFUSALS: [&str; 3] = [
        "value is not an integer or out of range",
        "increment or decrement would overflow",
        "WRONGTYPE",
    ];
    REFUSALS.iter().any(|refusal| reply.contains(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
        assert!(check_ttl_ms(0).is_err());
        assert!(check_ttl_ms(1).is_ok());
        assert!(check_ttl_ms(MAX_TTL_MS).is_ok());
        assert!(check_ttl_ms(MAX_TTL_MS + 1).is_err());
        assert!(check_delta(MAX_COUNTER).is_ok());
        assert!(check_delta(MAX_COUNTER + 1).is_err());
    }

    #[test]
    fn counters_are_read_as_redis_reads_them() {
        assert_eq!(parse_counter(b"0"), Some(0));
        assert_eq!(parse_counter(b"42"), Some(42));
        let max = MAX_COUNTER.to_string();
        assert_eq!(parse_counter(max.as_bytes()), Some(MAX_COUNTER));
        let beyond = (MAX_COUNTER + 1).to_string();
        for refused in [
            b"".as_slice(),
            b"-1",
            b"+1",
            b"-0",
            b"007",
            b"00",
            b" 1",
            b"1 ",
            b"1.0",
            b"abc",
            "\u{663}".as_bytes(),
            beyond.as_bytes(),
        ] {
            assert_eq!(parse_counter(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn only_redis_refusing_the_value_is_the_plugins_mistake() {
        for refusal in [
            "ERR value is not an integer or out of range",
            "ERR increment or decrement would overflow",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ] {
            assert!(redis_refused_value(refusal), "{refusal}");
        }
        for outage in [
            "connection refused",
            "buffer overflow while reading the reply",
            "Connection reset by peer (os error 104)",
        ] {
            assert!(!redis_refused_value(outage), "{outage}");
        }
    }

    #[test]
    fn keys_live_under_the_app_and_the_plugin() {
        let key = format!(
            "{}{}token:abc",
            redis_key_prefix("madx"),
            plugin_namespace("alpha", "auth")
        );
        assert_eq!(key, "madx:app/alpha/auth/token:abc");
    }
}
