//! What checking a Pusher request costs: `Signature::read` and `verify`
//! (MD5 of the body, HMAC-SHA256 of the request) and turning the body into
//! madx messages, per request, for a typical trigger. Prints nanoseconds
//! per request; docs/benchmarks.md has the figures.
//!
//! `cargo bench -p madx-wire --bench signature`

use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use madx_wire::pusher::{self, PusherEvent, Signature, hex};
use md5::{Digest, Md5};
use sha2::Sha256;

const ROUNDS: u32 = 200_000;

fn main() {
    let secret = "a long random secret";
    let path = "/apps/424242/events";
    let body = br#"{"name":"report.done","channel":"jobs.42","data":"{\"url\":\"/reports/42\",\"t\":1764220800123456}"}"#;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let params = format!(
        "auth_key=my-key&auth_timestamp={now}&auth_version=1.0&body_md5={}",
        hex(&Md5::digest(body))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("POST\n{path}\n{params}").as_bytes());
    let query = format!(
        "{params}&auth_signature={}",
        hex(&mac.finalize().into_bytes())
    );

    let per_request = |work: &dyn Fn()| {
        for _ in 0..ROUNDS / 10 {
            work();
        }
        let started = Instant::now();
        for _ in 0..ROUNDS {
            work();
        }
        started.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
    };
    let signature = per_request(&|| {
        let signature = Signature::read(Some(black_box(&query)), now).expect("well formed");
        signature
            .verify("POST", path, black_box(body), secret)
            .expect("a good signature");
    });
    let messages = per_request(&|| {
        let event: PusherEvent = serde_json::from_slice(black_box(body)).expect("an event");
        black_box(pusher::messages(vec![event], 100).expect("one message"));
    });
    println!("signature read + verify: {signature:.0} ns per request");
    println!("event body to messages:  {messages:.0} ns per request");
}
