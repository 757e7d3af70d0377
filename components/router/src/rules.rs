//! Channel naming rules and glob matching.

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 200;

/// A channel name is 1 to 200 characters of `A-Z a-z 0-9 _ - = @ , . ; :`.
pub fn validate_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
        return Err(format!(
            "a channel name is 1 to {MAX_CHANNEL_LEN} characters long"
        ));
    }
    match name.chars().find(|&c| !is_channel_char(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{c:?} is not allowed in a channel name (use A-Z a-z 0-9 _ - = @ , . ; :)"
        )),
    }
}

/// Longest event name, in bytes.
pub const MAX_EVENT_LEN: usize = 100;
/// Longest user id or access id a publish may target, in bytes.
/// (The contract's user id limit, wit/types.wit.)
pub const MAX_ID_LEN: usize = 200;

/// An event name is 1 to 100 printable ASCII characters.
pub fn validate_event(name: &str) -> Result<(), String> {
    let printable = name.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if name.is_empty() || name.len() > MAX_EVENT_LEN || !printable {
        return Err(format!(
            "an event name is 1 to {MAX_EVENT_LEN} printable ASCII characters"
        ));
    }
    Ok(())
}

/// A user id or access id is 1 to 200 bytes.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!(
            "a user id or access id is 1 to {MAX_ID_LEN} bytes long"
        ));
    }
    Ok(())
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-=@,.;:".contains(c)
}

/// Does any of `globs` match `name`?
pub fn any_glob_matches(globs: &[String], name: &str) -> bool {
    globs
        .iter()
        .any(|glob| glob_matches(glob.as_bytes(), name.as_bytes()))
}

/// `*` matches any run of characters (including none); everything else
/// matches itself. Iterative with one backtrack point, so a hostile pattern
/// like `*a*a*a*b` costs O(pattern x name), not exponential time.
pub fn glob_matches(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if g < glob.len() && glob[g] == b'*' {
            backtrack = Some((g, n));
            g += 1;
        } else if g < glob.len() && glob[g] == name[n] {
            g += 1;
            n += 1;
        } else if let Some((star, matched_to)) = backtrack {
            // Let the last `*` swallow one more character and retry.
            g = star + 1;
            n = matched_to + 1;
            backtrack = Some((star, matched_to + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(glob: &str, name: &str) -> bool {
        glob_matches(glob.as_bytes(), name.as_bytes())
    }

    #[test]
    fn star_matches_any_run() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("news.*", "news."));
        assert!(matches("news.*", "news.sport"));
        assert!(matches("user-*-inbox", "user-42-inbox"));
        assert!(matches("*-*", "a-b-c"));
        assert!(!matches("news.*", "new.sport"));
        assert!(!matches("user-*-inbox", "user-42-outbox"));
    }

    #[test]
    fn no_star_means_exact() {
        assert!(matches("chat", "chat"));
        assert!(!matches("chat", "chats"));
        assert!(!matches("chats", "chat"));
    }

    #[test]
    fn hostile_pattern_finishes() {
        let name = "a".repeat(200);
        assert!(!matches("*a*a*a*a*a*a*a*a*a*a*b", &name));
    }

    #[test]
    fn channel_names_follow_the_documented_charset() {
        assert!(validate_channel("orders.42;eu@tenant=1,x:y_z-w").is_ok());
        assert!(validate_channel("").is_err());
        assert!(validate_channel("has space").is_err());
        assert!(validate_channel("wild*").is_err());
        assert!(validate_channel(&"x".repeat(MAX_CHANNEL_LEN + 1)).is_err());
        assert!(validate_channel(&"x".repeat(MAX_CHANNEL_LEN)).is_ok());
    }

    #[test]
    fn event_names_and_ids_have_bounds() {
        assert!(validate_event("report.done").is_ok());
        assert!(validate_event("with space").is_ok());
        assert!(validate_event("").is_err());
        assert!(validate_event("tab\there").is_err());
        assert!(validate_event(&"e".repeat(MAX_EVENT_LEN + 1)).is_err());
        assert!(validate_id("alice").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id(&"u".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn empty_glob_list_allows_nothing() {
        assert!(!any_glob_matches(&[], "chat"));
        assert!(any_glob_matches(&["x".into(), "ch*".into()], "chat"));
    }
}
