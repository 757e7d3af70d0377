//! The accept loop and the life of one HTTP connection, with the limits
//! that keep idle, slow and flooding clients from starving the server.
//!
//! A connection is in one of these phases:
//!
//! - *pending*: accepted, no complete request yet (TLS handshake, protocol
//!   detection, headers). It must finish its first request's headers within
//!   `header_timeout` of being accepted; bytes trickling in do not extend it.
//! - *busy*: a request is being handled. Its response must start within
//!   `request_timeout` (this bounds slow request bodies).
//! - *idle*: a keep-alive connection between requests; closed after
//!   `idle_timeout` unless the next request's headers are complete by then.
//! - *upgraded*: it became a WebSocket. The HTTP deadlines no longer apply:
//!   the session has its own heartbeat (4201).
//!
//! Pending and idle connections hold a descriptor without doing work, so
//! they are the ones shed under pressure, oldest first: beyond
//! `max_pending` pending connections, and when the `max_connections` cap (kept
//! below the descriptor limit) is reached. Shedding the oldest rather than
//! refusing the newest keeps healthy clients served during a flood: a
//! healthy client sends its request as soon as it is connected, so it leaves
//! the sheddable set within a round trip, while a flood has to out-connect
//! every healthy client to push one out. New connections are refused only
//! when every connection is busy or upgraded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::HttpConfig;
use crate::metrics::Metrics;

/// The largest HTTP/1 request head (request line and headers) read;
/// a larger one is answered 431.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// At most one summary line of shed connections per interval.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long the accept loop waits for a shed connection to give back its
/// descriptor before it accepts anyway (the reserve covers the overlap).
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// The resolved limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_pending: usize,
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The configured limits, with `max_connections` kept at or below the
    /// descriptor limit minus the reserve.
    pub fn resolve(http: &HttpConfig) -> ConnectionLimits {
        let ceiling = descriptor_limit()
            .map(|limit| limit.saturating_sub(http.fd_reserve as u64).max(1))
            .map(|room| usize::try_from(room).unwrap_or(usize::MAX));
        let max_connections = match (http.max_connections, ceiling) {
            (Some(wanted), Some(ceiling)) if wanted > ceiling => {
                tracing::warn!(
                    wanted,
                    ceiling,
                    "http.max_connections is above the descriptor limit minus http.fd_reserve; \
                     using {ceiling} (raise the limit with ulimit -n or LimitNOFILE)"
                );
                ceiling
            }
            (Some(wanted), _) => wanted,
            (None, Some(ceiling)) => ceiling,
            (None, None) => usize::MAX,
        };
        ConnectionLimits {
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            request_timeout: Duration::from_secs(http.request_timeout_secs),
            max_pending: http.max_pending_connections,
            max_connections,
        }
    }
}

/// The soft `RLIMIT_NOFILE`, or `None` when unlimited or unknown.
fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Why the server closed (or refused) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    HeaderTimeout,
    IdleTimeout,
    RequestTimeout,
    PendingLimit,
    ConnectionLimit,
    FdLimit,
}

impl Shed {
    const ALL: [Shed; 6] = [
        Shed::HeaderTimeout,
        Shed::IdleTimeout,
        Shed::RequestTimeout,
        Shed::PendingLimit,
        Shed::ConnectionLimit,
        Shed::FdLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Shed::HeaderTimeout => "header_timeout",
            Shed::IdleTimeout => "idle_timeout",
            Shed::RequestTimeout => "request_timeout",
            Shed::PendingLimit => "pending_limit",
            Shed::ConnectionLimit => "connection_limit",
            Shed::FdLimit => "fd_limit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No complete request yet; `key` orders the sheddable connections.
    Pending {
        key: u64,
        since: Instant,
    },
    Busy {
        requests: usize,
    },
    Idle {
        key: u64,
        since: Instant,
    },
    Upgraded,
    /// Closed by the server; its task drops the socket.
    Closed(Shed),
}

/// One connection's phase, changed by its requests and by the registry;
/// its task watches it.
struct Conn {
    phase: watch::Sender<Phase>,
}

#[derive(Default)]
struct Tables {
    next_key: u64,
    pending: BTreeMap<u64, Arc<Conn>>,
    idle: BTreeMap<u64, Arc<Conn>>,
}

impl Tables {
    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }
}

