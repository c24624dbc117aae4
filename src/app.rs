//! Wiring: a loaded config becomes bound listeners, a served snapshot, the rollout
//! driver, the admin API and the notifier. Tests use the same entry points with
//! `127.0.0.1:0` listeners and their own shutdown future.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::Config;
use crate::events::Events;
use crate::history::History;
use crate::notify::Target;
use crate::proxy::server::Drain;
use crate::publish::Publisher;
use crate::reload::{Fingerprint, Reloader, Watch};
use crate::rollout::{Shared, Trip};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;

/// How often histogram buffers are drained.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a stopping proxy waits for its access log lines to be written.
const ACCESS_LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A proxy whose listeners are bound but not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    snapshots: Arc<ArcSwap<Snapshot>>,
    shared: Arc<Shared>,
    trips: mpsc::UnboundedReceiver<Trip>,
    ready: Arc<AtomicBool>,
    /// Publishes every config generation (this one, and each reload's).
    publisher: Arc<Publisher>,
    /// Watch this file (and SIGHUP) for config changes; the fingerprint of what it held
    /// when generation 1 was loaded from it.
    reload_from: Option<(std::path::PathBuf, Watch, Option<Fingerprint>)>,
    /// How often `/api/v1/history` samples the routes (`history::INTERVAL`).
    history_interval: Duration,
}

// === impl App ===

impl App {
    /// Builds the first snapshot (restoring saved decisions) and binds the listeners.
    /// A `[state] dir` that cannot persist a decision is an error that names it.
    pub async fn bind(config: Config) -> io::Result<App> {
        if let Some(state) = &config.state {
            let dir = state.dir.clone();
            tokio::task::spawn_blocking(move || crate::rollout::store::probe(&dir))
                .await
                .map_err(io::Error::other)??;
        }
        // Built before the listeners open: the recorder's clock calibrates itself
        // against wall time (quanta: a loop of clock reads), and a client that
        // connects as soon as the port opens should not wait for that.
        let telemetry = Telemetry::new();
        let listener = bind(config.server.listen, "listen").await?;
        let admin_listener = match &config.admin {
            Some(admin) => Some(bind(admin.listen, "admin listen").await?),
            None => None,
        };
        let access_log = AccessLog::for_config(
            None,
            config.log.access.as_ref(),
            false,
            &telemetry.access_log_dropped,
        )?;
        // The notifier starts before the first snapshot (events need it); the
        // publisher points it at each generation's webhook.
        let webhook = Arc::new(ArcSwapOption::<Target>::empty());
        let notifier = crate::notify::spawn(Arc::clone(&webhook), telemetry.webhook_meters());
        let mut events = Events::new(Some(notifier));
        if let Some(state) = &config.state {
            // The event history survives restarts beside the decisions.
            events = events.persist_in(&state.dir);
        }
        let events = Arc::new(events);
        telemetry.last_reload_success.set(unix_now());
        let (shared, trips) = Shared::new(events, telemetry);
        if config.fleet.is_some() {
            shared.fleet.enable();
        }
        let publisher = Publisher::start(
            config,
            Arc::clone(&shared),
            webhook,
            access_log,
            Instant::now(),
        );
        Ok(App {
            listener,
            admin_listener,
            snapshots: Arc::clone(publisher.snapshots()),
            shared,
            trips,
            ready: Arc::new(AtomicBool::new(false)),
            publisher,
            reload_from: None,
            history_interval: crate::history::INTERVAL,
        })
    }

    /// Reloads the config from `path` when it changes on disk or on SIGHUP. The watch
    /// starts now, so a change made before `serve` runs is not missed.
    pub fn reload_from(mut self, path: std::path::PathBuf) -> App {
        let mut watch = Watch::install(&path);
        let snapshot = self.snapshots.load();
        watch.follow(&snapshot.config);
        // Once the watch is installed: an unchanged file is then no reload, while a change
        // made since the load is seen either way.
        let loaded = crate::reload::loaded_fingerprint(&path, &snapshot.config);
        drop(snapshot);
        self.reload_from = Some((path, watch, loaded));
        self
    }

    /// Samples the routes for `/api/v1/history` every `interval` instead of
    /// `history::INTERVAL` (tests).
    pub fn history_interval(mut self, interval: Duration) -> App {
        self.history_interval = interval;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The current snapshot holder (reload swaps it; admin reads it).
    pub fn snapshots(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.snapshots
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.shared.events
    }

    /// Serves until `shutdown` resolves, then drains and stops the side tasks.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        self.serve_drained(shutdown).await;
    }

