//! The downstream listener: accept, serve HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port with upgrades, and drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use pin_project_lite::pin_project;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::proxy::body::ProxyBody;
use crate::proxy::deadline::{supervise, Activity, Open, Shed, Supervised, Sweeper};
use crate::proxy::forward::proxy;
use crate::proxy::rewrite::ConnInfo;
use crate::snapshot::Snapshot;

/// hyper refuses (panics on) a read buffer below this.
const MIN_H1_BUF: usize = 8192;

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 58\r\nconnection: close\r\n\r\n400 Bad Request: plain HTTP sent to a TLS port; use https\n";

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within `drain_timeout`.
    Clean,
    /// `drain_timeout` elapsed; this many connections were still open and are cut.
    Cut { connections: usize },
}

/// Accepts on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish for up to `drain_timeout`. Returns when drained (or the
/// timeout elapsed: `Drain::Cut`, and the caller's return closes the rest). A
/// listener received on `rebind` (a reload changed `listen`) replaces the current one;
/// connections accepted on the old one carry on.
pub async fn serve(
    mut listener: TcpListener,
    snapshots: Arc<ArcSwap<Snapshot>>,
    open_connections: Arc<AtomicUsize>,
    parked_connections: Arc<AtomicUsize>,
    mut rebind: mpsc::UnboundedReceiver<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Drain {
    let graceful = GracefulShutdown::new();
    let sweeper = Arc::new(Sweeper::new(parked_connections));
    // Ends with this function (the drain below included).
    let _sweeping = {
        let snapshots = Arc::clone(&snapshots);
        AbortOnDrop(tokio::spawn(
            Arc::clone(&sweeper).run(move || snapshots.load().server().header_read_timeout),
        ))
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(next) = rebind.recv() => {
                tracing::info!(
                    from = ?listener.local_addr().ok(),
                    to = ?next.local_addr().ok(),
                    "listen address changed"
                );
                listener = next;
                continue;
            }
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let snapshot = snapshots.load();
        let server = snapshot.server();
        let limits = Limits::of(server);
        let tls = server.tls.as_ref().map(|tls| Arc::clone(&tls.config));
        drop(snapshot);
        let (shared, watcher) = (Arc::clone(&snapshots), graceful.watcher());
        let counter = Arc::clone(&open_connections);
        counter.fetch_add(1, Ordering::Relaxed);
        // Plain and TLS connections are separate task types, so an idle plain
        // connection does not carry the size of a TLS stream in its task.
        match tls {
            None => {
                let activity = sweeper.watch(limits.header_read_timeout, Instant::now());
                tokio::spawn(async move {
                    let conn_info = ConnInfo::new(peer, false);
                    serve_plain(stream, limits, conn_info, shared, watcher, activity).await;
                    counter.fetch_sub(1, Ordering::Relaxed);
                })
            }
            Some(config) => tokio::spawn(async move {
                let timeout = limits.header_read_timeout;
                if let Some(stream) = handshake(stream, config, timeout, peer).await {
                    let io = TokioIo::new(stream);
                    let conn_info = ConnInfo::new(peer, true);
                    serve_connection(limits, io, conn_info, shared, watcher).await;
                }
                counter.fetch_sub(1, Ordering::Relaxed);
            }),
        };
    }
    drop(listener);
    // Plain HTTP/1 connections are told by the sweeper; the others by `graceful`.
    sweeper.drain();
    let drain_timeout = snapshots.load().server().drain_timeout;
    tracing::info!(?drain_timeout, "stopped accepting; draining connections");
    tokio::select! {
        // Drained wins a tie (`drain_timeout = "0s"` with nothing open is clean).
        biased;
        () = graceful.shutdown() => {
            tracing::info!("all connections drained");
            Drain::Clean
        }
        () = tokio::time::sleep(drain_timeout) => {
            let connections = open_connections.load(Ordering::Relaxed);
            tracing::warn!(
                remaining = connections,
                "drain timeout elapsed; closing remaining connections"
            );
            Drain::Cut { connections }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The per-connection settings from `[server]`, copied at accept so the connection
/// task stays small.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_header_bytes: usize,
}

impl Limits {
    fn of(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: server.max_header_bytes,
        }
    }

    /// hyper's HTTP/1 read buffer limit. Our own head check answers 431 with a body up
    /// to `max_header_bytes`; hyper's limit (twice that) is the backstop that bounds
    /// memory.
    fn h1_buf(self) -> usize {
        (self.max_header_bytes * 2).max(MIN_H1_BUF)
    }
}

/// The service of one connection: every request borrows the snapshot current at its
/// start, and is counted in `activity` from its head to the end of its response body.
fn service(
    snapshots: Arc<ArcSwap<Snapshot>>,
    conn_info: ConnInfo,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Answer>,
    Error = Infallible,
    Future = BoxFuture<'static, Result<http::Response<Answer>, Infallible>>,
> + Clone {
    let conn_info = Arc::new(conn_info);
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        // One atomic load per request; the request keeps this snapshot to its end.
        let snapshot = snapshots.load_full();
        let conn_info = Arc::clone(&conn_info);
        let open = activity.start(!req.body().is_end_stream());
        // Boxed: hyper keeps a slot the size of the service future for the whole life
        // of the connection. The request's state (~3 KiB) lives only while it runs;
        // an idle keep-alive connection holds a pointer.
        let request: BoxFuture<'static, _> = Box::pin(async move {
            let response = proxy(snapshot, &conn_info, req).await;
            Ok(response.map(|body| Answer { body, _open: open }))
        });
        request
    })
}

