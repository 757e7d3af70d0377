//! `POST /v1/tokens` as the contract bounds it, whichever auth plugin
//! issues the token: the hosts and the edge check these before calling the
//! plugin, so no plugin hands out tokens beyond the contract, or for a user
//! that publishes cannot reach.

/// The contract's ceiling on a token's idle timeout, in seconds (2 h).
pub const MAX_TTL_SECS: u32 = 7200;
/// Longest user id, in bytes (`wit/types.wit`): every user a token is
/// issued for stays reachable by a publish.
pub const MAX_USER_ID_BYTES: usize = 200;

/// The `ttl` of a token request: a whole number of seconds in
/// 1..=[`MAX_TTL_SECS`]. JSON does not tell `60.0` from `60`, so both mean
/// 60.
pub fn ttl_secs(ttl: Option<f64>) -> Result<Option<u32>, String> {
    match ttl {
        None => Ok(None),
        // Whole and in range, so the cast is exact.
        Some(ttl) if ttl.fract() == 0.0 && (1.0..=f64::from(MAX_TTL_SECS)).contains(&ttl) => {
            Ok(Some(ttl as u32))
        }
        Some(ttl) => Err(format!(
            "ttl must be between 1 and {MAX_TTL_SECS} seconds, got {ttl}"
        )),
    }
}

/// A token request's `user_id`, when given, is 1 to [`MAX_USER_ID_BYTES`]
/// bytes long.
pub fn check_user_id(user_id: Option<&str>) -> Result<(), String> {
    match user_id {
        Some(id) if id.is_empty() || id.len() > MAX_USER_ID_BYTES => Err(format!(
            "user_id must be 1 to {MAX_USER_ID_BYTES} bytes long"
        )),
        _ => Ok(()),
    }
}

/// A `socket_id` names the one connection a publish skips: a connection id,
/// which has Pusher's `<digits>.<digits>` form (node, socket).
pub fn validate_socket_id(id: &str) -> Result<(), String> {
    let digits =
        |part: &str| (1..=20).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    match id.split_once('.') {
        Some((node, socket)) if digits(node) && digits(socket) => Ok(()),
        _ => Err(format!(
            "socket_id {id:?} is not a connection id (<digits>.<digits>)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_whole_seconds_within_the_ceiling() {
        assert_eq!(ttl_secs(None), Ok(None));
        assert_eq!(ttl_secs(Some(60.0)), Ok(Some(60)));
        assert_eq!(ttl_secs(Some(7200.0)), Ok(Some(7200)));
        for refused in [0.0, 7201.0, 1.5, -1.0, f64::NAN] {
            assert!(ttl_secs(Some(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn user_ids_are_bounded() {
        assert!(check_user_id(None).is_ok());
        assert!(check_user_id(Some("")).is_err());
        assert!(check_user_id(Some(&"u".repeat(MAX_USER_ID_BYTES))).is_ok());
        assert!(check_user_id(Some(&"u".repeat(MAX_USER_ID_BYTES + 1))).is_err());
    }

    #[test]
    fn socket_ids_are_connection_ids() {
        assert!(validate_socket_id("123.456").is_ok());
        for refused in ["", "1", "1.", ".1", "1.2.3", "a.1", "1.2x"] {
            assert!(validate_socket_id(refused).is_err(), "{refused}");
        }
    }
}
