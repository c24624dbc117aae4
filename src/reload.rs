//! Hot reload: the config file's directory is watched (so Kubernetes ConfigMap symlink
//! swaps and editors' rename-on-save are seen; a watch on the file itself dies after the
//! first swap) and SIGHUP re-reads it. A new file is validated whole, turned into a new
//! snapshot (route runtimes carried over by canary identity, pools by connect timeout),
//! and swapped in atomically. Requests in flight finish on the snapshot they started
//! with. An invalid file changes nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Uri;
use notify::{RecursiveMode, Watcher};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{parse_str, Config, Invalid};
use crate::events::Event;
use crate::rollout::Shared;
use crate::routing::Snapshot;

/// Events closer together than this are one change (an editor's save, a ConfigMap swap).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Re-reads the config file and swaps the snapshot.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    snapshots: Arc<ArcSwap<Snapshot>>,
    shared: Arc<Shared>,
    webhook: Arc<ArcSwapOption<Uri>>,
    /// A new listener for a changed `[server] listen`; the accept loop swaps to it.
    rebind: mpsc::UnboundedSender<TcpListener>,
    /// Same for `[admin] listen`.
    rebind_admin: mpsc::UnboundedSender<TcpListener>,
    generation: AtomicU64,
    /// Fingerprint of the config last applied and of every file it refers to
    /// (certificates, keys, CAs, the admin token): a watcher event that changed none
    /// of them is not a reload.
    last: Mutex<Option<u64>>,
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Watch,
    Signal,
}

// === impl Reloader ===

impl Reloader {
    pub fn new(
        path: PathBuf,
        snapshots: Arc<ArcSwap<Snapshot>>,
        shared: Arc<Shared>,
        webhook: Arc<ArcSwapOption<Uri>>,
        rebind: mpsc::UnboundedSender<TcpListener>,
        rebind_admin: mpsc::UnboundedSender<TcpListener>,
    ) -> Reloader {
        let generation = snapshots.load().generation;
        // Unknown until the first reload: the file may have changed since it was loaded.
        let last = None;
        Reloader {
            path,
            snapshots,
            shared,
            webhook,
            rebind,
            rebind_admin,
            generation: AtomicU64::new(generation),
            last: Mutex::new(last),
        }
    }

    /// Reads, validates and applies the file. Returns the new generation, or `None`
    /// when a watcher event left the file as it was.
    pub async fn reload(&self, trigger: Trigger) -> Result<Option<u64>, Vec<String>> {
        let result = self.try_reload(trigger).await;
        let telemetry = &self.shared.telemetry;
        match &result {
            Ok(Some(generation)) => {
                telemetry.reloads_success.increment(1);
                telemetry.last_reload_success.set(unix_now());
                let snapshot = self.snapshots.load();
                self.shared.events.record(
                    Event::new("reload", None, "config reloaded")
                        .with("generation", *generation)
                        .with("routes", snapshot.routes.len())
                        .with("trigger", trigger.as_str()),
                );
            }
            Ok(None) => {}
            Err(errors) => {
                telemetry.reloads_failure.increment(1);
                for error in errors {
                    tracing::error!(error = %error, "config reload rejected; the previous config keeps serving");
                }
                let reason = errors.first().cloned().unwrap_or_default();
                self.shared.events.record(
                    Event::new("reload_failed", None, reason)
                        .with("errors", Value::from(errors.clone()))
                        .with("trigger", trigger.as_str()),
                );
            }
        }
        result
    }

