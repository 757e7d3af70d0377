//! The bare-transport floor: a broadcast server on the same WebSocket stack
//! and buffer settings as madx-pusher, with no auth, routing or history.
//! `GET /ws` joins the broadcast; `POST /publish` sends the body, as is, to
//! every socket. The benchmarks report the product as a ratio to this.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::mpsc;

#[derive(Default)]
struct Floor {
    sockets: Mutex<Vec<mpsc::Sender<Utf8Bytes>>>,
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

async fn join(State(floor): State<Arc<Floor>>, upgrade: WebSocketUpgrade) -> Response {
    // The same settings as madx-pusher's gateway.
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .on_upgrade(move |socket| serve(socket, floor))
}

async fn serve(mut socket: WebSocket, floor: Arc<Floor>) {
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
                if !matches!(incoming, Some(Ok(_))) {
                    return;
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
