// A router: anyone may subscribe to `public-*` channels; everything else
// follows the token's globs, where `*` matches any run of characters.
wit_bindgen::generate!({ path: "wit", world: "router-plugin" });

use exports::madx::pusher::router::{ClientPublication, Guest, RouteError, Target};
use madx::pusher::types::Claims;

struct Router;

impl Guest for Router {
    fn authorize_subscribe(claims: Claims, channel: String) -> Result<(), RouteError> {
        check_channel(&channel)?;
        if channel.starts_with("public-") || any_matches(&claims.channels, &channel) {
            Ok(())
        } else {
            Err(RouteError::Forbidden(format!("{channel} is not public")))
        }
    }

    fn authorize_publish(
        claims: Claims,
        channel: String,
        event: String,
    ) -> Result<ClientPublication, RouteError> {
        check_channel(&channel)?;
        if any_matches(&claims.publish, &channel) {
            Ok(ClientPublication { channel, event })
        } else {
            Err(RouteError::Forbidden(format!("no publishing to {channel}")))
        }
    }

    fn route_publish(target: Target, _event: String) -> Result<Vec<Target>, RouteError> {
        if let Target::Channel(channel) = &target {
            check_channel(channel)?;
        }
        Ok(vec![target])
    }
}

/// 1 to 200 characters of `A-Z a-z 0-9 _ - = @ , . ; :`.
fn check_channel(name: &str) -> Result<(), RouteError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-=@,.;:".contains(c);
    if (1..=200).contains(&name.len()) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(RouteError::InvalidChannel(format!(
            "bad channel name {name:?}"
        )))
    }
}

fn any_matches(globs: &[String], name: &str) -> bool {
    globs
        .iter()
        .any(|glob| matches(glob.as_bytes(), name.as_bytes()))
}

/// Glob matching with one backtrack point: linear in practice, never
/// exponential, whatever the pattern.
fn matches(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, n));
            g += 1;
        } else if g < glob.len() && glob[g] == name[n] {
            g += 1;
            n += 1;
        } else if let Some((star_g, star_n)) = star {
            // Let the last `*` swallow one more character and retry.
            star = Some((star_g, star_n + 1));
            g = star_g + 1;
            n = star_n + 1;
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

export!(Router);