    async fn try_reload(&self, trigger: Trigger) -> Result<Option<u64>, Vec<String>> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|err| vec![format!("{}: cannot read: {err}", self.path.display())])?;
        let config = parse_str(&text, &self.path)
            .map_err(|errors| errors.iter().map(Invalid::to_string).collect::<Vec<_>>())?;
        let fingerprint = fingerprint(&text, &config);
        if trigger == Trigger::Watch
            && *self.last.lock().unwrap_or_else(|p| p.into_inner()) == Some(fingerprint)
        {
            return Ok(None);
        }
        let current = self.snapshots.load_full();
        let (listener, admin_listener) = self.listeners_for(&current.config, &config).await?;

        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let webhook = config.notify.as_ref().map(|n| Arc::new(n.webhook.clone()));
        let snapshot = Snapshot::build(
            config,
            generation,
            Some(&current),
            &self.shared,
            Instant::now(),
        );
        self.snapshots.store(Arc::new(snapshot));
        self.webhook.store(webhook);
        if let Some(listener) = listener {
            let _ = self.rebind.send(listener);
        }
        if let Some(listener) = admin_listener {
            let _ = self.rebind_admin.send(listener);
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        Ok(Some(generation))
    }

    /// Binds changed listen addresses before anything is swapped, so a port that cannot
    /// be bound rejects the whole file.
    async fn listeners_for(
        &self,
        current: &Config,
        next: &Config,
    ) -> Result<(Option<TcpListener>, Option<TcpListener>), Vec<String>> {
        let bind = |addr, key: &'static str| async move {
            crate::proxy::listen(addr).map_err(|err| {
                vec![format!(
                    "{}: {key}: cannot listen on {addr}: {err}",
                    self.path.display()
                )]
            })
        };
        let listener = if next.server.listen != current.server.listen {
            Some(bind(next.server.listen, "server.listen").await?)
        } else {
            None
        };
        let admin = match (&current.admin, &next.admin) {
            (Some(a), Some(b)) if a.listen != b.listen => {
                Some(bind(b.listen, "admin.listen").await?)
            }
            (Some(_), Some(_)) | (None, None) => None,
            (None, Some(_)) | (Some(_), None) => {
                return Err(vec![format!(
                    "{}: admin: adding or removing the [admin] section needs a restart",
                    self.path.display()
                )])
            }
        };
        Ok((listener, admin))
    }

    /// Reloads on each change seen by `watch` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut watch: Watch,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let trigger = tokio::select! {
                Some(()) = watch.changes.recv() => {
                    // Let the burst settle: one change, one reload.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, watch.changes.recv()).await {}
                    Trigger::Watch
                }
                Some(()) = recv_signal(&mut watch.hangup) => Trigger::Signal,
                () = &mut shutdown => return,
            };
            if let Ok(Some(generation)) = self.reload(trigger).await {
                tracing::info!(generation, trigger = trigger.as_str(), "config reloaded");
                watch.follow(&self.snapshots.load().config);
            }
        }
    }
}

/// The sources of reloads, installed before serving starts so no change is missed:
/// a watch on the config file's directory (and on the directories of the files it
/// refers to: certificates, keys, CAs, the admin token) and a SIGHUP handler.
#[derive(Debug)]
pub struct Watch {
    changes: mpsc::UnboundedReceiver<()>,
    hangup: Option<tokio::signal::unix::Signal>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: Vec<PathBuf>,
}

// === impl Watch ===

impl Watch {
    /// Must be called inside a Tokio runtime (for the signal handler).
    pub fn install(path: &Path) -> Watch {
        let (tx, changes) = mpsc::unbounded_channel::<()>();
        let dir = watch_dir(path);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reading the files (every reload does) produces access events: reacting to
            // them would make each reload trigger the next.
            if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut watcher| {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map(|()| watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::error!(dir = %dir.display(), error = %err, "cannot watch the config directory; reload with SIGHUP");
                None
            }
        };
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::error!(error = %err, "cannot handle SIGHUP");
                None
            }
        };
        Watch {
            changes,
            hangup,
            watcher,
            watched: vec![dir],
        }
    }

    /// Also watches the directories of the files `config` refers to.
    pub fn follow(&mut self, config: &Config) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for file in referenced_files(config) {
            let dir = watch_dir(&file);
            if self.watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(dir),
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch; changes there need SIGHUP")
                }
            }
        }
    }
}

/// Files a config refers to whose content matters: TLS material and the admin token.
fn referenced_files(config: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(tls) = &config.server.tls {
        files.push(tls.cert.clone());
        files.push(tls.key.clone());
        files.extend(tls.client_ca.clone());
    }
    if let Some(token) = config.admin.as_ref().and_then(|a| a.token_file.clone()) {
        files.push(token);
    }
    for route in &config.routes {
        for upstream in [&route.stable, &route.canary] {
            if let Some(tls) = &upstream.tls {
                files.extend(tls.ca_file.clone());
                if let Some((cert, key)) = &tls.client_cert {
                    files.push(cert.clone());
                    files.push(key.clone());
                }
            }
        }
    }
    files
}

/// xxh3 of the config text and of the content of every file it refers to.
fn fingerprint(text: &str, config: &Config) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(text.as_bytes());
    for file in referenced_files(config) {
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(&std::fs::read(&file).unwrap_or_default());
    }
    hasher.digest()
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The directory holding the config file (`.` for a bare file name).
fn watch_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// === impl Trigger ===

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Watch => "watch",
            Trigger::Signal => "sighup",
        }
    }
}