pin_project! {
    /// The downstream response body, holding its request [`Open`] to its end.
    #[derive(Debug)]
    pub struct Answer {
        #[pin]
        body: ProxyBody,
        _open: Open,
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.project().body.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A plain-TCP connection. HTTP/2 with prior knowledge opens with a fixed 24-byte
/// preface; a connection that doesn't is served by hyper's HTTP/1 server alone (no
/// version sniffing wrapped around every read, no HTTP/2 state in the task).
/// Anything that could still turn into the preface goes to the auto-detecting server.
async fn serve_plain(
    stream: TcpStream,
    limits: Limits,
    conn_info: ConnInfo,
    snapshots: Arc<ArcSwap<Snapshot>>,
    watcher: Watcher,
    activity: Arc<Activity>,
) {
    let peer = conn_info.peer;
    let mut first = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        biased;
        peeked = stream.peek(&mut first) => peeked,
        // Silent for the whole header timeout, or draining.
        _ = activity.signalled() => return,
    };
    let n = match peeked {
        Ok(n) if n > 0 => n,
        // Closed or failed.
        _ => return,
    };
    if H2_PREFACE.starts_with(&first[..n]) {
        // hyper's timers and `graceful` take over; the sweeper forgets it.
        drop(activity);
        // Boxed so the HTTP/1 path's task doesn't carry HTTP/2's size.
        let io = TokioIo::new(stream);
        Box::pin(serve_connection(limits, io, conn_info, snapshots, watcher)).await;
        return;
    }

    // The same settings as the auto server's HTTP/1 side (`builder`), but for the
    // header timer: the sweeper's (see `deadline`), not hyper's.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // Explicitly off (hyper would arm its default 30 s if a timer were set).
        .header_read_timeout(None)
        .max_buf_size(limits.h1_buf())
        // Copy the body into the head's buffer and send both with one write(2): for
        // the small bodies most requests carry this beats writev(2) (compare.sh: 18.0
        // -> 17.1 µs/request); large bodies are copied in max_buf_size pieces.
        .writev(false)
        .keep_alive(true);
    let service = service(snapshots, conn_info, Arc::clone(&activity));
    // Held to the end: `GracefulShutdown` waits for this connection too.
    let _watcher = watcher;
    let mut io = Shed::new(stream, Arc::clone(&activity));
    // The header deadline, the drain and the park come from the sweeper (see
    // `deadline`). A parked connection waits for its next request with no hyper
    // connection (and no buffer); the request builds a new one.
    loop {
        let mut conn = builder
            .serve_connection(TokioIo::new(io), service.clone())
            .with_upgrades();
        let supervised = supervise(&activity, Pin::new(&mut conn), |conn| {
            conn.graceful_shutdown()
        })
        .await;
        match supervised {
            Supervised::Done(Ok(())) => return,
            Supervised::Done(Err(err)) => {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
                return;
            }
            Supervised::Closed => {
                tracing::debug!(%peer, "no request head within header_read_timeout; closed");
                return;
            }
            Supervised::Parked => {}
        }
        let Some(parts) = conn.into_parts() else {
            return; // upgraded: cannot happen while idle
        };
        io = parts.io.into_inner();
        // A copy: `read_buf` shares hyper's whole read buffer, which parking is meant
        // to free (dropped now, with the service, not after the wait).
        if !parts.read_buf.is_empty() {
            io.unread(Bytes::copy_from_slice(&parts.read_buf));
        }
        drop(parts.read_buf);
        drop(parts.service);
        let _parked = activity.parked();
        tokio::select! {
            biased;
            readable = io.get_ref().readable() => if readable.is_err() { return },
            // Idle for the whole header timeout, or draining.
            _ = activity.signalled() => return,
        }
        activity.rebuilt();
    }
}

/// Serves HTTP/1.1 or HTTP/2 (by preface) with upgrades on one accepted connection
/// (TLS, or plain HTTP/2 with prior knowledge).
async fn serve_connection<I>(
    limits: Limits,
    io: I,
    conn_info: ConnInfo,
    snapshots: Arc<ArcSwap<Snapshot>>,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn_info.peer;
    let builder = builder(limits);
    // hyper's header timer runs here; the counts are not read.
    let activity = Activity::unwatched();
    let conn = builder
        .serve_connection_with_upgrades(io, service(snapshots, conn_info, activity))
        .into_owned();
    if let Err(err) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// The TLS handshake, bounded by `header_read_timeout`. A client that speaks plain HTTP
/// to the TLS port gets a readable 400 instead of a silent close.
async fn handshake(
    mut stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => {
            tracing::debug!(%peer, "plain HTTP on the TLS port");
            let _ = stream.write_all(PLAIN_HTTP_ON_TLS_PORT).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return None,
    }
    match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The per-connection protocol settings of the auto-detecting server.
fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The same HTTP/1 settings as `serve_plain`'s (a different builder type).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.h1_buf())
        .writev(false)
        .keep_alive(true);
    let h2_headers = u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(h2_headers)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}
