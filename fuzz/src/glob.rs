//! The router's channel globs and name rules.

use madx_router::rules::{
    MAX_CHANNEL_LEN, MAX_EVENT_LEN, MAX_ID_LEN, any_glob_matches, glob_matches, validate_channel,
    validate_event, validate_id,
};

/// The first byte says where the glob ends and the name begins.
/// Invariants: the matcher agrees with a plain dynamic-programming matcher;
/// the name rules agree with their documented character sets and lengths.
pub fn glob(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (glob, name) = rest.split_at(usize::from(split).min(rest.len()));
    let matched = glob_matches(glob, name);
    assert_eq!(
        matched,
        reference_match(glob, name),
        "glob {glob:?} on {name:?}"
    );

    let (Ok(glob), Ok(name)) = (std::str::from_utf8(glob), std::str::from_utf8(name)) else {
        return;
    };
    assert_eq!(any_glob_matches(&[glob.to_owned()], name), matched);
    assert!(!any_glob_matches(&[], name));

    let channel_ok = (1..=MAX_CHANNEL_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_-=@,.;:".contains(&byte));
    assert_eq!(validate_channel(name).is_ok(), channel_ok, "{name:?}");
    let event_ok = (1..=MAX_EVENT_LEN).contains(&name.len())
        && name.bytes().all(|byte| (b' '..=b'~').contains(&byte));
    assert_eq!(validate_event(name).is_ok(), event_ok, "{name:?}");
    assert_eq!(
        validate_id(name).is_ok(),
        (1..=MAX_ID_LEN).contains(&name.len())
    );
}

/// `matches[i][j]`: does `glob[..i]` match `name[..j]`?
fn reference_match(glob: &[u8], name: &[u8]) -> bool {
    let mut matches = vec![vec![false; name.len() + 1]; glob.len() + 1];
    matches[0][0] = true;
    for i in 1..=glob.len() {
        for j in 0..=name.len() {
            matches[i][j] = if glob[i - 1] == b'*' {
                // The star matches nothing, or one more byte.
                matches[i - 1][j] || (j > 0 && matches[i][j - 1])
            } else {
                j > 0 && glob[i - 1] == name[j - 1] && matches[i - 1][j - 1]
            };
        }
    }
    matches[glob.len()][name.len()]
}
