//! Wiring: a loaded config becomes a bound listener and a served snapshot.
//! Tests use the same entry points with a `127.0.0.1:0` listener and their own
//! shutdown future.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::routing::Snapshot;

/// A proxy whose listener is bound but not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    snapshots: Arc<ArcSwap<Snapshot>>,
    open_connections: Arc<AtomicUsize>,
}

// === impl App ===

impl App {
    /// Builds the first snapshot and binds `[server] listen`.
    pub async fn bind(config: Config) -> io::Result<App> {
        let listen = config.server.listen;
        let listener = TcpListener::bind(listen).await.map_err(|err| {
            io::Error::new(err.kind(), format!("cannot listen on {listen}: {err}"))
        })?;
        let snapshot = Snapshot::build(config, 1);
        Ok(App {
            listener,
            snapshots: Arc::new(ArcSwap::from_pointee(snapshot)),
            open_connections: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The current snapshot holder (reload swaps it; admin reads it).
    pub fn snapshots(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.snapshots
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        crate::proxy::serve(
            self.listener,
            self.snapshots,
            self.open_connections,
            shutdown,
        )
        .await;
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
