//! Hot reload: the config file's directory is watched (so Kubernetes ConfigMap symlink
//! swaps and editors' rename-on-save are seen; a watch on the file itself dies after the
//! first swap) and SIGHUP re-reads it. A new file is validated whole, turned into a new
//! snapshot (route runtimes carried over by canary identity, pools by connect timeout),
//! and swapped in atomically. Requests in flight finish on the snapshot they started
//! with. An invalid file changes nothing.
//!
//! # What the watcher reacts to
//!
//! A watched directory holds other files too: a log the proxy's own stderr is appended
//! to, an editor's swap file, a sidecar's heartbeat. Reacting to them made an invalid
//! config fail (a log line, a counter, an event, a webhook POST) about ten times a
//! second, made a valid edit wait until a busy neighbour stopped writing, and turned the
//! first unrelated write after start into a reload of an unchanged file. So:
//!
//! - Only events that name a file a reload reads count: the config file, the files it
//!   refers to (certificates, keys, CAs, the admin token, the webhook secret; the set
//!   follows each applied config) and names starting with `..` (a ConfigMap's `..data`
//!   and `..data_tmp` symlinks and `..2026_…` timestamped directories). Reads never
//!   count: every reload reads the files, so access events would make each reload
//!   trigger the next.
//! - A burst settles for [`DEBOUNCE`] of quiet, but never longer than [`DEBOUNCE_MAX`]
//!   in all, so a file written without pause cannot hold a change back.
//! - The fingerprint of the content applied (from generation 1 on) and of the content
//!   last rejected are kept: a watcher event that finds either again records nothing (no
//!   reload, no `reload_failed`, no webhook POST), so one file content is one failure.
//!   SIGHUP always re-reads, and applies or reports.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::config::{parse_str, Config, Invalid};
use crate::events::Event;
use crate::publish::Publisher;
use crate::rollout::Shared;
use crate::snapshot::Snapshot;

/// Events closer together than this are one change (an editor's save, a ConfigMap swap).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The longest a burst of events can hold a reload back: a file written without pause
/// (a log, a generator) would otherwise never let it settle.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(500);

/// xxh3 of a config file's text and of the content of every file it refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

/// Re-reads the config file and swaps the snapshot.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// The one publisher of generations; the live snapshot and `Shared` are read
    /// through it.
    publisher: Arc<Publisher>,
    snapshots: Arc<ArcSwap<Snapshot>>,
    shared: Arc<Shared>,
    /// A new listener for a changed `[server] listen`; the accept loop swaps to it.
    rebind: mpsc::UnboundedSender<TcpListener>,
    /// Same for `[admin] listen`.
    rebind_admin: mpsc::UnboundedSender<TcpListener>,
    seen: Mutex<Seen>,
}

/// What the files held at the last reload: a watcher event that finds the same again
/// is not a reload, nor a new failure.
#[derive(Debug)]
struct Seen {
    /// The config applied and every file it refers to (certificates, keys, CAs, the
    /// admin token).
    applied: Option<Fingerprint>,
    /// The text last rejected and why, while nothing else has been read since.
    rejected: Option<Fingerprint>,
}

/// A file that was not applied: the errors to report, and what identifies this failure.
#[derive(Debug)]
struct Rejected {
    errors: Vec<String>,
    fingerprint: Fingerprint,
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Watch,
    Signal,
}

// === impl Reloader ===

impl Reloader {
    /// `loaded` is the fingerprint of the file generation 1 was loaded from
    /// ([`loaded_fingerprint`]); `None` makes the first watcher event a reload.
    pub fn new(
        path: PathBuf,
        loaded: Option<Fingerprint>,
        publisher: Arc<Publisher>,
        rebind: mpsc::UnboundedSender<TcpListener>,
        rebind_admin: mpsc::UnboundedSender<TcpListener>,
    ) -> Reloader {
        Reloader {
            path,
            snapshots: Arc::clone(publisher.snapshots()),
            shared: Arc::clone(publisher.shared()),
            publisher,
            rebind,
            rebind_admin,
            seen: Mutex::new(Seen {
                applied: loaded,
                rejected: None,
            }),
        }
    }

