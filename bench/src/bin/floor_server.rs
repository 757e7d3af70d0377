//! The bare-transport floor: a broadcast server on the same WebSocket stack
//! and buffer settings as madx-pusher, with no auth, routing or history.
//!
//! - `GET /ws` joins the broadcast; `POST /publish` sends the body, as is,
//!   to every socket.
//! - The handshake a client of the product makes, with nothing checked:
//!   `POST /v1/tokens` answers a token of the product's shape (its code is
//!   never looked at), `GET /connect` upgrades and writes a `welcome`, and
//!   every frame a socket sends is answered `subscribed`.
//!
//! The benchmarks report the product as a ratio to this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Default)]
struct Floor {
    sockets: Mutex<Vec<mpsc::Sender<Utf8Bytes>>>,
    /// Numbers tokens and sockets, so each answer differs as the product's do.
    next_id: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let floor = Arc::new(Floor::default());
    let app = Router::new()
        .route("/ws", get(join))
        .route("/connect", get(connect))
        .route("/v1/tokens", post(token))
        .route("/publish", post(publish))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "floor-server listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// A token of the product's shape; nothing is stored or checked.
async fn token(State(floor): State<Arc<Floor>>, headers: HeaderMap, _body: Bytes) -> Response {
    let id = floor.next_id.fetch_add(1, Ordering::Relaxed);
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    let body = json!({
        "access_id": format!("floor-{id:016x}"),
        "secret_seed": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        "ws_url": format!("ws://{host}/connect?app=floor"),
        "otp": {"algorithm": "SHA1", "digits": 6, "period": 30},
        "expires_in": 7200,
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn join(State(floor): State<Arc<Floor>>, upgrade: WebSocketUpgrade) -> Response {
    configured(upgrade).on_upgrade(move |socket| serve(socket, floor, None))
}

async fn connect(State(floor): State<Arc<Floor>>, upgrade: WebSocketUpgrade) -> Response {
    let id = floor.next_id.fetch_add(1, Ordering::Relaxed);
    let welcome = json!({"type": "welcome", "connection_id": format!("0.{id}")}).to_string();
    configured(upgrade).on_upgrade(move |socket| serve(socket, floor, Some(welcome.into())))
}

/// The same settings as madx-pusher's gateway.
fn configured(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// Broadcasts to the socket; with a `welcome`, writes it first and answers
/// every frame the client sends `subscribed`.
async fn serve(mut socket: WebSocket, floor: Arc<Floor>, welcome: Option<Utf8Bytes>) {
    let answers = welcome.is_some();
    if let Some(welcome) = welcome
        && socket.send(Message::Text(welcome)).await.is_err()
    {
        return;
    }
    let (sender, mut frames) = mpsc::channel(1024);
    if let Ok(mut sockets) = floor.sockets.lock() {
        sockets.push(sender);
    }
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                if socket.send(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Text(_))) if answers => {
                        let subscribed = Utf8Bytes::from_static(r#"{"type":"subscribed"}"#);
                        if socket.send(Message::Text(subscribed)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    }
}

async fn publish(State(floor): State<Arc<Floor>>, body: Bytes) -> &'static str {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return "not utf-8";
    };
    let frame = Utf8Bytes::from(text);
    if let Ok(mut sockets) = floor.sockets.lock() {
        sockets.retain(|socket| !socket.is_closed());
        for socket in sockets.iter() {
            let _ = socket.try_send(frame.clone());
        }
    }
    "ok"
}
