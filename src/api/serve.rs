//! Accepting connections, with limits a hostile or careless client cannot get around.
//!
//! - At most [`max_connections`] at once; past that, the one silent the longest is closed to
//!   make room (or, if every one is busy, the newcomer gets 503).
//! - A request's head must arrive within [`HEADER_TIMEOUT`] (slowloris).
//! - A connection with no traffic for [`IDLE_TIMEOUT`] is closed once its response is done
//!   (idle keep-alive connections are not kept forever).
//! - Bodies are capped by the router (1 MiB).
//!
//! A stop closes the listener first, then asks each connection to finish its response and close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{debug, info, warn};

/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay silent (no byte either way) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head hyper buffers.
const MAX_HEAD: usize = 64 * 1024;

/// Binds `addr` now (so that a port in use stops the daemon before it starts anything).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                ": another process listens there (change http.listen in scheduler.yaml, or stop it)"
            }
            std::io::ErrorKind::PermissionDenied => ": ports below 1024 need privileges",
            std::io::ErrorKind::AddrNotAvailable => ": no interface of this host has that address",
            _ => "",
        };
        format!("cannot listen on {addr}: {e}{hint}")
    })?;
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(l)
}

/// Connections served at once: a quarter of the file descriptors this process may open (the
/// rest are for jobs' pipes and logs), between 64 and 16,384.
pub fn max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    (soft / 4).clamp(64, 16_384) as usize
}

/// A running server.
pub struct Server {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Server {
    /// Serves `app` on `listener` (already bound) on `rt`; `stop` ends it.
    pub fn start(
        rt: &tokio::runtime::Handle,
        listener: std::net::TcpListener,
        app: axum::Router,
        stop: watch::Sender<bool>,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let task = rt.spawn(accept_loop(
            listener,
            app,
            stop.subscribe(),
            max_connections(),
        ));
        Ok(Server { stop, task, addr })
    }

    /// Closes the listener, then asks every connection to finish its response and close (long
    /// responses — event streams, followed logs — end).
    pub fn close(&self) {
        let _ = self.stop.send(true);
    }

    /// [`Server::close`], then waits at most `grace` for the listener to be closed.
    pub async fn stop(self, grace: Duration) {
        self.close();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

/// The open connections: when their cap is reached, the one silent the longest is asked to
/// close to make room (idle keep-alive connections cannot lock everyone else out).
#[derive(Default)]
struct Registry {
    next: u64,
    open: HashMap<u64, (Arc<AtomicU64>, Arc<Notify>)>,
}

impl Registry {
    fn evict_idlest(registry: &Mutex<Registry>) {
        let Ok(r) = registry.lock() else { return };
        if let Some((_, close)) = r
            .open
            .values()
            .min_by_key(|(last, _)| last.load(Ordering::Relaxed))
        {
            close.notify_one();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    max: usize,
) {
    let permits = Arc::new(Semaphore::new(max));
    let registry = Arc::new(Mutex::new(Registry::default()));
    let clock = tokio::time::Instant::now();
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        max_connections = max, "HTTP server listening");
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: let some connections end first.
                    warn!(error = %e, "cannot accept an HTTP connection");
                    Registry::evict_idlest(&registry);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = super::stopped(&mut stop) => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: the connection silent the longest makes room (an idle one closes at
                // once; one in the middle of a response first finishes it).
                Registry::evict_idlest(&registry);
                match tokio::time::timeout(EVICT_WAIT, permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tokio::spawn(refuse(stream));
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop.clone();
        let last = Arc::new(AtomicU64::new(clock.elapsed().as_millis() as u64));
        let close = Arc::new(Notify::new());
        let id = match registry.lock() {
            Ok(mut r) => {
                r.next += 1;
                let id = r.next;
                r.open.insert(id, (last.clone(), close.clone()));
                id
            }
            Err(_) => 0,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            connection(stream, peer, app, stop, Activity { clock, last }, close).await;
            if let Ok(mut r) = registry.lock() {
                r.open.remove(&id);
            }
            drop(permit);
        });
    }
    // The listener closes here, before any connection is asked to finish.
    drop(listener);
    debug!("HTTP listener closed");
}

/// How long a new connection waits for an evicted one to close before it is refused.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Every connection's place is taken by one that is busy: 503, and close.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
    )
    .await;
}

/// When a byte last went either way on a connection (milliseconds since `clock`, the server's).
struct Activity {
    clock: tokio::time::Instant,
    last: Arc<AtomicU64>,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    activity: Activity,
    close: Arc<Notify>,
) {
    let Activity { clock, last } = activity;
    let io = TokioIo::new(Tracked {
        inner: stream,
        last: last.clone(),
        clock,
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(peer = %peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = tick.tick(), if !closing => {
                let silent = (clock.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
                if silent >= IDLE_TIMEOUT.as_millis() as u64 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = close.notified(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = super::stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// A TCP stream that notes when a byte last went either way (milliseconds since `clock`).
struct Tracked {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    clock: tokio::time::Instant,
}

impl Tracked {
    fn touch(&self) {
        self.last
            .store(self.clock.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
