//! The downstream listener: accept, serve HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port with upgrades, and drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::ServerConfig;
use crate::proxy::forward::{proxy, ConnInfo};
use crate::routing::Snapshot;

/// hyper refuses (panics on) a read buffer below this.
const MIN_H1_BUF: usize = 8192;

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
        let builder = builder(snapshot.server());
        let conn_info = Arc::new(ConnInfo::new(peer, false));
        let shared = Arc::clone(&snapshots);
        let service = service_fn(move |req| {
            // One atomic load per request; the request keeps this snapshot to its end.
            let snapshot = shared.load_full();
            let conn_info = Arc::clone(&conn_info);
            async move { Ok::<_, Infallible>(proxy(snapshot, &conn_info, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let counter = Arc::clone(&open_connections);
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            counter.fetch_sub(1, Ordering::Relaxed);
        });
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
