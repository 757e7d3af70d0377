//! One webhook's sender task: takes a batch, POSTs it signed, and retries
//! the same batch with back-off until the receiver accepts it, so nothing
//! queued is lost and order is kept; except a batch refused as too large
//! (413), which goes again in halves, and an event refused alone, dropped.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use madx_wire::webhooks::{self, Event};

use super::Target;
use crate::config::WebhookSettings;
use crate::metrics::Metrics;

/// What a batch's events may carry (their fields' bytes), so one request
/// stays well within what common receivers take (nginx refuses bodies over
/// 1 MiB by default; JSON escaping can double the data): a batch of 50
/// large client events would otherwise be refused, and retried, for good.
const BATCH_MAX_BYTES: usize = 256 << 10;

/// The HTTP client every sender shares: rustls with the Mozilla roots
/// (webpki-roots), no redirects (a 3xx is a failure, so a body signed for
/// one URL is never replayed to another), `timeout` per request.
pub(super) fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "madx-pusher/",
            env!("CARGO_PKG_VERSION"),
            " webhooks"
        ))
        .build()?;
    Ok(client)
}

/// The sender loop of one target; runs for the life of the process.
pub(super) async fn run(
    target: Arc<Target>,
    client: reqwest::Client,
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
) {
    let backoff = Backoff {
        min: Duration::from_millis(settings.retry_min_ms),
        max: Duration::from_millis(settings.retry_max_ms),
    };
    loop {
        let batch = target
            .queue
            .next_batch(settings.batch_max, BATCH_MAX_BYTES)
            .await;
        metrics.webhook_queue_changed(&target.app_id, -(batch.len() as i64));
        // A batch the receiver refuses as too large (413) goes again in
        // halves, in order, down to single events; an event it refuses on
        // its own is dropped, so one cannot stop the webhook for good.
        let mut parts = vec![&batch[..]];
        let mut dropped = 0;
        while let Some(part) = parts.pop() {
            match deliver(&client, &target, part, &backoff, &metrics).await {
                Delivery::Accepted => metrics.webhook_events_sent(&target.app_id, part.len()),
                Delivery::TooLarge if part.len() > 1 => {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
                Delivery::TooLarge => {
                    dropped += 1;
                    metrics.webhook_event_dropped(&target.app_id);
                }
            }
        }
        // One line per batch, however many of its events were dropped.
        if dropped > 0 {
            tracing::warn!(
                app = %target.app_id,
                url = %target.url,
                dropped,
                "webhook events dropped: the receiver refuses each as too large (413) \
                 even on its own"
            );
        }
        target.queue.delivered();
    }
}

/// How a batch ended.
enum Delivery {
    Accepted,
    /// Answered 413: this many events in one request are too large.
    TooLarge,
}

/// Send `events` until the receiver accepts them, retrying with back-off;
/// [`Delivery::TooLarge`] at once on a 413.
async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    events: &[Event],
    backoff: &Backoff,
    metrics: &Metrics,
) -> Delivery {
    // Signed once: a retry sends the same bytes, so a receiver can
    // recognise a batch it already has.
    let body = webhooks::body(unix_ms(), events);
    let signature = webhooks::signature(&target.app_secret, &body);
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let outcome = post(client, target, &body, &signature).await;
        metrics.webhook_request(&target.app_id, started.elapsed(), outcome.is_ok());
        let reason = match outcome {
            Ok(()) => return Delivery::Accepted,
            Err(Failure::TooLarge) => return Delivery::TooLarge,
            Err(Failure::Other(reason)) => reason,
        };
        let delay = backoff.delay(failures, random_fraction());
        failures = failures.saturating_add(1);
        tracing::warn!(
            app = %target.app_id,
            url = %target.url,
            events = events.len(),
            failures,
            retry_in_ms = delay.as_millis() as u64,
            "webhook failed: {reason}"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Why an attempt failed.
enum Failure {
    /// 413: the body is over what the receiver takes.
    TooLarge,
    /// A connection error, a timeout or any other status but 2xx.
    Other(String),
}

/// One attempt.
async fn post(
    client: &reqwest::Client,
    target: &Target,
    body: &[u8],
    signature: &str,
) -> Result<(), Failure> {
    let response = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(webhooks::KEY_HEADER, &target.app_key)
        .header(webhooks::SIGNATURE_HEADER, signature)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|error| Failure::Other(describe(&error)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
        Err(Failure::TooLarge)
    } else {
        Err(Failure::Other(format!("the receiver answered {status}")))
    }
}

/// A request error without the URL (logged next to it anyway) and with its
/// causes (reqwest's own text is often just "error sending request"; the
/// TLS or socket error is a few sources down).
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::from(if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    });
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// Exponential back-off with jitter: the n-th retry (from 0) waits a random
/// time in the upper half of `min * 2^n`, capped at `max`, and never less
/// than `min`, so receivers coming back are not hit by every node at once.
struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// `fraction` is uniform in [0, 1).
    fn delay(&self, failures: u32, fraction: f64) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(2u32.saturating_pow(failures.min(31)))
            .min(self.max);
        let jittered = ceiling.mul_f64(0.5 + fraction / 2.0);
        jittered.clamp(self.min, self.max)
    }
}

/// Uniform in [0, 1); a fixed middle if the system has no randomness.
fn random_fraction() -> f64 {
    getrandom::u32().map_or(0.5, |bits| f64::from(bits) / (f64::from(u32::MAX) + 1.0))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_https_receiver_is_checked_against_the_web_roots() {
        // A self-signed certificate chains to no web root: the client
        // refuses the handshake and the attempt fails (to be retried).
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshake = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            acceptor.accept(stream).await.is_ok()
        });

        let target = Target {
            app_id: "a".into(),
            app_key: "key-a".into(),
            app_secret: "secret-a".into(),
            url: format!("https://127.0.0.1:{port}/hook"),
            wants: vec![webhooks::EventKind::ClientEvent],
            queue: super::super::Queue::new(1, usize::MAX),
        };
        let client = http_client(Duration::from_secs(10)).unwrap();
        let Err(Failure::Other(error)) = post(&client, &target, b"{}", "00").await else {
            panic!("a self-signed receiver was trusted");
        };
        assert!(error.contains("certificate"), "{error}");
        assert!(!handshake.await.unwrap(), "the handshake was refused");
    }

    #[test]
    fn back_off_doubles_with_jitter_between_min_and_max() {
        let backoff = Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_millis(30_000),
        };
        let ms = |failures, fraction| backoff.delay(failures, fraction).as_millis();
        // The first retry: between min and min (half of min is below min).
        assert_eq!(ms(0, 0.0), 500);
        assert_eq!(ms(0, 0.99), 500);
        // Then the upper half of min * 2^n.
        assert_eq!(ms(1, 0.0), 500);
        assert_eq!(ms(1, 0.5), 750);
        assert_eq!(ms(3, 0.0), 2000);
        assert_eq!(ms(3, 0.5), 3000);
        // Capped at max however long the receiver is down.
        assert_eq!(ms(10, 0.0), 15_000);
        assert_eq!(ms(10, 0.999_999), 29_999);
        assert_eq!(ms(1000, 0.0), 15_000);
        assert!(random_fraction() < 1.0);
    }
}