    /// Reads, validates and applies the file. Returns the new generation, or `None`
    /// when a watcher event found nothing new: the file as applied, or as last rejected.
    pub async fn reload(&self, trigger: Trigger) -> Result<Option<u64>, Vec<String>> {
        let telemetry = &self.shared.telemetry;
        match self.try_reload(trigger).await {
            Ok(Some(generation)) => {
                telemetry.reloads_success.increment(1);
                telemetry.last_reload_success.set(unix_now());
                let snapshot = self.snapshots.load();
                self.shared.events.record(
                    Event::new("reload", None, "config reloaded")
                        .with("generation", generation)
                        .with("routes", snapshot.routes.len())
                        .with("trigger", trigger.as_str()),
                );
                Ok(Some(generation))
            }
            Ok(None) => Ok(None),
            Err(Rejected {
                errors,
                fingerprint,
            }) => {
                let before = self.seen().rejected.replace(fingerprint);
                if trigger == Trigger::Watch && before == Some(fingerprint) {
                    tracing::debug!("config file touched, still rejected as before");
                    return Ok(None);
                }
                telemetry.reloads_failure.increment(1);
                for error in &errors {
                    tracing::error!(error = %error, "config reload rejected; the previous config keeps serving");
                }
                let reason = errors.first().cloned().unwrap_or_default();
                self.shared.events.record(
                    Event::new("reload_failed", None, reason)
                        .with("errors", Value::from(errors.clone()))
                        .with("trigger", trigger.as_str()),
                );
                Err(errors)
            }
        }
    }

    async fn try_reload(&self, trigger: Trigger) -> Result<Option<u64>, Rejected> {
        let text = std::fs::read_to_string(&self.path).map_err(|err| {
            Rejected::new(
                "",
                vec![format!("{}: cannot read: {err}", self.path.display())],
            )
        })?;
        let config = parse_str(&text, &self.path).map_err(|errors| {
            Rejected::new(&text, errors.iter().map(Invalid::to_string).collect())
        })?;
        let fingerprint = fingerprint(&text, &config);
        if trigger == Trigger::Watch {
            let mut seen = self.seen();
            if seen.applied == Some(fingerprint) {
                // Back to what is serving: a later rejection is news again.
                seen.rejected = None;
                return Ok(None);
            }
        }
        let current = self.snapshots.load_full();
        let (listener, admin_listener) = self
            .listeners_for(&current.config, &config)
            .await
            .map_err(|errors| Rejected::new(&text, errors))?;

        // `[log] access`: the same destination keeps its log; a new one is opened
        // before the swap, so one that cannot be opened rejects the file. SIGHUP
        // reopens it (log rotation).
        let access = AccessLog::for_config(
            current.access_log(),
            config.log.access.as_ref(),
            trigger == Trigger::Signal,
            &self.shared.telemetry.access_log_dropped,
        )
        .map_err(|err| {
            let error = format!("{}: log.access: {err}", self.path.display());
            Rejected::new(&text, vec![error])
        })?;

        let generation = self.publisher.publish(config, access, Instant::now());
        if let Some(listener) = listener {
            let _ = self.rebind.send(listener);
        }
        if let Some(listener) = admin_listener {
            let _ = self.rebind_admin.send(listener);
        }
        *self.seen() = Seen {
            applied: Some(fingerprint),
            rejected: None,
        };
        Ok(Some(generation))
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds changed listen addresses before anything is swapped, so a port that cannot
    /// be bound rejects the whole file.
    async fn listeners_for(
        &self,
        current: &Config,
        next: &Config,
    ) -> Result<(Option<TcpListener>, Option<TcpListener>), Vec<String>> {
        let bind = |addr, key: &'static str| async move {
            crate::listen::listen(addr).map_err(|err| {
                vec![format!(
                    "{}: {key}: cannot listen on {addr}: {err}",
                    self.path.display()
                )]
            })
        };
        if next.server.workers != current.server.workers {
            // The runtime is sized once, at start: say so rather than ignore the key.
            return Err(vec![format!(
                "{}: server.workers: changing the worker thread count needs a restart",
                self.path.display()
            )]);
        }
        if next.fleet != current.fleet {
            // The fleet client connects once, at start, with these keys.
            return Err(vec![format!(
                "{}: fleet: changing the [fleet] section needs a restart",
                self.path.display()
            )]);
        }
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
                    watch.settle().await;
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
    /// The names, in the watched directories, whose events count. Read on the watcher's
    /// thread, replaced by `follow`.
    names: Arc<Mutex<HashSet<OsString>>>,
    /// The config file's own name, always in `names`.
    config_name: Option<OsString>,
}

// === impl Watch ===

impl Watch {
    /// Must be called inside a Tokio runtime (for the signal handler).
    pub fn install(path: &Path) -> Watch {
        let (tx, changes) = mpsc::unbounded_channel::<()>();
        let dir = watch_dir(path);
        let config_name = path.file_name().map(OsStr::to_os_string);
        let names = Arc::new(Mutex::new(config_name.iter().cloned().collect()));
        let relevant = Arc::clone(&names);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| matters(&e, &relevant)) {
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
            names,
            config_name,
        }
    }

