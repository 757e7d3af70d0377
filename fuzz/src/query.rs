//! The query string of `GET /v1/ws`: app, access_id, otp and last_id.

use axum::extract::Query;
use axum::http::Uri;
use madx_pusher::gateway::{ConnectParams, parse_last_id};

/// A query string, parsed by the extractor the endpoint uses. Invariants:
/// what was read re-encodes to a query that reads the same; `last_id` is
/// accepted exactly when it is a decimal u64 (or left out / empty), and
/// refused with a do-not-retry code (4000-4099) otherwise.
pub fn ws_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    // A request line that is no URI is refused by the HTTP layer.
    let Ok(uri) = format!("/v1/ws?{query}").parse::<Uri>() else {
        return;
    };
    // A malformed query string is refused with 4001 by the endpoint.
    let Ok(Query(params)) = Query::<ConnectParams>::try_from_uri(&uri) else {
        return;
    };

    let again = reparse(&params);
    assert_eq!(fields(&params), fields(&again));

    let text = params.last_id.as_deref();
    match parse_last_id(text) {
        Ok(None) => assert!(matches!(text, None | Some(""))),
        Ok(Some(id)) => {
            let text = text.expect("an id came from somewhere");
            let digits = text.strip_prefix('+').unwrap_or(text);
            assert!(digits.bytes().all(|byte| byte.is_ascii_digit()));
            assert_eq!(digits.parse::<u128>().ok(), Some(u128::from(id)));
        }
        Err(refusal) => {
            // Refused: not a u64, or a position no node can have issued.
            let text = text.expect("only a given last_id is refused");
            let issuable = text
                .parse::<u64>()
                .is_ok_and(|id| madx_pusher::broker::check_position(id).is_ok());
            assert!(!issuable, "refused {text:?}");
            assert_eq!(refusal.code().code(), 4005);
        }
    }
}

fn fields(params: &ConnectParams) -> [Option<&str>; 4] {
    [
        params.app.as_deref(),
        params.access_id.as_deref(),
        params.otp.as_deref(),
        params.last_id.as_deref(),
    ]
}

/// Encode the parameters as a client would and read them back.
fn reparse(params: &ConnectParams) -> ConnectParams {
    let names = ["app", "access_id", "otp", "last_id"];
    let pairs: Vec<(&str, &str)> = names
        .into_iter()
        .zip(fields(params))
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
    let encoded = serde_urlencoded::to_string(pairs).expect("strings encode");
    let uri: Uri = format!("/v1/ws?{encoded}")
        .parse()
        .unwrap_or_else(|error| panic!("encoded query {encoded:?} is no URI: {error}"));
    match Query::<ConnectParams>::try_from_uri(&uri) {
        Ok(Query(params)) => params,
        Err(rejection) => panic!("encoded query {encoded:?} refused: {rejection}"),
    }
}
