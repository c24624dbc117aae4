//! The downstream listener: accept, serve HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port with upgrades, and drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::proxy::forward::{proxy, ConnInfo};
use crate::routing::Snapshot;

/// hyper refuses (panics on) a read buffer below this.
const MIN_H1_BUF: usize = 8192;

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 58\r\nconnection: close\r\n\r\n400 Bad Request: plain HTTP sent to a TLS port; use https\n";

/// Pending connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`). std's and mio's 128 drops SYNs under a connection burst, and
/// a dropped SYN costs the client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with SO_REUSEADDR and a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish for up to `drain_timeout`. Returns when drained. A
/// listener received on `rebind` (a reload changed `listen`) replaces the current one;
/// connections accepted on the old one carry on.
pub async fn serve(
    mut listener: TcpListener,
    snapshots: Arc<ArcSwap<Snapshot>>,
    open_connections: Arc<AtomicUsize>,
    mut rebind: mpsc::UnboundedReceiver<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
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
        let builder = builder(server);
        let tls = server.tls.as_ref().map(|tls| Arc::clone(&tls.config));
        let handshake_timeout = server.header_read_timeout;
        drop(snapshot);
        let (shared, watcher) = (Arc::clone(&snapshots), graceful.watcher());
        let counter = Arc::clone(&open_connections);
        counter.fetch_add(1, Ordering::Relaxed);
        // Plain and TLS connections are separate task types, so an idle plain
        // connection does not carry the size of a TLS stream in its task.
        match tls {
            None => tokio::spawn(async move {
                let io = TokioIo::new(stream);
                serve_connection(builder, io, ConnInfo::new(peer, false), shared, watcher).await;
                counter.fetch_sub(1, Ordering::Relaxed);
            }),
            Some(config) => tokio::spawn(async move {
                if let Some(stream) = handshake(stream, config, handshake_timeout, peer).await {
                    let io = TokioIo::new(stream);
                    serve_connection(builder, io, ConnInfo::new(peer, true), shared, watcher).await;
                }
                counter.fetch_sub(1, Ordering::Relaxed);
            }),
        };
    }
    drop(listener);
    let drain_timeout = snapshots.load().server().drain_timeout;
    tracing::info!(?drain_timeout, "stopped accepting; draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain_timeout) => tracing::warn!(
            remaining = open_connections.load(Ordering::Relaxed),
            "drain timeout elapsed; closing remaining connections"
        ),
    }
}

/// Serves HTTP/1.1 or HTTP/2 (by preface) with upgrades on one accepted connection;
/// every request borrows the snapshot current at its start.
async fn serve_connection<I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    conn_info: ConnInfo,
    snapshots: Arc<ArcSwap<Snapshot>>,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = conn_info.peer;
    let conn_info = Arc::new(conn_info);
    let service = service_fn(move |req| {
        // One atomic load per request; the request keeps this snapshot to its end.
        let snapshot = snapshots.load_full();
        let conn_info = Arc::clone(&conn_info);
        // Boxed: hyper keeps a slot the size of the service future for the whole life
        // of the connection. The request's state (~3 KiB) lives only while it runs;
        // an idle keep-alive connection holds a pointer.
        let request: BoxFuture<'static, Result<_, Infallible>> =
            Box::pin(async move { Ok(proxy(snapshot, &conn_info, req).await) });
        request
    });
    let conn = builder
        .serve_connection_with_upgrades(io, service)
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

/// The per-connection protocol settings, from `[server]`.
fn builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our own head check answers 431 with a body up to `max_header_bytes`; hyper's
    // buffer limit (twice that) is the backstop that bounds memory.
    let h1_buf = (server.max_header_bytes * 2).max(MIN_H1_BUF);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(h1_buf)
        .keep_alive(true);
    let h2_headers = u32::try_from(server.max_header_bytes * 2).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(h2_headers)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}