    /// `serve`, telling whether the drain had to cut connections (the binary's exit
    /// code).
    pub async fn serve_drained(self, shutdown: impl Future<Output = ()>) -> Drain {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let (fleet, fleet_task) = self.start_fleet(stopped());
        let driver = tokio::spawn(crate::rollout::drive(
            runtimes_of(Arc::clone(&self.snapshots)),
            self.trips,
            stopped(),
        ));
        let telemetry = Arc::clone(&self.shared.telemetry);
        let upkeep = {
            let telemetry = Arc::clone(&telemetry);
            let stop = stopped();
            tokio::spawn(async move {
                tokio::pin!(stop);
                let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    tokio::select! {
                        _ = interval.tick() => telemetry.upkeep(),
                        () = &mut stop => return,
                    }
                }
            })
        };
        let (rebind, rebind_rx) = mpsc::unbounded_channel();
        let (rebind_admin, rebind_admin_rx) = mpsc::unbounded_channel();
        let history = Arc::new(History::new(self.history_interval));
        let sampler = self.admin_listener.is_some().then(|| {
            tokio::spawn(Arc::clone(&history).run(Arc::clone(&self.snapshots), stopped()))
        });
        let admin = self.admin_listener.map(|listener| {
            let admin = Arc::new(Admin {
                snapshots: Arc::clone(&self.snapshots),
                events: Arc::clone(&self.shared.events),
                telemetry: Arc::clone(&telemetry),
                ready: Arc::clone(&self.ready),
                history,
                fleet,
            });
            tokio::spawn(crate::admin::serve(
                listener,
                admin,
                rebind_admin_rx,
                stopped(),
            ))
        });
        let reloader = self.reload_from.map(|(path, watch, loaded)| {
            let reloader = Arc::new(Reloader::new(
                path,
                loaded,
                Arc::clone(&self.publisher),
                rebind,
                rebind_admin,
            ));
            tokio::spawn(reloader.run(watch, stopped()))
        });

        self.ready.store(true, Ordering::Release);
        let ready = Arc::clone(&self.ready);
        let shutdown = async move {
            shutdown.await;
            // Tell load balancers first: /readyz fails while we drain.
            ready.store(false, Ordering::Release);
        };
        let drain = crate::proxy::serve(
            self.listener,
            Arc::clone(&self.snapshots),
            Arc::clone(&telemetry.open_connections),
            Arc::clone(&telemetry.parked_connections),
            rebind_rx,
            shutdown,
        )
        .await;

        let _ = stop_tx.send(true);
        let _ = driver.await;
        let _ = upkeep.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if let Some(sampler) = sampler {
            let _ = sampler.await;
        }
        if let Some(reloader) = reloader {
            let _ = reloader.await;
        }
        if let Some(fleet_task) = fleet_task {
            let _ = fleet_task.await;
        }
        // Every request has ended, so every access log line is queued: write them out
        // before the process exits (bounded: a stalled destination must not hang it).
        let access_log = self.snapshots.load().access_log().cloned();
        if let Some(log) = access_log {
            let _ = tokio::time::timeout(ACCESS_LOG_FLUSH_TIMEOUT, log.flush()).await;
        }
        drain
    }
}

/// The current generation's route runtimes, for the rollout driver.
pub fn runtimes_of(
    snapshots: Arc<ArcSwap<Snapshot>>,
) -> impl Fn() -> Vec<Arc<crate::rollout::RouteRuntime>> {
    move || {
        snapshots
            .load()
            .routes
            .iter()
            .map(|route| Arc::clone(&route.runtime))
            .collect()
    }
}

/// The fleet client's handle (for the admin API) and task, with `[fleet]`.
type FleetParts = (
    Option<Arc<crate::fleet::Handle>>,
    Option<tokio::task::JoinHandle<()>>,
);

impl App {
    /// Starts the fleet client when `[fleet]` is set (SPEC §10). A build without the
    /// `fleet` feature never gets here with `[fleet]`: its config check refuses it.
    fn start_fleet(&self, stop: impl Future<Output = ()> + Send + 'static) -> FleetParts {
        let config = self.snapshots.load().config.fleet.clone();
        let Some(config) = config else {
            return (None, None);
        };
        let (handle, commands) = crate::fleet::Handle::new(config.name.clone());
        #[cfg(feature = "fleet")]
        let task = Some(crate::fleet::client::spawn(
            config,
            Arc::clone(&self.snapshots),
            Arc::clone(&self.shared),
            Arc::clone(&handle),
            commands,
            stop,
        ));
        #[cfg(not(feature = "fleet"))]
        let task = {
            drop((commands, stop, config));
            tracing::error!("[fleet] is set but this build has no fleet support");
            None
        };
        (Some(handle), task)
    }
}

async fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    crate::listen::listen(addr)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot {what} on {addr}: {err}")))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How many runtime worker threads to start, and where the number comes from:
/// `[server] workers`, else one per CPU this process may run on. The standard library
/// counts those from the affinity mask (`taskset`, a cpuset) and the cgroup CPU quota
/// (a Kubernetes CPU limit of 500m gives 1 on a 64-core node), as linkerd2-proxy sizes
/// its runtime: workers sharing one core only add wakeups and system time.
pub fn workers(server: &crate::config::ServerConfig) -> (usize, &'static str) {
    match server.workers {
        Some(n) => (n, "[server] workers"),
        None => (
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            "available CPUs (affinity mask, cgroup CPU quota)",
        ),
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