/// Every connection of the listener; phases change under one lock so the
/// sheddable tables always match them.
pub struct Connections {
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    tables: Mutex<Tables>,
    /// Sockets alive, upgraded ones included (see [`Counted`]).
    open: AtomicUsize,
    released: Notify,
    /// Connection tasks still running (for the shutdown drain).
    tasks: AtomicUsize,
    tasks_done: Notify,
    /// Shed since the last log line, by [`Shed`] index.
    unlogged: [AtomicU64; 6],
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            metrics,
            tables: Mutex::new(Tables::default()),
            open: AtomicUsize::new(0),
            released: Notify::new(),
            tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
            unlogged: Default::default(),
        })
    }

    /// Accept and serve until `shutdown` turns true, then let requests in
    /// flight finish for up to `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        router: Router,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
        // The deadlines here cover header reads; hyper's own timer is not
        // installed (its protocol detection would not be covered anyway).
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A request head (line and headers) of at most 64 KiB, as HTTP/2's
        // header lists are capped at 16 KiB: hyper's HTTP/1 default lets
        // every pending connection buffer about 400 KiB of headers.
        builder.http1().max_buf_size(MAX_REQUEST_HEAD_BYTES);
        let builder = Arc::new(builder);
        let logger = tokio::spawn(self.clone().log_sheds());
        let mut spare = open_spare();
        let mut accept_warned: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    self.accept_failed(&listener, &mut spare, &mut accept_warned, error)
                        .await;
                    continue;
                }
            };
            if !self.make_room().await {
                // Every connection is in use: refusing is all that is left.
                self.count(Shed::ConnectionLimit);
                drop(stream);
                continue;
            }
            let stream = Counted::new(stream, self.clone());
            let Ok(service) = make_service.clone().oneshot(peer).await;
            let conn = self.admit();
            self.tasks.fetch_add(1, Ordering::SeqCst);
            let connections = self.clone();
            let task = connections.clone().run(
                conn,
                stream,
                tls.clone(),
                service,
                builder.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                task.await;
                connections.tasks.fetch_sub(1, Ordering::SeqCst);
                connections.tasks_done.notify_waiters();
            });
        }
        drop(listener);
        let drained = async {
            loop {
                let done = self.tasks_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.tasks.load(Ordering::SeqCst) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(grace, drained).await;
        logger.abort();
        self.flush_log();
    }

    /// One connection: TLS handshake (if any), then HTTP until it ends,
    /// is shed, or passes a deadline.
    async fn run<S: AppService>(
        self: Arc<Self>,
        conn: Arc<Conn>,
        stream: Counted,
        tls: Option<TlsAcceptor>,
        service: S,
        builder: Arc<auto::Builder<TokioExecutor>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let _forget = Forget(self.clone(), conn.clone());
        let service = Tracked {
            inner: service,
            conn: conn.clone(),
            connections: self.clone(),
        };
        match tls {
            None => {
                self.drive(&conn, &builder, TokioIo::new(stream), service, shutdown)
                    .await
            }
            // Boxed: a TLS session's state is several KiB, and inline it
            // would size every plain connection's task to fit it too (a
            // task is copied whole when it is spawned).
            Some(acceptor) => {
                Box::pin(self.run_tls(&conn, &builder, acceptor, stream, service, shutdown)).await
            }
        }
    }

    /// The TLS handshake, then HTTP over it.
    async fn run_tls<S: AppService>(
        &self,
        conn: &Conn,
        builder: &auto::Builder<TokioExecutor>,
        acceptor: TlsAcceptor,
        stream: Counted,
        service: Tracked<S>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let handshake = tokio::select! {
            result = acceptor.accept(stream) => result,
            () = self.ended(conn) => return,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match handshake {
            Ok(stream) => {
                self.drive(conn, builder, TokioIo::new(stream), service, shutdown)
                    .await
            }
            Err(error) => tracing::debug!(%error, "TLS handshake failed"),
        }
    }

    async fn drive<I, S>(
        &self,
        conn: &Conn,
        builder: &auto::Builder<TokioExecutor>,
        io: TokioIo<I>,
        service: Tracked<S>,
        mut shutdown: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: AppService,
    {
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let ended = self.ended(conn);
        tokio::pin!(ended);
        let mut draining = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                () = &mut ended => return,
                _ = shutdown.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    // Idle and pending connections close now; a request in
                    // flight gets its response first.
                    if !matches!(*conn.phase.borrow(), Phase::Busy { .. }) {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// Resolves when the server closes the connection: shed, or past the
    /// deadline of its phase.
    async fn ended(&self, conn: &Conn) {
        let mut phase = conn.phase.subscribe();
        loop {
            let current = *phase.borrow_and_update();
            if let Phase::Closed(_) = current {
                return;
            }
            match self.deadline(current) {
                Some(deadline) => {
                    tokio::select! {
                        () = sleep_until(deadline) => {
                            if self.expire(conn) {
                                return;
                            }
                        }
                        changed = phase.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
                None => {
                    if phase.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn deadline(&self, phase: Phase) -> Option<Instant> {
        match phase {
            Phase::Pending { since, .. } => Some(since + self.limits.header_timeout),
            Phase::Idle { since, .. } => Some(since + self.limits.idle_timeout),
            Phase::Busy { .. } | Phase::Upgraded | Phase::Closed(_) => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // The tables stay consistent even if a holder panicked.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_pending(&self, tables: &Tables) {
        self.metrics
            .connections_pending
            .set(i64::try_from(tables.pending.len()).unwrap_or(i64::MAX));
    }

    /// Register a newly accepted connection as pending; over the pending
    /// cap, the oldest pending connection goes.
    fn admit(&self) -> Arc<Conn> {
        let mut tables = self.lock();
        let key = tables.key();
        let conn = Arc::new(Conn {
            phase: watch::Sender::new(Phase::Pending {
                key,
                since: Instant::now(),
            }),
        });
        tables.pending.insert(key, conn.clone());
        if tables.pending.len() > self.limits.max_pending
            && let Some((_, oldest)) = tables.pending.pop_first()
        {
            self.close(&oldest, Shed::PendingLimit);
        }
        self.publish_pending(&tables);
        conn
    }

    /// Close the oldest connection that has no request in flight; false
    /// when there is none.
    fn shed_oldest(&self, reason: Shed) -> bool {
        let mut tables = self.lock();
        let oldest_pending = tables.pending.first_key_value().map(|(key, _)| *key);
        let oldest_idle = tables.idle.first_key_value().map(|(key, _)| *key);
        let oldest = match (oldest_pending, oldest_idle) {
            (Some(pending), Some(idle)) if idle < pending => tables.idle.pop_first(),
            (Some(_), _) => tables.pending.pop_first(),
            (None, Some(_)) => tables.idle.pop_first(),
            (None, None) => None,
        };
        self.publish_pending(&tables);
        match oldest {
            Some((_, conn)) => {
                self.close(&conn, reason);
                true
            }
            None => false,
        }
    }

    /// Mark a connection (already out of the tables) closed; its task drops
    /// the socket.
    fn close(&self, conn: &Conn, reason: Shed) {
        conn.phase.send_replace(Phase::Closed(reason));
        self.count(reason);
    }

    fn count(&self, reason: Shed) {
        self.metrics.connection_shed(reason.label());
        if let Some(unlogged) = Shed::ALL
            .iter()
            .position(|each| *each == reason)
            .and_then(|index| self.unlogged.get(index))
        {
            unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The deadline of the connection's phase passed: close it, unless the
    /// phase moved on meanwhile. True when it is closed.
    fn expire(&self, conn: &Conn) -> bool {
        let mut tables = self.lock();
        let now = Instant::now();
        let phase = *conn.phase.borrow();
        let reason = match phase {
            Phase::Pending { key, since } if now >= since + self.limits.header_timeout => {
                tables.pending.remove(&key);
                Shed::HeaderTimeout
            }
            Phase::Idle { key, since } if now >= since + self.limits.idle_timeout => {
                tables.idle.remove(&key);
                Shed::IdleTimeout
            }
            Phase::Closed(_) => return true,
            _ => return false,
        };
        self.publish_pending(&tables);
        self.close(conn, reason);
        true
    }

    /// A request's headers are complete: the connection is busy.
    fn request_started(&self, conn: &Conn) {
        let mut tables = self.lock();
        conn.phase.send_if_modified(|phase| match *phase {
            Phase::Pending { key, .. } => {
                tables.pending.remove(&key);
                *phase = Phase::Busy { requests: 1 };
                true
            }
            Phase::Idle { key, .. } => {
                tables.idle.remove(&key);
                *phase = Phase::Busy { requests: 1 };
                true
            }
            Phase::Busy { requests } => {
                *phase = Phase::Busy {
                    requests: requests + 1,
                };
                false
            }
            Phase::Upgraded | Phase::Closed(_) => false,
        });
        self.publish_pending(&tables);
    }

    /// A request got its response (or was dropped): idle again when it was
    /// the last one in flight, or upgraded when it switched protocols.
    fn request_finished(&self, conn: &Arc<Conn>, upgraded: bool) {
        let mut tables = self.lock();
        conn.phase.send_if_modified(|phase| match *phase {
            Phase::Busy { requests } if requests > 1 => {
                *phase = Phase::Busy {
                    requests: requests - 1,
                };
                false
            }
            Phase::Busy { .. } if upgraded => {
                *phase = Phase::Upgraded;
                true
            }
            Phase::Busy { .. } => {
                let key = tables.key();
                tables.idle.insert(key, conn.clone());
                *phase = Phase::Idle {
                    key,
                    since: Instant::now(),
                };
                true
            }
            _ => false,
        });
    }

    /// The connection's task ended: drop it from the tables.
    fn forget(&self, conn: &Conn) {
        let mut tables = self.lock();
        match *conn.phase.borrow() {
            Phase::Pending { key, .. } => {
                tables.pending.remove(&key);
            }
            Phase::Idle { key, .. } => {
                tables.idle.remove(&key);
            }
            _ => {}
        }
        self.publish_pending(&tables);
    }

    /// Room for one more connection under `max_connections`: shed the oldest
    /// connection without a request in flight and wait (briefly) for its
    /// descriptor. False when every connection is in use.
    async fn make_room(&self) -> bool {
        if self.open.load(Ordering::SeqCst) < self.limits.max_connections {
            return true;
        }
        if !self.shed_oldest(Shed::ConnectionLimit) {
            return false;
        }
        self.wait_for_release().await;
        true
    }

    async fn wait_for_release(&self) {
        let released = async {
            loop {
                let notified = self.released.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.open.load(Ordering::SeqCst) < self.limits.max_connections {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(RELEASE_WAIT, released).await;
    }

    /// `accept` failed. Out of descriptors: shed the oldest idle connection,
    /// or else use the spare descriptor to accept and close the oldest
    /// waiting connection, so clients are answered rather than left hanging.
    /// Never spins and never stops the loop.
    async fn accept_failed(
        &self,
        listener: &TcpListener,
        spare: &mut Option<std::fs::File>,
        warned: &mut Option<Instant>,
        error: io::Error,
    ) {
        let errno = Errno::from_io_error(&error);
        match errno {
            // The connection failed before it was accepted: try the next.
            Some(Errno::CONNABORTED | Errno::CONNRESET | Errno::PROTO | Errno::PERM) => {}
            Some(Errno::INTR | Errno::AGAIN) => {}
            Some(Errno::MFILE | Errno::NFILE) => {
                if !self.shed_oldest(Shed::FdLimit) {
                    drop(spare.take());
                    if let Some(Ok((stream, _))) = listener.accept().now_or_never() {
                        self.count(Shed::FdLimit);
                        drop(stream);
                    }
                    *spare = open_spare();
                }
                // Give the shed connection's task time to close its socket,
                // so one shortage does not shed a connection per retry.
                sleep(Duration::from_millis(10)).await;
            }
            _ => {
                if warned.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    *warned = Some(Instant::now());
                    tracing::warn!(%error, "accepting a connection failed; retrying");
                }
                sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// One summary line per [`LOG_EVERY`] while connections are shed.
    async fn log_sheds(self: Arc<Self>) {
        let mut every = tokio::time::interval(LOG_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.flush_log();
        }
    }

    fn flush_log(&self) {
        let shed: Vec<(Shed, u64)> = Shed::ALL
            .iter()
            .zip(&self.unlogged)
            .map(|(reason, count)| (*reason, count.swap(0, Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        if shed.is_empty() {
            return;
        }
        let summary = shed
            .iter()
            .map(|(reason, count)| format!("{}={count}", reason.label()))
            .collect::<Vec<_>>()
            .join(" ");
        let open = self.open.load(Ordering::SeqCst);
        let pending = self.lock().pending.len();
        let max_connections = self.limits.max_connections;
        let pressure = shed.iter().any(|(reason, _)| {
            matches!(
                reason,
                Shed::PendingLimit | Shed::ConnectionLimit | Shed::FdLimit
            )
        });
        let slow = shed
            .iter()
            .any(|(reason, _)| matches!(reason, Shed::HeaderTimeout | Shed::RequestTimeout));
        if pressure {
            tracing::warn!(
                open,
                pending,
                max_connections,
                "connections shed under pressure: {summary}"
            );
        } else if slow {
            tracing::info!(open, pending, "slow connections closed: {summary}");
        } else {
            tracing::debug!(open, pending, "idle connections closed: {summary}");
        }
    }
}

/// A descriptor held in reserve for accepting (and closing) a connection
/// when the table is full.
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Drops the connection from the tables when its task ends.
struct Forget(Arc<Connections>, Arc<Conn>);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(&self.1);
    }
}

/// An accepted socket that counts toward `max_connections` for as long as it
/// lives, also after an upgrade hands it to a WebSocket session.
struct Counted {
    stream: TcpStream,
    connections: Arc<Connections>,
}

impl Counted {
    fn new(stream: TcpStream, connections: Arc<Connections>) -> Counted {
        connections.open.fetch_add(1, Ordering::SeqCst);
        connections.metrics.connections_open.inc();
        Counted {
            stream,
            connections,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::SeqCst);
        self.connections.metrics.connections_open.dec();
        self.connections.released.notify_waiters();
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The router as hyper calls it, with the connection's phase kept up to
/// date and each request bounded by `request_timeout` until its response.
struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
    connections: Arc<Connections>,
}

/// A request ran past `request_timeout`; hyper closes the connection (or
/// resets the HTTP/2 stream).
#[derive(Debug)]
struct RequestTimedOut;

impl std::fmt::Display for RequestTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request timed out before its response")
    }
}

impl std::error::Error for RequestTimedOut {}

/// The app's request handling as one connection serves it: the router,
/// made for that connection (its peer address).
trait AppService:
    tower::Service<
        Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> AppService for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

impl<S: AppService> hyper::service::Service<Request<Incoming>> for Tracked<S> {
    type Response = Response;
    type Error = RequestTimedOut;
    type Future = Pin<Box<dyn Future<Output = Result<Response, RequestTimedOut>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.connections.request_started(&self.conn);
        let mut in_flight = InFlight {
            connections: self.connections.clone(),
            conn: self.conn.clone(),
            upgraded: false,
        };
        let service = self.inner.clone();
        let timeout = self.connections.limits.request_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, service.oneshot(request)).await {
                Ok(Ok(response)) => {
                    in_flight.switched(response.status() == StatusCode::SWITCHING_PROTOCOLS);
                    Ok(response)
                }
                Err(_) => {
                    in_flight.connections.count(Shed::RequestTimeout);
                    Err(RequestTimedOut)
                }
            }
        })
    }
}

/// One request between its headers and its response.
struct InFlight {
    connections: Arc<Connections>,
    conn: Arc<Conn>,
    upgraded: bool,
}

impl InFlight {
    /// The response switches protocols: the connection becomes a WebSocket.
    fn switched(&mut self, upgraded: bool) {
        self.upgraded = upgraded;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connections.request_finished(&self.conn, self.upgraded);
    }
}
