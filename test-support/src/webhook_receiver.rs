//! A real HTTP server that receives webhooks as a back-end would: it
//! checks `X-Pusher-Key` and `X-Pusher-Signature` (HMAC-SHA256 of the body
//! with the app secret, computed here with the `hmac` crate, independently
//! of the host's code), records what it accepts, and can be told to fail
//! (503) the next requests or to hang.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::PATIENCE;

/// One request the receiver accepted (signed right, answered 200).
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The parsed body: `{"time_ms", "events"}`.
    pub body: Value,
    pub content_type: Option<String>,
}

/// A webhook receiver on `127.0.0.1:0`; stops when dropped.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT/webhook`
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    key: String,
    secret: String,
    state: Mutex<Record>,
    changed: Notify,
}

#[derive(Default)]
struct Record {
    delivered: Vec<Delivered>,
    /// The events of `delivered`, in order.
    events: Vec<Value>,
    /// Requests whose key or signature was wrong (answered 401).
    badly_signed: usize,
    /// Requests answered 503 on purpose.
    failed: usize,
    /// Requests to answer 503 before accepting again.
    fail_next: usize,
    /// Answer no request while set.
    hang: bool,
    /// Requests hanging now.
    hanging: usize,
    /// Every request that arrived.
    requests: usize,
    /// Bodies longer than this are answered 413.
    max_body: Option<usize>,
    /// Requests answered 413.
    too_large: usize,
}

impl WebhookReceiver {
    /// Listen for webhooks signed for the app `key` with `secret`.
    pub async fn start(key: &str, secret: &str) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let address = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            secret: secret.to_owned(),
            state: Mutex::new(Record::default()),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/webhook", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            url: format!("http://{address}/webhook"),
            shared,
            server,
        }
    }

    /// Answer requests whose body is longer than `bytes` with 413.
    pub fn refuse_bodies_over(&self, bytes: usize) {
        self.shared.record().max_body = Some(bytes);
    }

    /// Requests answered 413.
    pub fn too_large(&self) -> usize {
        self.shared.record().too_large
    }

    /// Answer the next `n` requests with 503.
    pub fn fail_next(&self, n: usize) {
        self.shared.record().fail_next = n;
    }

    /// While `true`, requests get no answer at all (until the sender gives
    /// up on them).
    pub fn hang(&self, hang: bool) {
        self.shared.record().hang = hang;
    }

    /// The requests accepted so far, in arrival order.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.record().delivered.clone()
    }

    /// Every event of every accepted request, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.record().events.clone()
    }

    /// Requests with a wrong `X-Pusher-Key` or `X-Pusher-Signature`.
    pub fn badly_signed(&self) -> usize {
        self.shared.record().badly_signed
    }

    /// Requests answered 503 on purpose.
    pub fn failed(&self) -> usize {
        self.shared.record().failed
    }

    /// Requests that arrived, whatever their answer.
    pub fn requests(&self) -> usize {
        self.shared.record().requests
    }

    /// Wait until at least `n` events were accepted; all of them.
    pub async fn wait_for_events(&self, n: usize) -> Vec<Value> {
        self.wait_until(|record| record.events.len() >= n).await;
        self.events()
    }

    /// Wait until a request is hanging.
    pub async fn wait_for_hanging(&self) {
        self.wait_until(|record| record.hanging > 0).await;
    }

    /// Requests hanging now.
    pub fn hanging(&self) -> usize {
        self.shared.record().hanging
    }

    async fn wait_until(&self, done: impl Fn(&Record) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let changed = self.shared.changed.notified();
            if done(&self.shared.record()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the webhook receiver waited in vain; it has {} events",
                self.events().len()
            );
            let _ = tokio::time::timeout(left, changed).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts a hanging request until its connection is dropped.
struct Hanging(Arc<Shared>);

impl Drop for Hanging {
    fn drop(&mut self) {
        self.0.record().hanging -= 1;
        self.0.changed.notify_waiters();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let signed_right = header("x-pusher-key").as_deref() == Some(shared.key.as_str())
        && header("x-pusher-signature")
            .is_some_and(|signature| signature_holds(&shared.secret, &body, &signature));
    let answer = {
        let mut record = shared.record();
        record.requests += 1;
        if !signed_right {
            record.badly_signed += 1;
            Some(StatusCode::UNAUTHORIZED)
        } else if record.max_body.is_some_and(|limit| body.len() > limit) {
            record.too_large += 1;
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        } else if record.hang {
            record.hanging += 1;
            None
        } else if record.fail_next > 0 {
            record.fail_next -= 1;
            record.failed += 1;
            Some(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(events) = body["events"].as_array() {
                record.events.extend(events.iter().cloned());
            }
            record.delivered.push(Delivered {
                body,
                content_type: header("content-type"),
            });
            Some(StatusCode::OK)
        }
    };
    shared.changed.notify_waiters();
    match answer {
        Some(status) => status,
        None => {
            let _hanging = Hanging(shared);
            std::future::pending().await
        }
    }
}

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`, as Pusher
/// signs webhooks and HTTP API requests.
pub fn hmac_sha256_hex(secret: &str, message: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The receiver's own check: lowercase hex HMAC-SHA256, compared in
/// constant time.
fn signature_holds(secret: &str, body: &[u8], signature: &str) -> bool {
    let expected = hmac_sha256_hex(secret, body);
    // Pusher sends lowercase hex; anything else is a mismatch.
    expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}