    /// Also watches the directories of the files `config` refers to, and from now on
    /// counts events naming those files (and no longer those of an earlier config).
    pub fn follow(&mut self, config: &Config) {
        let files = referenced_files(config);
        {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            names.clear();
            names.extend(self.config_name.iter().cloned());
            names.extend(
                files
                    .iter()
                    .filter_map(|file| file.file_name())
                    .map(OsStr::to_os_string),
            );
        }
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for file in files {
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

    /// Lets a burst of changes settle (one change, one reload): returns after
    /// [`DEBOUNCE`] without one, or [`DEBOUNCE_MAX`] after it was called.
    async fn settle(&mut self) {
        let cap = tokio::time::sleep(DEBOUNCE_MAX);
        tokio::pin!(cap);
        loop {
            tokio::select! {
                biased;
                () = &mut cap => break,
                next = tokio::time::timeout(DEBOUNCE, self.changes.recv()) => {
                    if !matches!(next, Ok(Some(()))) {
                        break;
                    }
                }
            }
        }
        // Changes already queued were made before the read that follows: it sees them.
        while self.changes.try_recv().is_ok() {}
    }
}

/// Whether `event` may have changed a file a reload reads (see the module docs).
fn matters(event: &notify::Event, names: &Mutex<HashSet<OsString>>) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    if event.need_rescan() {
        // Events were lost: any of them may have been the one.
        return true;
    }
    let names = names.lock().unwrap_or_else(PoisonError::into_inner);
    event
        .paths
        .iter()
        .filter_map(|path| path.file_name())
        .any(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
}

/// The fingerprint of generation 1: what `path` holds, if it still parses to `loaded`.
/// Call it once the watch is installed: a change after that is an event, and one made
/// since `loaded` was read gives `None`, so the first event reloads it. (A certificate
/// rewritten between the load and the watch is not seen until the next change; its
/// key material is not part of the comparison.)
pub fn loaded_fingerprint(path: &Path, loaded: &Config) -> Option<Fingerprint> {
    let text = std::fs::read_to_string(path).ok()?;
    let config = parse_str(&text, path).ok()?;
    same_config(&config, loaded).then(|| fingerprint(&text, &config))
}

/// Field by field (`Config` has no `PartialEq`: its TLS parts compare paths only).
fn same_config(a: &Config, b: &Config) -> bool {
    let Config {
        source,
        server,
        admin,
        state,
        notify,
        log,
        fleet,
        routes,
    } = a;
    *source == b.source
        && *server == b.server
        && *admin == b.admin
        && *state == b.state
        && *notify == b.notify
        && *log == b.log
        && *fleet == b.fleet
        && *routes == b.routes
}

/// Files a config refers to whose content matters: TLS material, the admin token and
/// the webhook's secret.
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
    if let Some(notify) = &config.notify {
        files.extend(notify.secret_file.clone());
        files.extend(notify.tls.as_ref().and_then(|tls| tls.ca_file.clone()));
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
fn fingerprint(text: &str, config: &Config) -> Fingerprint {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(text.as_bytes());
    for file in referenced_files(config) {
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(&std::fs::read(&file).unwrap_or_default());
    }
    Fingerprint(hasher.digest())
}

// === impl Rejected ===

impl Rejected {
    /// The same text failing the same way is the same failure; failing another way
    /// (another certificate error, another port taken) is news.
    fn new(text: &str, errors: Vec<String>) -> Rejected {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(text.as_bytes());
        for error in &errors {
            hasher.update(&[0]);
            hasher.update(error.as_bytes());
        }
        Rejected {
            errors,
            fingerprint: Fingerprint(hasher.digest()),
        }
    }
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

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, Flag, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    use super::*;

    fn names(list: &[&str]) -> Mutex<HashSet<OsString>> {
        Mutex::new(list.iter().map(OsString::from).collect())
    }

    fn modify(path: &str) -> Event {
        Event::new(EventKind::Modify(ModifyKind::Any)).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_events_naming_a_file_a_reload_reads_matter() {
        let names = names(&["proxy.toml", "token"]);
        assert!(matters(&modify("/etc/proxy/proxy.toml"), &names));
        assert!(matters(&modify("/etc/proxy/token"), &names));
        assert!(!matters(&modify("/etc/proxy/proxy.log"), &names));
        assert!(!matters(&modify("/etc/proxy/.proxy.toml.swp"), &names));
        // A rename names both ends: saved into place by rename counts.
        let rename = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/etc/proxy/proxy.tmp~"))
            .add_path(PathBuf::from("/etc/proxy/proxy.toml"));
        assert!(matters(&rename, &names));
        // ConfigMap swaps: `..data_tmp` renamed over `..data`, timestamped directories.
        assert!(matters(&modify("/etc/proxy/..data"), &names));
        assert!(matters(&modify("/etc/proxy/..data_tmp"), &names));
        let dir = Event::new(EventKind::Create(CreateKind::Folder))
            .add_path(PathBuf::from("/etc/proxy/..2026_11_21_10_00_00.1"));
        assert!(matters(&dir, &names));
        // Reading the config (every reload does) is not a change.
        let read = Event::new(EventKind::Access(AccessKind::Any))
            .add_path(PathBuf::from("/etc/proxy/proxy.toml"));
        assert!(!matters(&read, &names));
        // Lost events may have named anything.
        let rescan = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert!(matters(&rescan, &names));
    }

    fn quiet_watch() -> (mpsc::UnboundedSender<()>, Watch) {
        let (tx, changes) = mpsc::unbounded_channel();
        let watch = Watch {
            changes,
            hangup: None,
            watcher: None,
            watched: Vec::new(),
            names: Arc::new(names(&[])),
            config_name: None,
        };
        (tx, watch)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_after_a_quiet_debounce() {
        let (tx, mut watch) = quiet_watch();
        let start = Instant::now();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = tx.send(());
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        watch.settle().await;
        assert_eq!(start.elapsed(), Duration::from_millis(90) + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_every_20ms_holds_a_reload_back_at_most_debounce_max() {
        let (tx, mut watch) = quiet_watch();
        let start = Instant::now();
        tokio::spawn(async move {
            for _ in 0..500 {
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        watch.settle().await;
        assert_eq!(start.elapsed(), DEBOUNCE_MAX);
        // What was queued until then is covered by the read that follows.
        assert!(watch.changes.try_recv().is_err());
    }
}
